"""Deterministic synthetic, class-structured model zoos for the benchmarks.

Every model of a zoo sees the same N samples (shared labels, C classes) and has
its own width D. Model ``i``'s features are

    x = (mu[y] + h) * (amp * w) @ A  +  noise * eps  +  b

with a latent space of r = min(D, 32) dims: class centres ``mu`` (C x r, spread
``sep``), per-sample latent noise ``h ~ N(0, I_r)``, decaying latent weights
``w_k = k^-1/2``, an orthonormal embedding ``A`` (r x D), isotropic noise
``eps ~ N(0, I_D)`` and a positive offset ``b`` (features are not centred, as
pooled CNN features are not). ``sep``, ``amp`` and ``noise`` are drawn per model,
so models differ in how separable their classes are (the metrics rank them),
some pass Spread/Attract's gate and some do not, and NCTI's LDA takes both of
its solver branches across a zoo.

Determinism: everything is drawn from ``numpy.random.default_rng([seed, i, k])``
streams, one stream per model and component, consumed row by row. A model
generated in chunks of any size is therefore bit-identical to the same model
generated at once, which is what lets :func:`write_zoo_to_disk` write a zoo
far larger than memory (500 x 10,000 x 768 float32 is about 15 GB) one chunk
at a time and still equal :func:`make_zoo`.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from te_gpu.io import atomic_write

# (a): shaped like the public 11-model supervised zoo (group1)
ZOO_A_WIDTHS = (512, 2048, 2048, 2048, 1280, 1280, 1024, 1664, 1920, 1024, 2048)
ZOO_A_N = 50_000
# (b): the large zoo
ZOO_B_MODELS = 500
ZOO_B_N = 10_000
ZOO_B_D = 768
N_CLASSES = 100
DATASET = "synth"
LATENT_DIM = 32
MANIFEST = "zoo_manifest.json"
_FEATURE = "{model}_{dataset}_feature.npy"
_LABEL = "{model}_{dataset}_label.npy"


# --------------------------------------------------------------------------
# sizes
# --------------------------------------------------------------------------

def _scaled(value: int, scale: float, minimum: int) -> int:
    return max(minimum, int(round(value * scale)))


def zoo_a_shape(scale: float = 1.0, *, n: int | None = None, c: int = N_CLASSES):
    """(widths, N, C) of zoo (a) shrunk by ``scale`` (N and every width)."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    widths = tuple(_scaled(w, scale, 8) for w in ZOO_A_WIDTHS)
    n = n if n is not None else _scaled(ZOO_A_N, scale, 2 * c)
    return widths, n, c


def zoo_b_shape(scale: float = 1.0, *, n_models: int | None = None, n: int | None = None,
                d: int | None = None, c: int = N_CLASSES):
    """(n_models, N, D, C) of zoo (b) shrunk by ``scale`` (model count, N and D)."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    n_models = n_models if n_models is not None else _scaled(ZOO_B_MODELS, scale, 2)
    n = n if n is not None else _scaled(ZOO_B_N, scale, 2 * c)
    d = d if d is not None else _scaled(ZOO_B_D, scale, 8)
    return n_models, n, d, c


def model_name(index: int, width: int) -> str:
    """Names sort in model order and say the width: ``m0003_d768``."""
    return f"m{index:04d}_d{width}"


# --------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------

def make_labels(n: int, c: int, seed: int) -> np.ndarray:
    """Balanced labels (class sizes differ by at most one), shuffled: int64 (N,)."""
    if c < 2:
        raise ValueError(f"need at least 2 classes, got {c}")
    if n < 2 * c:
        raise ValueError(f"N={n} gives fewer than 2 samples per class for C={c} (GBC needs 2)")
    rng = np.random.default_rng([seed, 0x1abe1])
    return rng.permutation(np.arange(n, dtype=np.int64) % c)


@dataclass
class ModelSpec:
    """The per-model constants of one synthetic model (small: O(C r + r D))."""
    index: int
    width: int
    seed: int
    sep: float
    amp: float
    noise: float
    centres: np.ndarray   # (C, r) latent class centres
    embed: np.ndarray     # (r, D) orthonormal rows, scaled by amp * w_k
    offset: np.ndarray    # (D,)

    @classmethod
    def draw(cls, index: int, width: int, c: int, seed: int) -> "ModelSpec":
        rng = np.random.default_rng([seed, index, 0])
        sep = float(np.exp(rng.uniform(np.log(0.3), np.log(1.5))))
        amp = float(np.exp(rng.uniform(np.log(0.8), np.log(4.0))))
        noise = float(rng.uniform(0.3, 1.0))
        r = min(width, LATENT_DIM)
        centres = sep * rng.standard_normal((c, r))
        q, _ = np.linalg.qr(rng.standard_normal((width, r)))     # (D, r), orthonormal columns
        weights = amp / np.sqrt(np.arange(1, r + 1))
        embed = weights[:, None] * q.T
        offset = rng.uniform(0.0, 1.0, width)
        return cls(index, width, seed, sep, amp, noise, centres, embed, offset)

    def chunks(self, labels: np.ndarray, rows_per_chunk: int, dtype=np.float32):
        """Yield the model's N x D features ``rows_per_chunk`` rows at a time."""
        rng_latent = np.random.default_rng([self.seed, self.index, 1])
        rng_noise = np.random.default_rng([self.seed, self.index, 2])
        r = self.embed.shape[0]
        n = labels.shape[0]
        for start in range(0, n, rows_per_chunk):
            y = labels[start:start + rows_per_chunk]
            h = self.centres[y] + rng_latent.standard_normal((y.shape[0], r))
            eps = rng_noise.standard_normal((y.shape[0], self.width), dtype=np.float32)
            x = (h @ self.embed).astype(np.float32)
            x += np.float32(self.noise) * eps
            x += self.offset.astype(np.float32)
            yield x.astype(dtype, copy=False)


