r"""How stable is a zoo's ranking? A class-stratified bootstrap over the target samples.

A transferability score is computed from one finite target set; another draw of
the same size from the same task would give other scores, and perhaps another
order. :func:`bootstrap_zoo` measures that: it redraws the target set ``B``
times with replacement and rescores every model on every redraw, giving each
model's score an interval (centred on the score: see below), and each model the share of redraws in
which it comes first (``p_first``) and in the top 3 (``p_top``).
:func:`tau_w_interval` turns the redraws into an interval of the weighted
Kendall tau against known accuracies, with the probability that a redraw's
recommended model is the truly best one and that the truly best is in its top 3.

The resample. Within each class c, draw n_c rows with replacement from that
class's rows, and lay the classes out one after another: every redraw then has
the same label vector (n_0 zeros, n_1 ones, ...), so the redraws of one model
are models of one batch for the engine, sharing its labels and everything that
depends on labels alone (one-hot, counts, NCTI's class index), and they share
batches with the redraws of other models of the same width. Redraw ``r`` uses
``numpy.random.default_rng([seed, r])`` (:func:`resample_indices`), the same
rows for every model (so that models are compared on the same redraw), and does
not depend on how many redraws are asked for.

Two ways through the engine. LDA, kNN and NCTI on raw features (``Metric.redraws``)
read a redraw as its multiplicity vector w (how many times each row is in it) and
what was computed once on the full target set: kNN walks each row's neighbour
list (:class:`te_gpu.engine.knn.NeighbourLists`), LDA's class means are weighted
sums and each distinct row's term counts w times, NCTI's centred Gram is a sum over
the rows the redraw holds scaled by sqrt(w) (then its own top eigenpairs, as on any
features). On a CPU this path's work goes, in tasks of at most :data:`TASK_REDRAWS`
redraws of one model (widest first), to one worker thread per core, each with one
BLAS thread (the eigensolver releases the GIL: :mod:`te_gpu.engine.linalg`). Every
other metric, and every metric after SA, is scored on the gathered rows: each model's features are read once, the (models x redraws, N, D)
batches are gathered from them (``x[idx]``) in chunks sized from the device's
memory and go through the same engine heads as :func:`te_gpu.score_zoo`.

Redraws are done in rounds (:data:`FIRST_ROUND`, then as many as ``until`` asks
for): ``until`` - :func:`te_gpu.recommend.settled` for ``recommend`` - may stop
the run once the answer is settled, and because redraw r depends on (seed, r)
only, a stopped run holds exactly the first R redraws of a longer one.
``options["redraws"]`` records how many were done, of which cap, and why.

What each metric does on a redraw (all: the engine's value on the resampled
features, equal to the float64 reference on ``x[idx], y[idx]``; tested):

* LogME, SFDA, LDA, GBC, H-score, regularized H-score, TransRate: scored as any
  features are. Repeated rows are ordinary rows to them (a GBC class whose
  redraw repeats one row has variance 0 there, floored at 1e-4 as released).
* kNN: leave-one-out would find the query's own copies at distance 0, and they
  vote for its class (the score drifts towards 1). On a redraw a query leaves
  out every copy of its source sample (``te_gpu.reference.knn.knn_grouped``).
* NLEEP: its seeded random stream does not depend on the data, so every redraw
  is fitted with the same seed, as ``nleep(x[idx], y[idx], seed=...)``.
* NCTI: min-max normalised over the zoo within each redraw (its parts of every
  model on redraw r, then the zoo's min and max on redraw r), with the parts the
  target set kept (:mod:`te_gpu.combine`); a kept part equal across the zoo on a
  redraw adds nothing there. Undefined on the target set: no redraws.
* SA: gate, PCA and Attract are recomputed on each redraw (the gate may open on
  some redraws and not others; ``sa_applied`` gives the share per model).
* LEEP, NCE: the rows of the model's own predictions are resampled the same way.

Point estimates (``point``) are the scores on the target set as given
(:func:`te_gpu.score_zoo`; kNN's, on raw features alone, from its neighbour lists on
the target set itself, the same value without repeating the lists' N^2 D work).
Repeated rows shift most scores: a redraw holds about 63 % of the distinct samples, so TransRate's coding rate drops, in-sample fits
(LogME, SFDA, regularized H-score) look tighter, and a plain percentile interval
of the redraws misses the score's expectation at this N (at a nominal 90 %, on
synthetic zoos of known order: TransRate's covered it in 18 % of cases,
regularized H-score's in 66 %, LogME's in 74 %; bench/RESULTS.md, "Bootstrap").
The default ``method="centred"`` therefore keeps the redraws' spread and their
correlation across models but moves each model's redraws so that their mean is
its point score: interval = point + (percentile - mean of the redraws). It covered
the expectation in 83-98 % of cases for every metric measured;
``method="percentile"`` gives the raw redraws. ``p_first``, ``p_top``,
the consensus and :func:`tau_w_interval` read the same (centred) redraws. Ties
in a redraw share the first place equally in ``p_first``; ``p_top(k)`` counts a
model whose redraw has fewer than k models strictly ahead.
"""
from __future__ import annotations

