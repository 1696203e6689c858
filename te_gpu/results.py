"""What a zoo run returns: scores per metric and model, zoo-level parts, SA diagnostics,
timings, and exports (JSON in te_gpu's and the public format, CSV, plain dicts)."""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .io import atomic_write, write_scores


@dataclass
class ZooResult:
    """Scores of a zoo. ``scores[label][model]`` is a float; a label is the metric
    name, suffixed ``+variant`` when computed after SA (e.g. ``"sfda+released"``)."""
    models: list
    scores: dict = field(default_factory=dict)
    parts: dict = field(default_factory=dict)        # zoo-level label -> model -> its parts
    sa: dict = field(default_factory=dict)           # variant label -> model -> info dict
    timings: dict = field(default_factory=dict)      # stage -> seconds
    device: str = "cpu"
    precision: str = "exact"
    options: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)      # label -> model -> why it has no score
    # zoo-level labels (te_gpu.combine): parts left out -> why; undefined for this zoo -> why
    dropped: dict = field(default_factory=dict)      # label -> part -> why
    undefined: dict = field(default_factory=dict)    # label -> why (no scores under it)

    @staticmethod
    def label(metric: str, sa=None) -> str:
        from .catalogue import label, resolve_sa

        return label(metric, resolve_sa(sa))

    def __getitem__(self, label: str) -> dict:
        return self.scores[label]

    @property
    def labels(self) -> list:
        return list(self.scores)

    def ranking(self, label: str) -> list:
        """[(model, score), ...] best first (lowest first for a lower-is-better metric)."""
        from .catalogue import orientation

        sign = orientation(label)
        return sorted(self.scores[label].items(), key=lambda kv: -sign * kv[1])

    def to_dict(self) -> dict:
        return dict(models=list(self.models), scores=self.scores,
                    parts={k: {m: list(v) for m, v in d.items()} for k, d in self.parts.items()},
                    sa=self.sa, timings=self.timings, device=self.device,
                    precision=self.precision, options=self.options, skipped=self.skipped,
                    dropped=self.dropped, undefined=self.undefined)

    def to_json(self, path) -> None:
        """All of it as te_gpu's JSON (atomic write)."""
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        atomic_write(Path(path), lambda fh: fh.write(text.encode()))

    def to_public_json(self, label: str, path, duration: float | None = None) -> None:
        """One metric in the public format ``{model: score, ..., "duration": s}``."""
        if duration is None:
            duration = self.timings.get("total")
        write_scores(path, self.scores[label], duration=duration)

    def to_csv(self, path=None) -> str:
        """A model x label table; written to ``path`` if given, returned as text."""
        buf = io.StringIO()
        w = csv.writer(buf)
        labels = self.labels
        w.writerow(["model", *labels])
        for m in self.models:
            # a model skipped for a metric (no predictions for LEEP, say) has an empty cell
            w.writerow([m, *(repr(self.scores[l][m]) if m in self.scores[l] else ""
                             for l in labels)])
        text = buf.getvalue()
        if path is not None:
            atomic_write(Path(path), lambda fh: fh.write(text.encode()))
        return text

    def check_finite(self) -> None:
        for label, d in self.scores.items():
            bad = [m for m, v in d.items() if not math.isfinite(v)]
            if bad:
                raise FloatingPointError(f"{label}: non-finite score for {bad}")
