r"""Static baseline rankings: what a metric must beat to be worth computing.

A transferability metric looks at the target data. A *static* ranking does not:
it orders the zoo once by a fact about each model (its ImageNet top-1
accuracy, its parameter count, its feature width) or by any prior the user
gives, and uses that order for every target. On the shipped group1 fine-tune
accuracies a ranking by ImageNet top-1 reaches a mean :math:`\tau_w` of 0.654
over the 11 data sets, above most published metrics (LogME 0.509; cf.
arXiv 2510.06448). A metric that does not beat the best static ranking adds
nothing a table lookup would not give.

Definitions (``te_gpu.rank.weighted_tau`` throughout):

* static ranking by fact :math:`f`: scores :math:`s_l = f_l` for every model
  :math:`l`, higher ranked first (feature width also as :math:`s_l = -f_l`, narrowest
  first: :data:`REVERSED`); its :math:`\tau_w` on data set :math:`d` is
  :math:`\tau_w(f, a^{(d)})` over the models with an accuracy :math:`a^{(d)}`.
  When :math:`f` is equal for all those models the ranking is constant and
  :math:`\tau_w` is undefined (no order to compare): reported as such, never
  as 0 or NaN.
* random ranking: a uniformly random order :math:`\pi` of the models, one per
  draw, used for every data set (a static ranking chosen at random). Its
  expected :math:`\tau_w` and spread are estimated by :math:`R` seeded draws:
  mean and standard deviation (ddof = 0) of :math:`\tau_w(\pi_r, a^{(d)})`
  per data set and of the mean over data sets, :math:`r = 1..R`.

Facts ship in ``te_gpu/data/model_facts.json`` with their sources; a prior is
a JSON object ``{model: value}`` (higher = better).
"""
from __future__ import annotations

import json
import math
import numbers
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = [
    "FACT_NAMES",
    "REVERSED",
    "facts",
    "fact_sources",
    "facts_groups",
    "group_with_facts",
    "static_rankings",
    "with_reversed",
    "read_prior",
    "check_prior",
    "static_tau",
    "weighted_tau_of_orders",
    "random_ranking",
    "baseline_table",
]

# the facts of model_facts.json, in the order tables show them, with their display names
FACT_NAMES = {"imagenet_top1": "ImageNet top-1", "params": "parameters", "feature_width": "feature width"}
# static rankings read in reverse too, by display name: fully fine-tuned on small images,
# narrow early features won on the wheels zoos (bench/RESULTS.md, "recommend per transfer
# regime"), and te_gpu.regimes points users at that order
REVERSED = {"feature width": "feature width, narrowest first"}

# sign comparisons held in memory at once by weighted_tau_of_orders (int8 each)
_COMPARISONS_PER_BLOCK = 1 << 22


def _read_facts_file() -> dict:
    text = resources.files("te_gpu").joinpath("data", "model_facts.json").read_text(encoding="utf-8")
    return json.loads(text)


def facts_groups() -> list:
    """The zoos with shipped facts (``group1``, ``group2``, ``wheels``)."""
    return [name for name in _read_facts_file() if not name.startswith("_")]


def _group_entry(group: str) -> dict:
    data = _read_facts_file()
    valid = [name for name in data if not name.startswith("_")]
    if group not in valid:
        raise ValueError(f"no model facts for {group!r}; shipped: {', '.join(valid)}")
    return data[group]


def facts(group: str) -> dict:
    """``{model: {fact: value}}`` of a shipped zoo (a fresh dict on every call).

    Facts: ``params`` (parameter count), ``feature_width`` (penultimate feature
    dimension), ``imagenet_top1`` (ImageNet-1K top-1 %, group1 only) and, for
    group1, ``weights`` (the torchvision weights the numbers are from).
    """
    return _group_entry(group)["models"]


def fact_sources(group: str) -> dict:
    """``{fact: where the numbers come from}`` for a shipped zoo."""
    return _group_entry(group)["sources"]


def group_with_facts(models) -> str | None:
    """The first shipped zoo whose facts name every one of ``models``, or None."""
    wanted = set(models)
    for group in facts_groups():
        if wanted and wanted <= set(facts(group)):
            return group
    return None


def with_reversed(rankings: dict) -> dict:
    """``rankings`` ({display name: {model: value}}) and, after them, the reversed order of
    each ranking named in :data:`REVERSED`."""
    out = dict(rankings)
    for name, reversed_name in REVERSED.items():
        if name in rankings:
            out[reversed_name] = {m: -v for m, v in rankings[name].items()}
    return out


def static_rankings(group: str, models=None) -> dict:
    """``{fact: {model: value}}`` for each fact of ``FACT_NAMES`` known for all ``models``.

    ``models`` defaults to the zoo's; a fact missing for any of them is left out
    (group2 has no ImageNet top-1). Unknown models raise ``ValueError``.
    """
    table = facts(group)
    models = list(table) if models is None else list(models)
    unknown = [m for m in models if m not in table]
    if unknown:
        raise ValueError(f"no {group} facts for models {unknown}; {group} has {', '.join(table)}")
    return {fact: {m: float(table[m][fact]) for m in models}
            for fact in FACT_NAMES if all(fact in table[m] for m in models)}


