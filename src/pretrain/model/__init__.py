"""The model: a decoder-only transformer (llama, mla, gpt2), KV-cache generation, weight
I/O and the Hugging Face conversion. Written for one device; parallelism and compilation
are applied from outside. Knows nothing of data, tokenizers, training or evaluation."""
