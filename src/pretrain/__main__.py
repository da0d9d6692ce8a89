"""``python -m pretrain`` (and ``torchrun -m pretrain``) entry point."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
