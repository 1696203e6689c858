"""The metric catalogue: every metric, its options and Spread/Attract declared once.

Every layer reads this module: the per-model API (``te_gpu.logme``, ...,
``te_gpu.score``), ``score_zoo``, the engine's batch loop, the reference's
``score``, the ``te-gpu`` command (choices and help), the bench and the test
suites. Adding a metric is its reference and engine modules, one
:class:`Metric` entry below, its SPEC section and its known-answer test.

Pure Python (no numpy, no torch): the float64 reference reads it too and stays
independent of the engine. Functions are named by import path and loaded on
first use.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

_MISSING = object()


@dataclass(frozen=True)
class Option:
    """One keyword option of a metric or of SA: default, type and valid values."""
    name: str
    default: object
    help: str
    kind: type = float                  # bool, int, float or str
    choices: tuple = ()
    minimum: float | None = None        # inclusive
    positive: bool = False              # > 0 (floats)

    def check(self, value, owner: str):
        """``value`` validated and cast to the option's kind; ValueError naming ``owner.name``."""
        where = f"{owner} option {self.name}"
        if self.choices:
            if value not in self.choices:
                raise ValueError(f"{where} must be one of {list(self.choices)}, got {value!r}")
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{where} must be True or False, got {value!r}")
            return value
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            value, number = value.item(), True         # numpy / torch scalars
        if not number or not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number, got {value!r}")
        if self.kind is int:
            if int(value) != value:
                raise ValueError(f"{where} must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{where} must be at least {self.minimum:g}, got {value!r}")
        if self.positive and value <= 0:
            raise ValueError(f"{where} must be positive, got {value!r}")
        return value

    def parse(self, text: str, owner: str):
        """A command-line string -> the checked value."""
        raw = text.strip()
        if self.kind is bool:
            low = raw.lower()
            if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(f"{owner} option {self.name} takes true or false, got {text!r}")
            return low in ("1", "true", "yes", "on")
        if self.kind in (int, float) and not self.choices:
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{owner} option {self.name} takes a number, got {text!r}") from None
            return self.check(value, owner)
        return self.check(raw, owner)

    def describe(self) -> str:
        what = "|".join(self.choices) if self.choices else self.kind.__name__
        return f"{self.name}={what} (default {self.default!r}): {self.help}"


