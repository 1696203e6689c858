"""One batch of same-width models through every requested metric head.

``score_settings`` is the unit the zoo engine and the single-model API share
(``score_batch`` is its one-setting form). Each metric is declared in
:mod:`te_gpu.catalogue`, whose entry names its engine head; heads read the
batch's shared statistics from a :class:`Shared`, which computes each of them
(class moments and Grams, the centred Gram's spectrum, the class index) on
first use, once per batch, for every head and every SA setting. The SA gate is
decided per model, the open models' PCA scores go through the same heads, and
the closed ones keep their raw scores.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import torch

from .. import catalogue
from . import dispatch
from . import ped as ped_ops
from . import sa as sa_ops
from .stats import class_padding_index
from .stats import BatchStats, Labels, batch_stats, sample_copies, spectrum


class Timer:
    """Wall time per stage; synchronises CUDA at stage boundaries so times are real.

    Stages nest: a stage's time excludes the stages opened inside it (the shared
    statistics a head computes on first use are counted as "stats", not as the
    head's).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.stages: dict[str, float] = {}
        self._inner: list[float] = []

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str):
        self._sync()
        t0 = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            self._sync()
            elapsed = time.perf_counter() - t0
            own = elapsed - self._inner.pop()
            self.stages[name] = self.stages.get(name, 0.0) + own
            if self._inner:
                self._inner[-1] += elapsed


def _null_timer():
    return Timer(torch.device("cpu"))


class Shared:
    """The statistics of one (B, N, D) batch that heads share, each computed on first use.

    ``stats`` (class means, centred Gram, within scatter), ``spectrum`` (the
    centred Gram's top eigenpairs), ``class_index`` (NCTI's per-class gather;
    labels only, so the zoo passes one in). ``targets``: real-valued targets
    (N, T) for regression, else None. ``used`` records what heads read, which
    the tests hold against each metric's declared ``needs``. ``groups``: (B, N) ids
    of the rows that are copies of one sample (a bootstrap resample), read by the
    kNN head to leave a query's copies out; None for ordinary features.
    """

    def __init__(self, x: torch.Tensor, labels: Labels, timer: Timer | None = None, *,
                 stats: BatchStats | None = None, eig=None, class_index=None, targets=None,
                 prefix: str = "", groups: torch.Tensor | None = None):
        self.x, self.labels, self.targets, self.groups = x, labels, targets, groups
        self.timer = timer or _null_timer()
        self.prefix = prefix
        self._stats, self._eig, self._class_index = stats, eig, class_index
        self.used: set = set()

    def _stats_now(self) -> BatchStats:
        if self._stats is None:
            with self.timer.stage(self.prefix + "stats"):
                self._stats = batch_stats(self.x, self.labels)
        return self._stats

    @property
    def stats(self) -> BatchStats:
        self.used.add("stats")
        return self._stats_now()

    @property
    def spectrum(self):
        self.used.add("spectrum")
        if self._eig is None:
            st = self._stats_now()
            with self.timer.stage(self.prefix + "stats"):
                self._eig = spectrum(self.x, st)
        return self._eig

    @property
    def class_index(self):
        self.used.add("class_index")
        if self._class_index is None:
            self._class_index = class_padding_index(self.labels.codes, self.labels.c)
        return self._class_index

    def subset(self, rows: list) -> "Shared":
        """The same statistics for models ``rows`` of the batch (those computed so far)."""
        idx = torch.as_tensor(rows, device=self.x.device)
        st = self._stats
        sub = None if st is None else BatchStats(st.means[idx], st.xbar[idx], st.gram_c[idx],
                                                  st.sw[idx])
        eig = None if self._eig is None else self._eig.subset(idx)
        return Shared(self.x[idx], self.labels, self.timer, stats=sub, eig=eig,
                      class_index=self._class_index, targets=self.targets, prefix=self.prefix,
                      groups=None if self.groups is None else self.groups[idx])


def metric_heads(shared: Shared, metrics, opts: dict, *, timer: Timer | None = None,
                 prefix: str = "") -> dict:
    """Every requested metric for the batch in ``shared``: {metric: (B,) tensor or parts}.

    ``opts``: {metric: resolved options} (:func:`te_gpu.catalogue.resolve_options`).
    """
    timer = timer or shared.timer
    out = {}
    for name in metrics:
        head = catalogue.get(name).engine_fn()
        with timer.stage(prefix + name):
            out[name] = head(shared.x, shared.labels, shared, **opts[name])
    return out