import json
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import catalogue, executor
from ._checks import check_int

__all__ = ["BootstrapResult", "bootstrap_zoo", "resample_indices", "tau_w_interval",
           "DEFAULT_REPLICATES", "DEFAULT_LEVEL"]

DEFAULT_REPLICATES = 200
DEFAULT_LEVEL = 0.95
METHODS = ("centred", "percentile")
# (model, redraw) rows per CPU batch when not given: on the 2-core Xeon of bench/RESULTS.md
# ("Bootstrap"), 8 models x 20 redraws of 1,000 x 256 took 3.2-3.6 s of CPU at 4-16 rows per
# batch and 3.8-4.4 s in one batch of 160 (memory traffic of the large batch)
CPU_BATCH_ROWS = 16


def _check_level(level) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level must be a number between 0 and 1 (e.g. 0.95), got {level!r}")
    return float(level)


def resample_indices(labels, replicates: int, seed: int = 0, *, first: int = 0):
    """The rows of ``replicates`` class-stratified redraws, and their common labels.

    Returns ``(idx, codes)``: ``idx`` (replicates, N) int64 row indices into the
    target set, ``codes`` (N,) the class codes 0..C-1 (of the sorted unique labels)
    of every redraw, class by class. Redraw ``first + j`` draws, with
    ``numpy.random.default_rng([seed, first + j])``, for each position of class c
    one of the n_c rows of class c (uniformly, with replacement).
    """
    from ._checks import as_labels

    replicates = check_int(replicates, "replicates", 1)
    seed = check_int(seed, "seed", 0)
    first = check_int(first, "first", 0)
    codes, classes = as_labels(labels)
    counts = np.bincount(codes, minlength=classes.size)
    order = np.argsort(codes, kind="stable")            # the rows of each class, in order
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    high = np.repeat(counts, counts)
    idx = np.empty((replicates, codes.size), dtype=np.int64)
    for j in range(replicates):
        rng = np.random.default_rng([seed, first + j])
        idx[j] = order[starts + rng.integers(0, high)]
    return idx, np.repeat(np.arange(classes.size), counts)