def _load(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Metric:
    """A transferability metric as every layer of te_gpu sees it.

    ``reference`` and ``engine`` are ``module:function`` paths. The reference
    function takes ``(features_or_predictions, labels, **options)`` and returns
    a float (NCTI: its per-model parts). The engine head takes ``(x, labels,
    shared, **options)`` for a (B, N, D) batch (``shared``: the batch's
    statistics, computed on first use) and returns (B,) values (NCTI: a tuple).
    ``needs`` lists the shared statistics the head reads (``"groups"``: which rows of a
    bootstrap redraw are copies of one sample). ``redraws``: a ``module:Class`` built once
    per model from the full target set and called on bootstrap redraws given as
    multiplicities (te_gpu.bootstrap), where that is cheaper than rescoring gathered rows.
    ``memory``: a ``module:function`` path, ``(n, d, c, item_bytes) -> bytes`` that one
    model needs beyond the features and shared statistics (PARC's pairs), which the
    batch-size chooser adds to its per-model estimate.
    """
    name: str
    title: str
    spec: str
    reference: str
    engine: str
    options: tuple = ()
    inputs: str = "features"            # or "predictions": the source model's softmax
    needs: frozenset = frozenset()      # of "stats", "spectrum", "class_index", "groups"
    zoo_level: bool = False             # normalised across the zoo (NCTI)
    parts: tuple = ()                   # names of the per-model parts of a zoo-level score
    part_weights: tuple = ()            # their weights (signs) in the min-max sum (te_gpu.combine)
    # bootstrap: a class built once per model from the full target set, called on redraws
    # given as multiplicities (te_gpu.bootstrap; raw features); "" = rescore gathered rows
    redraws: str = ""
    # its redraw hook's build does its point estimate's work (kNN: the neighbour lists are
    # the leave-one-out pass), so the bootstrap reads the point from the hook
    point_from_redraws: bool = False
    memory: str = ""                    # bytes per model beyond the shared estimate ("": none)
    higher_is_better: bool = True       # every ranking reads scores through oriented()
    sa: bool = True                     # Spread/Attract can precede it
    regression: bool = False            # defined for real-valued targets too
    tolerance: float = 1e-6             # engine (float64) vs reference, relative
    default: bool = False               # in the default set of score_zoo / te-gpu score
    min_class_size: int = 1             # samples each class needs
    bounds: tuple = ()                  # ((value, "maximum" | "minimum"), ...) it cannot pass
    bound_note: str = ""                # a bound that depends on the data (te_gpu.ties says it)
    cite: str = ""

    def option(self, name: str) -> Option:
        for o in self.options:
            if o.name == name:
                return o
        raise ValueError(f"unknown option {name!r} for metric {self.name!r}; "
                         f"valid: {[o.name for o in self.options] or 'none'}")

    def resolve(self, given: dict | None = None) -> dict:
        """Every option of this metric: the defaults, updated with ``given`` (validated)."""
        given = dict(given or {})
        out = {}
        for o in self.options:
            value = given.pop(o.name, _MISSING)
            out[o.name] = o.default if value is _MISSING else o.check(value, self.name)
        if given:
            self.option(sorted(given)[0])   # raises, naming the valid ones
        return out

    def reference_fn(self):
        return _load(self.reference)

    def engine_fn(self):
        return _load(self.engine)

    def redraws_fn(self):
        return _load(self.redraws)

    def memory_bytes(self, n: int, d: int, c: int, item: int) -> int:
        """The ``memory`` declaration's bytes for one model of N x D, C classes (0 if none)."""
        return int(_load(self.memory)(n, d, c, item)) if self.memory else 0


def _opt(name, default, help, **kw) -> Option:
    return Option(name, default, help, **kw)


_RCOND = Option("rcond", 1e-15, "pseudo-inverse cut-off, relative to the largest eigenvalue "
                "(numpy's pinv default, as tllib)", minimum=0.0)

METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("logme", "LogME", "SPEC 1", "te_gpu.reference.logme:logme", "te_gpu.engine.logme:head",
           options=(_opt("corrected", False, "add the (D - N) log(alpha) terms the released "
                         "evidence omits when N < D (thuml/LogME PR #24)", kind=bool),),
           needs=frozenset({"stats"}), regression=True, tolerance=1e-8, default=True,
           cite="You et al., ICML 2021"),
    Metric("sfda", "SFDA", "SPEC 2", "te_gpu.reference.sfda:sfda", "te_gpu.engine.sfda:head",
           needs=frozenset({"stats"}), default=True, bounds=((1.0, "maximum"),),
           cite="Shao et al., ECCV 2022"),
    Metric("lda", "LDA score", "SPEC 3", "te_gpu.reference.lda:lda", "te_gpu.engine.lda:head",
           needs=frozenset({"stats"}), redraws="te_gpu.engine.lda:Redraws", default=True,
           bounds=((1.0, "maximum"),),
           cite="Khoba et al., WACV 2025 (released code)"),
    Metric("gbc", "GBC", "SPEC 5", "te_gpu.reference.gbc:gbc", "te_gpu.engine.gbc:head",
           options=(_opt("gaussian", "spherical", "class covariance model",
                         kind=str, choices=("spherical", "diagonal")),),
           needs=frozenset({"stats"}), default=True, min_class_size=2, bounds=((0.0, "maximum"),),
           cite="Pandy et al., CVPR 2022"),
    Metric("ncti", "NCTI", "SPEC 4", "te_gpu.reference.ncti:ncti_parts", "te_gpu.engine.ncti:head",
           options=(_opt("lda_scaling", "n_minus_c", "scale of the 'svd' LDA: 1/(N-C) as "
                         "scikit-learn 1.0.x (the paper's), or 1/N as current scikit-learn",
                         kind=str, choices=("n_minus_c", "n")),),
           needs=frozenset({"stats", "spectrum", "class_index"}), zoo_level=True,
           redraws="te_gpu.engine.ncti:Redraws",
           parts=("seli", "ncc", "vc"), part_weights=(1, 1, -1), default=True,
           cite="Wang et al., ICCV 2023"),
    Metric("nleep", "NLEEP", "SPEC 6", "te_gpu.reference.nleep:nleep", "te_gpu.engine.nleep:head",
           options=(_opt("components_per_class", 5, "Gaussian mixture components per class",
                         kind=int, minimum=1),
                    _opt("seed", 0, "seed of the mixture's k-means initialisation",
                         kind=int, minimum=0)),
           needs=frozenset({"stats"}), bounds=((1.0, "maximum"),), cite="Li et al., CVPR 2021"),
    Metric("hscore", "H-score", "SPEC 10.1", "te_gpu.reference.hscore:h_score",
           "te_gpu.engine.hscore:head", options=(_RCOND,), needs=frozenset({"stats"}),
           tolerance=1e-8, bound_note="H-score's maximum is C - 1, which every model reaches "
           "when N <= D", cite="Bao et al., ICIP 2019"),
    Metric("reg_hscore", "regularized H-score", "SPEC 10.2",
           "te_gpu.reference.hscore:regularized_h_score", "te_gpu.engine.hscore:regularized_head",
           options=(_RCOND,), needs=frozenset({"stats"}), tolerance=1e-8,
           cite="Ibrahim et al., ICLR 2022"),
    Metric("transrate", "TransRate", "SPEC 10.3", "te_gpu.reference.transrate:transrate",
           "te_gpu.engine.transrate:head",
           options=(_opt("eps", 1e-4, "distortion of the coding rate", positive=True),
                    _opt("class_weights", "uniform", "mean over classes as released (uniform) "
                         "or weighted by n_c/N as the paper's text", kind=str,
                         choices=("uniform", "proportional"))),
           needs=frozenset({"stats"}), tolerance=1e-8, cite="Huang et al., ICML 2022"),
    Metric("knn", "kNN accuracy", "SPEC 10.4", "te_gpu.reference.knn:knn", "te_gpu.engine.knn:head",
           options=(_opt("k", 3, "neighbours voting", kind=int, minimum=1),
                    _opt("distance", "euclidean", "distance between samples", kind=str,
                         choices=("euclidean", "cosine"))),
           tolerance=1e-12, bounds=((0.0, "minimum"), (1.0, "maximum")),
           needs=frozenset({"groups"}), redraws="te_gpu.engine.knn:Redraws",
           point_from_redraws=True,
           cite="leave-one-out, as transformer-ranker's NearestNeighbors"),
    Metric("leep", "LEEP", "SPEC 10.5", "te_gpu.reference.leep:leep", "te_gpu.engine.leep:head",
           inputs="predictions", sa=False, tolerance=1e-10, bounds=((0.0, "maximum"),),
           cite="Nguyen et al., ICML 2020"),
    Metric("nce", "NCE", "SPEC 10.6", "te_gpu.reference.leep:nce", "te_gpu.engine.leep:nce_head",
           inputs="predictions", sa=False, tolerance=1e-10, bounds=((0.0, "maximum"),),
           cite="Tran et al., ICCV 2019"),
    Metric("parc", "PARC", "SPEC 10.7", "te_gpu.reference.parc:parc", "te_gpu.engine.parc:head",
           options=(_opt("pca_dim", 32, "PCA components before the correlations, as the "
                         "released scripts (0: the raw features)", kind=int, minimum=0),),
           needs=frozenset({"groups"}), memory="te_gpu.engine.parc:pair_memory",
           bounds=((100.0, "maximum"), (-100.0, "minimum")), cite="Bolya et al., NeurIPS 2021"),
    # the parts' min-max values are weighted 0.15 / 0.85 (the released tw.py), not signed
    Metric("etran", "ETran", "SPEC 10.8", "te_gpu.reference.etran:etran_parts",
           "te_gpu.engine.etran:head",
           options=(_opt("energy_per_mille", 5, "the energy part averages the lowest "
                         "per-mille of the samples' log-sum-exp (5: 0.5 %, as released)",
                         kind=int, minimum=1),),
           zoo_level=True, parts=("energy", "lda"), part_weights=(0.15, 0.85),
           cite="Gholami et al., ICCV 2023 (released code)"),
)}

