"""Features of a target set for every model of a zoo, written as te_gpu's store.

The store is the public layout (``{model}_{dataset}_feature.npy`` float32 N x D and
``{model}_{dataset}_label.npy``, readable by :func:`te_gpu.load_zoo` and by the
public scripts) plus ``te_gpu_manifest.json``: for each data set, the samples and,
for each model, what produced its features (architecture, weights, input size,
stage, normalisation), their shape and the forward pass they came from.

Speed: the candidates that differ only in depth (``stage``) are one network on
one input, so they are read from **one forward pass** (timm's
``forward_intermediates``; the model's own softmax from the same pass). The
images are decoded and resized once per input size and shared by every model of
that size (held in memory up to ``TE_GPU_IMAGE_CACHE_MB``, default 2048; beyond
it they are decoded again per pass). Models run channels-last (on a CPU too,
where it measured faster) in float32 on a CPU; on CUDA under autocast, the
batches copied from pinned memory without blocking, the batch size chosen from
free memory and halved on an out-of-memory error.

Resume: the store is written one forward pass (one model) at a time, each file
atomically, and the manifest lists a model only once all its files are written,
so a killed extraction keeps every finished model and never takes a half-written
file for a finished one; a rerun extracts only what is missing.

Each model's manifest entry says, besides its spec and input: ``dim`` (the feature
width D), ``params`` (the parameters of the network that ran), ``n``, ``classes``
(of its own softmax, if written) and ``shared_pass`` (the candidates of its pass
and its times).
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import PipelineError
from .datasets import ImageSet
from .models import ModelSpec, build_model, check_stages, input_config, stage_index

MANIFEST = "te_gpu_manifest.json"
FORMAT = "te_gpu-store"
CPU_BATCH = 64          # images per forward pass on a CPU when none is asked for
MAX_GPU_BATCH = 1024    # the most images per forward pass chosen from free memory
CACHE_ENV = "TE_GPU_IMAGE_CACHE_MB"
DEFAULT_CACHE_MB = 2048


def _tqdm(**kw):
    from tqdm.auto import tqdm

    return tqdm(**kw)


def safe_dataset_name(name: str) -> str:
    """A data set name usable inside ``{model}_{dataset}_feature.npy``."""
    out = re.sub(r"[^A-Za-z0-9.+-]+", "-", str(name)).strip("-.")
    return out or "data"


# --------------------------------------------------------------------------
# images -> batches
# --------------------------------------------------------------------------

def _resized_arrays(images: np.ndarray, size: int, batch_size: int):
    """uint8 N x H x W [x C] -> float batches B x C x size x size in [0, 1] (C = 1 or 3).

    Grey images keep one channel: they are expanded to three only on the device,
    so a cache of them holds a third of the bytes.
    """
    import torch
    import torch.nn.functional as F

    for start in range(0, images.shape[0], batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
        x = x.float().div_(255.0)
        x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True)
        yield x.clamp_(0.0, 1.0).contiguous()


def _as_rgb_float(x):
    """A raw batch (uint8 or float, 1 or 3 channels) -> float B x 3 x H x W in [0, 1]."""
    if not x.is_floating_point():
        x = x.float().div_(255.0)  # = torchvision's ToTensor of the same uint8 pixels
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x


def _array_batches(images: np.ndarray, size: int, batch_size: int):
    """uint8 N x H x W [x C] -> float batches B x 3 x size x size in [0, 1]."""
    for x in _resized_arrays(images, size, batch_size):
        yield _as_rgb_float(x).contiguous()


def _file_dataset(paths, size: int, crop_pct: float, as_uint8: bool = False):
    """Image files -> 3 x size x size tensors: resize the short side to size/crop_pct, centre crop."""
    import torch
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose([
        transforms.Resize(int(round(size / crop_pct)),
                          interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(size),
        transforms.PILToTensor() if as_uint8 else transforms.ToTensor(),
    ])

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            try:
                with Image.open(paths[i]) as im:
                    return tf(im.convert("RGB"))
            except OSError as exc:
                raise PipelineError(f"cannot read image {paths[i]}: {exc}") from None

    return Files()


def _file_loader(paths, size: int, crop_pct: float, batch_size: int, workers: int,
                 as_uint8: bool = False, pin: bool = False):
    import torch

    return torch.utils.data.DataLoader(_file_dataset(paths, size, crop_pct, as_uint8),
                                       batch_size=batch_size, shuffle=False, num_workers=workers,
                                       pin_memory=pin)


def image_batches(data: ImageSet, size: int, batch_size: int, crop_pct: float = 1.0,
                  workers: int = 0):
    """Un-normalised float batches (B x 3 x size x size) of ``data`` in order."""
    if data.arrays is not None:
        return _array_batches(data.arrays, size, batch_size)
    return iter(_file_loader(data.paths, size, crop_pct, batch_size, workers))


def cache_budget() -> int:
    """Bytes of decoded images held in memory (``TE_GPU_IMAGE_CACHE_MB``)."""
    text = os.environ.get(CACHE_ENV, str(DEFAULT_CACHE_MB))
    try:
        return max(0, int(float(text) * 2 ** 20))
    except ValueError:
        raise PipelineError(f"{CACHE_ENV}={text!r}: expected a number of megabytes") from None


class DecodedImages:
    """The images of a data set at one input size, decoded and resized once.

    The first pass decodes them (in ``workers`` processes for image files, while
    the model runs) and keeps them when they fit the budget; later passes slice
    the kept tensor. Raw batches are uint8 (files: exactly the pixels ToTensor
    would scale) or float (arrays, 1 or 3 channels); :func:`_as_rgb_float` turns
    them into model input on the device.
    """

    def __init__(self, data: ImageSet, size: int, crop_pct: float, *, workers: int = 0,
                 pin: bool = False, budget: int | None = None):
        self.data, self.size, self.crop_pct = data, int(size), float(crop_pct)
        self.workers, self.pin = int(workers), bool(pin)
        self.store, self.complete = None, False
        self.keep = self.nbytes() <= (cache_budget() if budget is None else budget)

    def nbytes(self) -> int:
        """Bytes the decoded images take (uint8 RGB for files, float32 for arrays)."""
        pixels = len(self.data) * self.size * self.size
        if self.data.arrays is None:
            return 3 * pixels
        channels = 1 if self.data.arrays.ndim == 3 or self.data.arrays.shape[-1] == 1 else 3
        return 4 * channels * pixels

    def blank(self, n: int):
        """``n`` black raw images of the kept dtype and shape (to probe memory use)."""
        import torch

        if self.data.arrays is None:
            return torch.zeros((n, 3, self.size, self.size), dtype=torch.uint8)
        grey = self.data.arrays.ndim == 3 or self.data.arrays.shape[-1] == 1
        return torch.zeros((n, 1 if grey else 3, self.size, self.size))

    def _decode(self, batch_size: int):
        if self.data.arrays is not None:
            return _resized_arrays(self.data.arrays, self.size, batch_size)
        return iter(_file_loader(self.data.paths, self.size, self.crop_pct, batch_size, self.workers,
                                 as_uint8=True, pin=self.pin))

    def batches(self, batch_size: int):
        """Raw batches of ``batch_size`` images in order."""
        if self.complete:
            for start in range(0, len(self.data), batch_size):
                yield self.store[start:start + batch_size]
            return
        import torch

        filled = 0
        for x in self._decode(batch_size):
            if self.keep:
                if self.store is None:
                    self.store = torch.empty((len(self.data), *x.shape[1:]), dtype=x.dtype,
                                             pin_memory=self.pin)
                self.store[filled:filled + x.shape[0]] = x
                x = self.store[filled:filled + x.shape[0]]  # pinned on CUDA: copies do not block
            filled += x.shape[0]
            yield x
        self.complete = self.keep and filled == len(self.data)


class ImageCache:
    """Decoded images per (data set, input size, crop), shared by the passes that read them.

    Several are held while their bytes fit the budget, the least recently used
    dropped first; passes are planned by input size and crop, so each is decoded
    once even when only one fits.
    """

    def __init__(self, *, workers: int = 0, pin: bool = False, budget: int | None = None):
        self.workers, self.pin = workers, pin
        self.budget = cache_budget() if budget is None else budget
        self.held: dict = {}

    def get(self, data: ImageSet, size: int, crop_pct: float) -> DecodedImages:
        # arrays are resized without a crop: crop_pct does not change them
        key = (id(data), int(size), None if data.arrays is not None else float(crop_pct))
        images = self.held.pop(key, None) or DecodedImages(data, size, crop_pct, workers=self.workers,
                                                           pin=self.pin, budget=self.budget)
        self.held[key] = images  # most recently used last
        while len(self.held) > 1 and sum(v.nbytes() for v in self.held.values() if v.keep) > self.budget:
            del self.held[next(iter(self.held))]
        return images


# --------------------------------------------------------------------------
# one forward pass: every requested depth of one model
# --------------------------------------------------------------------------

def resolve_device(device: str | None):
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise PipelineError(f"unknown device {device!r} (cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return dev


def _pool(out):
    """A feature map (B x C x H x W), tokens (B x L x C) or vector -> B x D."""
    if out.ndim == 4:
        return out.mean((2, 3))
    if out.ndim == 3:  # tokens (B x L x C)
        return out.mean(1)
    return out.flatten(1)


def pooled_features(model, x, stage, with_predictions: bool = False):
    """Penultimate features, or the globally pooled output of feature stage ``stage``.

    With ``with_predictions`` (final features only): also the softmax of the
    model's own classifier, the input of LEEP and NCE; else None beside them.
    """
    if stage is None:
        fmap = model.forward_features(x)
        feats = model.forward_head(fmap, pre_logits=True)
        if not with_predictions:
            return feats
        return feats, model.forward_head(fmap).float().softmax(-1)
    out = model.forward_intermediates(x, indices=[stage], intermediates_only=True,
                                      stop_early=True)[0]
    return _pool(out)


def depth_outputs(model, x, indices, final: bool, predict: bool) -> dict:
    """One forward pass -> {stage index: pooled features, None: final features,
    "softmax": the model's own softmax (when ``predict``)}.

    ``indices`` are sorted, distinct, non-negative feature_info indices. The final
    features and the intermediates come from the same pass: timm's
    ``forward_intermediates`` returns the output of ``forward_features`` beside them.
    """
    out = {}
    if indices:
        got = model.forward_intermediates(x, indices=list(indices), intermediates_only=not final,
                                          stop_early=not final)
        fmap, inter = got if final else (None, got)
        out.update({k: _pool(t) for k, t in zip(indices, inter)})
    elif final:
        fmap = model.forward_features(x)
    if final:
        out[None] = model.forward_head(fmap, pre_logits=True)
        if predict:
            out["softmax"] = model.forward_head(fmap).float().softmax(-1)
    return out


def has_classifier(model, spec: ModelSpec) -> bool:
    """Whether the model's own softmax is written beside its features (final features
    of a model with a classification head)."""
    return spec.stage is None and int(getattr(model, "num_classes", 0) or 0) > 0


def _owned(t):
    """``t`` in its own storage: a view (a ViT's class token) would keep the whole batch alive."""
    if t.untyped_storage().nbytes() > t.numel() * t.element_size():
        return t.clone()
    return t


def _oom_errors():
    import torch

    return tuple({getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),
                  torch.cuda.OutOfMemoryError})