@dataclass
class BootstrapResult:
    """Scores of a zoo on B redraws of its target set.

    ``point[label][model]``: the score on the target set as given;
    ``samples[label][model]``: its B redraw scores as computed (redraw r is the same
    rows for every model); ``method``: how intervals and shares read them
    (``"centred"``: moved to the point score's level; ``"percentile"``: as they
    are; see the module's docstring). Labels are ``metric`` or ``metric+variant`` as in
    :class:`te_gpu.ZooResult`. ``sa_applied[variant][model]``: the share of
    redraws on which SA's gate opened. ``skipped[label][model]``: why a model has
    no score (LEEP/NCE without predictions). ``undefined[label]``: a zoo-level metric
    that cannot combine over this zoo (:mod:`te_gpu.combine`), with no samples;
    ``dropped[label]``: its parts left out (on the target set, hence on every redraw).
    """
    models: list
    replicates: int
    seed: int
    level: float
    method: str = "centred"
    point: dict = field(default_factory=dict)
    samples: dict = field(default_factory=dict)
    sa_applied: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    undefined: dict = field(default_factory=dict)
    dropped: dict = field(default_factory=dict)

    @property
    def labels(self) -> list:
        return list(self.samples)

    def _method(self, method) -> str:
        method = self.method if method is None else method
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        return method

    def matrix(self, label: str, method: str | None = None, oriented: bool = False):
        """(models scored for ``label``, their redraw scores as an (L, B) array), centred
        on the point scores (``method="centred"``) or as computed (``"percentile"``);
        ``oriented``: negated for a lower-is-better metric (:func:`catalogue.oriented`),
        as every share, consensus and tau_w reads them."""
        if label not in self.samples:
            raise ValueError(f"no bootstrap of {label!r}; have {', '.join(self.samples)}")
        models = [m for m in self.models if m in self.samples[label]]
        s = np.stack([np.asarray(self.samples[label][m], dtype=np.float64) for m in models])
        if self._method(method) == "centred":
            s = s - s.mean(1, keepdims=True) + np.array([self.point[label][m] for m in models])[:, None]
        return models, s * (catalogue.orientation(label) if oriented else 1.0)

    def interval(self, label: str, level: float | None = None, method: str | None = None) -> dict:
        """{model: (lo, hi)}: the (1 - level)/2 and (1 + level)/2 quantiles (numpy's default
        linear interpolation) of its redraw scores, read as ``method`` says; ``level``
        defaults to the result's."""
        a = 1.0 - _check_level(self.level if level is None else level)
        models, s = self.matrix(label, method)
        q = np.quantile(s, [a / 2, 1 - a / 2], axis=1)
        return {m: (float(q[0, i]), float(q[1, i])) for i, m in enumerate(models)}

    def p_first(self, label: str, method: str | None = None) -> dict:
        """{model: share of redraws on which it scores best} (ties share the place)."""
        models, s = self.matrix(label, method, oriented=True)
        return dict(zip(models, first_places(s).mean(1).tolist()))

    def p_top(self, label: str, k: int = 3, method: str | None = None) -> dict:
        """{model: share of redraws on which fewer than k models score strictly better}."""
        models, s = self.matrix(label, method, oriented=True)
        k = check_int(k, "k", 1)
        return dict(zip(models, (models_ahead(s) < k).mean(1).tolist()))

    def consensus(self, labels=None, method: str | None = None):
        """(models, (L, B) array, {model: point value}): minus the mean rank over ``labels``
        (default all) on each redraw and on the target set, 0 = first (ties: average
        ranks). Models missing from a label are left out."""
        labels = list(labels or self.labels)
        if not labels:
            raise ValueError("no label to combine")
        common = [m for m in self.models if all(m in self.samples[lb] for lb in labels)]
        if len(common) < 2:
            raise ValueError(f"fewer than 2 models are scored by every one of {labels}")
        ranks = np.zeros((len(common), self.replicates))
        point = np.zeros(len(common))
        for lb in labels:
            models, s = self.matrix(lb, method, oriented=True)
            ranks += _average_ranks(s[[models.index(m) for m in common]])
            best_up = catalogue.oriented(lb, self.point[lb])
            point += _average_ranks(np.array([[best_up[m]] for m in common]))[:, 0]
        n = len(labels)
        return common, -ranks / n, dict(zip(common, (-point / n).tolist()))

    def summary(self, label: str, k: int = 3) -> list:
        """Rows {model, score, lo, hi, p_first, p_top} ordered by the point score."""
        iv, pf, pt = self.interval(label), self.p_first(label), self.p_top(label, k)
        rows = [dict(model=m, score=self.point[label][m], lo=iv[m][0], hi=iv[m][1],
                     p_first=pf[m], p_top=pt[m]) for m in iv]
        return sorted(rows, key=lambda r: -r["score"])

    def to_dict(self, samples: bool = True) -> dict:
        out = dict(models=list(self.models), replicates=self.replicates, seed=self.seed,
                   level=self.level, method=self.method, point=self.point,
                   intervals={lb: {m: list(v) for m, v in self.interval(lb).items()}
                              for lb in self.labels},
                   p_first={lb: self.p_first(lb) for lb in self.labels},
                   p_top3={lb: self.p_top(lb, 3) for lb in self.labels},
                   sa_applied=self.sa_applied, skipped=self.skipped, timings=self.timings,
                   options=self.options, undefined=self.undefined, dropped=self.dropped)
        if samples:
            out["samples"] = {lb: {m: np.asarray(v, dtype=np.float64).tolist()
                                   for m, v in d.items()} for lb, d in self.samples.items()}
        return out

    def to_json(self, path, samples: bool = True) -> None:
        from .io import atomic_write

        text = json.dumps(self.to_dict(samples), indent=1, allow_nan=False)
        atomic_write(Path(path), lambda fh: fh.write(text.encode()))

    @classmethod
    def from_dict(cls, d: dict) -> "BootstrapResult":
        """A result written by :meth:`to_dict` (with its samples)."""
        if "samples" not in d:
            raise ValueError("this bootstrap file holds no redraw scores (written with samples=False)")
        return cls(models=list(d["models"]), replicates=int(d["replicates"]), seed=int(d["seed"]),
                   level=float(d["level"]), method=d.get("method", "centred"), point=d["point"],
                   samples={lb: {m: np.asarray(v, dtype=np.float64) for m, v in s.items()}
                            for lb, s in d["samples"].items()},
                   sa_applied=d.get("sa_applied", {}), skipped=d.get("skipped", {}),
                   timings=d.get("timings", {}), options=d.get("options", {}),
                   undefined=d.get("undefined", {}), dropped=d.get("dropped", {}))


def first_places(s: np.ndarray) -> np.ndarray:
    """(L, B) -> (L, B): 1/t for the t models tied at a redraw's highest score, else 0."""
    top = s == s.max(0, keepdims=True)
    return top / top.sum(0, keepdims=True)


def models_ahead(s: np.ndarray) -> np.ndarray:
    """(L, B) -> (L, B) int: how many models score strictly higher on each redraw."""
    srt = np.sort(s, axis=0)
    out = np.empty(s.shape, dtype=np.int64)
    for r in range(s.shape[1]):
        out[:, r] = s.shape[0] - np.searchsorted(srt[:, r], s[:, r], side="right")
    return out


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """(L, B) -> (L, B): 0-based rank of each model on each redraw, best first, ties averaged."""
    ahead = models_ahead(s)
    tied = s.shape[0] - ahead - models_ahead(-s)   # models scoring exactly the same, itself too
    return ahead + (tied - 1) / 2.0


# --------------------------------------------------------------------------
# the engine pass
# --------------------------------------------------------------------------

