"""pretrain: raw text to an evaluated base language model, in one package and one CLI."""

__version__ = "0.1.0"