def sa_split(x: torch.Tensor, labels: Labels, sa_kw: dict, *, shared: "Shared",
             pca_float32: bool, timer: Timer | None = None, exact_gate: bool = True):
    """Gate every model, perturb the open ones.

    ``exact_gate=False`` (the bootstrap's redraws, which keep only the decision): a gate
    that cheap bounds on its value decide (:func:`te_gpu.engine.sa.gate_bounds`, away from
    the threshold) needs no spectrum; its ``gate_value`` is then None.
    Returns (open_mask: list[bool], z_open (B_open, N, n) or None, infos: list[dict]).
    """
    timer = timer or _null_timer()
    b, n, d = x.shape
    with timer.stage("sa_gate"):
        gate = torch.full((b,), float("nan"), dtype=torch.float64, device=x.device)
        exact = torch.ones(b, dtype=torch.bool, device=x.device)
        if not exact_gate and not sa_kw["gate"]:
            exact[:] = False                                # open, whatever the value
        elif not exact_gate:
            lower, upper = sa_ops.gate_bounds(x)
            margin = sa_ops.GATE_BOUND_MARGIN * sa_ops.GATE_THRESHOLD
            exact = (lower <= sa_ops.GATE_THRESHOLD + margin) & (upper >= sa_ops.GATE_THRESHOLD - margin)
            gate = torch.where(lower > sa_ops.GATE_THRESHOLD, torch.inf, -torch.inf).to(gate)
        rows = exact.nonzero()[:, 0].tolist()               # one host sync per batch
        if rows:
            part = shared if len(rows) == b else shared.subset(rows)
            gate[rows] = sa_ops.gate_values(part.spectrum.evals, n).to(gate)
        is_open = gate > sa_ops.GATE_THRESHOLD if sa_kw["gate"] else torch.ones_like(exact)
        open_mask = is_open.tolist()
        valued = set(rows)
        gate_list = [g if i in valued else None for i, g in enumerate(gate.tolist())]
    infos = [dict(gate_value=g, gate_threshold=sa_ops.GATE_THRESHOLD,
                  gate_margin=None if g is None else g - sa_ops.GATE_THRESHOLD,
                  applied=bool(o), variant=sa_kw["variant"], pca_dim=None,
                  displacement_norm=0.0) for g, o in zip(gate_list, open_mask)]
    if not any(open_mask):
        return open_mask, None, infos
    sel = torch.as_tensor(open_mask, device=x.device)
    n_comp = int(min(sa_kw["pca_dim"], n, d))
    with timer.stage("sa_pca"):
        # the released code's PCA runs in the input's precision, and so does this
        # one under either precision setting: in float32 it resolves components
        # only down to about eps32^(1/3) s_max (its power step cubes the spectrum),
        # so "fast" on float64 input would change what SA computes
        xo = x[sel].to(torch.float32 if pca_float32 else torch.float64)
        if shared.groups is None:
            xc = xo - xo.mean(1, keepdim=True)
            z = sa_ops.randomized_pca_batched(xc, n_comp)
        else:                # a resample: the PCA of its distinct samples, counted (63 % of N)
            first, count, of_row = sample_copies(shared.groups[sel])
            xd = torch.gather(xo, 1, first[..., None].expand(-1, -1, d))
            w = count.to(xd.dtype)[..., None]
            xc = (xd - (xd * w).sum(1, keepdim=True) / n) * (w > 0)
            z = sa_ops.randomized_pca_batched(xc, n_comp, copies=(count, of_row))
        z = sa_ops.drop_noise_components(z, d).to(x.dtype)
    with timer.stage("sa_perturb"):
        z_out, disp = dispatch.perturb(z, labels, alpha=sa_kw["alpha"], sigma=sa_kw["sigma"],
                                       force=sa_kw["force"], variant=sa_kw["variant"])
    for info, dn in zip((i for i, o in zip(infos, open_mask) if o), disp.tolist()):
        info["pca_dim"] = n_comp
        info["displacement_norm"] = dn
    return open_mask, z_out, infos


def ped_moved(x: torch.Tensor, labels: Labels, ped_kw: dict, timer: Timer, stats=None):
    """PED on every model of the batch (SPEC 10.9), rescaled by ``stats`` = (mean, std),
    each (B, D), of each model's reference features, or by the features' own: the moved
    features and one info per model (steps taken, first step's move)."""
    centre, spread = (None, None) if stats is None else stats
    with timer.stage("ped"):
        z, info = ped_ops.ped_batched(x, labels, centre=centre, spread=spread,
                                      **{k: v for k, v in ped_kw.items()
                                         if k not in ("variant", "reference")})
    infos = [dict(variant=catalogue.PED, applied=s > 0, steps=s, first_move=f)
             for s, f in zip(info["steps"].tolist(), info["first_move"].tolist())]
    return z, infos