def _rows_per_chunk(width: int, chunk_bytes: int) -> int:
    return max(1, chunk_bytes // (4 * width))


def make_model(index: int, width: int, labels: np.ndarray, c: int, seed: int,
               dtype=np.float32, chunk_bytes: int = 64 * 2 ** 20) -> np.ndarray:
    """One model's N x D features in memory."""
    spec = ModelSpec.draw(index, width, c, seed)
    out = np.empty((labels.shape[0], width), dtype=dtype)
    start = 0
    for chunk in spec.chunks(labels, _rows_per_chunk(width, chunk_bytes), dtype):
        out[start:start + chunk.shape[0]] = chunk
        start += chunk.shape[0]
    return out


def make_zoo(widths, n: int, c: int = N_CLASSES, seed: int = 0, dtype=np.float32):
    """A zoo in memory: ``({model_name: N x D array}, labels (N,))``.

    Parameters
    ----------
    widths : feature width of each model (one model per entry).
    n, c : samples and classes (labels are balanced, shared by every model).
    seed : the explicit seed; the same arguments always give the same zoo.
    dtype : features dtype (float32 as the public zoos store them).
    """
    labels = make_labels(n, c, seed)
    zoo = {model_name(i, w): make_model(i, int(w), labels, c, seed, dtype)
           for i, w in enumerate(widths)}
    return zoo, labels


# --------------------------------------------------------------------------
# on disk, in the public layout
# --------------------------------------------------------------------------

def _npy_header(fh, shape, dtype) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
              "fortran_order": False, "shape": tuple(int(s) for s in shape)}
    np.lib.format.write_array_header_1_0(fh, header)


def _header_size(shape) -> int:
    buf = io.BytesIO()
    _npy_header(buf, shape, np.float32)
    return buf.tell()


def feature_path(directory, model: str, dataset: str = DATASET) -> Path:
    return Path(directory) / _FEATURE.format(model=model, dataset=dataset)


def label_path(directory, model: str, dataset: str = DATASET) -> Path:
    return Path(directory) / _LABEL.format(model=model, dataset=dataset)


def _manifest_matches(directory: Path, params: dict) -> bool:
    path = directory / MANIFEST
    if not path.is_file():
        return False
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if saved.get("params") != params:
        return False
    expected = _header_size((params["n"], params["d"])) + 4 * params["n"] * params["d"]
    for model in saved.get("models", []):
        f = feature_path(directory, model, params["dataset"])
        if not f.is_file() or f.stat().st_size != expected \
                or not label_path(directory, model, params["dataset"]).is_file():
            return False
    return len(saved.get("models", [])) == params["n_models"]


def write_zoo_to_disk(directory, n_models: int, n: int, d: int, c: int = N_CLASSES,
                      seed: int = 0, *, dataset: str = DATASET, chunk_bytes: int = 64 * 2 ** 20,
                      reuse: bool = True, progress=None) -> dict:
    """Write ``n_models`` models of width ``d`` in the public layout, chunk by chunk.

    Files: ``{model}_{dataset}_feature.npy`` (float32 N x D) and
    ``{model}_{dataset}_label.npy`` (int64 N, the same for every model), each
    written to a temp name, fsynced and renamed. At most ``chunk_bytes`` of
    features are in memory at a time. A ``zoo_manifest.json`` records the
    parameters; with ``reuse`` an existing complete zoo of the same parameters
    is kept rather than written again.

    Returns ``{"directory", "dataset", "models", "labels", "written", "bytes"}``.
    """
    directory = Path(directory)
    params = dict(n_models=int(n_models), n=int(n), d=int(d), c=int(c), seed=int(seed),
                  dataset=dataset, generator="bench.zoo_synth v1")
    models = [model_name(i, d) for i in range(n_models)]
    labels = make_labels(n, c, seed)
    nbytes = 4 * n * d * n_models
    if reuse and _manifest_matches(directory, params):
        return dict(directory=directory, dataset=dataset, models=models, labels=labels,
                    written=False, bytes=nbytes)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)   # incomplete until rewritten at the end
    rows = _rows_per_chunk(d, chunk_bytes)

    def write_labels(fh):
        np.save(fh, labels, allow_pickle=False)

    for i, model in enumerate(models):
        spec = ModelSpec.draw(i, d, c, seed)

        def write_features(fh, spec=spec):
            _npy_header(fh, (n, d), np.float32)
            for chunk in spec.chunks(labels, rows, np.float32):
                fh.write(np.ascontiguousarray(chunk, dtype="<f4").tobytes())

        atomic_write(feature_path(directory, model, dataset), write_features)
        atomic_write(label_path(directory, model, dataset), write_labels)
        if progress is not None:
            progress(i + 1, n_models)
    (directory / MANIFEST).write_text(json.dumps(dict(params=params, models=models), indent=1))
    return dict(directory=directory, dataset=dataset, models=models, labels=labels,
                written=True, bytes=nbytes)


def zoo_paths(directory, models, dataset: str = DATASET) -> dict:
    """``{model: feature path}`` for a zoo written by :func:`write_zoo_to_disk`."""
    return {m: feature_path(directory, m, dataset) for m in models}
