"""The batched torch engine: statistics shared across metric heads, whole batches of models."""
from .core import METRICS, score_batch

__all__ = ["METRICS", "score_batch"]