def _run_batches(forward, images: DecodedImages, batch_size: int, bar, dev):
    """Run ``forward`` over every batch, halving the batch on an out-of-memory error ->
    ({key: list of output chunks}, the batch size that fitted)."""
    import torch

    chunks, size = {}, batch_size
    oom = _oom_errors()
    for raw in images.batches(batch_size):
        start = 0
        while start < raw.shape[0]:
            part = raw[start:start + size]
            try:
                outs = forward(part)
            except oom:
                if size == 1:
                    raise PipelineError("out of memory with one image per batch; free the device "
                                        "or use --device cpu") from None
                size = max(1, size // 2)
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            for k, v in outs.items():
                chunks.setdefault(k, []).append(_owned(v))
            start += part.shape[0]
            bar.update(part.shape[0])
    return chunks, size


def _probe_batch_size(forward, images: DecodedImages, dev, cap: int = MAX_GPU_BATCH) -> int:
    """Images per pass that fit in half the free CUDA memory, from one small probe batch."""
    import torch

    probe = images.blank(4)
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    forward(probe)
    torch.cuda.synchronize(dev)
    per_image = max(1, (torch.cuda.max_memory_allocated(dev) - base) // probe.shape[0])
    free, _ = torch.cuda.mem_get_info(dev)
    fits = int(0.5 * free // per_image)
    return max(1, min(cap, 1 << max(0, fits.bit_length() - 1)))  # a power of two


@dataclass
class PassResult:
    """The candidates of one forward pass: features and softmax by candidate name."""
    features: dict
    predictions: dict
    config: dict
    weights: str
    seconds: float            # the whole pass: building the model, decoding, forward, copies
    cpu_seconds: float        # CPU time of this process over the same span (all threads)
    forward_seconds: float    # the batches alone: what images/s is measured on
    names: list = field(default_factory=list)
    params: int = 0           # parameters of the whole network that ran (every depth's)

    @property
    def images_per_s(self) -> float:
        n = next(iter(self.features.values())).shape[0]
        return n / self.forward_seconds if self.forward_seconds > 0 else float("inf")


def run_pass(specs, data: ImageSet, *, images: ImageCache | None = None, model=None,
             device=None, batch_size: int | None = None, amp: bool = True, workers: int = 0,
             channels_last: bool | None = None, progress: bool = True) -> PassResult:
    """Features of ``data`` at every depth asked by ``specs`` (one network: equal
    ``pass_key``), from one forward pass per batch.

    On a GPU the passes run under autocast (bfloat16 where supported, else float16)
    when ``amp``; on a CPU in float32. Channels-last layout unless ``channels_last``
    is False. ``batch_size`` None: 64 on a CPU, from free memory on CUDA (halved on
    an out-of-memory error). ``model``: an already built model.
    """
    import torch

    specs = list(specs)
    if len({s.pass_key() for s in specs}) != 1:
        raise ValueError("run_pass: the specs must share one network and input size")
    t0, c0 = time.perf_counter(), time.process_time()
    dev = resolve_device(device)
    how = "given"
    if model is None:
        model, how = build_model(specs[0])
    check_stages(model, specs)
    cfg = input_config(model, specs[0])
    use_amp = bool(amp) and dev.type == "cuda"
    amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if use_amp else None
    # channels-last on CPU too: measured 1.2-3.4x faster for the mobile CNNs of the demo zoo
    # (oneDNN's depthwise kernels), about even for ResNet/ViT (bench/RESULTS.md)
    layout = True if channels_last is None else bool(channels_last)
    model = model.to(dev)
    if layout:
        model = model.to(memory_format=torch.channels_last)
    indices = sorted({stage_index(model, s) for s in specs if s.stage is not None})
    final = any(s.stage is None for s in specs)
    predict = any(has_classifier(model, s) for s in specs)
    mean = torch.tensor(cfg["mean"], device=dev).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], device=dev).view(1, 3, 1, 1)

    def forward(raw):
        x = _as_rgb_float(raw.to(dev, non_blocking=True))
        x = (x - mean) / std
        if layout:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=dev.type, dtype=amp_dtype, enabled=use_amp):
            return depth_outputs(model, x, indices, final, predict)

    images = images or ImageCache(workers=workers, pin=dev.type == "cuda")
    decoded = images.get(data, cfg["size"], cfg["crop_pct"])
    names = [s.name for s in specs]
    lead = next((s.name for s in specs if s.stage is None), names[0])
    label = lead + (f" (+{len(names) - 1} depths)" if len(names) > 1 else "")
    bar = _tqdm(total=len(data), unit="img", desc=f"{data.split} {label}", leave=False,
                disable=not progress)
    t_forward = time.perf_counter()
    try:
        with torch.inference_mode():
            if batch_size is None:
                batch_size = _probe_batch_size(forward, decoded, dev) if dev.type == "cuda" else CPU_BATCH
            chunks, batch_size = _run_batches(forward, decoded, batch_size, bar, dev)
    finally:
        bar.close()
    out = {k: torch.cat(v).float().cpu().numpy() for k, v in chunks.items()}
    forward_seconds = time.perf_counter() - t_forward
    features = {s.name: out[stage_index(model, s)] for s in specs}
    predictions = {s.name: out["softmax"] for s in specs if has_classifier(model, s)}
    for what, arrays in (("features", features), ("predictions", predictions)):
        for name, arr in arrays.items():
            if not np.all(np.isfinite(arr)):
                raise PipelineError(f"{name}: non-finite {what} (try without mixed precision: --no-amp)")
    config = dict(cfg, amp=str(amp_dtype).replace("torch.", "") if use_amp else None,
                  device=str(dev), channels_last=layout, batch_size=int(batch_size))
    return PassResult(features=features, predictions=predictions, config=config, weights=how,
                      seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0,
                      forward_seconds=forward_seconds, names=names,
                      params=sum(p.numel() for p in model.parameters()))


