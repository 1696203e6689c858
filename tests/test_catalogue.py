"""The metric catalogue and the shared tester every metric goes through.

Each metric declared in ``te_gpu.catalogue`` is checked here without being
named: engine = reference (its declared tolerance) on ordinary, imbalanced,
binary, N < D and rank-deficient inputs, with every SA variant it admits; the
shared statistics its head reads are those it declares; bad input and bad
options are refused; labels may be any integers; inputs are not modified. A
new metric gets all of this by its catalogue entry.
"""
import inspect
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import te_gpu
import te_gpu.reference as ref
from te_gpu import catalogue
from te_gpu.engine.core import Shared
from te_gpu.engine.stats import Labels

from helpers import class_features, dead_unit_features

SPEC = (Path(__file__).resolve().parents[1] / "docs" / "SPEC.md").read_text()
PER_MODEL = [m for m in catalogue.METRICS.values() if not m.zoo_level]
FEATURE_METRICS = [m for m in PER_MODEL if m.inputs == "features"]
PREDICTION_METRICS = [m for m in PER_MODEL if m.inputs == "predictions"]
# cheap settings for slow metrics (the mixture of NLEEP)
FAST_OPTIONS = {"nleep": {"components_per_class": 1}}


def dead_units(seed=0):
    return dead_unit_features(seed, n=150, d=20, c=4)


CASES = {
    "n>d": lambda: class_features(0, n=120, d=10, c=3, spread=1.0),
    "n<d": lambda: class_features(1, n=40, d=60, c=3, spread=1.0),
    "binary-imbalanced": lambda: class_features(2, n=0, d=8, sizes=[70, 12], spread=1.0),
    "dead-units": dead_units,
}


def predictions(seed, n=90, k=6, c=3):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    logits = rng.normal(size=(n, k)) + 2.0 * np.eye(c, k)[y]
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), y


def rel(a, b):
    a, b = np.atleast_1d(np.asarray(a, float)), np.atleast_1d(np.asarray(b, float))
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b)), (a, b)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


# ------------------------------------------------------------------ declarations

def test_names_paths_and_spec_sections():
    assert len(set(catalogue.METRICS)) == len(catalogue.METRICS)
    for m in catalogue.METRICS.values():
        assert callable(m.reference_fn()) and callable(m.engine_fn()), m.name
        section = m.spec.split()[-1]
        assert re.search(rf"^#+ {re.escape(section)}[ .]", SPEC, re.M), (m.name, m.spec)
        assert m.inputs in ("features", "predictions")
        assert m.needs <= {"stats", "spectrum", "class_index"}
        assert m.inputs == "features" or not m.sa


@pytest.mark.parametrize("m", list(catalogue.METRICS.values()), ids=lambda m: m.name)
def test_options_are_the_reference_functions_keywords(m):
    # the catalogue's defaults are the oracle's: one declaration, checked here
    params = inspect.signature(m.reference_fn()).parameters
    kw = {k: p.default for k, p in params.items() if p.kind == p.KEYWORD_ONLY
          and k not in ("regression", "chunk")}
    assert kw == {o.name: o.default for o in m.options}
    assert ("regression" in params) or not m.regression


