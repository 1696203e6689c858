"""The public API as tools read it: the generated stubs (te_gpu._stubs) equal what the
catalogue renders, name every metric, and every per-metric function documents its maths,
parameters and options."""
import ast
import importlib
import inspect
from pathlib import Path

import pytest

import te_gpu
import te_gpu.reference
from te_gpu import _stubs, catalogue

ROOT = Path(__file__).resolve().parents[1]
METRICS = list(catalogue.METRICS.values())


@pytest.mark.parametrize("path", list(_stubs.STUBS))
def test_committed_stub_equals_the_rendered_one(path):
    committed = (ROOT / path).read_text()
    assert committed == _stubs.render()[path], \
        f"{path} is stale: run `python -m te_gpu._stubs --write` and commit it"


def test_every_metric_is_written_out_where_grep_finds_it():
    api = ast.parse((ROOT / "te_gpu/api.pyi").read_text())
    defined = {node.name: node for node in api.body if isinstance(node, ast.FunctionDef)}
    package = (ROOT / "te_gpu/__init__.pyi").read_text()
    reference = (ROOT / "te_gpu/reference/__init__.pyi").read_text()
    for m in METRICS:
        name = _stubs.public_name(m)
        assert name in defined and ast.get_docstring(defined[name])
        assert f"import {name} as {name}\n" in package
        assert f" as {name}\n" in reference
        stub_params = [a.arg for a in defined[name].args.args + defined[name].args.kwonlyargs]
        assert stub_params == list(inspect.signature(getattr(te_gpu, name)).parameters)


@pytest.mark.parametrize("m", METRICS, ids=lambda m: m.name)
def test_docstring_has_the_maths_the_parameters_and_every_option(m):
    doc = getattr(te_gpu, _stubs.public_name(m)).__doc__
    maths = importlib.import_module(m.reference.partition(":")[0]).__doc__.strip().splitlines()[0]
    assert maths in doc and m.spec in doc
    assert "Parameters\n----------" in doc and "Returns\n-------" in doc
    for o in m.options:
        assert f"{o.name} : " in doc and f"default {o.default!r}" in doc
    assert ("sa : " in doc) == m.sa


def test_stub_names_resolve_at_run_time():
    for line in (ROOT / "te_gpu/__init__.pyi").read_text().splitlines():
        if line.startswith("from .") and " import " in line:
            for name in line.split(" import ", 1)[1].split(", "):
                assert getattr(te_gpu, name.split(" as ")[0]) is not None
    for m in METRICS:
        assert callable(getattr(te_gpu.reference, _stubs.public_name(m)))