def model_features(model, spec: ModelSpec, data: ImageSet, *, device=None, batch_size: int | None = 64,
                   amp: bool = True, workers: int = 0, progress: bool = True):
    """Features of ``data`` for one built model -> (N x D float32 features, N x K float32
    softmax of its own classifier or None, input config)."""
    res = run_pass([spec], data, model=model, device=device, batch_size=batch_size, amp=amp,
                   workers=workers, progress=progress)
    return res.features[spec.name], res.predictions.get(spec.name), res.config


def _planned_input(spec: ModelSpec) -> tuple:
    """(input size, crop) a spec will run at: its own size, else timm's default for the
    architecture, and timm's crop; (None, None) where timm cannot say without the model."""
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(spec.arch)
    except Exception:  # an unknown architecture fails later, with its own message
        cfg = None
    size = spec.size or (int(cfg.input_size[-1]) if cfg is not None else None)
    return size, (float(cfg.crop_pct or 1.0) if cfg is not None else None)


def plan_passes(specs) -> list:
    """Specs -> forward passes: lists of specs sharing a network and input (``pass_key``),
    in order of first appearance, grouped by input size and crop so that consecutive
    passes share the decoded images."""
    passes: dict = {}
    for s in specs:
        passes.setdefault(s.pass_key(), []).append(s)
    groups = list(passes.values())
    first: dict = {}
    for i, g in enumerate(groups):
        first.setdefault(_planned_input(g[0]), i)
    return sorted(groups, key=lambda g: first[_planned_input(g[0])])  # stable within an input


