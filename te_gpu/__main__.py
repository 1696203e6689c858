"""``python -m te_gpu ...``: the ``te-gpu`` command, also as ``torchrun ... -m te_gpu score ...``."""
import sys

from te_gpu.cli import main

if __name__ == "__main__":
    sys.exit(main())