def score_settings(x: torch.Tensor, labels: Labels, metrics, settings, *, opts: dict,
                   pca_float32: bool = False, timer: Timer | None = None, class_index=None,
                   groups: torch.Tensor | None = None, ped_stats=None, wanted=None,
                   exact_gate: bool = True):
    """Scores of B same-width models for several SA settings at once.

    ``settings``: a list of None (raw features) and resolved SA (or PED) option dicts;
    ``opts``: {metric: resolved options}; ``wanted``: per setting, the metrics to score
    there (None: every metric in every setting). Returns one ``({metric: per-model
    values}, sa infos or None)`` per setting. The work is shared: one
    :class:`Shared` serves the raw metrics, NCTI's PCA and every SA gate; a
    model whose gate stays closed reuses its raw scores. ``groups``: see :class:`Shared`.
    ``ped_stats``: (mean, std), each (B, D), of the models' PED reference features, or None.
    ``exact_gate``: see :func:`sa_split`.
    """
    timer = timer or _null_timer()
    b = x.shape[0]
    wanted = [tuple(metrics)] * len(settings) if wanted is None else [tuple(w) for w in wanted]
    shared = Shared(x, labels, timer, class_index=class_index, groups=groups)
    raw: dict = {}  # metric -> per-model raw values of the whole batch, each computed once

    def raw_lists(ms, rows=None):
        todo = [m for m in ms if m not in raw]
        if todo and (rows is None or len(rows) == b):
            raw.update(_to_lists(metric_heads(shared, todo, opts, timer=timer), b))
            todo = []
        if rows is None:
            return {m: raw[m] for m in ms}
        got = {m: [raw[m][i] for i in rows] for m in ms if m in raw}
        if todo:      # closed models only: their raw scores of these metrics
            got.update(_to_lists(metric_heads(shared.subset(rows), todo, opts, timer=timer),
                                 len(rows)))
        return got

    out = []
    for sa_kw, ms in zip(settings, wanted):
        if sa_kw is None:
            out.append((raw_lists(ms), None))
            continue
        if sa_kw["variant"] == catalogue.PED:
            z, infos = ped_moved(x, labels, sa_kw, timer, ped_stats)
            moved = Shared(z, labels, timer, class_index=shared._class_index, prefix="ped_",
                           groups=groups)
            out.append((_to_lists(metric_heads(moved, ms, opts, timer=timer, prefix="ped_"),
                                  b), infos))
            continue
        open_mask, z, infos = sa_split(x, labels, sa_kw, shared=shared,
                                       pca_float32=pca_float32, timer=timer,
                                       exact_gate=exact_gate)
        per_model = [None] * b
        closed = [i for i, o in enumerate(open_mask) if not o]
        opened = [i for i, o in enumerate(open_mask) if o]
        if closed:  # SA leaves these features as they are: their raw scores stand
            res = raw_lists(ms, closed)
            for j, i in enumerate(closed):
                per_model[i] = {m: v[j] for m, v in res.items()}
        if opened:
            sa_shared = Shared(z, labels, timer, class_index=shared._class_index, prefix="sa_",
                               groups=None if groups is None else groups[opened])
            res = _to_lists(metric_heads(sa_shared, ms, opts, timer=timer, prefix="sa_"),
                            len(opened))
            for j, i in enumerate(opened):
                per_model[i] = {m: v[j] for m, v in res.items()}
        out.append(({m: [pm[m] for pm in per_model] for m in ms}, infos))
    return out


def score_batch(x: torch.Tensor, labels: Labels, metrics, *, sa_kw: dict | None, opts: dict,
                pca_float32: bool = False, timer: Timer | None = None, class_index=None):
    """Scores of B same-width models for one setting: ({metric: per-model values}, infos).

    Per-model values are floats, or (seli, ncc, vc) tuples for ``ncti``.
    """
    return score_settings(x, labels, metrics, [sa_kw], opts=opts, pca_float32=pca_float32,
                          timer=timer, class_index=class_index)[0]


def _to_lists(res: dict, b: int) -> dict:
    out = {}
    for m, v in res.items():
        if isinstance(v, tuple):
            cols = [t.tolist() for t in v]
            out[m] = [tuple(c[j] for c in cols) for j in range(b)]
        else:
            out[m] = v.tolist()
    return out
