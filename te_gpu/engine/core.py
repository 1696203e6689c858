"""One batch of same-width models through every requested metric head.

``score_settings`` is the unit the zoo engine and the single-model API share
(``score_batch`` is its one-setting form): statistics and the centred Gram's
spectrum are computed once per batch and handed to each head and every SA
setting; the SA gate is decided per model, the open models' PCA scores go
through the same heads, and the closed ones keep their raw scores.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import torch

from . import dispatch
from . import sa as sa_ops
from .gbc import gbc_batched
from .lda import lda_batched
from .logme import logme_batched
from .ncti import class_padding_index, ncti_parts_batched
from .sfda import sfda_batched
from .stats import BatchStats, Labels, batch_stats, spectrum

METRICS = ("logme", "sfda", "lda", "gbc", "nleep", "ncti")
DEFAULT_OPTIONS = dict(corrected=False, gaussian="spherical", components_per_class=5, seed=0,
                       lda_scaling="n_minus_c")


class Timer:
    """Wall time per stage; synchronises CUDA at stage boundaries so times are real."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stages: dict[str, float] = {}

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str):
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - t0


def _null_timer():
    return Timer(torch.device("cpu"))


def metric_heads(x: torch.Tensor, labels: Labels, metrics, opts: dict, *, st=None, eig=None,
                 class_index=None, timer: Timer | None = None, prefix: str = "") -> dict:
    """Every requested metric for a (B, N, D) batch: {metric: (B,) tensor or (seli, ncc, vc)}."""
    timer = timer or _null_timer()
    b, n, d = x.shape
    out = {}
    needs_stats = any(m in metrics for m in ("sfda", "ncti")) or ("logme" in metrics and n > d)
    if st is None and (needs_stats or any(m in metrics for m in ("lda", "gbc"))):
        with timer.stage(prefix + "stats"):
            st = batch_stats(x, labels)
    if "logme" in metrics:
        with timer.stage(prefix + "logme"):
            xty = st.class_sums(labels) if n > d else None
            out["logme"] = logme_batched(x, labels.onehot, corrected=opts["corrected"],
                                         gram=st.gram(n) if n > d else None, xty=xty)
    if "lda" in metrics:
        with timer.stage(prefix + "lda"):
            out["lda"] = lda_batched(x, labels, st.means)
    if "sfda" in metrics:
        with timer.stage(prefix + "sfda"):
            out["sfda"] = sfda_batched(x, labels, st.means, st.sw)
    if "gbc" in metrics:
        with timer.stage(prefix + "gbc"):
            out["gbc"] = gbc_batched(x, labels, st.means, gaussian=opts["gaussian"])
    if "ncti" in metrics:
        with timer.stage(prefix + "ncti"):
            out["ncti"] = ncti_parts_batched(x, labels, st, eig=eig, lda_scaling=opts["lda_scaling"],
                                             class_index=class_index)
    if "nleep" in metrics:
        from .nleep import nleep_batched

        with timer.stage(prefix + "nleep"):
            out["nleep"] = nleep_batched(x, labels.codes, labels.c,
                                         components_per_class=opts["components_per_class"],
                                         seed=opts["seed"])
    return out