def bootstrap_zoo(zoo, labels=None, *, metrics=catalogue.DEFAULT_METRICS,
                  replicates: int = DEFAULT_REPLICATES, seed: int = 0,
                  level: float = DEFAULT_LEVEL, method: str = "centred", sa=None,
                  options: dict | None = None,
                  predictions: dict | None = None, device=None, precision: str = "exact",
                  batch_size: int | None = None, progress: bool = True,
                  until=None, ped_reference: dict | None = None, only=None) -> BootstrapResult:
    """Every model of ``zoo`` scored on up to ``replicates`` class-stratified redraws of its targets.

    Parameters as :func:`te_gpu.score_zoo` (``zoo``, ``labels``, ``metrics``, ``sa``,
    ``options``, ``predictions``, ``device``, ``precision``, ``only``: the labels to
    compute, on the target set and on every redraw; ``ped_reference``: PED's reference
    statistics are not redrawn), plus
    ``replicates`` : redraws B (>= 2), or their cap when ``until`` stops earlier;
    ``seed`` : redraw r uses ``numpy.random.default_rng([seed, r])`` (:func:`resample_indices`);
    ``level`` : of the intervals (0.95: from the 2.5 and 97.5 percentiles);
    ``method`` : ``"centred"`` (default) or ``"percentile"``: how intervals and shares
        read the redraws (the module's docstring says why centred);
    ``batch_size`` : (model, redraw) pairs per engine batch of the gathered path; None
        sizes batches from the device's memory (on a CPU at most ``CPU_BATCH_ROWS``);
    ``progress`` : a progress bar over the redraws, and one line when the first redraws
        predict more than ``SLOW_NOTICE_S`` seconds;
    ``until`` : None, or a function of the result so far (its first R redraws) returning
        ``(reason, wanted)``: a reason (str) stops the run there, else None and the number
        of redraws it expects to need (the next round goes up to it). Redraws are done in
        rounds (:data:`FIRST_ROUND` first), so a stopped run holds exactly the first R
        redraws of a longer one.

    One process (no sharing between the ranks of a distributed job); no checkpoint.
    Returns a :class:`BootstrapResult`; ``options["redraws"]`` says how many redraws were
    done, out of which cap, and why it stopped.
    """
    import torch

    from . import zoo as zoo_mod
    from ._checks import as_labels
    from .engine._tensor import resolve_device, working_dtype
    from .engine.stats import Labels

    t0 = time.perf_counter()
    replicates = check_int(replicates, "replicates", 2)
    seed = check_int(seed, "seed", 0)
    level = _check_level(level)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if labels is None and isinstance(zoo, tuple) and len(zoo) == 2:
        zoo, labels = zoo
    # the plain scores first: they validate everything (zoo, labels, metrics, options, class
    # sizes, predictions) exactly as score_zoo does, and are the point estimates (but those
    # that the redraw hooks give on the way: _points_from_hooks)
    from .results import ZooResult

    names = catalogue.metric_names(metrics)
    opts = catalogue.resolve_options(names, options)
    settings = zoo_mod.sa_settings(sa)
    feature_names = tuple(m for m in names if catalogue.get(m).inputs == "features")
    only, keys = zoo_mod.wanted_keys(feature_names, settings, only,
                                     tuple(m for m in names if m not in feature_names))
    per_setting = [tuple(m for m in feature_names if keys is None or (m, i) in keys)
                   for i in range(len(settings))]
    only = only if only is not None else [
        *(ZooResult.label(m, s) for i, s in enumerate(settings) for m in per_setting[i]),
        *(m for m in names if m not in feature_names)]
    later = _points_from_hooks(only, settings, per_setting)
    # PED's reference read once: its statistics go to score_zoo and to the redraws
    ped_stats = zoo_mod.ped_reference_stats(zoo, ped_reference, settings)[0]
    point = zoo_mod.score_zoo(zoo, labels, metrics=names, sa=sa, options=options,
                              predictions=predictions, device=device, precision=precision,
                              progress=False, distributed=False, ped_reference=ped_stats,
                              only=[lb for lb in only if lb not in later])
    t_point = time.perf_counter() - t0
    dtype = working_dtype(precision)
    dev = resolve_device(device, *(v for v in zoo.values() if isinstance(v, torch.Tensor)))

    codes_np, classes = as_labels(labels)
    c = classes.size
    idx_np, rcodes = resample_indices(codes_np, replicates, seed)
    idx_all = torch.as_tensor(idx_np, device=dev)
    lab = Labels.from_codes(torch.as_tensor(rcodes, device=dev), c, dtype)
    src = Labels.from_codes(torch.as_tensor(codes_np, device=dev), c, dtype)

    result = BootstrapResult(models=list(zoo), replicates=0, seed=seed, level=level,
                             method=method, point=dict(point.scores), skipped=dict(point.skipped),
                             undefined=dict(point.undefined), dropped=dict(point.dropped),
                             options=dict(metrics=list(names), options=opts,
                                          sa=list(settings), precision=precision, only=only))
    plan = _Plan(zoo, [m for m in names if m in feature_names or m in only], settings,
                 per_setting, opts, dtype, dev, batch_size, lab, src,
                 predictions or {}, ped_stats)
    timer = _timer(dev)
    bar = executor.progress_bar(len(zoo) * replicates, progress, unit="redraw",
                                desc="bootstrap")
    done, wanted = 0, replicates
    reason = ("the cap (-B) came before the stopping rule was met" if until is not None
              else "all the redraws asked for (-B)")
    t_rounds = time.perf_counter()
    try:
        while done < replicates:
            stop = _next_stop(done, wanted, replicates)
            plan.run(result, idx_all[done:stop], rcodes, timer, bar)
            first, done = done == 0, stop
            if first and later:
                with timer.stage("points from hooks"):
                    result.point.update(plan.points(later))
            if until is not None and done >= 2:
                why, wanted = until(result)
                wanted = min(replicates, wanted)
                if why is not None:          # settled (at the cap too: say so)
                    reason = why
                    break
            if first:
                _slow_notice(time.perf_counter() - t_rounds, done, wanted, progress)
    finally:
        bar.close()
    result.options["redraws"] = dict(done=done, cap=replicates, stopped_by=reason)
    run = time.perf_counter() - t0
    result.timings = dict(timer.stages, point=t_point, bootstrap=run - t_point, total=run)
    return result