# --------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------

def read_manifest(directory) -> dict | None:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PipelineError(f"{path} is not a te_gpu store manifest")
    return data


def write_manifest(directory, manifest: dict) -> None:
    from te_gpu.io import atomic_write

    text = json.dumps(manifest, indent=1, allow_nan=False) + "\n"
    Path(directory).mkdir(parents=True, exist_ok=True)
    atomic_write(Path(directory) / MANIFEST, lambda fh: fh.write(text.encode("utf-8")))


def _paths(directory: Path, model: str, dataset: str):
    return (directory / f"{model}_{dataset}_feature.npy", directory / f"{model}_{dataset}_label.npy")


def prediction_path(directory, model: str, dataset: str) -> Path:
    """Where a model's own softmax (N x K float32) lies beside its features."""
    return Path(directory) / f"{model}_{dataset}_prediction.npy"


def _cached(directory: Path, entry: dict | None, record: dict, model: str, dataset: str,
            labels: np.ndarray) -> bool:
    if entry is None or entry.get("spec") != record:
        return False
    feat, lab = _paths(directory, model, dataset)
    if not (feat.is_file() and lab.is_file()):
        return False
    if entry.get("classes") and not prediction_path(directory, model, dataset).is_file():
        return False
    try:
        return np.array_equal(np.load(lab, allow_pickle=False), labels)
    except (ValueError, OSError):
        return False


