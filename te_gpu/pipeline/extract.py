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
(of its own softmax, if written) and ``shared_pass`` (the candidates of its pass,
its times, and ``ranks``: the processes that split its images).

Many processes (torchrun, srun, an initialised process group; ``te_gpu.distributed``):
rank 0 reads the store and plans; with at least as many forward passes as ranks,
whole passes are shared out by estimated FLOPs, each rank writes its passes' files
and lists them in its shard of the manifest (``te_gpu_manifest.json.rank<k>``),
which rank 0 merges at the end, or the next run - of any number of ranks - at its
start; with fewer, every rank runs a slice of each pass (whole batches: on a CPU
the same bits as one process) and rank 0 joins the slices. A rank that dies stops
the job with a message naming it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from te_gpu.io import prediction_path

from . import PipelineError
from .datasets import ImageSet
from .models import ModelSpec, build_model, check_stages, input_config, stage_index

MANIFEST = "te_gpu_manifest.json"
STORE_LOCK = ".te-gpu-extract.lock"   # held by the run writing the store
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
    ranks: int = 1            # processes that each ran a slice of the images

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
    return _read_book(Path(directory) / MANIFEST)


def _read_book(path: Path) -> dict | None:
    """A manifest, or a rank's shard of one (the same format); None where there is no file."""
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
    Path(directory).mkdir(parents=True, exist_ok=True)
    _write_book(Path(directory) / MANIFEST, manifest)


def _write_book(path: Path, manifest: dict) -> None:
    from te_gpu.io import atomic_write

    text = json.dumps(manifest, indent=1, allow_nan=False) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def store_paths(directory: Path, model: str, dataset: str):
    return (directory / f"{model}_{dataset}_feature.npy", directory / f"{model}_{dataset}_label.npy")


def _cached(directory: Path, entry: dict | None, record: dict, model: str, dataset: str,
            labels: np.ndarray) -> bool:
    if entry is None or entry.get("spec") != record:
        return False
    feat, lab = store_paths(directory, model, dataset)
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
                  images_per_s=round(res.images_per_s, 1), ranks=res.ranks)
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


def _describe_pass(res: PassResult, split: str) -> str:
    """One log line per pass; it names the split, so a train and a test run read apart."""
    dims = ", ".join(f"{n} {f.shape[1]}-d" for n, f in res.features.items())
    n = next(iter(res.features.values())).shape[0]
    shared = f"one pass for {len(res.names)} depths, " if len(res.names) > 1 else ""
    return (f"  {dims}: {n} {split} images ({res.weights}, {res.config['size']} px, {shared}"
            f"{res.seconds:.1f} s, {res.images_per_s:.0f} img/s, CPU {res.cpu_seconds:.1f} s)")


def extract_zoo(specs, data: ImageSet, out, *, dataset: str | None = None, device=None,
                batch_size: int | None = None, amp: bool = True, workers: int = 0,
                overwrite: bool = False, progress: bool = True, channels_last: bool | None = None,
                distributed: bool | None = None, log=print) -> dict:
    """Extract, for each spec, the features of ``data`` into the store ``out``.

    Returns ``{model: "extracted" | "cached"}``. Candidates of one network and input
    size are read from one forward pass; each pass is written (atomically) as soon
    as it is done; models whose record and samples are unchanged are skipped. The
    folder is created only when something is written into it.

    ``distributed``: None shares the work out between the ranks of a torchrun or srun
    job, or of a process group the caller initialised (:mod:`te_gpu.distributed`):
    every rank calls ``extract_zoo`` with the same arguments, ``out`` is a folder
    every rank sees, rank 0 alone logs, and every rank returns the whole status (see
    :func:`_share_out` for who runs what). False: this process extracts everything.
    """
    from te_gpu.distributed import joined

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PipelineError(f"--out {out} exists and is not a directory")
    dev = resolve_device(device)
    with joined(dev, enabled=distributed is not False) as world, ExitStack() as held:
        rank0 = world.rank == 0
        job = _Job(specs=list(specs), data=data, out=out,
                   dataset=safe_dataset_name(dataset or data.name),
                   labels=data.labels.astype(np.int64), world=world, device=world.device(dev),
                   run=dict(batch_size=batch_size, amp=amp, workers=workers,
                            channels_last=channels_last, progress=progress and rank0),
                   log=log if rank0 else _silent)
        if world.size > 1:   # before any work: ranks given other inputs would extract other things
            world.check_same(**_input_digests(job, overwrite))
        plan = world.share("reading the store", lambda: _plan(job, overwrite, held))
        return (_run_split if plan.owners is None else _run_shared)(job, plan)


