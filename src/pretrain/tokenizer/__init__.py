"""Tokenization: byte-level BPE trained with rustbpe or loaded from a published file,
SentencePiece Unigram / BPE trained or loaded (LLaMA-2's tokenizer.model), domain-token
extension of a BPE, the compression report (the ``tokenizer`` stage), and the
memory-mapped token shards (the ``tokenize`` stage). Knows nothing of models or training."""