def _entry(spec: ModelSpec, res: PassResult) -> dict:
    """The manifest record of one candidate of a pass."""
    feats, preds = res.features[spec.name], res.predictions.get(spec.name)
    # every candidate of the pass names the others: their seconds are one pass, not a sum
    shared = dict(candidates=res.names, seconds=round(res.seconds, 3),
                  cpu_seconds=round(res.cpu_seconds, 3), forward_seconds=round(res.forward_seconds, 3),
                  images_per_s=round(res.images_per_s, 1))
    # dim: the feature width D; params: the parameters of the whole network that ran
    return dict(spec=spec.record(), weights=res.weights, dim=int(feats.shape[1]),
                params=int(res.params), n=int(feats.shape[0]), seconds=round(res.seconds, 3),
                classes=None if preds is None else int(preds.shape[1]), **res.config,
                shared_pass=shared)


def _write_pass(out: Path, dataset: str, res: PassResult, labels: np.ndarray) -> None:
    """Every file of a pass, each atomically; the caller lists the models afterwards."""
    from te_gpu.io import atomic_write, save_zoo

    out.mkdir(parents=True, exist_ok=True)
    for name in res.names:  # a softmax left by an earlier record of this name is not this model's
        if name not in res.predictions:
            prediction_path(out, name, dataset).unlink(missing_ok=True)
    for name, preds in res.predictions.items():
        atomic_write(prediction_path(out, name, dataset),
                     lambda fh, p=preds: np.save(fh, p, allow_pickle=False))
    save_zoo(out, dataset, res.features, labels)