def sa_split(x: torch.Tensor, labels: Labels, sa_kw: dict, *, eig, pca_float32: bool,
             timer: Timer | None = None):
    """Gate every model, perturb the open ones.

    Returns (open_mask: list[bool], z_open (B_open, N, n) or None, infos: list[dict]).
    """
    timer = timer or _null_timer()
    b, n, d = x.shape
    with timer.stage("sa_gate"):
        gate = sa_ops.gate_values(eig.evals, n)
        is_open = (gate > sa_ops.GATE_THRESHOLD) if sa_kw["gate"] else torch.ones_like(gate, dtype=torch.bool)
        open_mask = is_open.tolist()                          # one host sync per batch
        gate_list = gate.tolist()
    infos = [dict(gate_value=g, gate_threshold=sa_ops.GATE_THRESHOLD,
                  gate_margin=g - sa_ops.GATE_THRESHOLD, applied=bool(o), variant=sa_kw["variant"],
                  pca_dim=None, displacement_norm=0.0) for g, o in zip(gate_list, open_mask)]
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
        xc = xo - xo.mean(1, keepdim=True)
        z = sa_ops.drop_noise_components(sa_ops.randomized_pca_batched(xc, n_comp), d).to(x.dtype)
    with timer.stage("sa_perturb"):
        z_out, disp = dispatch.perturb(z, labels, alpha=sa_kw["alpha"], sigma=sa_kw["sigma"],
                                       force=sa_kw["force"], variant=sa_kw["variant"])
    for info, dn in zip((i for i, o in zip(infos, open_mask) if o), disp.tolist()):
        info["pca_dim"] = n_comp
        info["displacement_norm"] = dn
    return open_mask, z_out, infos


def _subset_stats(st: BatchStats, eig, idx: torch.Tensor):
    sub = BatchStats(st.means[idx], st.xbar[idx], st.gram_c[idx], st.sw[idx])
    return sub, (None if eig is None else eig.subset(idx))


def score_settings(x: torch.Tensor, labels: Labels, metrics, settings, *, opts: dict,
                   pca_float32: bool = False, timer: Timer | None = None, class_index=None):
    """Scores of B same-width models for several SA settings at once.

    ``settings``: a list of None (raw features) and resolved SA option dicts.
    Returns one ``({metric: per-model values}, sa infos or None)`` per setting.
    The work is shared: one set of batch statistics (and one eigendecomposition
    of the centred Gram) serves the raw metrics, NCTI's PCA and every SA gate;
    a model whose gate stays closed reuses its raw scores.
    """
    timer = timer or _null_timer()
    b = x.shape[0]
    if class_index is None and "ncti" in metrics:
        class_index = class_padding_index(labels.codes, labels.c)
    any_sa = any(s is not None for s in settings)
    with timer.stage("stats"):
        st = batch_stats(x, labels)
        eig = spectrum(x, st) if (any_sa or "ncti" in metrics) else None
    raw = None  # per-model raw values, computed once if any setting needs them

    def raw_lists(rows=None):
        nonlocal raw
        if raw is None and (rows is None or len(rows) == b):
            raw = _to_lists(metric_heads(x, labels, metrics, opts, st=st, eig=eig, timer=timer,
                                         class_index=class_index), b)
        if raw is not None:
            return raw if rows is None else {m: [v[i] for i in rows] for m, v in raw.items()}
        idx = torch.as_tensor(rows, device=x.device)
        sub, sub_eig = _subset_stats(st, eig, idx)
        return _to_lists(metric_heads(x[idx], labels, metrics, opts, st=sub, eig=sub_eig,
                                      timer=timer, class_index=class_index), len(rows))

    out = []
    for sa_kw in settings:
        if sa_kw is None:
            out.append((raw_lists(), None))
            continue
        open_mask, z, infos = sa_split(x, labels, sa_kw, eig=eig,
                                       pca_float32=pca_float32, timer=timer)
        per_model = [None] * b
        closed = [i for i, o in enumerate(open_mask) if not o]
        opened = [i for i, o in enumerate(open_mask) if o]
        if closed:  # SA leaves these features as they are: their raw scores stand
            res = raw_lists(closed)
            for j, i in enumerate(closed):
                per_model[i] = {m: v[j] for m, v in res.items()}
        if opened:
            res = _to_lists(metric_heads(z, labels, metrics, opts, timer=timer,
                                         class_index=class_index, prefix="sa_"), len(opened))
            for j, i in enumerate(opened):
                per_model[i] = {m: v[j] for m, v in res.items()}
        out.append(({m: [pm[m] for pm in per_model] for m in metrics}, infos))
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
