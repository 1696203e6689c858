"""te_gpu: transferability estimation for whole model zoos, batched on GPU or CPU.

``te_gpu.reference`` holds the float64 numpy/scipy oracle of every score;
``te_gpu.rank`` the ranking measures and shipped ground truth; ``load_zoo`` and
friends read and write the public file layout.
"""
from . import rank, reference
from .io import load_zoo, read_scores, save_zoo, write_scores

__version__ = "0.1.0"

__all__ = ["reference", "rank", "load_zoo", "save_zoo", "read_scores", "write_scores"]