def _describe_pass(res: PassResult) -> str:
    dims = ", ".join(f"{n} {f.shape[1]}-d" for n, f in res.features.items())
    n = next(iter(res.features.values())).shape[0]
    shared = f"one pass for {len(res.names)} depths, " if len(res.names) > 1 else ""
    return (f"  {dims}: {n} images ({res.weights}, {res.config['size']} px, {shared}"
            f"{res.seconds:.1f} s, {res.images_per_s:.0f} img/s, CPU {res.cpu_seconds:.1f} s)")


def extract_zoo(specs, data: ImageSet, out, *, dataset: str | None = None, device=None,
                batch_size: int | None = None, amp: bool = True, workers: int = 0,
                overwrite: bool = False, progress: bool = True, channels_last: bool | None = None,
                log=print) -> dict:
    """Extract, for each spec, the features of ``data`` into the store ``out``.

    Returns ``{model: "extracted" | "cached"}``. Candidates of one network and input
    size are read from one forward pass; each pass is written (atomically) as soon
    as it is done; models whose record and samples are unchanged are skipped. The
    folder is created only when something is written into it.
    """
    out = Path(out)
    dataset = safe_dataset_name(dataset or data.name)
    if out.exists() and not out.is_dir():
        raise PipelineError(f"--out {out} exists and is not a directory")
    manifest = (read_manifest(out) if out.is_dir() else None) or \
        {"format": FORMAT, "version": 1, "datasets": {}}
    ds = manifest["datasets"].setdefault(dataset, {"models": {}})
    described = data.describe()
    if ds.get("data") not in (None, described):
        # other samples than before: the old features no longer match
        log(f"note: the samples of {dataset!r} changed; re-extracting every model")
        ds["models"] = {}
    ds["data"] = described
    labels = data.labels.astype(np.int64)
    status, pending = {}, []
    for spec in specs:
        if not overwrite and _cached(out, ds["models"].get(spec.name), spec.record(), spec.name,
                                     dataset, labels):
            status[spec.name] = "cached"
            log(f"  {spec.name}: cached ({ds['models'][spec.name]['dim']}-d)")
        else:
            pending.append(spec)
    images = ImageCache(workers=workers, pin=resolve_device(device).type == "cuda")
    for group in plan_passes(pending):
        stale = [s.name for s in group if s.name in ds["models"]]
        if stale:  # unlisted before their files are rewritten: a kill in between leaves no stale entry
            for name in stale:
                del ds["models"][name]
            write_manifest(out, manifest)
        res = run_pass(group, data, images=images, device=device, batch_size=batch_size, amp=amp,
                       workers=workers, channels_last=channels_last, progress=progress)
        _write_pass(out, dataset, res, labels)
        for spec in group:
            ds["models"][spec.name] = _entry(spec, res)
            status[spec.name] = "extracted"
        write_manifest(out, manifest)
        log(_describe_pass(res))
    if out.is_dir():
        write_manifest(out, manifest)
    return status


