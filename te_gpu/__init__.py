"""te_gpu: transferability estimation for whole model zoos, batched on GPU or CPU.

The top-level functions (``logme``, ``sfda``, ..., one per metric of
:mod:`te_gpu.catalogue`, ``score``, ``score_zoo``) run the batched torch
engine on any device; ``te_gpu.reference`` holds the float64 numpy/scipy
oracle of every score; ``te_gpu.rank`` the ranking measures and shipped ground
truth; ``load_zoo`` and friends read and write the public file layout.
"""
from . import api, catalogue, rank, reference
from .api import *  # noqa: F401,F403  (one function per catalogue metric)
from .io import load_zoo, read_scores, save_zoo, write_scores
from .results import ZooResult
from .zoo import score_zoo

__version__ = "0.1.0"

__all__ = [*api.__all__, "score_zoo", "ZooResult", "catalogue", "reference", "rank", "load_zoo",
           "save_zoo", "read_scores", "write_scores"]