TASK_REDRAWS = 10   # redraws of one model per worker task (weighted path, CPU)
FIRST_ROUND = 10     # redraws of the first round: enough for a time estimate and first shares
MIN_ROUND = 10       # later rounds add at least this many
SLOW_NOTICE_S = 60.0


def _next_stop(done: int, wanted: int, cap: int) -> int:
    """Where the next round of redraws ends."""
    if done == 0:
        return min(cap, FIRST_ROUND)
    return min(cap, max(done + MIN_ROUND, wanted))


def _slow_notice(seconds: float, done: int, wanted: int, enabled: bool) -> None:
    """One line when the first round predicts more than a minute for the rest."""
    more = seconds / done * max(0, wanted - done)
    if enabled and more > SLOW_NOTICE_S:
        import sys

        print(f"bootstrap: about {more:.0f} s more for up to {wanted} redraws ({seconds / done:.2f} s "
              "each); fewer redraws (-B), fewer metrics or a GPU make it cheaper", file=sys.stderr)


class _Plan:
    """Which (metric, setting) goes which way, and what the weighted path keeps between rounds."""

    def __init__(self, zoo, names, settings, wanted, opts, dtype, dev, batch_size, lab, src,
                 predictions, ped_stats=None):
        self.zoo, self.settings, self.opts, self.ped_stats = zoo, settings, opts, ped_stats
        self.wanted = wanted              # per setting, the feature metrics it scores
        self.dtype, self.dev, self.batch_size = dtype, dev, batch_size
        self.lab, self.src, self.predictions = lab, src, predictions
        self.pred_metrics = tuple(m for m in names if catalogue.get(m).inputs == "predictions")
        self.raw = settings.index(None) if None in settings else None
        # raw metrics whose catalogue entry has a redraw hook: redraws from multiplicities
        # and what was computed once on the full target set
        self.weighted = () if self.raw is None else tuple(
            m for m in wanted[self.raw] if catalogue.get(m).redraws)
        self.state: dict = {}      # model -> {metric: its redraw hook} (weighted path)
        self.locks = {nm: threading.Lock() for nm in zoo}   # one hook build per model

    def run(self, result: BootstrapResult, idx, rcodes, timer, bar) -> None:
        """Redraws ``idx`` (R, N) of every model, appended to ``result``'s samples."""
        from .engine._tensor import features_tensor

        b = idx.shape[0]
        raw: dict = {}
        # one gathered pass for every setting that has metrics to gather (SA settings share
        # the batch's raw statistics); the raw setting's hooked metrics go the weighted way
        gathered = [tuple(m for m in ms if i != self.raw or m not in self.weighted)
                    for i, ms in enumerate(self.wanted)]
        which = [i for i, ms in enumerate(gathered) if ms]
        if which:
            part = _feature_pass(self.zoo, idx, self.lab, [gathered[i] for i in which],
                                 [self.settings[i] for i in which], self.opts, self.dtype,
                                 self.dev, self.batch_size, timer, bar, features_tensor,
                                 self.ped_stats)
            for (nm, j), (vals, opened) in part.items():
                raw.setdefault((nm, which[j]), ({}, opened))[0].update(vals)
        if self.weighted:
            for nm, vals in self._weighted_pass(idx, timer, features_tensor).items():
                raw.setdefault((nm, self.raw), ({}, [False] * b))[0].update(vals)
        part_result = BootstrapResult(models=result.models, replicates=b, seed=result.seed,
                                      level=result.level, undefined=result.undefined,
                                      dropped=result.dropped)   # zoo-level parts as on the target set
        if any(self.wanted):
            _fill(part_result, raw, self.wanted, self.settings, b)
        if self.pred_metrics:
            _prediction_pass(part_result, self.zoo, self.predictions, idx, rcodes, self.lab.c,
                             self.pred_metrics, self.opts, self.dev, timer, None)
        _append(result, part_result)
        if not which:                                # the weighted pass alone
            bar.update(len(self.zoo) * b)

    def points(self, metrics) -> dict:
        """{label: {model: score}} of ``metrics`` on the target set itself, from their
        hooks (built by the first round): a redraw that holds every row once, in order."""
        import torch

        from .results import ZooResult

        n = self.src.n
        ones = torch.ones((1, n), dtype=self.dtype, device=self.dev)
        order = torch.arange(n, device=self.dev)[None]
        return {ZooResult.label(m, None): {nm: float(self.state[nm][m](ones, order)[0])
                                           for nm in self.zoo}
                for m in metrics}

    def _weighted_pass(self, idx, timer, features_tensor) -> dict:
        """{model: {metric: per-redraw values}} of the metrics in ``self.weighted``.

        On a CPU the models go to one worker thread per core, each with one BLAS thread:
        per-model LAPACK calls (NCTI's eigensolver) gain little from a second thread, and
        OpenBLAS's idle threads spin on the cores torch's threads need (measured: a D = 1280
        resample's top eigenpairs took 2.4 s of CPU with two BLAS threads on a loaded
        machine, 0.14 s with one; bench/RESULTS.md, "recommend near its floor").
        """
        import torch

        b, n = idx.shape
        w = torch.zeros((b, n), dtype=self.dtype, device=self.dev)
        w.scatter_add_(1, idx, torch.ones_like(idx, dtype=self.dtype))   # multiplicities
        names = list(self.zoo)
        if self.dev.type == "cuda":
            with timer.stage("from weights"):
                return {nm: self._one_model(nm, w, idx, features_tensor, False) for nm in names}
        from concurrent.futures import ThreadPoolExecutor

        # tasks of at most TASK_REDRAWS redraws of one model, the costliest models first
        # (N D^2: NCTI's Gram and eigensolver), so that the workers run out of work together
        names.sort(key=lambda nm: -_width(nm, self.zoo[nm]))
        tasks = [(nm, slice(r0, r0 + TASK_REDRAWS)) for nm in names
                 for r0 in range(0, b, TASK_REDRAWS)]
        workers = max(1, min(len(tasks), torch.get_num_threads()))
        with timer.stage("from weights"), _one_blas_thread(), ThreadPoolExecutor(workers) as pool:
            done = pool.map(lambda task: self._one_model(task[0], w[task[1]], idx[task[1]],
                                                         features_tensor, workers > 1), tasks)
            out: dict = {}
            for (nm, _), vals in zip(tasks, done):      # in task order: redraws in order
                mine = out.setdefault(nm, {m: [] for m in vals})
                for m, v in vals.items():
                    mine[m].extend(v)
            return out

    def _one_model(self, nm, w, idx, features_tensor, single: bool) -> dict:
        """One model's weighted-path values on redraws ``idx`` (its hooks made on first use,
        once, under the model's lock: ``Metric.redraws``, built from the full target set)."""
        import torch

        from . import zoo as zoo_mod

        if single:
            torch.set_num_threads(1)          # this worker thread's share of the cores
        with self.locks[nm]:
            hooks = self.state.get(nm)
            if hooks is None:
                x = features_tensor(zoo_mod.open_features(nm, self.zoo[nm])[0], self.dev,
                                    self.dtype, name=f"features of model {nm!r}")
                hooks = self.state[nm] = {
                    m: catalogue.get(m).redraws_fn()(x, self.src, self.lab, **self.opts[m])
                    for m in self.weighted}
        return {m: hook(w, idx) for m, hook in hooks.items()}