def test_reference_imports_neither_torch_nor_the_engine():
    code = ("import sys, te_gpu.reference, te_gpu.catalogue; "
            "bad = [k for k in sys.modules if k == 'torch' or k.startswith('te_gpu.engine')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    env_path = str(Path(__file__).resolve().parents[1])
    # import the subpackage without the top-level te_gpu (which loads the engine)
    code = ("import sys, importlib.util, types; "
            f"sys.path.insert(0, {env_path!r}); "
            "pkg = types.ModuleType('te_gpu'); pkg.__path__ = [" + repr(env_path + "/te_gpu") + "]; "
            "sys.modules['te_gpu'] = pkg; " + code.replace("import sys, ", "import "))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_sa_declared_once():
    from te_gpu.reference.sa import spread_attract

    params = inspect.signature(spread_attract).parameters
    assert {k: params[k].default for k in catalogue.SA_DEFAULTS} == catalogue.SA_DEFAULTS
    assert catalogue.resolve_sa("described")["variant"] == "described"
    for bad in ({"alpha": float("nan")}, {"pca_dim": 2.5}, {"pca_dim": 0}, {"variant": "x"},
                {"gate": "yes"}, {"beta": 1}):
        with pytest.raises(ValueError):
            catalogue.resolve_sa(bad)


def test_option_parsing_from_text():
    gbc = catalogue.get("gbc")
    assert gbc.option("gaussian").parse("diagonal", "gbc") == "diagonal"
    assert catalogue.get("knn").option("k").parse("5", "knn") == 5
    assert catalogue.get("logme").option("corrected").parse("true", "logme") is True
    with pytest.raises(ValueError, match="knn option k"):
        catalogue.get("knn").option("k").parse("2.5", "knn")
    with pytest.raises(ValueError, match="unknown option"):
        gbc.resolve({"gausian": "diagonal"})
    with pytest.raises(ValueError, match="unknown metric"):
        catalogue.metric_names("logme,leap")
    assert catalogue.metric_names("all") == tuple(catalogue.METRICS)


# ------------------------------------------------------------------ the shared tester

@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("m", FEATURE_METRICS, ids=lambda m: m.name)
@pytest.mark.parametrize("sa", [None, "released", "described", "pca-only"])
def test_engine_equals_reference(m, case, sa):
    x, y = CASES[case]()
    x = 3.0 * x  # open the SA gate
    opts = FAST_OPTIONS.get(m.name, {})
    want = ref.score(x, y, metric=m.name, sa=sa, **opts)
    got = te_gpu.score(x, y, metric=m.name, sa=sa, **opts)
    assert rel(got, want) <= m.tolerance, (got, want)
    # float32 features: every metric stays within 1e-3 of "exact" here
    assert rel(te_gpu.score(x, y, metric=m.name, sa=sa, precision="fast", **opts), want) <= 1e-3


@pytest.mark.parametrize("m", PREDICTION_METRICS, ids=lambda m: m.name)
@pytest.mark.parametrize("seed,k", [(0, 6), (1, 2), (2, 40)])
def test_prediction_metrics_engine_equals_reference(m, seed, k):
    p, y = predictions(seed, k=k)
    want = ref.score(p, y, metric=m.name)
    assert rel(te_gpu.score(p, y, metric=m.name), want) <= m.tolerance
    assert rel(te_gpu.score(p, y, metric=m.name, precision="fast"), want) <= 1e-3
    with pytest.raises(ValueError, match="predictions"):
        te_gpu.score(p, y, metric=m.name, sa="released")


@pytest.mark.parametrize("m", [m for m in catalogue.METRICS.values() if m.inputs == "features"],
                         ids=lambda m: m.name)
def test_heads_read_only_the_statistics_they_declare(m):
    for case in ("n>d", "n<d"):
        x, y = CASES[case]()
        xt = torch.as_tensor(x)[None]
        lab = Labels.from_codes(torch.as_tensor(y), int(y.max()) + 1, torch.float64)
        shared = Shared(xt, lab)
        m.engine_fn()(xt, lab, shared, **m.resolve(FAST_OPTIONS.get(m.name)))
        assert shared.used <= m.needs, (m.name, case, shared.used)


@pytest.mark.parametrize("m", PER_MODEL, ids=lambda m: m.name)
def test_any_integer_labels_and_inputs_untouched(m):
    if m.inputs == "predictions":
        x, y = predictions(3)
    else:
        x, y = CASES["n>d"]()
    opts = FAST_OPTIONS.get(m.name, {})
    x0 = x.copy()
    base = te_gpu.score(x, y, metric=m.name, **opts)
    renamed = np.array([7, -3, 100])[y]   # same partition, other integers (order kept)
    assert rel(te_gpu.score(x, renamed, metric=m.name, **opts), base) <= 1e-12
    assert rel(ref.score(x, renamed, metric=m.name, **opts), ref.score(x, y, metric=m.name, **opts)) <= 1e-12
    assert np.array_equal(x, x0)


@pytest.mark.parametrize("m", PER_MODEL, ids=lambda m: m.name)
def test_bad_input_and_options_are_refused(m):
    x, y = predictions(4) if m.inputs == "predictions" else CASES["n>d"]()
    for impl in (te_gpu.score, ref.score):
        bad = x.copy()
        bad[3, 1] = np.nan
        with pytest.raises(ValueError):
            impl(bad, y, metric=m.name)
        with pytest.raises(ValueError):
            impl(x, y[:-1], metric=m.name)
        with pytest.raises(ValueError, match="unknown option"):
            impl(x, y, metric=m.name, no_such_option=1)
        if not m.regression:
            with pytest.raises(ValueError, match="class labels only"):
                impl(x, y.astype(float), metric=m.name, regression=True)
        for o in m.options:
            wrong = "not-a-choice" if o.kind is not str else 3.5
            with pytest.raises(ValueError, match=o.name):
                impl(x, y, metric=m.name, **{o.name: wrong})


def test_zoo_level_metric_is_refused_per_model():
    x, y = CASES["n>d"]()
    for impl in (te_gpu.score, ref.score):
        with pytest.raises(ValueError, match="zoo-level"):
            impl(x, y, metric="ncti")


def test_generated_api_functions_follow_the_catalogue():
    for m in catalogue.METRICS.values():
        name = m.name + ("_parts" if m.zoo_level else "")
        fn = getattr(te_gpu, name)
        params = inspect.signature(fn).parameters
        for o in m.options:
            assert params[o.name].default == o.default
        assert ("regression" in params) == m.regression
        assert getattr(ref, name) is m.reference_fn()


# ------------------------------------------------------------------ the zoo reads it too

def _zoo_with_predictions():
    x, y = CASES["n>d"]()
    zoo = {f"m{i}": x * (1 + 0.3 * i) + 0.1 * i * np.sin(x) for i in range(3)}
    preds = {"m0": predictions(5, n=x.shape[0], k=4)[0], "m1": predictions(6, n=x.shape[0], k=7)[0]}
    return zoo, y, preds


def test_score_zoo_reads_the_catalogue():
    zoo, y, preds = _zoo_with_predictions()
    options = {"gbc": {"gaussian": "diagonal"}, "knn": {"k": 5, "distance": "cosine"},
               "nleep": {"components_per_class": 1}}
    res = te_gpu.score_zoo(zoo, y, metrics="all", options=options, predictions=preds,
                           sa=[None, "released"], progress=False)
    for m in FEATURE_METRICS:
        for variant in ("", "+released"):
            assert set(res.scores[m.name + variant]) == set(zoo)
        want = te_gpu.score(zoo["m1"], y, metric=m.name, **options.get(m.name, {}))
        assert rel(res.scores[m.name]["m1"], want) <= 1e-9, m.name
    for m in PREDICTION_METRICS:
        assert set(res.scores[m.name]) == {"m0", "m1"} and m.name + "+released" not in res.scores
        assert rel(res.scores[m.name]["m1"], ref.score(preds["m1"], y, metric=m.name)) <= m.tolerance
        assert "no predictions" in res.skipped[m.name]["m2"]
    assert set(res.parts["ncti"]) == set(zoo)
    import csv

    table = list(csv.DictReader(res.to_csv().splitlines()))
    assert [row["leep"] for row in table] == [repr(res.scores["leep"]["m0"]),
                                              repr(res.scores["leep"]["m1"]), ""]  # m2: no cell


def test_score_zoo_refuses_bad_options_and_predictions():
    zoo, y, preds = _zoo_with_predictions()
    kw = dict(progress=False)
    with pytest.raises(ValueError, match="not among"):
        te_gpu.score_zoo(zoo, y, metrics=("logme",), options={"gbc": {"gaussian": "diagonal"}}, **kw)
    with pytest.raises(ValueError, match="unknown option"):
        te_gpu.score_zoo(zoo, y, metrics=("gbc",), options={"gbc": {"gausian": "diagonal"}}, **kw)
    with pytest.raises(ValueError, match="gaussian"):
        te_gpu.score_zoo(zoo, y, metrics=("gbc",), options={"gbc": {"gaussian": "full"}}, **kw)
    with pytest.raises(ValueError, match="not in the zoo"):
        te_gpu.score_zoo(zoo, y, metrics=("leep",), predictions={"m9": preds["m0"]}, **kw)
    with pytest.raises(ValueError, match="rows"):
        te_gpu.score_zoo(zoo, y, metrics=("leep",), predictions={"m0": preds["m0"][:-1]}, **kw)
    with pytest.raises(ValueError, match="logits"):
        te_gpu.score_zoo(zoo, y, metrics=("nce",), predictions={"m0": np.log(preds["m0"])}, **kw)
