"""The checkpoint of ``score_zoo``: what a run has scored, so that a killed run resumes.

One JSON file (written atomically after every batch) holds, per model, a fingerprint of
its features' content, its scores by key and its SA diagnostics by key, with the labels
they were computed for and the seconds earlier runs spent. The ranks of a distributed
run each keep a shard beside it (``<path>.rank<k>``), merged when the run ends or when
the next run starts. A lock file (:mod:`te_gpu.locks`) keeps a second run off it.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

__all__ = ["Checkpoint", "CheckpointError", "CheckpointWarning", "checkpoint_files"]

CHECKPOINT_FORMAT = "te_gpu.checkpoint/2"




class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: unreadable, older format, or other labels."""


class CheckpointWarning(UserWarning):
    """A model's features differ from those its checkpointed scores were computed on."""


def well_formed(entry) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("content"), dict)
            and {"shape", "dtype", "sha256"} <= set(entry["content"])
            and isinstance(entry.get("scores"), dict) and isinstance(entry.get("sa"), dict))


def checkpoint_files(path) -> list:
    """The checkpoint ``path`` and, beside it, the shard files an interrupted distributed run
    left (``<path>.rank<k>``): those that exist. ``te-gpu score --restart`` removes them all."""
    path = Path(path)
    return ([path] if path.is_file() else []) + shard_files(path)


def labels_sha1(codes: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(codes).tobytes()).hexdigest()


def shard_path(path: Path, rank: int) -> Path:
    """Where rank ``rank`` > 0 of a distributed run keeps its progress beside ``path``."""
    return path.with_name(f"{path.name}.rank{rank}")


def shard_files(path: Path) -> list:
    """The shard files beside the checkpoint ``path`` (not their locks or temporary files)."""
    pattern = re.compile(re.escape(path.name) + r"\.rank\d+")
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))


class Checkpoint:
    """What a run has scored: per model, its content fingerprint, its scores by key
    and its SA diagnostics by key; the labels they were computed with; the
    seconds earlier runs spent. Kept in memory; written only when ``path`` is set."""

    def __init__(self, path, n: int, labels_sha1: str):
        self.path, self.n, self.labels_sha1 = path, n, labels_sha1
        self.models: dict = {}
        self.settings: dict = {}   # key -> what it stands for, for people reading the file
        self.elapsed = 0.0         # seconds of earlier runs

    @classmethod
    def open(cls, path, n: int, codes: np.ndarray) -> "Checkpoint":
        book = cls(path, n, labels_sha1(codes))
        if path is None or not path.exists():
            return book
        book.models, book.settings, book.elapsed = book._read(path)
        return book

    def _read(self, path) -> tuple:
        """(models, settings, elapsed) of a checkpoint file written for these labels."""
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path} is unreadable ({exc}); delete it to start "
                                  "afresh") from None
        if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"checkpoint {path} was written by an earlier te_gpu (or is not a "
                                  "te_gpu checkpoint) and cannot be resumed; delete it to start afresh")
        if saved.get("n") != self.n or saved.get("labels_sha1") != self.labels_sha1:
            raise CheckpointError(f"checkpoint {path} holds scores for other labels (N = {saved.get('n')}"
                                  f", here {self.n}); delete it or choose another path")
        models = saved.get("models")
        if not isinstance(models, dict) or not all(well_formed(e) for e in models.values()):
            raise CheckpointError(f"checkpoint {path} is malformed; delete it to start afresh")
        return models, saved.get("settings", {}), float(saved.get("elapsed", 0.0))

    def absorb_shards(self) -> None:
        """Take in the shard files ``<path>.rank<k>`` that the ranks of an interrupted
        distributed run wrote (any number of ranks), write the merged file, remove them.

        A shard's entry replaces the file's: a rank started from the file's entry and
        saved it with what it added. Whatever is taken in, each model's content is
        still checked against its fingerprint before its scores are reused.
        """
        shards = shard_files(self.path) if self.path is not None else []
        for shard in shards:
            models, settings, elapsed = self._read(shard)
            self.models.update(models)
            self.settings.update(settings)
            self.elapsed = max(self.elapsed, elapsed)   # the ranks ran at the same time
        if shards:
            self.save(0.0)
            self.remove_shards()

    def remove_shards(self) -> None:
        for shard in shard_files(self.path):
            shard.unlink(missing_ok=True)

    def describe(self, settings: dict) -> None:
        """What each score key stands for ({key: description}), for people reading the file."""
        self.settings.update(settings)

    def bind(self, name: str, fingerprint: dict) -> None:
        """The model's entry is for these contents: drop what was computed on others."""
        entry = self.models.get(name)
        if entry is None or entry["content"] != fingerprint:
            self.models[name] = dict(content=fingerprint, scores={}, sa={})

    def _entry(self, name: str) -> dict:
        # without a file, models are never fingerprinted (bound): nothing to check them against
        return self.models.setdefault(name, dict(content=None, scores={}, sa={}))

    def put(self, name: str, key: str, value) -> None:
        self._entry(name)["scores"][key] = list(value) if isinstance(value, tuple) else value

    def put_sa(self, name: str, key: str, info: dict) -> None:
        self._entry(name)["sa"][key] = info

    def save(self, run_seconds: float) -> None:
        """Write it (atomically: a reader sees the old file or the new one)."""
        if self.path is None:
            return
        from .io import atomic_write

        text = json.dumps(dict(format=CHECKPOINT_FORMAT, n=self.n, labels_sha1=self.labels_sha1,
                               elapsed=self.elapsed + run_seconds, settings=self.settings,
                               models=self.models), allow_nan=False)
        atomic_write(self.path, lambda fh: fh.write(text.encode()))