def _points_from_hooks(only, settings, wanted) -> list:
    """The raw labels (metric names) whose point estimate comes from their redraw hook,
    not score_zoo: those whose hook's build does the point's work
    (``Metric.point_from_redraws``: kNN's neighbour lists are its leave-one-out pass),
    when score_zoo has another label of ``only`` to score (it validates the call)."""
    if None not in settings:
        return []
    later = [m for m in wanted[settings.index(None)] if catalogue.get(m).point_from_redraws
             and catalogue.get(m).redraws]
    return later if len(later) < len(only) else []


def _width(name, features) -> int:
    """A model's feature width D (a store's file is memory-mapped, not read)."""
    from . import zoo as zoo_mod

    return int(zoo_mod.open_features(name, features)[1][-1])


def _one_blas_thread():
    """BLAS/LAPACK on one thread per caller for the duration (threadpoolctl where installed;
    else as configured)."""
    import contextlib

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _append(result: BootstrapResult, part: BootstrapResult) -> None:
    """``part``'s redraws after ``result``'s (samples, SA gate shares weighted by redraws)."""
    b0, b1 = result.replicates, part.replicates
    for lb, d in part.samples.items():
        mine = result.samples.setdefault(lb, {})
        for nm, v in d.items():
            mine[nm] = np.concatenate([mine.get(nm, np.empty(0)), np.asarray(v, dtype=np.float64)])
    for variant, d in part.sa_applied.items():
        mine = result.sa_applied.setdefault(variant, {})
        for nm, share in d.items():
            mine[nm] = (mine.get(nm, 0.0) * b0 + share * b1) / (b0 + b1)
    result.replicates = b0 + b1