def find_cached(stores, spec: ModelSpec, data: ImageSet):
    """Features of ``spec`` on exactly ``data``'s samples in one of the ``stores`` (zoo
    directories written by extract) -> (N x D array, the store) or None.

    A store's model matches when its record (architecture, weights file, size,
    stage, seed) equals the spec's, whatever its name, and its data set holds the
    same samples (same source, split, subset, labels).
    """
    record = {k: v for k, v in spec.record().items() if k != "name"}
    described = data.describe()
    for directory in stores:
        manifest = read_manifest(directory)
        for dataset, ds in ((manifest or {}).get("datasets") or {}).items():
            if ds.get("data") != described:
                continue
            for name, entry in ds.get("models", {}).items():
                rec = {k: v for k, v in (entry.get("spec") or {}).items() if k != "name"}
                if rec == record and _cached(Path(directory), entry, entry["spec"], name, dataset,
                                             data.labels.astype(np.int64)):
                    feats = np.load(_paths(Path(directory), name, dataset)[0], allow_pickle=False)
                    return feats, Path(directory)
    return None


# --------------------------------------------------------------------------
# opening a zoo (store or plain public layout)
# --------------------------------------------------------------------------

def datasets_in(directory: Path) -> list:
    """Data sets of a zoo directory: from its manifest, else guessed from file names."""
    manifest = read_manifest(directory)
    if manifest is not None and manifest.get("datasets"):
        return list(manifest["datasets"])
    found = set()
    for p in directory.glob("*_feature.npy"):
        stem = p.name[: -len("_feature.npy")]
        if "_" in stem:
            found.add(stem.rsplit("_", 1)[1])
    return sorted(found)


def open_zoo(path, dataset: str | None = None, models=None):
    """A zoo directory (store or public layout) -> (zoo of memory-mapped arrays, labels, dataset)."""
    from te_gpu.io import load_zoo

    directory = Path(path)
    if not directory.exists():
        raise PipelineError(f"zoo {path}: no such directory")
    if not directory.is_dir():
        raise PipelineError(f"zoo {path}: expected a directory of {{model}}_{{dataset}}_feature.npy files")
    if dataset is None:
        found = datasets_in(directory)
        if not found:
            raise PipelineError(f"zoo {path}: no *_feature.npy files")
        if len(found) > 1:
            raise PipelineError(f"zoo {path} holds several data sets ({', '.join(found)}); "
                                "choose one with --dataset")
        dataset = found[0]
    manifest = read_manifest(directory)
    if models is None and manifest is not None and dataset in manifest.get("datasets", {}):
        listed = list(manifest["datasets"][dataset].get("models", {}))
        on_disk = [m for m in listed if _paths(directory, m, dataset)[0].is_file()]
        models = on_disk or None
    try:
        zoo, labels = load_zoo(directory, dataset, models=models, mmap=True)
    except (FileNotFoundError, ValueError) as exc:
        raise PipelineError(str(exc)) from None
    return zoo, labels, dataset
