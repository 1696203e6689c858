"""Which model to fine-tune, and how sure to be, without any accuracies (``te-gpu recommend``).

:func:`recommend` scores a zoo with a set of metrics on B class-stratified redraws of the
target set (:func:`te_gpu.bootstrap.bootstrap_zoo`), combines the metrics by their mean
rank on every redraw (the consensus), and says in plain words what the redraws show:

    lite0: first in 87 % of resamples, in the top 3 in 100 %; the metrics agree
    the metrics disagree: logme and sfda pick lite0 (first in 80 % and 74 %), ncti picks lite2 (55 %)
    no clear winner: fine-tune the top 2 (lite0, lite2): one of them is first in 93 % of resamples

The default metric set (:data:`DEFAULT_METRICS`) and why: bench/RESULTS.md, "recommend".

Only as many redraws as the verdict needs: ``replicates`` (``-B``) is a cap, and
the redraws stop once every share of the consensus (first place and top k, of every
model) has a Monte-Carlo standard error of at most ``mc_error`` (default
:data:`MC_ERROR` = 0.05: at most 100 redraws for a share of 1/2, fewer for shares
near 0 or 1; :func:`settled`, SPEC 11). The output says how many were used
and why. Cost near its floor: bench/RESULTS.md, "recommend near its floor".
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import catalogue
from ._checks import check_int
from .bootstrap import (DEFAULT_LEVEL, DEFAULT_REPLICATES, BootstrapResult, first_places,
                        models_ahead)

__all__ = ["DEFAULT_METRICS", "Recommendation", "recommend",
           "recommend_per_regime", "verdict", "format_recommendation"]

# the metric set of a custom run (``metrics=`` without ``transfer``): linear-probe evidence
DEFAULT_METRICS = ("lda", "ncti", "knn")
# Without transfer= the fast default set answers, and says for which regime it has evidence
# (bench/RESULTS.md "recommend per transfer regime": lft 5 of 7 evidence zoos, lbft 5 of 7,
# finetune 3 of 7). The regimes' own sets need SA or SFDA on every redraw, several times
# the cost of this set's (README, "Per transfer regime"), so none is the default.
DEFAULT_NOTE = ("default set (lda, ncti, knn): its evidence is for a linear probe; it ordered 3 "
                "of 7 evidence zoos well for full fine-tuning. Say how the model will be trained: "
                "--transfer finetune | lbft | lft (slower: SA on every resample)")
CLEAR = 0.5          # a first-place share below this is "no clear winner"
COVER = 0.9          # the top-k named when there is no clear winner hold the first place this often
# The stopping rule (SPEC 11): redraws go on until every share of the consensus (first place,
# top k) has a Monte-Carlo standard error <= MC_ERROR; never before MIN_REDRAWS.
MC_ERROR = 0.05
MIN_REDRAWS = 20


@dataclass
class Recommendation:
    """The outcome of :func:`recommend`.

    ``order``: models by consensus (mean rank over ``labels`` on the target set, best
    first); ``p_first`` / ``p_top``: each model's share of redraws on which the consensus
    puts it first / in the top ``k``; ``picks``: {label: the model that label ranks first
    on the target set}; ``lines``: the verdict, plain sentences; ``boot``: every score.
    """
    boot: BootstrapResult
    labels: list
    order: list
    p_first: dict
    p_top: dict
    k: int
    picks: dict
    lines: list = field(default_factory=list)
    transfer: str | None = None   # the regime (te_gpu.regimes) the metric set answers for
    widths: dict = field(default_factory=dict)   # {model: feature width D}, where known

    @property
    def best(self) -> str:
        return self.order[0]

    @property
    def redraws(self) -> dict:
        """{done, cap, stopped_by}: how many redraws the shares read, and why no more."""
        return self.boot.options.get("redraws", dict(done=self.boot.replicates,
                                                     cap=self.boot.replicates, stopped_by="the cap"))

    def to_dict(self, samples: bool = False) -> dict:
        return dict(best=self.best, verdict=self.lines, transfer=self.transfer,
                    labels=self.labels, order=self.order, widths=self.widths,
                    p_first=self.p_first, p_top=self.p_top, k=self.k, picks=self.picks,
                    redraws=self.redraws, bootstrap=self.boot.to_dict(samples))


def recommend(zoo, labels=None, *, transfer: str | None = None, metrics=None,
              replicates: int = DEFAULT_REPLICATES, seed: int = 0, level: float = DEFAULT_LEVEL,
              sa=None, sa_options=None, options=None, predictions=None, device=None,
              precision: str = "exact", batch_size: int | None = None, k: int = 3,
              progress: bool = True, mc_error: float | None = MC_ERROR,
              ped_reference=None) -> Recommendation:
    """Rank ``zoo`` by the consensus of a metric set and say how stable that ranking is.

    ``transfer``: how the chosen model will be trained, ``"finetune"`` (the whole network),
    ``"lbft"`` (the last block) or ``"lft"`` (a linear probe on frozen features): the
    metric set, SA included, is that regime's (:mod:`te_gpu.regimes`, chosen on real zoos
    with measured accuracies), and the verdict names the regime and says where its
    evidence is weak. ``metrics`` (with ``sa``) instead: a set of your own. Neither: the
    fast :data:`DEFAULT_METRICS`, and the verdict says which regime that set has evidence
    for (:data:`DEFAULT_NOTE`). ``sa_options``: SA numbers (alpha, sigma, ...) for a
    regime's SA labels. Other arguments as :func:`te_gpu.bootstrap.bootstrap_zoo`; ``k``:
    the "top k" of the shares. Every label of the set takes part in the consensus with
    equal weight. ``replicates`` is the cap: redraws stop as soon as the verdict is
    settled to the Monte-Carlo error ``mc_error`` (:func:`settled`); None: all of them.
    """
    sets = _label_sets(transfer, metrics, sa)
    default = transfer is None and metrics is None
    boot = _bootstrap_for(zoo, labels, sets, metrics=DEFAULT_METRICS if default else metrics,
                          sa=sa, sa_options=sa_options, k=k, mc_error=mc_error,
                          replicates=replicates, seed=seed, level=level, options=options,
                          predictions=predictions, device=device, precision=precision,
                          batch_size=batch_size, progress=progress, ped_reference=ped_reference)
    name, labels_ = next(iter(sets.items()))
    rec = from_bootstrap(boot, labels_, k=k, transfer=name, widths=feature_widths(zoo))
    if default:
        rec.lines.append(DEFAULT_NOTE)
    return rec


def recommend_per_regime(zoo, labels=None, *, k: int = 3, sa_options=None,
                         mc_error: float | None = MC_ERROR, **bootstrap_args) -> dict:
    """{regime: :class:`Recommendation`} for every transfer regime, from one set of redraws
    (the union of the regimes' metric sets); arguments as :func:`recommend` without
    ``transfer``, ``metrics`` and ``sa``."""
    from .regimes import REGIMES

    sets = {name: r.labels for name, r in REGIMES.items()}
    boot = _bootstrap_for(zoo, labels, sets, sa_options=sa_options, k=k, mc_error=mc_error,
                          **bootstrap_args)
    widths = feature_widths(zoo)
    return {name: from_bootstrap(boot, lbs, k=k, transfer=name, widths=widths)
            for name, lbs in sets.items()}


def feature_widths(zoo) -> dict:
    """{model: D}, each model's feature width read from its array's shape (no data read)."""
    from .zoo import open_features

    return {m: int(open_features(m, item)[1][-1]) for m, item in zoo.items()}


def _label_sets(transfer, metrics, sa) -> dict:
    """{regime name or None: the labels of the consensus}; None: every label of the
    metrics x SA settings asked for."""
    from .regimes import get

    if transfer is not None and (metrics is not None or sa is not None):
        raise ValueError("give either transfer= (its metric set) or metrics=/sa= (your own), "
                         "not both")
    if transfer is not None:
        return {transfer: get(transfer).labels}
    return {None: None}


def _bootstrap_for(zoo, labels, sets, *, metrics=None, sa=None, sa_options=None, k=3,
                   mc_error=MC_ERROR, **bootstrap_args):
    """The redraws of :func:`recommend` (``bootstrap_args``: those of
    :func:`te_gpu.bootstrap.bootstrap_zoo`), stopped once every consensus of ``sets`` is
    settled; regimes' sets give the metrics and SA settings (their union)."""
    from .bootstrap import bootstrap_zoo
    from .regimes import metrics_and_sa

    k = check_int(k, "k", 1)
    if mc_error is not None and (isinstance(mc_error, bool) or not isinstance(mc_error, (int, float))
                                 or not 0 < mc_error < 0.5):
        raise ValueError(f"mc_error must be a number between 0 and 0.5 (e.g. 0.05), got {mc_error!r}")
    only = None
    if None not in sets:                     # regimes: the union of their labels, and only those
        only = list(dict.fromkeys(lb for lbs in sets.values() for lb in lbs))
        metrics, settings = metrics_and_sa(only)
        sa = [None if v is None else dict(sa_options or {}, variant=v) for v in settings]
    elif sa_options:
        raise ValueError("sa_options go with transfer=; with metrics=, pass SA settings as sa=")
    label_sets = [lbs for lbs in sets.values() if lbs is not None] or [None]
    until = None if mc_error is None else \
        (lambda res: settled(res, k=k, error=float(mc_error), label_sets=label_sets))
    return bootstrap_zoo(zoo, labels, metrics=metrics, sa=sa, until=until, only=only,
                         **bootstrap_args)


def settled(boot: BootstrapResult, *, k: int = 3, error: float = MC_ERROR,
            label_sets=(None,)) -> tuple:
    """Is the verdict of ``boot``'s redraws so far settled? ``(reason or None, redraws wanted)``.

    A share p read from R redraws has the Monte-Carlo standard error sqrt(p (1 - p) / R)
    (p taken as (p R + 1) / (R + 2), so that a share of 0 or 1 after few redraws still
    counts as uncertain). Settled when every model's share of first places and of the top
    k in the consensus has a standard error <= ``error`` (so at most 0.25 / error^2
    redraws: 100 at 0.05), never before ``MIN_REDRAWS``. Otherwise the redraws this asks
    for at the current shares.

    Two models whose first-place shares differ by less than about two such errors are
    not told apart by more redraws at any affordable count (0.55 against 0.42 would need
    about 265 for two errors of their difference): the verdict names both ("also first
    in ..."), with shares good to ``error``.
    """
    import math

    import numpy as np

    shares = []
    for labels in label_sets:               # each consensus asked for (None: every label)
        _, samples, _ = boot.consensus(labels)
        shares += [first_places(samples).mean(1), (models_ahead(samples) < k).mean(1)]
    r = samples.shape[1]
    shares = np.concatenate(shares)
    p = (shares * r + 1) / (r + 2)
    wanted = max(MIN_REDRAWS, float((p * (1 - p)).max()) / error ** 2)
    if r >= wanted:
        return f"the verdict is settled (every share's Monte-Carlo standard error <= {error:g})", r
    return None, math.ceil(wanted)


def from_bootstrap(boot: BootstrapResult, labels=None, *, k: int = 3,
                   transfer: str | None = None, widths=None) -> Recommendation:
    """A :class:`Recommendation` from redraws already computed (all labels by default);
    ``transfer``: the regime whose metric set ``labels`` is (named by the verdict);
    ``widths``: {model: feature width}, for the static rankings the regime's evidence
    names (:func:`feature_widths`). Labels undefined for this zoo (a zoo-level score,
    :mod:`te_gpu.combine`) are left out."""
    if labels is not None:
        labels = [lb for lb in labels if lb not in boot.undefined]
    labels = list(labels or boot.labels)
    models, samples, point = boot.consensus(labels)
    share = dict(zip(models, first_places(samples).mean(1).tolist()))
    top = dict(zip(models, (models_ahead(samples) < k).mean(1).tolist()))
    # the consensus on the target set; equal mean ranks: the one first more often
    order = sorted(models, key=lambda m: (-point[m], -share[m], models.index(m)))
    best_up = {lb: catalogue.oriented(lb, boot.point[lb]) for lb in labels}
    picks = {lb: max(best_up[lb], key=lambda m: (best_up[lb][m], -boot.models.index(m)))
             for lb in labels}
    rec = Recommendation(boot=boot, labels=labels, order=order, p_first=share, p_top=top, k=k,
                         picks=picks, transfer=transfer,
                         widths={m: int(widths[m]) for m in boot.models} if widths else {})
    rec.lines = verdict(rec)
    return rec


def _pct(p: float) -> str:
    return f"{100 * p:.0f} %"


def _names(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def verdict(rec: Recommendation) -> list:
    """The plain sentences of a recommendation (see the module's docstring)."""
    best = rec.best
    lines = []
    agree = len(set(rec.picks.values())) == 1
    head = (f"{best}: first in {_pct(rec.p_first[best])} of resamples, in the top {rec.k} in "
            f"{_pct(rec.p_top[best])}")
    if len(rec.labels) == 1:
        lines.append(f"{head} ({rec.labels[0]})")
    elif agree:
        lines.append(f"{head}; the metrics agree")
    else:
        lines.append(f"{head}; the metrics disagree: " + _disagreement(rec))
    if rec.p_first[best] < CLEAR:
        ranked = sorted(rec.order, key=lambda m: -rec.p_first[m])
        cum, chosen = 0.0, []
        for m in ranked:
            chosen.append(m)
            cum += rec.p_first[m]
            if cum >= COVER - 1e-9:
                break
        if len(chosen) < len(rec.order):
            lines.append(f"no clear winner: fine-tune the top {len(chosen)} ({', '.join(chosen)}): "
                         f"one of them is first in {_pct(cum)} of resamples")
        else:
            lines.append("no clear winner: the first place moves between all the models from "
                         "resample to resample; the target set is too small or the models too alike "
                         "to choose between them")
    runner = [m for m in rec.order[1:] if rec.p_first[m] >= 0.05]
    if runner and rec.p_first[best] >= CLEAR:
        lines.append("also first in some resamples: " + ", ".join(
            f"{m} ({_pct(rec.p_first[m])})" for m in runner[:3]))
    if rec.transfer is not None:
        from .regimes import REGIMES, get, weak_line

        regime = get(rec.transfer)
        others = ", ".join(name for name in REGIMES if name != rec.transfer)
        lines.insert(0, f"for {regime.what} (--transfer {rec.transfer}; the other "
                        f"regimes: --transfer {others})")
        lines += [line for line in (weak_line(rec.transfer), regime.caveat) if line]
        lines += static_lines(rec, regime.statics_named)
    return lines


def static_lines(rec: Recommendation, names) -> list:
    """For each static ranking of ``names`` (te_gpu.regimes.STATIC_NAMES keys) that the
    zoo's feature widths give, one line with its top ``rec.k`` models on this zoo (and
    those tied with the last)."""
    from .baselines import FACT_NAMES, REVERSED, with_reversed
    from .regimes import STATIC_NAMES

    if not rec.widths:
        return []
    width = FACT_NAMES["feature_width"]
    rankings = with_reversed({width: rec.widths})        # {name: {model: value}}, higher first
    given = {"width": width, "width reversed": REVERSED[width]}
    place = {m: i for i, m in enumerate(rec.order)}      # ties: the consensus's order
    lines = []
    for name in (n for n in names if n in given):
        values = rankings[given[name]]
        ranked = sorted(rec.order, key=lambda m: (-values[m], place[m]))
        edge = values[ranked[min(rec.k, len(ranked)) - 1]]
        shown = [m for m in ranked if values[m] >= edge]
        lines.append(f"{STATIC_NAMES[name]}, on this zoo (no target data): "
                     + ", ".join(f"{m} ({rec.widths[m]})" for m in shown))
    return lines


def _disagreement(rec: Recommendation) -> str:
    by_model: dict = {}
    for lb, m in rec.picks.items():
        by_model.setdefault(m, []).append(lb)
    parts = []
    for m, lbs in sorted(by_model.items(), key=lambda kv: -len(kv[1])):
        shares = [rec.boot.p_first(lb)[m] for lb in lbs]
        verb = "picks" if len(lbs) == 1 else "pick"
        parts.append(f"{_names(lbs)} {verb} {m} (first in {_names([_pct(p) for p in shares])})")
    return "; ".join(parts)


def format_recommendation(rec: Recommendation, top: int = 5) -> str:
    """A table of the ``top`` models (consensus order): share of first places and of the top
    k, and each label's score with its interval; then the verdict."""
    boot = rec.boot
    intervals = {lb: boot.interval(lb) for lb in rec.labels}
    level = f"{100 * boot.level:.0f} %"
    rows = []
    for i, m in enumerate(rec.order[:top]):
        cells = [str(i + 1), m, f"{100 * rec.p_first[m]:.0f}", f"{100 * rec.p_top[m]:.0f}"]
        for lb in rec.labels:
            lo, hi = intervals[lb][m]
            cells.append(f"{boot.point[lb][m]:.4g} [{lo:.4g}, {hi:.4g}]")
        rows.append(cells)
    head = ["#", "model", "first %", f"top-{rec.k} %", *(f"{lb} [{level}]" for lb in rec.labels)]
    widths = [max(len(r[j]) for r in rows + [head]) for j in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(w) if j == 1 else c.rjust(w)   # noqa: E731
                                  for j, (c, w) in enumerate(zip(cells, widths)))
    out = [fmt(head), *map(fmt, rows)]
    if len(rec.order) > top:
        out.append(f"... {len(rec.order) - top} more model(s)")
    out.append("")
    out.extend(rec.lines)
    rd = rec.redraws
    out.append(f"{rd['done']} resamples of at most {rd['cap']}: {rd['stopped_by']}")
    return "\n".join(out)


# --------------------------------------------------------------------------
# against known accuracies (optional): tau_w intervals and figures
# --------------------------------------------------------------------------

CONSENSUS = "consensus"


def _consensus_result(rec: Recommendation) -> BootstrapResult:
    """The consensus (minus the mean rank) as a one-label result, read as it is."""
    boot = rec.boot
    models, samples, point = boot.consensus(rec.labels)
    return BootstrapResult(models=models, replicates=boot.replicates, seed=boot.seed,
                           level=boot.level, method="percentile", point={CONSENSUS: point},
                           samples={CONSENSUS: dict(zip(models, samples))})


def against_truth(rec: Recommendation, accuracy: dict) -> list:
    """Per label, and for the consensus: tau_w on the target set with its interval over the
    redraws, and the shares of redraws whose first model is a most accurate one and whose
    top k holds one (:func:`te_gpu.bootstrap.tau_w_interval`)."""
    import warnings

    from .bootstrap import tau_w_interval

    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # models without accuracy: said once below
        for lb in rec.labels:
            rows.append(dict(label=lb, **tau_w_interval(rec.boot, lb, accuracy, k=rec.k)))
        if len(rec.labels) > 1:
            rows.append(dict(label=CONSENSUS, **tau_w_interval(_consensus_result(rec), CONSENSUS,
                                                                accuracy, k=rec.k)))
    return rows


def format_truth(rows: list, level: float, statics: dict | None = None, source: str = "",
                 checked: dict | None = None) -> str:
    """:func:`against_truth`'s rows; with ``statics`` ({name: tau_w} of the rankings that
    ignore the target data, on the rows' models), those and the check of the last row (the
    consensus) that the regimes' sets were chosen by (``checked``, the caller's
    :func:`te_gpu.regimes.check` of it, else computed here). ``source`` names the accuracies
    (e.g. "wheels/lft/fmnist32")."""
    from .regimes import check, check_line

    best = rows[0]["best"]
    lines = [f"against the accuracies{f' of {source}' if source else ''} (the most accurate: "
             f"{', '.join(best)}; intervals over the resamples, {100 * level:.0f} %):"]
    width = max(len(r["label"]) for r in rows)
    for r in rows:
        lines.append(f"  {r['label'].ljust(width)}  tau_w {r['tau_w']:+.3f} [{r['lo']:+.3f}, "
                     f"{r['hi']:+.3f}]  most accurate first in {_pct(r['p_best_first'])}, "
                     f"in the top {r['k']} in {_pct(r['p_best_top'])}")
    if statics is not None:
        if statics:
            lines.append("  static rankings (no target data): "
                         + ", ".join(f"{name} {t:+.3f}" for name, t in statics.items()))
        lines.append(check_line(checked or check(rows[-1], statics)))
    return "\n".join(lines)
