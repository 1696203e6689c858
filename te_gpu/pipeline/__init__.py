"""The pipeline behind the ``te-gpu`` command: data sets, feature extraction with timm,
ground truth by fine-tuning, resumable zoo scoring, benchmarks and PNG plots.

Every module here is a thin layer over te_gpu's public API (``score_zoo``,
``load_zoo``/``save_zoo``, ``rank``); none holds the maths of a metric.
"""
import os

# timm asks the Hugging Face hub for pretrained weights; offline that hangs for
# about a minute before failing. te_gpu never downloads: weights come from local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class PipelineError(Exception):
    """A problem with the user's input (a missing path, a bad option, ...): the CLI
    prints its message and exits with status 2, without a traceback."""