_SHARED_OUT = "--out must be a folder every rank sees (on a file system shared by the nodes)"


def _silent(*args, **kwargs) -> None:
    pass


@dataclass
class _Job:
    """One extract_zoo call, as one rank sees it."""
    specs: list
    data: ImageSet
    out: Path
    dataset: str
    labels: np.ndarray
    world: object         # te_gpu.distributed.World
    device: object        # this rank's torch.device
    run: dict             # run_pass's keywords
    log: object

    def group(self, names) -> list:
        """The specs of a pass, from their names."""
        by_name = {s.name: s for s in self.specs}
        return [by_name[n] for n in names]

    def image_cache(self) -> ImageCache:
        """This rank's decoded images (each rank decodes what its passes read)."""
        return ImageCache(workers=self.run["workers"], pin=self.device.type == "cuda")


@dataclass
class _Plan:
    """What a job extracts and which rank runs what: decided by rank 0, shared with every rank."""
    manifest: dict            # the store's, with what an interrupted job's ranks listed taken in
    status: dict              # {model: "cached"}
    passes: list              # the forward passes to run: lists of model names, in order
    owners: list | None       # the rank that runs each pass; None: each rank a slice of each pass
    rows: list = field(default_factory=list)   # (start, stop): each rank's slice of the images


def _plan(job: _Job, overwrite: bool, held: ExitStack) -> _Plan:
    """Rank 0: lock the store for the run (in ``held``), read it (with the shards an
    interrupted job left), keep what is cached, plan the rest in forward passes and share
    them out."""
    _lock_store(job.out, held)
    _remove_leftovers(job.out)
    manifest = (read_manifest(job.out) if job.out.is_dir() else None) or _new_manifest()
    shards = _absorb_shards(job.out, manifest)
    ds = manifest["datasets"].setdefault(job.dataset, {"models": {}})
    described = job.data.describe()
    if ds.get("data") not in (None, described):
        # other samples than before: the old features no longer match
        job.log(f"note: the samples of {job.dataset!r} changed; re-extracting every model")
        ds["models"] = {}
    ds["data"] = described
    status, pending = {}, []
    for spec in job.specs:
        if not overwrite and _cached(job.out, ds["models"].get(spec.name), spec.record(), spec.name,
                                     job.dataset, job.labels):
            status[spec.name] = "cached"
            job.log(f"  {spec.name}: cached ({ds['models'][spec.name]['dim']}-d)")
        else:
            pending.append(spec)
    # several ranks: every entry to be rewritten is unlisted before any rank rewrites a file
    # (one process unlists a pass's entries when it comes to the pass)
    stale = [s.name for s in pending if s.name in ds["models"]] if job.world.size > 1 else []
    for name in stale:
        del ds["models"][name]
    if shards or stale:
        write_manifest(job.out, manifest)
        for shard in shards:   # only once the manifest holds what they listed
            shard.unlink(missing_ok=True)
    passes = plan_passes(pending)
    owners, rows = _share_out(job, passes)
    return _Plan(manifest=manifest, status=status, passes=[[s.name for s in g] for g in passes],
                 owners=owners, rows=rows)