def _timer(dev):
    from .engine.core import Timer

    return Timer(dev)


def _feature_pass(zoo, idx, lab, wanted, settings, opts, dtype, dev, batch_size, timer, bar,
                  features_tensor, ped_stats=None) -> dict:
    """{(model, setting index): ({metric: per-redraw values}, SA gate openings)} of the
    metrics ``wanted`` in each setting; ``ped_stats``: {model: (mean, std)} of PED's
    reference features, or None."""
    from collections import deque

    import torch

    from . import zoo as zoo_mod
    from .engine import core

    b, n = idx.shape
    c = lab.c
    metrics = tuple(dict.fromkeys(m for ms in wanted for m in ms))
    entries = {name: zoo_mod.open_features(name, item) for name, item in zoo.items()}
    class_index = None
    if any("class_index" in catalogue.get(m).needs for m in metrics):
        from .engine.stats import class_padding_index

        class_index = class_padding_index(lab.codes, c)
    # a head that must know which rows are copies of one sample (kNN leaves them out)
    grouped = any("groups" in catalogue.get(m).needs for m in metrics)
    out = {}
    loaded: dict = {}                  # each model's features are read once
    last: dict = {}                    # model -> its last (model, redraw) pair

    def attempt(key, chunk, _staged):
        d = key[0]
        with timer.stage("load"):
            for name, _ in chunk:
                if name not in loaded:
                    loaded[name] = features_tensor(entries[name][0], dev, dtype,
                                                   name=f"features of model {name!r}")
        with timer.stage("gather"):
            ii = idx[torch.as_tensor([r for _, r in chunk], device=dev)]        # (chunk, N)
            x = torch.empty((len(chunk), n, d), dtype=dtype, device=dev)
            j = 0
            for name, run in _runs(chunk):
                torch.index_select(loaded[name], 0, ii[j:j + run].reshape(-1),
                                   out=x[j:j + run].view(-1, d))
                j += run
        return core.score_settings(x, lab, metrics, settings, opts=opts, pca_float32=key[1],
                                   timer=timer, class_index=class_index,
                                   groups=ii if grouped else None, wanted=wanted,
                                   exact_gate=False,     # a redraw keeps the decision only
                                   ped_stats=zoo_mod.ped_batch_stats(
                                       ped_stats, [name for name, _ in chunk], dev))

    def finish(key, chunk, outputs):
        for i, (lists, infos) in enumerate(outputs):
            for j, (name, r) in enumerate(chunk):
                vals, opened = out.setdefault((name, i), ({m: [None] * b for m in lists},
                                                          [False] * b))
                for m, v in lists.items():
                    vals[m][r] = v[j]
                if infos is not None:
                    opened[r] = bool(infos[j]["applied"])
        for name in {name for name, _ in chunk if last[name] in chunk}:
            loaded.pop(name, None)                                  # done with this model
        bar.update(len(chunk))

    queue = deque()                    # (group key, (model, redraw) pairs, batch size)
    for (d, f32), names in executor.width_groups(entries).items():
        size = batch_size or executor.memory_batch_size(dev, n, d, c, dtype, metrics)
        if batch_size is None and dev.type != "cuda":
            size = min(size, CPU_BATCH_ROWS)
        pairs = [(name, r) for name in names for r in range(b)]
        last.update({name: (name, b - 1) for name in names})
        queue.extend(((d, f32), chunk, size) for chunk in executor.cut(pairs, size))
    executor.run_batches(
        queue, attempt=attempt, finish=finish, device=dev,
        replan=lambda key, pairs, size: executor.cut(pairs, size),
        too_big=lambda key: f"one redraw of a model of width {key[0]} (N={n}) does not fit "
                            f"in the memory of {dev}")
    return out


def _runs(chunk):
    """[(model, number of consecutive pairs)] of a model-major chunk of (model, redraw) pairs."""
    runs = []
    for name, _ in chunk:
        if runs and runs[-1][0] == name:
            runs[-1][1] += 1
        else:
            runs.append([name, 1])
    return [(name, k) for name, k in runs]