# --------------------------------------------------------------------------
# a user's prior
# --------------------------------------------------------------------------

def _prior_value(model, value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{where}: the value of {model!r} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{where}: the value of {model!r} is not finite ({out})")
    return out


def read_prior(path) -> dict:
    """A prior ``{model: value}`` (higher = better) from a JSON file.

    Keys starting with ``_`` are comments (as in the shipped tables). Every
    other value must be a finite real number (not a bool, string or null).
    ``FileNotFoundError`` for a missing file, ``ValueError`` for anything else.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"prior {path}: no such file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"prior {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"prior {path}: expected a JSON object {{model: value}}, "
                         f"got {type(data).__name__}")
    prior = {str(m): _prior_value(m, v, f"prior {path}") for m, v in data.items()
             if not str(m).startswith("_")}
    if not prior:
        raise ValueError(f"prior {path}: no models in it")
    return prior


def check_prior(prior: dict, models, name: str = "prior") -> dict:
    """``prior`` restricted to ``models``; ``ValueError`` naming the models it lacks."""
    missing = [m for m in models if m not in prior]
    if missing:
        raise ValueError(f"{name} has no value for {len(missing)} of the {len(list(models))} models: "
                         f"{', '.join(map(str, missing))}")
    return {m: _prior_value(m, prior[m], name) for m in models}


# --------------------------------------------------------------------------
# tau_w of a static ranking
# --------------------------------------------------------------------------

def _number(x: float) -> str:
    """23,508,032 for an integral value, else 4 significant digits."""
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:.4g}"


def static_tau(values: dict, accuracy: dict, models=None) -> dict:
    r""":math:`\tau_w` of the ranking by ``values`` against ``accuracy``.

    Over ``models`` (default: those in both dicts). Returns ``{"tau_w": t}``,
    or ``{"tau_w": None, "undefined": reason}`` when the values are equal for
    every model (a constant ranking has no order) or the accuracies are.
    """
    from te_gpu import rank

    models = [m for m in (models if models is not None else accuracy) if m in values and m in accuracy]
    if len(models) < 2:
        return {"tau_w": None, "undefined": f"{len(models)} model(s) with both a value and an accuracy"}
    v = np.array([values[m] for m in models], dtype=np.float64)
    a = np.array([accuracy[m] for m in models], dtype=np.float64)
    if np.all(v == v[0]):
        return {"tau_w": None,
                "undefined": f"all {len(models)} models have the same value ({_number(v[0])}): "
                             "a constant ranking"}
    if np.all(a == a[0]):
        return {"tau_w": None, "undefined": f"all {len(models)} models have the same accuracy"}
    return {"tau_w": rank.weighted_tau(v, a)}


# --------------------------------------------------------------------------
# random rankings
# --------------------------------------------------------------------------

def weighted_tau_of_orders(scores: np.ndarray, accuracies) -> np.ndarray:
    r""":math:`\tau_w` of many rankings without ties against one accuracy vector.

    ``scores`` is R x n with distinct values in each row (e.g. permutations);
    row r gives :math:`\tau_w(s_r, a)`, equal to ``te_gpu.rank.weighted_tau``
    (hence scipy's) row by row: with :math:`c_i = \sum_j \mathrm{sgn}(s_i-s_j)
    \mathrm{sgn}(a_i-a_j)`, :math:`u^s_i = n-1` (no ties in s),
    :math:`u^a_i = n - |\{j: a_j = a_i\}|` and weights :math:`w_i = 1/(r_i+1)`
    of the lexicographic rank :math:`r_i` (0 = best),

    .. math::

        \tau = \frac{w \cdot c}{\sqrt{w \cdot u^s}\sqrt{w \cdot u^a}},

    averaged over the ranks by (s, a), :math:`r_i = |\{j: s_j > s_i\}|`, and by
    (a, s), :math:`r_i = |\{j: a_j > a_i\}| + |\{j: a_j = a_i, s_j > s_i\}|`.
    Done in blocks of rows: memory O(block n^2) whatever R.
    """
    s_all = np.asarray(scores, dtype=np.float64)
    a = np.asarray(accuracies, dtype=np.float64)
    if s_all.ndim != 2 or a.ndim != 1 or s_all.shape[1] != a.size or a.size < 2:
        raise ValueError(f"need R x n scores and n >= 2 accuracies, got {s_all.shape} and {a.shape}")
    n = a.size
    sign_a = (np.greater(a[:, None], a).astype(np.int8) - np.less(a[:, None], a))
    untied_a = n - (a[:, None] == a).sum(axis=1)
    if not untied_a.any():
        raise ValueError("weighted tau is undefined: all accuracies are equal")
    untied_s = np.full(n, n - 1, dtype=np.float64)
    out = np.empty(s_all.shape[0], dtype=np.float64)
    step = max(1, _COMPARISONS_PER_BLOCK // (n * n))
    for start in range(0, s_all.shape[0], step):
        s = s_all[start:start + step]
        ordered = np.sort(s, axis=1)
        if np.any(ordered[:, 1:] == ordered[:, :-1]):
            raise ValueError("weighted_tau_of_orders needs distinct scores within each row")
        sign_s = (np.greater(s[:, :, None], s[:, None, :]).astype(np.int8)
                  - np.less(s[:, :, None], s[:, None, :]))
        concordance = np.einsum("rij,ij->ri", sign_s, sign_a, dtype=np.int64).astype(np.float64)
        rows = np.arange(s.shape[0])[:, None]
        rank_by_score = np.empty(s.shape, dtype=np.int64)          # models scored above i
        rank_by_score[rows, np.argsort(-s, axis=1)] = np.arange(n)
        # models more accurate than i, then those as accurate and scored above it
        rank_by_accuracy = np.empty(s.shape, dtype=np.int64)
        rank_by_accuracy[rows, np.lexsort((-s, np.broadcast_to(-a, s.shape)), axis=-1)] = np.arange(n)
        halves = []
        for rank_ in (rank_by_score, rank_by_accuracy):
            w = 1.0 / (rank_ + 1.0)
            tau = (np.einsum("ri,ri->r", w, concordance)
                   / np.sqrt(w @ untied_s) / np.sqrt(w @ untied_a.astype(np.float64)))
            halves.append(np.clip(tau, -1.0, 1.0))
        out[start:start + step] = (halves[0] + halves[1]) / 2
    return out


def random_ranking(tables: dict, *, draws: int, seed: int) -> dict:
    r"""Expected :math:`\tau_w` of a random static ranking, and its spread.

    Parameters
    ----------
    tables : ``{dataset: {model: accuracy}}``
    draws : number R of random orders (each a uniform permutation of all the
        models named in ``tables``, from ``numpy.random.default_rng(seed)``,
        used for every data set)
    seed : the generator's seed (the result is a function of it)

    Returns
    -------
    ``{"per_dataset": {dataset: {"mean", "sd"}}, "mean": {"mean", "sd"},
    "draws": R, "seed": seed}``; ``mean`` is over draws of the mean over
    data sets. A data set whose accuracies are all equal is left out.
    """
    if isinstance(draws, bool) or not isinstance(draws, numbers.Integral) or draws < 2:
        raise ValueError(f"draws must be an integer >= 2, got {draws!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    models = list(dict.fromkeys(m for table in tables.values() for m in table))
    if len(models) < 2:
        raise ValueError(f"a random ranking needs at least 2 models, got {len(models)}")
    column = {m: j for j, m in enumerate(models)}
    rng = np.random.default_rng(seed)
    orders = rng.random((draws, len(models))).argsort(axis=1).astype(np.float64)
    per_dataset, taus = {}, []
    for dataset, table in tables.items():
        names = [m for m in table]
        acc = np.array([table[m] for m in names], dtype=np.float64)
        if len(names) < 2 or np.all(acc == acc[0]):
            continue
        tau = weighted_tau_of_orders(orders[:, [column[m] for m in names]], acc)
        per_dataset[dataset] = {"mean": float(tau.mean()), "sd": float(tau.std())}
        taus.append(tau)
    if not taus:
        raise ValueError("no data set with at least 2 models of different accuracy")
    mean_over_datasets = np.mean(taus, axis=0)
    return {"per_dataset": per_dataset,
            "mean": {"mean": float(mean_over_datasets.mean()), "sd": float(mean_over_datasets.std())},
            "draws": int(draws), "seed": int(seed)}


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------

def baseline_table(tables: dict, rankings: dict, *, draws: int = 10000, seed: int = 0) -> dict:
    r"""Each static ranking's :math:`\tau_w` per data set and its mean, and the random ranking's.

    Parameters
    ----------
    tables : ``{dataset: {model: accuracy}}`` (e.g. ``rank.ground_truth("group1", "finetune")``)
    rankings : ``{name: {model: value}}`` (e.g. :func:`static_rankings`, a prior);
        each must name every model of every table
    draws, seed : of :func:`random_ranking`

    Returns
    -------
    ``{"datasets": [...], "rankings": {name: {"tau_w": {dataset: t}, "mean": m}
    or {"undefined": reason}}, "random": random_ranking(...)}``. The mean is over
    the data sets listed; a ranking constant on a data set's models is undefined.
    """
    if not tables:
        raise ValueError("no ground-truth tables given")
    out = {"datasets": list(tables), "rankings": {}}
    for name, values in rankings.items():
        missing = sorted({m for table in tables.values() for m in table if m not in values})
        if missing:
            raise ValueError(f"ranking {name!r} has no value for {', '.join(missing)}")
        per_dataset = {ds: static_tau(values, table) for ds, table in tables.items()}
        undefined = [res["undefined"] for res in per_dataset.values() if res["tau_w"] is None]
        if undefined:
            out["rankings"][name] = {"undefined": undefined[0]}
            continue
        taus = {ds: res["tau_w"] for ds, res in per_dataset.items()}
        out["rankings"][name] = {"tau_w": taus, "mean": float(np.mean(list(taus.values())))}
    out["random"] = random_ranking(tables, draws=draws, seed=seed)
    return out
