"""Tokenization: byte-level BPE trained with rustbpe or loaded from a published file,
domain-token extension, the compression report (the ``tokenizer`` stage), and the
memory-mapped token shards (the ``tokenize`` stage). Knows nothing of models or training."""
