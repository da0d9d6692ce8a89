"""Data curation: sources, per-document steps (filters, PII, decontamination),
deduplication and the audit trail; the ``data`` stage (``stage.py``). Knows nothing of
tokenizers, models, training or evaluation."""