def _fill(result: BootstrapResult, raw: dict, wanted, settings, b: int) -> None:
    """Redraw scores (of the metrics ``wanted`` in each setting) into ``result``: per-model
    metrics as they are; a zoo-level metric combined over the zoo on each redraw with the
    parts the target set kept (te_gpu.combine), none where it is undefined on the target
    set."""
    from .combine import minmax_sum
    from .results import ZooResult

    names = result.models
    for i, s in enumerate(settings):
        if not wanted[i]:
            continue
        for m in wanted[i]:
            lbl, meta = ZooResult.label(m, s), catalogue.get(m)
            if lbl in result.undefined:
                continue
            if meta.zoo_level:
                parts = np.array([[list(raw[(nm, i)][0][m][r]) for nm in names]
                                  for r in range(b)], dtype=np.float64)        # (B, L, P)
                keep = [p not in result.dropped.get(lbl, {}) for p in meta.parts]
                vals = minmax_sum(parts, meta.part_weights, keep).T               # (L, B)
                result.samples[lbl] = {nm: vals[k] for k, nm in enumerate(names)}
            else:
                result.samples[lbl] = {nm: np.asarray(raw[(nm, i)][0][m], dtype=np.float64)
                                       for nm in names}
            for nm, v in result.samples[lbl].items():
                if not np.all(np.isfinite(v)):
                    raise FloatingPointError(f"{lbl} of model {nm!r} is not finite on "
                                             f"{int((~np.isfinite(v)).sum())} redraw(s)")
        if s is not None:
            result.sa_applied[s["variant"]] = {nm: float(np.mean(raw[(nm, i)][1])) for nm in names}


def _prediction_pass(result, zoo, predictions, idx, rcodes, c, metrics, opts, dev, timer,
                     bar) -> None:
    """LEEP/NCE on the resampled rows of each model's own predictions (models without
    predictions are skipped, as in score_zoo)."""
    import torch

    from . import zoo as zoo_mod
    from .engine.stats import Labels
    from ._checks import as_probabilities
    from .results import ZooResult

    b, n = idx.shape
    lab = Labels.from_codes(torch.as_tensor(rcodes, device=dev), c, torch.float64)
    with timer.stage("predictions"):
        for name in zoo:
            if name not in predictions:
                continue
            arr, _, _ = zoo_mod.open_features(name, predictions[name])
            p = torch.as_tensor(as_probabilities(np.asarray(arr), n, f"predictions of model {name!r}"),
                                dtype=torch.float64, device=dev)
            step = max(1, int(2 ** 27 // max(1, p.numel())))   # about 1 GiB of float64 at a time
            for m in metrics:
                head = catalogue.get(m).engine_fn()
                vals = torch.cat([head(p[idx[r0:r0 + step]], lab, None, **opts[m])
                                  for r0 in range(0, b, step)])
                result.samples.setdefault(ZooResult.label(m, None), {})[name] = \
                    vals.cpu().numpy().astype(np.float64)
            if bar is not None:
                bar.update(b)


# --------------------------------------------------------------------------
# against known accuracies
# --------------------------------------------------------------------------

def tau_w_interval(result: BootstrapResult, label: str, accuracies: dict, *,
                   level: float | None = None, k: int = 3, method: str | None = None) -> dict:
    """The weighted tau of ``label``'s scores against ``accuracies`` ({model: accuracy}),
    on the target set and on every redraw (the accuracies held fixed: the bootstrap is
    over the target samples the scores are computed from).

    Returns {tau_w (on the target set), lo, hi (percentile interval at ``level``),
    samples (B,), undefined (redraws whose scores are all equal: left out),
    p_best_first (share of redraws whose top-scored model is a most accurate one;
    ties share the place), p_best_top (share of redraws with a most accurate model
    among the k top-scored), k, best (the most accurate models), models}.
    Models without an accuracy, or without a score, are dropped with a warning.
    The redraws are read as ``method`` says (default: the result's).
    """
    from .rank import weighted_tau

    a = 1.0 - _check_level(result.level if level is None else level)
    models, s = result.matrix(label, method, oriented=True)
    if not isinstance(accuracies, dict):
        raise TypeError("accuracies must be a dict {model: accuracy}")
    dropped = sorted(set(models) ^ set(accuracies))
    if dropped:
        warnings.warn(f"tau_w of {label}: dropping model(s) without both a score and an "
                      f"accuracy: {dropped}", UserWarning, stacklevel=2)
    keep = [i for i, m in enumerate(models) if m in accuracies]
    models = [models[i] for i in keep]
    if len(models) < 2:
        raise ValueError(f"tau_w of {label}: fewer than 2 models have both a score and an accuracy")
    s = s[keep]
    acc = np.array([float(accuracies[m]) for m in models])
    taus = np.full(s.shape[1], np.nan)
    for r in range(s.shape[1]):
        if np.ptp(s[:, r]) > 0:
            taus[r] = weighted_tau(s[:, r], acc)
    defined = taus[np.isfinite(taus)]
    if defined.size == 0:
        raise ValueError(f"tau_w of {label}: the scores are equal on every redraw")
    best = acc == acc.max()
    k = check_int(k, "k", 1)
    point = catalogue.oriented(label, result.point[label])
    return dict(tau_w=weighted_tau([point[m] for m in models], acc),
                lo=float(np.quantile(defined, a / 2)), hi=float(np.quantile(defined, 1 - a / 2)),
                samples=taus, undefined=int(taus.size - defined.size),
                p_best_first=float(first_places(s)[best].sum(0).mean()),
                p_best_top=float((models_ahead(s)[best] < k).any(0).mean()), k=k,
                best=[m for m, bb in zip(models, best) if bb], models=models,
                level=1.0 - a)
