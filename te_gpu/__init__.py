"""te_gpu: transferability estimation for whole model zoos, batched on GPU or CPU.

The top-level functions (``logme``, ``sfda``, ..., one per metric of
:mod:`te_gpu.catalogue`, ``score``, ``score_zoo``) run the batched torch
engine on any device; ``te_gpu.reference`` holds the float64 numpy/scipy
oracle of every score; ``te_gpu.rank`` the ranking measures and shipped ground
truth; ``load_zoo`` and friends read and write the public file layout.

Names are imported on first use (PEP 562), so that ``te-gpu --help`` and the
commands that need no torch start in a fraction of a second.
"""
import importlib

from . import catalogue

__version__ = "0.1.0"

# public name -> the module that defines it ("" for a submodule)
_WHERE = {
    **{(m.name + "_parts" if m.zoo_level else m.name): "api" for m in catalogue.METRICS.values()},
    **{m.name: "api" for m in catalogue.METRICS.values() if m.zoo_level},   # over a zoo
    "spread_attract": "api", "score": "api",
    "score_zoo": "zoo", "ZooResult": "results",
    "bootstrap_zoo": "bootstrap", "tau_w_interval": "bootstrap",
    "load_zoo": "io", "load_predictions": "io", "save_zoo": "io", "read_scores": "io",
    "write_scores": "io",
    "api": "", "reference": "", "rank": "", "catalogue": "", "bootstrap": "",
}

__all__ = [name for name in _WHERE if name != "api"]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'te_gpu' has no attribute {name!r}")
    where = _WHERE[name]
    value = (importlib.import_module(f"{__name__}.{name}") if not where
             else getattr(importlib.import_module(f"{__name__}.{where}"), name))
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