DEFAULT_METRICS = tuple(m.name for m in METRICS.values() if m.default)


def get(name) -> Metric:
    """The metric called ``name`` (case-insensitive); ValueError listing the valid names."""
    if not isinstance(name, str):
        raise TypeError(f"a metric is named by a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
    return METRICS[key]


def metric_names(metrics) -> tuple:
    """A metric name, a list of them, or "all" -> a tuple of valid names without repeats."""
    if isinstance(metrics, str):
        metrics = list(METRICS) if metrics.strip().lower() == "all" else \
            [m for m in metrics.split(",") if m.strip()]
    names = tuple(dict.fromkeys(get(m).name for m in metrics))
    if not names:
        raise ValueError(f"no metric asked for; choose from {', '.join(METRICS)}")
    return names


def resolve_options(metrics, options: dict | None = None) -> dict:
    """{metric: {option: value}} for ``metrics``, from ``options`` = {metric: {option: value}}.

    Options of a metric that is not asked for are an error (a typo would
    otherwise pass silently).
    """
    options = dict(options or {})
    for name in options:
        if get(name).name not in metrics:
            raise ValueError(f"options given for metric {name!r}, which is not among {list(metrics)}")
    given = {get(k).name: v for k, v in options.items()}
    for name, v in given.items():
        if not isinstance(v, dict):
            raise TypeError(f"options of {name!r} must be a dict of option: value, got {v!r}")
    return {m: get(m).resolve(given.get(m)) for m in metrics}


def parse_option_texts(texts) -> dict:
    """``["gbc.gaussian=diagonal", "knn.k=5"]`` -> {metric: {option: value}}, checked."""
    out: dict = {}
    for text in texts or ():
        key, eq, value = str(text).partition("=")
        name, dot, option = key.strip().partition(".")
        if not (eq and dot and option):
            raise ValueError(f"an option is METRIC.OPTION=VALUE (e.g. gbc.gaussian=diagonal), got {text!r}")
        m = get(name)
        out.setdefault(m.name, {})[option.strip()] = m.option(option.strip()).parse(value, m.name)
    return out


def describe_options() -> str:
    """Every metric's options, one per line, for command-line help."""
    lines = []
    for m in METRICS.values():
        for o in m.options:
            lines.append(f"{m.name}.{o.describe()}")
    return "\n".join(lines)


def orientation(label: str) -> float:
    """+1.0 where a higher score of ``label`` (``metric`` or ``metric+variant``) is better,
    -1.0 where lower is; +1.0 for a name the catalogue lacks (a user's own scores)."""
    m = METRICS.get(str(label).split("+", 1)[0].strip().lower())
    return 1.0 if m is None or m.higher_is_better else -1.0


def oriented(label: str, scores: dict) -> dict:
    """``{model: score}`` with the sign that makes higher better (:func:`orientation`):
    what every ranking, share, consensus and correlation with accuracy reads."""
    sign = orientation(label)
    return dict(scores) if sign > 0 else {k: -v for k, v in scores.items()}


def label(metric: str, sa_setting) -> str:
    """The result label of a metric under an SA setting: ``logme`` or ``logme+released``."""
    if sa_setting is None:
        return metric
    variant = sa_setting if isinstance(sa_setting, str) else sa_setting["variant"]
    return f"{metric}+{variant}"


# ----------------------------------------------------------------- Spread/Attract (SPEC 7)

SA_VARIANTS = ("released", "described", "pca-only")
GATE_THRESHOLD = 9.0 * math.log(10.0) / 5.0   # 4.14465316738928: max(e^{-5m}, 1e-10) < 1e-9
SA_OPTIONS = (
    _opt("alpha", 0.005, "Attract step (the self-supervised zoo's scripts use 0.1)"),
    _opt("sigma", 0.6, "Attract radius factor"),
    _opt("force", 1.0, "Spread force (variant described)"),
    _opt("pca_dim", 64, "PCA dimension before Spread/Attract", kind=int, minimum=1),
    _opt("gate", True, "apply SA only where the covariance's top eigenvalues pass the gate",
         kind=bool),
    _opt("variant", "released", "released (as published), described (as the paper's words), "
         "pca-only (the ablation)", kind=str, choices=SA_VARIANTS),
)
SA_DEFAULTS = {o.name: o.default for o in SA_OPTIONS}
# the public scripts' settings for the papers' two zoos
SA_PRESETS = {"supervised": dict(alpha=0.005), "self-supervised": dict(alpha=0.1)}
SA_PRESET_ALIASES = {"group1": "supervised", "group2": "self-supervised"}


# ----------------------------------------------------------------- PED (SPEC 10.9)

PED = "ped"          # a perturbation setting beside SA's variants: metric+ped
PED_OPTIONS = (
    _opt("time_step", 0.1, "PED's time step tau", positive=True),
    _opt("exit_ratio", 0.5, "stop when a step moves at most this share of the first one",
         minimum=0.0),
    _opt("nsigma", 0.6, "class radius factor nu (overlap = nu (R_a + R_b) - d_ab)",
         positive=True),
    _opt("constant", 1.0, "force constant k", positive=True),
    _opt("eps", 1e-3, "floor of the rescaling's std", positive=True),
    _opt("max_steps", 6, "most steps", kind=int, minimum=1),
)
PED_DEFAULTS = {o.name: o.default for o in PED_OPTIONS}
PERTURBATIONS = SA_VARIANTS + (PED,)


def resolve_sa(sa):
    """None | False | True | variant name | dict of SA options -> validated options or None.

    ``"ped"`` or a dict with ``variant="ped"`` (and PED's options) selects PED instead
    of SA: ``{"variant": "ped", time_step, exit_ratio, ...}``.
    """
    if sa is None or sa is False:
        return None
    if sa is True:
        return dict(SA_DEFAULTS)
    if isinstance(sa, str):
        sa = {"variant": sa}
    if isinstance(sa, dict) and sa.get("variant") == PED:
        unknown = set(sa) - set(PED_DEFAULTS) - {"variant"}
        if unknown:
            raise ValueError(f"unknown PED option(s) {sorted(unknown)}; valid: {sorted(PED_DEFAULTS)}")
        return dict(variant=PED, **{o.name: o.check(sa.get(o.name, o.default), "PED")
                                    for o in PED_OPTIONS})
    if isinstance(sa, dict):
        unknown = set(sa) - set(SA_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown SA option(s) {sorted(unknown)}; valid: {sorted(SA_DEFAULTS)}")
        if sa.get("variant", "released") not in SA_VARIANTS:
            raise ValueError(f"unknown SA variant {sa['variant']!r}; choose one of "
                             f"{PERTURBATIONS}")
        return {o.name: o.check(sa.get(o.name, o.default), "SA") for o in SA_OPTIONS}
    raise TypeError(f"sa must be None, a variant name or a dict of options, got {type(sa).__name__}")


def sa_preset(name: str) -> dict:
    """The SA numbers of a preset (``supervised``, ``self-supervised`` or an alias)."""
    key = SA_PRESET_ALIASES.get(name, name)
    if key not in SA_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from "
                         f"{', '.join(list(SA_PRESETS) + list(SA_PRESET_ALIASES))}")
    return dict(SA_PRESETS[key])
