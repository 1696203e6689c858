"""Features of a target set for every model of a zoo, written as te_gpu's store.

The store is the public layout (``{model}_{dataset}_feature.npy`` float32 N x D and
``{model}_{dataset}_label.npy``, readable by :func:`te_gpu.load_zoo` and by the
public scripts) plus ``te_gpu_manifest.json``: for each data set, the samples and,
for each model, what produced its features (architecture, weights, input size,
stage, normalisation) and their shape. A model whose record is unchanged is not
extracted again, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

from . import PipelineError
from .datasets import ImageSet
from .models import ModelSpec, build_model, input_config

MANIFEST = "te_gpu_manifest.json"
FORMAT = "te_gpu-store"


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

def _array_batches(images: np.ndarray, size: int, batch_size: int):
    """uint8 N x H x W [x C] -> float batches B x 3 x size x size in [0, 1]."""
    import torch
    import torch.nn.functional as F

    for start in range(0, images.shape[0], batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
        x = x.float().div_(255.0)
        if x.ndim == 3:
            x = x[:, None]
        else:
            x = x.permute(0, 3, 1, 2)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True)
        yield x.clamp_(0.0, 1.0).contiguous()


def _file_loader(paths, size: int, crop_pct: float, batch_size: int, workers: int):
    """Image files -> float batches: resize the short side to size/crop_pct, centre crop."""
    import torch
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose([
        transforms.Resize(int(round(size / crop_pct)),
                          interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
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

    return torch.utils.data.DataLoader(Files(), batch_size=batch_size, shuffle=False,
                                       num_workers=workers)


def image_batches(data: ImageSet, size: int, batch_size: int, crop_pct: float = 1.0,
                  workers: int = 0):
    """Un-normalised float batches (B x 3 x size x size) of ``data`` in order."""
    if data.arrays is not None:
        return _array_batches(data.arrays, size, batch_size)
    return iter(_file_loader(data.paths, size, crop_pct, batch_size, workers))


# --------------------------------------------------------------------------
# features of one model
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
    if out.ndim == 4:
        return out.mean((2, 3))
    if out.ndim == 3:  # tokens (B x L x C)
        return out.mean(1)
    return out.flatten(1)


def has_classifier(model, spec: ModelSpec) -> bool:
    """Whether the model's own softmax is written beside its features (final features
    of a model with a classification head)."""
    return spec.stage is None and int(getattr(model, "num_classes", 0) or 0) > 0


def model_features(model, spec: ModelSpec, data: ImageSet, *, device=None, batch_size: int = 64,
                   amp: bool = True, workers: int = 0, progress: bool = True):
    """Features of ``data`` for one built model -> (N x D float32 features, N x K float32
    softmax of its own classifier or None, input config).

    On a GPU the forward passes run under autocast (bfloat16 where supported,
    else float16) in channels-last layout when ``amp``; on a CPU in float32.
    """
    import torch

    dev = resolve_device(device)
    cfg = input_config(model, spec)
    mean = torch.tensor(cfg["mean"], device=dev).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], device=dev).view(1, 3, 1, 1)
    use_amp = bool(amp) and dev.type == "cuda"
    amp_dtype = None
    if use_amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    model = model.to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    chunks, pred_chunks = [], []
    predict = has_classifier(model, spec)
    bar = _tqdm(total=len(data), unit="img", desc=f"extract {spec.name}", leave=False,
                disable=not progress)
    try:
        with torch.inference_mode():
            for x in image_batches(data, cfg["size"], batch_size, cfg["crop_pct"], workers):
                x = x.to(dev, non_blocking=True)
                x = (x - mean) / std
                if dev.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device_type=dev.type, dtype=amp_dtype, enabled=use_amp):
                    f = pooled_features(model, x, spec.stage, with_predictions=predict)
                if predict:
                    f, p = f
                    pred_chunks.append(p.float().cpu())
                chunks.append(f.float().cpu())
                bar.update(x.shape[0])
    finally:
        bar.close()
    feats = torch.cat(chunks).numpy().astype(np.float32, copy=False)
    preds = torch.cat(pred_chunks).numpy().astype(np.float32, copy=False) if predict else None
    for what, arr in (("features", feats), ("predictions", preds)):
        if arr is not None and not np.all(np.isfinite(arr)):
            raise PipelineError(f"{spec.name}: non-finite {what} (try without mixed precision: --no-amp)")
    return feats, preds, dict(cfg, amp=str(amp_dtype).replace("torch.", "") if use_amp else None,
                       device=str(dev))


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


def extract_zoo(specs, data: ImageSet, out, *, dataset: str | None = None, device=None,
                batch_size: int = 64, amp: bool = True, workers: int = 0, overwrite: bool = False,
                progress: bool = True, log=print) -> dict:
    """Extract, for each spec, the features of ``data`` into the store ``out``.

    Returns ``{model: "extracted" | "cached"}``. Each model is written (atomically)
    as soon as it is done; models whose record and samples are unchanged are skipped.
    """
    from te_gpu.io import atomic_write, save_zoo

    out = Path(out)
    dataset = safe_dataset_name(dataset or data.name)
    if out.exists() and not out.is_dir():
        raise PipelineError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out) or {"format": FORMAT, "version": 1, "datasets": {}}
    ds = manifest["datasets"].setdefault(dataset, {"models": {}})
    described = data.describe()
    if ds.get("data") not in (None, described):
        # other samples than before: the old features no longer match
        log(f"note: the samples of {dataset!r} changed; re-extracting every model")
        ds["models"] = {}
    ds["data"] = described
    labels = data.labels.astype(np.int64)
    status = {}
    for spec in specs:
        record = spec.record()
        if not overwrite and _cached(out, ds["models"].get(spec.name), record, spec.name, dataset, labels):
            status[spec.name] = "cached"
            log(f"  {spec.name}: cached ({ds['models'][spec.name]['dim']}-d)")
            continue
        t0 = time.perf_counter()
        model, how = build_model(spec)
        feats, preds, cfg = model_features(model, spec, data, device=device, batch_size=batch_size,
                                           amp=amp, workers=workers, progress=progress)
        del model
        if preds is not None:  # before the features: a model is complete once they are written
            atomic_write(prediction_path(out, spec.name, dataset),
                         lambda fh: np.save(fh, preds, allow_pickle=False))
        save_zoo(out, dataset, {spec.name: feats}, labels)
        seconds = time.perf_counter() - t0
        ds["models"][spec.name] = dict(spec=record, weights=how, dim=int(feats.shape[1]),
                                      n=int(feats.shape[0]), seconds=round(seconds, 3),
                                      classes=None if preds is None else int(preds.shape[1]), **cfg)
        write_manifest(out, manifest)
        status[spec.name] = "extracted"
        log(f"  {spec.name}: {feats.shape[1]}-d features of {feats.shape[0]} images "
            f"({how}, {cfg['size']} px, {seconds:.1f} s)")
    write_manifest(out, manifest)
    return status


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