def _share_out(job: _Job, passes: list) -> tuple:
    """(the owner rank of each pass, []) or (None, each rank's rows of the images).

    At least as many passes as ranks: whole passes, by estimated FLOPs (:func:`forward_flops`;
    the images are the same for every pass), longest first onto the least loaded rank. Fewer:
    every pass runs on every rank, each on a slice of the images, so that no rank idles
    while one extracts a large model alone.
    """
    from te_gpu.distributed import assign

    size = job.world.size
    if size == 1 or not passes:
        return [0] * len(passes), []
    if len(passes) >= size:
        job.log(f"sharing {len(passes)} forward passes across {size} ranks by estimated FLOPs")
        return assign(pass_costs(passes), size), []
    job.log(f"{len(passes)} forward pass(es) for {size} ranks: each rank extracts a slice of the "
            "images of each pass")
    return None, _slices(len(job.data), job.run["batch_size"] or CPU_BATCH, size)


def _slices(n: int, batch: int, size: int) -> list:
    """(start, stop) of each rank's images: whole batches, so that on a CPU each rank runs
    exactly the batches one process would (the same bits); the lower ranks take the extra."""
    batches = -(-n // batch)
    base, extra = divmod(batches, size)
    rows, start = [], 0
    for rank in range(size):
        stop = min(n, start + (base + (rank < extra)) * batch)
        rows.append((start, stop))
        start = stop
    return rows


def pass_costs(passes) -> list:
    """Estimated FLOPs of one image through each pass (lists of specs), for sharing passes out;
    a pass that cannot be estimated gets the median of the others. Only who runs a pass
    depends on it, never a feature."""
    memo: dict = {}
    costs = []
    for group in passes:
        key = (group[0].arch, group[0].size, tuple(sorted(str(s.stage) for s in group)))
        if key not in memo:
            memo[key] = forward_flops(group)
        costs.append(memo[key])
    known = [c for c in costs if c is not None]
    fill = float(np.median(known)) if known else 1.0
    return [fill if c is None else c for c in costs]


def forward_flops(specs) -> float | None:
    """FLOPs of one image through the pass of ``specs`` (one network), counted by torch's
    FlopCounterMode on the meta device: no memory, no weights, the calls of run_pass.

    Where the model does not run there: 2 x parameters x pixels / 256, what a ViT of
    16-pixel patches costs (the FLOPs of ViTs, 1-8x those of CNNs with as many parameters).
    None where even building it fails: its owner will say why.
    """
    import timm
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.device("meta"):
            model = timm.create_model(specs[0].arch, pretrained=False)
        size = input_config(model, specs[0])["size"]
    except Exception:
        return None
    model.eval()
    try:
        indices = sorted({stage_index(model, s) for s in specs if s.stage is not None})
        final = any(s.stage is None for s in specs)
        with torch.device("meta"), torch.inference_mode(), FlopCounterMode(display=False) as counter:
            depth_outputs(model, torch.empty(1, 3, size, size), indices, final, final)
        return float(counter.get_total_flops())
    except Exception:
        return 2.0 * sum(p.numel() for p in model.parameters()) * size * size / 256


def _input_digests(job: _Job, overwrite: bool) -> dict:
    """What every rank must have been given alike, as digests (for World.check_same)."""
    data = job.data
    samples = [data.describe(), hashlib.sha1(job.labels.tobytes()).hexdigest(),
               data.paths if data.paths is not None else list(np.shape(data.arrays))]
    settings = [job.dataset, overwrite, {k: v for k, v in job.run.items() if k != "progress"}]
    return dict(samples=_digest(samples), models=_digest([s.record() for s in job.specs]),
                settings=_digest(settings))


def _digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


# --------------------------------------------------------------------------
# running the plan: whole passes per rank, or slices of the images
# --------------------------------------------------------------------------

def _run_shared(job: _Job, plan: _Plan) -> dict:
    """Each rank runs its passes (a lone process all of them), writing each pass's files and
    listing them in its book; rank 0 then lists every rank's models in the manifest."""
    world = job.world
    book = _Book.of(job, plan.manifest)
    mine = [names for names, owner in zip(plan.passes, plan.owners) if owner == world.rank]
    images = job.image_cache()

    def extract_mine() -> dict:
        entries, lines = {}, []
        for names in mine:
            group = job.group(names)
            book.unlist(names)   # before their files are rewritten: a kill leaves no stale entry
            res = run_pass(group, job.data, images=images, device=job.device, **job.run)
            _write_pass(job.out, job.dataset, res, job.labels)
            done = {s.name: _entry(s, res) for s in group}
            book.record(done)
            entries.update(done)
            lines.append(_describe_pass(res, job.data.split))
            job.log(lines[-1])
        return dict(entries=entries, lines=lines)

    # a rank that fails sends its error here, so every rank stops with it
    results = world.gather("extracting the models", extract_mine)
    if world.rank == 0:
        _merge(job, plan, book, results)
    return dict(plan.status, **{name: "extracted" for names in plan.passes for name in names})


def _merge(job: _Job, plan: _Plan, book: "_Book", results: list) -> None:
    """Rank 0: the other ranks' models into the manifest, listed in the order one process
    would list them; the manifest written, then the ranks' shard files removed."""
    for rank, result in enumerate(results[1:], start=1):
        unseen = [n for n in result["entries"] if not store_paths(job.out, n, job.dataset)[0].is_file()]
        if unseen:
            raise PipelineError(f"rank {rank} wrote {', '.join(unseen)} where rank 0 does not see "
                                f"it: {_SHARED_OUT}")
        book.models.update(result["entries"])
        for line in result["lines"]:
            job.log(f"  rank {rank}: {line.strip()}")
    for names in plan.passes:
        for name in names:
            book.models[name] = book.models.pop(name)
    if job.out.is_dir():
        book.save()
    for shard in _shard_files(job.out):
        shard.unlink(missing_ok=True)


def _run_split(job: _Job, plan: _Plan) -> dict:
    """Every pass on every rank, each on its slice of the images, one pass after another:
    the other ranks save their rows to a part file, rank 0 joins them, writes and lists the pass."""
    world = job.world
    start, stop = plan.rows[world.rank]
    mine = job.data.subset(np.arange(start, stop))
    images = job.image_cache()
    book = _Book.of(job, plan.manifest)   # rank 0's: the manifest
    for index, names in enumerate(plan.passes):
        group, part, held = job.group(names), _part_path(job.out, index, world.rank), {}
        t0 = time.perf_counter()
        try:
            timings = world.gather(f"extracting {names[0]}",
                                   lambda: _run_slice(job, group, mine, images, part, held))
            world.share(f"writing {names[0]}",
                        lambda: _write_joined(job, book, group, held["res"], timings, index, t0))
        finally:   # rank 0 read it (or the job failed): no slice outlives its pass
            part.unlink(missing_ok=True)
    if world.rank == 0 and job.out.is_dir():
        book.save()
    return dict(plan.status, **{name: "extracted" for names in plan.passes for name in names})


def _run_slice(job: _Job, group: list, rows: ImageSet, images: ImageCache, part: Path,
               held: dict) -> dict | None:
    """This rank's rows of a pass: rank 0 keeps them (in ``held``), the others save them to
    ``part`` for rank 0 -> their timings (None: this rank has no rows)."""
    if len(rows) == 0:
        return None
    res = held["res"] = run_pass(group, rows, images=images, device=job.device, **job.run)
    if job.world.rank > 0:
        _save_part(part, res)
    return dict(cpu_seconds=res.cpu_seconds, forward_seconds=res.forward_seconds)


def _write_joined(job: _Job, book: "_Book", group: list, own: PassResult, timings: list,
                  index: int, t0: float) -> None:
    """Rank 0: the pass on all images, written and listed like one process's."""
    ranks = [r for r, t in enumerate(timings) if t is not None]
    features, predictions = _joined_slices(job, own, ranks, index)
    used = [timings[r] for r in ranks]
    res = replace(own, features=features, predictions=predictions,
                  seconds=time.perf_counter() - t0, cpu_seconds=sum(t["cpu_seconds"] for t in used),
                  forward_seconds=max(t["forward_seconds"] for t in used), ranks=len(used))
    _write_pass(job.out, job.dataset, res, job.labels)
    book.record({s.name: _entry(s, res) for s in group})
    job.log(_describe_pass(res, job.data.split))


def _joined_slices(job: _Job, own: PassResult, ranks: list, index: int) -> tuple:
    """Rank 0's slice, then those of the other ``ranks`` (their part files, read and removed),
    in rank order -> ({name: features}, {name: softmax}) of all images."""
    features = {n: [a] for n, a in own.features.items()}
    predictions = {n: [a] for n, a in own.predictions.items()}
    for rank in ranks[1:]:
        path = _part_path(job.out, index, rank)
        if not path.is_file():
            raise PipelineError(f"rank {rank}'s slice of {own.names[0]} is not in {job.out} as rank 0 "
                                f"sees it: {_SHARED_OUT}")
        with np.load(path, allow_pickle=False) as part:
            for name, chunks in features.items():
                chunks.append(part[f"features.{name}"])
            for name, chunks in predictions.items():
                chunks.append(part[f"predictions.{name}"])
        path.unlink()
    features = {n: np.concatenate(v) for n, v in features.items()}
    rows = next(iter(features.values())).shape[0]
    if rows != len(job.data):
        raise PipelineError(f"the ranks' slices of {own.names[0]} hold {rows} images, not "
                            f"{len(job.data)}")
    return features, {n: np.concatenate(v) for n, v in predictions.items()}


def _save_part(path: Path, res: PassResult) -> None:
    from te_gpu.io import atomic_write

    arrays = {f"features.{n}": a for n, a in res.features.items()}
    arrays.update({f"predictions.{n}": a for n, a in res.predictions.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


# --------------------------------------------------------------------------
# where ranks list what they wrote: the manifest, and a shard file per rank
# --------------------------------------------------------------------------

class _Book:
    """Where a rank lists the models whose files it has written: rank 0 (or a lone process)
    in the manifest; rank k > 0 in its shard file beside it, ``te_gpu_manifest.json.rank<k>``
    (the same format), which rank 0 takes in at the end of the job, or the next run at its
    start if the job died."""

    def __init__(self, path: Path, manifest: dict, dataset: str):
        self.path, self.manifest, self.dataset = path, manifest, dataset

    @classmethod
    def of(cls, job: _Job, manifest: dict) -> "_Book":
        if job.world.rank == 0:
            return cls(job.out / MANIFEST, manifest, job.dataset)
        samples = manifest["datasets"][job.dataset]["data"]
        shard = dict(_new_manifest(), datasets={job.dataset: {"models": {}, "data": samples}})
        return cls(_shard_path(job.out, job.world.rank), shard, job.dataset)

    @property
    def models(self) -> dict:
        return self.manifest["datasets"][self.dataset]["models"]

    def unlist(self, names) -> None:
        stale = [n for n in names if n in self.models]
        for name in stale:
            del self.models[name]
        if stale:
            self.save()

    def record(self, entries: dict) -> None:
        self.models.update(entries)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_book(self.path, self.manifest)


def _new_manifest() -> dict:
    return {"format": FORMAT, "version": 1, "datasets": {}}


def _shard_path(out: Path, rank: int) -> Path:
    return out / f"{MANIFEST}.rank{rank}"


def _part_path(out: Path, index: int, rank: int) -> Path:
    """Where rank ``rank`` leaves its slice of pass ``index`` for rank 0 (hidden: not a store file)."""
    return out / f".te_gpu_part.{index}.rank{rank}.npz"


_SHARD = re.compile(re.escape(MANIFEST) + r"\.rank\d+")
_LEFTOVER = re.compile(r"\.te_gpu_part\.\d+\.rank\d+\.npz"     # a slice of a split pass
                       r"|\..+\.[0-9a-f]{32}\.tmp")           # te_gpu.io.atomic_write's temporary


def _shard_files(out: Path) -> list:
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if _SHARD.fullmatch(p.name))


def _lock_store(out: Path, held: ExitStack) -> None:
    """Keep a second extraction off ``out`` while this one runs (its temporary files would be
    taken for leftovers); a folder made only to hold the lock is removed again if nothing
    was written into it (a failed extraction leaves no empty folder)."""
    from te_gpu.locks import LockError, exclusive_lock

    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if made:
        held.callback(_remove_if_empty, out)
    try:
        held.enter_context(exclusive_lock(out / STORE_LOCK, f"feature store {out}"))
    except LockError as exc:
        raise PipelineError(str(exc)) from None


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:   # not empty: something was written
        pass


def _remove_leftovers(out: Path) -> None:
    """What a killed job left beside the store and nobody reads: slices of a pass split
    across ranks, files being written (one extraction at a time writes a store)."""
    if out.is_dir():
        for path in out.iterdir():
            if _LEFTOVER.fullmatch(path.name):
                path.unlink(missing_ok=True)


def _absorb_shards(out: Path, manifest: dict) -> list:
    """Take into ``manifest`` the models the ranks of an interrupted job (any number of them)
    listed in their shard files -> those files, to remove once the manifest is written.

    Only models of the samples the manifest names are taken; each is still checked like
    any other (record, files, labels) before it counts as cached.
    """
    shards = _shard_files(out)
    for path in shards:
        for name, part in (_read_book(path) or {}).get("datasets", {}).items():
            ds = manifest["datasets"].setdefault(name, {"models": {}})
            if ds.get("data") in (None, part.get("data")):
                ds["data"] = part.get("data")
                ds["models"].update(part.get("models") or {})
    return shards


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
                    feats = np.load(store_paths(Path(directory), name, dataset)[0], allow_pickle=False)
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


def models_in(directory: Path, dataset: str) -> list:
    """Names of the models with a feature file for ``dataset`` in a zoo directory, sorted."""
    suffix = f"_{dataset}_feature.npy"   # matched as text: a name may hold glob characters
    return sorted(p.name[: -len(suffix)] for p in directory.iterdir()
                  if p.name.endswith(suffix) and len(p.name) > len(suffix))


def _check_models_in(directory: Path, dataset: str, models) -> None:
    """A PipelineError naming the models asked for that the zoo lacks, and those it holds."""
    known = models_in(directory, dataset)
    unknown = [m for m in models if m not in known]
    if unknown:
        shown = ", ".join(known[:20]) + (f", ... ({len(known)} in all)" if len(known) > 20 else "")
        raise PipelineError(f"zoo {directory} has no model {', '.join(map(repr, unknown))} for data set "
                            f"{dataset}; it holds: {shown or 'none'}")


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
    if models is not None:
        _check_models_in(directory, dataset, models)
    manifest = read_manifest(directory)
    if models is None and manifest is not None and dataset in manifest.get("datasets", {}):
        listed = list(manifest["datasets"][dataset].get("models", {}))
        on_disk = [m for m in listed if store_paths(directory, m, dataset)[0].is_file()]
        models = on_disk or None
    try:
        zoo, labels = load_zoo(directory, dataset, models=models, mmap=True)
    except (FileNotFoundError, ValueError) as exc:
        raise PipelineError(str(exc)) from None
    return zoo, labels, dataset


def store_rankings(directory, dataset: str, models) -> dict:
    """{name: {model: value}}: the static rankings a te_gpu store's manifest knows for
    ``models`` on ``dataset`` - "parameters" (of the network) and "feature width" (D) -
    each where the manifest gives it for every model; {} for a directory without one."""
    from te_gpu.baselines import FACT_NAMES

    manifest = read_manifest(directory) or {}
    entries = manifest.get("datasets", {}).get(dataset, {}).get("models", {})
    out = {}
    for name, key in ((FACT_NAMES["params"], "params"), (FACT_NAMES["feature_width"], "dim")):
        values = {m: entries.get(m, {}).get(key) for m in models}
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                          for v in values.values()):
            out[name] = {m: float(v) for m, v in values.items()}
    return out


def ped_reference_paths(directory, models, dataset: str) -> dict:
    """{model: its ``{model}_{dataset}_feature.npy``} in the store ``directory``, for PED's
    reference statistics (``te-gpu score/recommend --ped-reference DATASET``);
    PipelineError naming what is missing."""
    paths = {m: store_paths(Path(directory), m, dataset)[0] for m in models}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise PipelineError(f"--ped-reference {dataset}: no reference features "
                            f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} "
                            f"(te-gpu extract --data ... writes them beside the target's)")
    return paths
