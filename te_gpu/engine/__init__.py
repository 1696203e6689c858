"""The batched torch engine: statistics shared across metric heads, whole batches of models."""
from .core import score_batch, score_settings

__all__ = ["score_batch", "score_settings"]
