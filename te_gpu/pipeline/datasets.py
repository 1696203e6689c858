"""Target data sets for extraction and fine-tuning.

A data set is named by a *spec*:

* ``digits`` -- scikit-learn's handwritten digits (1,797 8x8 grey images, 10
  classes; ships inside scikit-learn, so always offline);
* ``fashion-mnist`` -- Zalando's Fashion-MNIST (70,000 28x28 grey images, 10
  classes) from Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist``; ``TE_GPU_FASHION_MNIST`` names another folder);
* a path to an ``.npz`` file with ``images`` (N x H x W or N x H x W x C, uint8 or
  floats in [0, 1]) and ``labels`` (N), or ``x_train``/``y_train``/``x_test``/``y_test``;
* a path to an ImageFolder directory (``root/<class>/<image>``), optionally with
  ``train/`` and ``test/`` (or ``val/``) sub-folders of that form.

Sources without an official split are cut into train/test by a seeded,
stratified hold-out (30 % test). ``n`` draws a class-balanced, seeded subset.
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import PipelineError

BUILTIN = ("digits", "fashion-mnist")
SPLITS = ("train", "test", "all")
TEST_FRACTION = 0.3
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle-boot"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class ImageSet:
    """Images and integer labels 0..C-1.

    Exactly one of ``arrays`` (N x H x W [x C] uint8, held in memory) and ``paths``
    (image files, decoded on demand) is set.
    """
    name: str
    labels: np.ndarray
    classes: list
    arrays: np.ndarray | None = None
    paths: list | None = None
    source: str = ""
    split: str = "all"
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index) -> "ImageSet":
        index = np.asarray(index, dtype=np.int64)
        return ImageSet(name=self.name, labels=self.labels[index], classes=list(self.classes),
                        arrays=None if self.arrays is None else self.arrays[index],
                        paths=None if self.paths is None else [self.paths[i] for i in index],
                        source=self.source, split=self.split, info=dict(self.info))

    def describe(self) -> dict:
        """What identifies these samples (stored beside extracted features)."""
        return dict(name=self.name, source=self.source, split=self.split, n=len(self),
                    classes=list(self.classes), **self.info)


# --------------------------------------------------------------------------
# sampling helpers
# --------------------------------------------------------------------------

def balanced_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation that cycles through the classes: any prefix is class-balanced."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(labels.size)
    position = np.empty(labels.size, dtype=np.int64)
    for c in np.unique(labels):
        members = order[labels[order] == c]
        position[members] = np.arange(members.size)
    # sort by position within class, ties broken by the random order
    rank_in_order = np.empty(labels.size, dtype=np.int64)
    rank_in_order[order] = np.arange(labels.size)
    return np.lexsort((rank_in_order, position))


def holdout(labels: np.ndarray, seed: int, test_fraction: float = TEST_FRACTION):
    """Seeded stratified split -> (train indices, test indices), each sorted."""
    rng = np.random.default_rng(seed + 7919)
    train, test = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(members.size * test_fraction))
        if members.size >= 2:
            k = min(max(k, 1), members.size - 1)
        test.append(members[:k])
        train.append(members[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def take(data: ImageSet, n: int | None, seed: int) -> ImageSet:
    """A class-balanced subset of at most ``n`` samples (all of them when n is None)."""
    if n is None or n >= len(data):
        return data
    if n < 1:
        raise PipelineError(f"--n must be positive, got {n}")
    idx = np.sort(balanced_order(data.labels, seed)[:n])
    out = data.subset(idx)
    out.info = dict(out.info, subset_seed=seed, subset_of=len(data))
    return out


# --------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------

def _as_uint8(images: np.ndarray, where: str) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] not in (1, 3)):
        raise PipelineError(f"{where}: images must be N x H x W or N x H x W x C (C = 1 or 3), "
                            f"got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.number):
        raise PipelineError(f"{where}: images must be numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise PipelineError(f"{where}: images hold non-finite values")
    top = 1.0 if arr.max(initial=0.0) <= 1.0 else 255.0
    return np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)


def _as_codes(labels, where: str):
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise PipelineError(f"{where}: labels must be 1-D, got shape {arr.shape}")
    classes, codes = np.unique(arr, return_inverse=True)
    return codes.astype(np.int64), [str(c) for c in classes.tolist()]


def _digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise PipelineError("the built-in 'digits' set comes with scikit-learn: "
                            "pip install scikit-learn (or te_gpu[demo])") from None
    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    return images, d.target.astype(np.int64), [str(i) for i in range(10)]


def fashion_mnist_dir() -> Path | None:
    """Folder of the Fashion-MNIST idx files, or None when not installed."""
    root = Path(os.environ.get("TE_GPU_FASHION_MNIST", FASHION_DIR))
    needed = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for stem in needed:
        if not ((root / stem).is_file() or (root / f"{stem}.gz").is_file()):
            return None
    return root


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise PipelineError(f"{path} is not an idx file of unsigned bytes")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise PipelineError(f"{path} is truncated")
    return arr.reshape(shape)


def _fashion(split: str):
    root = fashion_mnist_dir()
    if root is None:
        raise PipelineError("Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist "
                            f"(Debian; files in {FASHION_DIR}) or set TE_GPU_FASHION_MNIST")

    def part(prefix):
        def pick(stem):
            p = root / stem
            return p if p.is_file() else root / f"{stem}.gz"
        return (_read_idx(pick(f"{prefix}-images-idx3-ubyte")),
                _read_idx(pick(f"{prefix}-labels-idx1-ubyte")).astype(np.int64))

    if split == "train":
        return (*part("train"), FASHION_CLASSES)
    if split == "test":
        return (*part("t10k"), FASHION_CLASSES)
    xa, ya = part("train")
    xb, yb = part("t10k")
    return np.concatenate([xa, xb]), np.concatenate([ya, yb]), FASHION_CLASSES


def _npz(path: Path, split: str, seed: int):
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if {"x_train", "y_train", "x_test", "y_test"} <= keys:
                if split == "all":
                    x = np.concatenate([z["x_train"], z["x_test"]])
                    y = np.concatenate([z["y_train"], z["y_test"]])
                else:
                    x, y = z[f"x_{split}"], z[f"y_{split}"]
                official = True
            else:
                xk = next((k for k in ("images", "x", "X", "data") if k in keys), None)
                yk = next((k for k in ("labels", "y", "targets", "target") if k in keys), None)
                if xk is None or yk is None:
                    raise PipelineError(f"{path}: expected arrays 'images' and 'labels' (or "
                                        f"x_train/y_train/x_test/y_test); it holds {sorted(keys)}")
                x, y = z[xk], z[yk]
                official = False
    except (ValueError, OSError) as exc:
        raise PipelineError(f"{path}: cannot read it as an .npz of arrays ({exc})") from None
    x = _as_uint8(x, str(path))
    codes, classes = _as_codes(y, str(path))
    if codes.size != x.shape[0]:
        raise PipelineError(f"{path}: {x.shape[0]} images but {codes.size} labels")
    if not official and split != "all":
        tr, te = holdout(codes, seed)
        idx = tr if split == "train" else te
        x, codes = x[idx], codes[idx]
    return x, codes, classes


def _folder_files(root: Path):
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for c, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        paths += [str(p) for p in files]
        labels += [c] * len(files)
    return classes, paths, np.asarray(labels, dtype=np.int64)


def _image_folder(root: Path, split: str, seed: int):
    subs = {p.name for p in root.iterdir() if p.is_dir()}
    test_dir = "test" if "test" in subs else ("val" if "val" in subs else None)
    if "train" in subs and test_dir is not None:
        parts = ["train", test_dir] if split == "all" else [split if split == "train" else test_dir]
        classes, paths, labels = None, [], []
        for part in parts:
            cls, p, lab = _folder_files(root / part)
            if classes is None:
                classes = cls
            elif cls != classes:
                raise PipelineError(f"{root}: train/ and {test_dir}/ hold different class folders")
            paths += p
            labels.append(lab)
        labels = np.concatenate(labels)
    else:
        classes, paths, labels = _folder_files(root)
        if split != "all" and labels.size:
            tr, te = holdout(labels, seed)
            idx = tr if split == "train" else te
            paths, labels = [paths[i] for i in idx], labels[idx]
    if not paths:
        raise PipelineError(f"{root}: no images found (expected {root}/<class>/<image>, "
                            f"extensions {', '.join(IMAGE_EXTENSIONS)})")
    return paths, labels, classes


def load_data(spec: str, *, split: str = "train", n: int | None = None, seed: int = 0,
              name: str | None = None) -> ImageSet:
    """Load a data set by spec (see the module docstring)."""
    if split not in SPLITS:
        raise PipelineError(f"split must be one of {SPLITS}, got {split!r}")
    key = str(spec).strip()
    low = key.lower().replace("_", "-")
    if low in ("fashion", "fashionmnist"):
        low = "fashion-mnist"
    if low == "digits":
        x, y, classes = _digits()
        if split != "all":
            tr, te = holdout(y, seed)
            idx = tr if split == "train" else te
            x, y = x[idx], y[idx]
        data = ImageSet(name="digits", labels=y, classes=classes, arrays=x, source="digits",
                        split=split, info=dict(split_seed=seed))
    elif low == "fashion-mnist":
        x, y, classes = _fashion(split)
        data = ImageSet(name="fashion-mnist", labels=y, classes=classes, arrays=x,
                        source="fashion-mnist", split=split)
    else:
        path = Path(key).expanduser()
        if not path.exists():
            raise PipelineError(f"data {key!r}: no such file or directory, and not a built-in set "
                                f"({', '.join(BUILTIN)})")
        if path.is_dir():
            paths, y, classes = _image_folder(path, split, seed)
            data = ImageSet(name=path.resolve().name, labels=y, classes=classes, paths=paths,
                            source=str(path.resolve()), split=split, info=dict(split_seed=seed))
        elif path.suffix == ".npz":
            x, y, classes = _npz(path, split, seed)
            data = ImageSet(name=path.stem, labels=y, classes=classes, arrays=x,
                            source=str(path.resolve()), split=split, info=dict(split_seed=seed))
        else:
            raise PipelineError(f"data {key!r}: expected an ImageFolder directory or an .npz file")
    if len(data) == 0:
        raise PipelineError(f"data {key!r} ({split}) holds no images")
    if name:
        data.name = name
    return take(data, n, seed)


def default_demo_data() -> str:
    """Fashion-MNIST when Debian's package is installed, else scikit-learn's digits."""
    return "fashion-mnist" if fashion_mnist_dir() is not None else "digits"
