#!/usr/bin/env python
"""Benchmark te_gpu against the float64 reference and the Gram + eigh floor, in one run.

Examples (from the repository root)::

    python bench/run.py --zoo a --scale 0.1 --devices cpu,cuda --reference --out a.json
    python bench/run.py --zoo b --models 50 --n 2000 --width 768 --reference --ref-models 5
    python bench/run.py --zoo a --scale 1 --devices cuda,cpu --precision exact,fast \\
        --linalg cusolver,default --reference --ref-models 2 --out a_full.json

What one run measures, for the chosen zoo (shapes are printed first):

1. ``te_gpu.score_zoo`` end to end from host memory (zoo a) or from disk (zoo b:
   ``load_zoo(mmap=True)`` is inside the timed region), every requested metric
   with every SA setting, per stage (``ZooResult.timings``), on each device
   available. CUDA gets a warm-up run first; CUDA is synchronised around
   every timed region.
2. The reference (``te_gpu.reference``, float64 numpy, one model at a time) on
   the CPU, optionally on a subset of models and extrapolated (marked).
3. The floor: the same zoo, the same device, dtype and batches, doing only what
   no scorer can skip - move the features in, form the centred Gram
   ``Xc^T Xc`` and eigendecompose it, with the fastest primitives the device
   has (``te_gpu.engine.linalg``: cuBLAS/cuSOLVER on CUDA; syrk and syevd
   through numpy/scipy on CPU for D >= 256, as the engine uses them).
4. Zoo b: the raw read bandwidth of the same feature files (``np.fromfile``),
   twice, so the page cache's effect is visible; ``--evict-cache`` asks the
   kernel to drop these files' pages (``posix_fadvise DONTNEED``) before each
   timed read instead.

A device that is not present is skipped with a message, never an error.
"""
from __future__ import annotations

import os
import sys


def _early_threads(argv) -> None:
    """``--threads K`` must reach OpenMP/BLAS before numpy and torch are imported."""
    for i, a in enumerate(argv):
        value = None
        if a == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith("--threads="):
            value = a.split("=", 1)[1]
        if value:
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[var] = value


if __name__ == "__main__":
    _early_threads(sys.argv[1:])

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import zoo_synth  # noqa: E402

import te_gpu  # noqa: E402
import te_gpu.reference as ref  # noqa: E402
from te_gpu import catalogue  # noqa: E402
from te_gpu.catalogue import DEFAULT_METRICS, metric_names, resolve_sa  # noqa: E402
from te_gpu.engine import linalg  # noqa: E402
from te_gpu.engine.core import Timer  # noqa: E402  (synchronises CUDA at stage boundaries)
from te_gpu.reference.ncti import minmax_combine  # noqa: E402

PRECISION_DTYPE = {"exact": torch.float64, "fast": torch.float32}
LINALG = ("default", "cusolver", "magma")


# --------------------------------------------------------------------------
# machine
# --------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=HERE, capture_output=True,
                               text=True, timeout=10)
        return out.stdout.strip() + (" (dirty)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _source_digest() -> str:
    """sha1 of te_gpu's .py sources: which engine was measured, dirty tree or not."""
    import hashlib

    root = Path(te_gpu.__file__).resolve().parent
    h = hashlib.sha1()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def machine_info() -> dict:
    info = dict(
        cpu_model=_cpu_model(), cpu_count=os.cpu_count(),
        cpu_affinity=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        torch_threads=torch.get_num_threads(), python=platform.python_version(),
        torch=torch.__version__, numpy=np.__version__, te_gpu=te_gpu.__version__,
        platform=platform.platform(), git_commit=_git_commit(), te_gpu_sources=_source_digest(),
        mem_total_gib=_mem_total_gib(),
        cuda_available=torch.cuda.is_available(), cuda_version=torch.version.cuda,
    )
    try:
        import scipy
        info["scipy"] = scipy.__version__
    except ImportError:
        pass
    try:
        cfg = np.show_config(mode="dicts")
        info["numpy_blas"] = cfg["Build Dependencies"]["blas"].get("name")
    except Exception:  # older numpy: no dict mode
        info["numpy_blas"] = None
    try:
        from threadpoolctl import threadpool_info
        info["blas_threads"] = [(p.get("internal_api"), p.get("num_threads"))
                                for p in threadpool_info()]
    except ImportError:
        pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu_name=props.name, gpu_mem_gib=round(props.total_memory / 2 ** 30, 1),
                    gpu_count=torch.cuda.device_count(),
                    gpu_capability=f"{props.major}.{props.minor}",
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                    float32_matmul_precision=torch.get_float32_matmul_precision())
    return info


def _mem_total_gib():
    try:
        return round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2 ** 30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _loadavg():
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def resolve_devices(names) -> tuple[list, list]:
    """(usable torch devices, [(name, why skipped)])."""
    usable, skipped = [], []
    for name in names:
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            skipped.append((name, "CUDA is not available on this machine"))
            continue
        if dev.type not in ("cpu", "cuda"):
            skipped.append((name, "only cpu and cuda are supported"))
            continue
        usable.append(dev)
    return usable, skipped


def linalg_label(dev: torch.device) -> str:
    if dev.type != "cuda":
        return "cpu-lapack"
    return str(torch.backends.cuda.preferred_linalg_library()).split(".")[-1].lower()


def set_linalg(dev: torch.device, lib: str | None) -> str:
    """Apply ``torch.backends.cuda.preferred_linalg_library`` (CUDA only); return what is in use."""
    if dev.type == "cuda" and lib is not None:
        torch.backends.cuda.preferred_linalg_library(lib)
    return linalg_label(dev)


# --------------------------------------------------------------------------
# zoo
# --------------------------------------------------------------------------

def floor_model(widths, n: int, c: int) -> dict:
    """The floor by hand: flops and bytes of Gram + eigh for this zoo (see RESULTS.md).

    Gram: 2 N D^2 flops (a full bmm; symmetry is not exploited), centring N D.
    eigh: 9 D^3 flops (Golub & Van Loan's count for the symmetric QR algorithm
    with eigenvectors; divide and conquer does about 4-5 D^3 in practice).
    Bytes: the float32 features once from host memory (or disk), the working
    copy written once and read twice (centring, then the Gram).
    """
    widths = [int(w) for w in widths]
    d1, d2, d3 = sum(widths), sum(w * w for w in widths), sum(w ** 3 for w in widths)
    return dict(sum_d=d1, sum_d2=d2, sum_d3=d3,
                gram_flops=2.0 * n * d2, eigh_flops=9.0 * d3, centre_flops=2.0 * n * d1,
                class_means_flops=2.0 * n * c * d1,
                input_bytes_f32=4.0 * n * d1,
                working_bytes_f64=8.0 * n * d1, working_bytes_f32=4.0 * n * d1)


class Zoo:
    """The benchmark zoo: ``mapping`` (name -> array or memmap), labels, shapes."""

    def __init__(self, kind, names, widths, n, c, labels, mapping, source, directory=None,
                 prepare_seconds=0.0, written=None):
        self.kind, self.names, self.widths = kind, list(names), list(widths)
        self.n, self.c, self.labels, self.mapping = n, c, labels, mapping
        self.source, self.directory = source, directory
        self.prepare_seconds, self.written = prepare_seconds, written

    @property
    def paths(self):
        return [zoo_synth.feature_path(self.directory, m) for m in self.names]

    def open(self):
        """(zoo mapping, labels) as score_zoo gets them; for a disk zoo this reads the labels
        and memory-maps the features (what 'from disk' includes)."""
        if self.source == "disk":
            return te_gpu.load_zoo(self.directory, zoo_synth.DATASET, models=self.names,
                                   mmap=True)
        return {m: self.mapping[m] for m in self.names}, self.labels

    def subset(self, k: int) -> "Zoo":
        """The first ``k`` models (same source): for a cheaper warm-up."""
        if not k or k >= len(self.names):
            return self
        k = max(2, k)
        return Zoo(self.kind, self.names[:k], self.widths[:k], self.n, self.c, self.labels,
                   self.mapping, self.source, self.directory)

    def describe(self) -> dict:
        return dict(kind=self.kind, source=self.source, models=len(self.names), n=self.n,
                    classes=self.c, widths=self.widths, directory=str(self.directory or ""),
                    prepare_seconds=self.prepare_seconds, written=self.written,
                    feature_bytes_f32=4 * self.n * sum(self.widths))


def build_zoo(args) -> Zoo:
    t0 = time.perf_counter()
    if args.zoo == "a":
        widths, n, c = zoo_synth.zoo_a_shape(args.scale, n=args.n, c=args.classes)
        if args.width is not None:
            widths = (args.width,) * len(widths)
        if args.models is not None:
            widths = tuple(widths[i % len(widths)] for i in range(args.models))
        mapping, labels = zoo_synth.make_zoo(widths, n, c, seed=args.seed)
        return Zoo("a", list(mapping), widths, n, c, labels, mapping, "memory",
                   prepare_seconds=time.perf_counter() - t0)
    n_models, n, d, c = zoo_synth.zoo_b_shape(args.scale, n_models=args.models, n=args.n,
                                              d=args.width, c=args.classes)
    directory = Path(args.zoo_dir) if args.zoo_dir else Path(tempfile.gettempdir()) / \
        f"te_gpu_bench_zoo_b_{n_models}x{n}x{d}_c{c}_s{args.seed}"
    last = [0.0]

    def progress(i, total):
        if time.perf_counter() - last[0] > 10 or i == total:
            last[0] = time.perf_counter()
            print(f"  writing zoo b: {i}/{total} models", flush=True)

    info = zoo_synth.write_zoo_to_disk(directory, n_models, n, d, c, seed=args.seed,
                                       progress=progress)
    return Zoo("b", info["models"], [d] * n_models, n, c, info["labels"], None, "disk",
               directory=directory, prepare_seconds=time.perf_counter() - t0,
               written=info["written"])


def evict(paths) -> bool:
    """Ask the kernel to drop these files' cached pages (only ours; no root needed)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def read_bandwidth(paths, n: int, d: int) -> dict:
    """Seconds to read every feature file in full with ``np.fromfile`` (one at a time)."""
    header = zoo_synth._header_size((n, d))
    t0 = time.perf_counter()
    total = 0
    for p in paths:
        arr = np.fromfile(p, dtype=np.float32, offset=header)
        total += arr.nbytes
        del arr
    secs = time.perf_counter() - t0
    return dict(seconds=secs, bytes=total, gb_per_s=total / secs / 1e9)


# --------------------------------------------------------------------------
# the three measurements
# --------------------------------------------------------------------------

def run_engine(zoo: Zoo, dev, precision, metrics, sa, batch_size) -> dict:
    """te_gpu.score_zoo end to end; for a disk zoo, opening it is timed as stage 'open'."""
    load_before = _loadavg()
    sync(dev)
    c0 = time.process_time()
    t0 = time.perf_counter()
    mapping, labels = zoo.open()
    t_open = time.perf_counter() - t0
    res = te_gpu.score_zoo(mapping, labels, metrics=metrics, sa=sa, device=dev,
                           precision=precision, batch_size=batch_size, progress=False)
    sync(dev)
    wall = time.perf_counter() - t0
    stages = {k: v for k, v in res.timings.items() if k != "total"}
    if zoo.source == "disk":
        stages = {"open": t_open, **stages}
    stages["other"] = max(0.0, wall - sum(stages.values()))
    return dict(stages=stages, total=wall, engine_total=res.timings["total"], result=res,
                cpu_seconds=time.process_time() - c0, loadavg=(load_before, _loadavg()))


def _floor_batch_size(dev, n, d, c, dtype, batch_size):
    if batch_size:
        return batch_size
    try:
        from te_gpu.executor import memory_batch_size   # the engine's own sizing: batched alike
        return memory_batch_size(dev, n, d, c, dtype)
    except ImportError:
        return 1 << 30


def run_floor(zoo: Zoo, dev, precision, batch_size) -> dict:
    """Centred Gram + eigh of every model, grouped by width and batched like score_zoo."""
    dtype = PRECISION_DTYPE[precision]
    timer = Timer(dev)
    load_before = _loadavg()
    sync(dev)
    c0 = time.process_time()
    t0 = time.perf_counter()
    mapping, _ = zoo.open()
    groups: dict = {}
    for name, arr in mapping.items():
        groups.setdefault(arr.shape[1], []).append(name)
    checksum = 0.0
    for d, names in groups.items():
        bs = _floor_batch_size(dev, zoo.n, d, zoo.c, dtype, batch_size)
        start = 0
        while start < len(names):
            chunk = names[start:start + bs]
            try:
                with timer.stage("load"):
                    x = torch.empty((len(chunk), zoo.n, d), dtype=dtype, device=dev)
                    for j, name in enumerate(chunk):
                        with warnings.catch_warnings():   # read-only memmaps: torch warns
                            warnings.simplefilter("ignore", UserWarning)
                            x[j].copy_(torch.from_numpy(np.asarray(mapping[name])))
                with timer.stage("gram"):
                    xc = x - x.mean(1, keepdim=True)
                    g = linalg.gram(xc)
                    del xc
                with timer.stage("eigh"):
                    evals, evecs = linalg.eigh(g)
                checksum += float(evals[:, -1].sum())
                del x, g, evals, evecs
            except (torch.OutOfMemoryError, MemoryError):
                x = g = xc = None
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                if bs == 1:
                    raise
                bs = max(1, bs // 2)
                continue
            start += len(chunk)
    sync(dev)
    wall = time.perf_counter() - t0
    stages = dict(timer.stages)
    stages["other"] = max(0.0, wall - sum(stages.values()))
    compute = stages.get("gram", 0) + stages.get("eigh", 0)
    # score_zoo may read the next batch while it computes; the floor does not, so it also
    # reports the bound a perfectly overlapped pipeline would have: max(transfer, compute)
    return dict(stages=stages, total=wall, compute=compute,
                overlapped_bound=max(stages.get("load", 0), compute), checksum=checksum, cpu_seconds=time.process_time() - c0,
                loadavg=(load_before, _loadavg()))


def run_reference(zoo: Zoo, metrics, sa_settings, subset) -> dict:
    """The float64 reference, one model at a time, on the CPU.

    SA is computed once per model and setting and its output shared by the
    metrics (``reference.score`` would recompute it for every metric: this is
    the faster way to use the reference, so the speed-up quoted is conservative).
    """
    mapping, labels = zoo.open()
    stages: dict = {}
    per_model = {}
    scores: dict = {}
    sa_info: dict = {}
    load_before = _loadavg()
    c0 = time.process_time()
    t_all = time.perf_counter()
    for name in subset:
        x = mapping[name]
        t_model = time.perf_counter()
        for s in sa_settings:
            kw = resolve_sa(s)
            label_sfx = "" if kw is None else "+" + kw["variant"]
            feats = x
            if kw is not None:
                t = time.perf_counter()
                feats, info = ref.spread_attract(x, labels, **kw)
                stages["sa" + label_sfx] = stages.get("sa" + label_sfx, 0.0) + time.perf_counter() - t
                sa_info.setdefault(kw["variant"], {})[name] = info
            for m in metrics:
                t = time.perf_counter()
                v = catalogue.get(m).reference_fn()(feats, labels)  # NCTI: its parts
                stages[m + label_sfx] = stages.get(m + label_sfx, 0.0) + time.perf_counter() - t
                scores.setdefault(m + label_sfx, {})[name] = v
        per_model[name] = time.perf_counter() - t_model
    measured = time.perf_counter() - t_all
    if "ncti" in metrics and len(subset) >= 2:
        t = time.perf_counter()
        for lbl in [k for k in scores if k.split("+")[0] == "ncti"]:
            try:
                minmax_combine(scores[lbl])
            except ValueError:   # a component constant over a small subset: timing only
                pass
        stages["ncti_minmax"] = time.perf_counter() - t
        measured += stages["ncti_minmax"]
    factor = len(zoo.names) / len(subset)   # replaced by extrapolate() when gates are known
    cpu = time.process_time() - c0
    return dict(stages=stages, measured_seconds=measured, per_model=per_model,
                cpu_seconds=cpu * factor, measured_cpu_seconds=cpu,
                loadavg=(load_before, _loadavg()),
                models_measured=list(subset), models_total=len(zoo.names),
                extrapolated=len(subset) < len(zoo.names), factor=factor,
                total=measured * factor, scores=scores, sa=sa_info)


def pick_subset(zoo: "Zoo", k: int, strata: dict | None) -> list:
    """k models for the reference: evenly spaced, plus one of every (width, SA gate)
    stratum not yet represented, so the extrapolation sees every kind of model."""
    if k >= len(zoo.names):
        return list(zoo.names)
    idx = np.linspace(0, len(zoo.names) - 1, k).round().astype(int).tolist()
    chosen = list(dict.fromkeys(zoo.names[i] for i in idx))
    if strata:
        width = dict(zip(zoo.names, zoo.widths))

        def key(m):
            return (width[m], strata.get(m))

        groups: dict = {}
        for m in zoo.names:
            groups.setdefault(key(m), []).append(m)
        for kk, members in groups.items():
            if not any(key(m) == kk for m in chosen):
                chosen.append(members[len(members) // 2])
        target = max(k, len(groups))
        while len(chosen) > target:   # trim the most represented stratum
            counts: dict = {}
            for m in chosen:
                counts[key(m)] = counts.get(key(m), 0) + 1
            worst = max(counts, key=counts.get)
            chosen.remove([m for m in chosen if key(m) == worst][-1])
    return [m for m in zoo.names if m in chosen]


def extrapolate(reference: dict, zoo: "Zoo", strata: dict | None) -> None:
    """Estimate the reference's whole-zoo time from the measured models, in place.

    A model's cost depends on its width and on whether SA's gate opens (open:
    the SA-setting metrics run on 64 PCA dims; closed: on the raw features), so
    each unmeasured model gets the mean time of the measured models of its
    stratum (width, gate per SA setting; gates from the te_gpu run), else of its
    width, else of all measured models. ``factor`` = estimate / measured.
    """
    per = reference["per_model"]
    if not reference["extrapolated"]:
        reference["extrapolation"] = "none: every model measured"
        return
    width = dict(zip(zoo.names, zoo.widths))
    strata = strata or {}

    def key(m):
        return (width[m], strata.get(m))

    def mean(vals):
        return sum(vals) / len(vals)

    estimate, how = 0.0, {"stratum": 0, "width": 0, "all": 0}
    for m in zoo.names:
        if m in per:
            estimate += per[m]
            continue
        same = [per[k] for k in per if key(k) == key(m)]
        if same and strata:
            estimate += mean(same)
            how["stratum"] += 1
            continue
        same = [per[k] for k in per if width[k] == width[m]]
        if same:
            estimate += mean(same)
            how["width"] += 1
        else:
            estimate += mean(list(per.values()))
            how["all"] += 1
    measured_models = sum(per.values())
    reference["factor"] = estimate / measured_models
    reference["total"] = reference["measured_seconds"] * reference["factor"]
    reference["cpu_seconds"] = reference["measured_cpu_seconds"] * reference["factor"]
    reference["extrapolation"] = (f"{len(per)} of {len(zoo.names)} models measured; the others "
                                  f"estimated from the mean of measured models of the same "
                                  f"(width, SA gate) stratum: {how['stratum']}, same width: "
                                  f"{how['width']}, all: {how['all']}")


def gate_strata(result) -> dict:
    """model -> tuple of 'SA applied' per SA variant, from a ZooResult."""
    out: dict = {}
    for variant in sorted(result.sa):
        for m, info in result.sa[variant].items():
            out[m] = out.get(m, ()) + (bool(info["applied"]),)
    return out


def parity(engine_result, reference: dict) -> dict:
    """Max relative difference engine vs reference per score label, on the measured models."""
    out = {}
    for lbl, per_model in reference["scores"].items():
        worst = 0.0
        for name, rv in per_model.items():
            if lbl.split("+")[0] == "ncti":
                ev = engine_result.parts[lbl][name]
                pairs = list(zip(ev, rv))
            else:
                pairs = [(engine_result.scores[lbl][name], rv)]
            for e, r in pairs:
                worst = max(worst, abs(e - r) / max(abs(r), 1e-12))
        out[lbl] = worst
    return out


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def _fmt(x, nd=3):
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.1f}"
    if abs(x) >= 0.01:
        return f"{x:.{nd}f}"
    return f"{x:.2e}"


def print_table(rows) -> None:
    cols = ["device", "precision", "linalg", "what", "stage", "seconds", "x floor", "ref / cpu",
            "cpu s", "load 1m"]
    keys = ["device", "precision", "linalg", "what", "stage", "seconds", "ratio_to_floor",
            "ref_over_engine_cpu", "cpu_seconds", "loadavg"]

    def cell(v):
        if isinstance(v, (tuple, list)):
            return "->".join(_fmt(x, 1) for x in v)
        return v if isinstance(v, str) else _fmt(v)

    if not rows:
        print("nothing was measured (no requested device is present and --reference was not given)")
        return
    cells = [[cell(r.get(k)) for k in keys] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    print(line)
    print("-" * len(line))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def build_rows(runs, reference) -> list:
    rows = []
    floor_of = {}
    for r in runs:
        if r["what"] == "floor":
            floor_of[(r["device"], r["precision"], r["linalg"])] = r["total"]
    engine_cpu_exact = next((r["total"] for r in runs if r["what"] == "te_gpu"
                             and r["device"] == "cpu" and r["precision"] == "exact"), None)
    for r in runs:
        fl = floor_of.get((r["device"], r["precision"], r["linalg"]))
        for stage, secs in list(r["stages"].items()) + [("total", r["total"])]:
            row = dict(device=r["device"], precision=r["precision"], linalg=r["linalg"],
                       what=r["what"], stage=stage, seconds=secs,
                       ratio_to_floor=secs / fl if fl else None)
            if stage == "total":
                row["cpu_seconds"] = r.get("cpu_seconds")
                row["loadavg"] = r.get("loadavg")
            if stage == "total" and r["what"] == "te_gpu" and r["device"] == "cpu" \
                    and reference is not None and r["precision"] == "exact":
                row["ref_over_engine_cpu"] = reference["total"] / r["total"]
            rows.append(row)
    if reference is not None:
        fl = floor_of.get(("cpu", "exact", "cpu-lapack"))
        tag = "reference" + (f" (x{reference['factor']:.3g} extrap.)" if reference["extrapolated"]
                             else "")
        for stage, secs in list(reference["stages"].items()) + [("total", reference["total"])]:
            secs = secs * reference["factor"] if stage != "total" else secs
            row = dict(device="cpu", precision="float64", linalg="numpy/scipy", what=tag,
                       stage=stage, seconds=secs, ratio_to_floor=secs / fl if fl else None,
                       ref_over_engine_cpu=(secs / engine_cpu_exact
                                            if stage == "total" and engine_cpu_exact else None))
            if stage == "total":
                row["cpu_seconds"] = reference["cpu_seconds"]
                row["loadavg"] = reference["loadavg"]
            rows.append(row)
    return rows


def summarise(zoo: Zoo, runs, reference, reads) -> dict:
    """Key ratios and the issue's targets (benchmarks, not assertions)."""
    summ = {"configs": []}
    for r in runs:
        if r["what"] != "te_gpu":
            continue
        fl = next((f for f in runs if f["what"] == "floor" and f["device"] == r["device"]
                   and f["precision"] == r["precision"] and f["linalg"] == r["linalg"]), None)
        entry = dict(device=r["device"], precision=r["precision"], linalg=r["linalg"],
                     engine_total=r["total"], floor_total=fl["total"] if fl else None,
                     ratio_to_floor=r["total"] / fl["total"] if fl else None)
        load = sum(v for k, v in r["stages"].items() if k in ("open", "load"))
        if fl:
            entry["floor_overlapped_bound"] = fl["overlapped_bound"]
            entry["ratio_to_overlapped_floor"] = r["total"] / fl["overlapped_bound"] \
                if fl["overlapped_bound"] > 0 else None
            entry["engine_compute"] = r["total"] - load
            entry["floor_compute"] = fl["compute"]
            entry["compute_ratio_to_floor"] = (r["total"] - load) / fl["compute"] \
                if fl["compute"] > 0 else None
        entry["models_per_s"] = len(zoo.names) / r["total"]
        entry["engine_gb_per_s"] = 4 * zoo.n * sum(zoo.widths) / r["total"] / 1e9
        if reads:
            bw = max(x["gb_per_s"] for x in reads)
            entry["read_gb_per_s"] = bw
            entry["fraction_of_read_bw"] = entry["engine_gb_per_s"] / bw
            entry["bound"] = "I/O" if entry["fraction_of_read_bw"] >= 0.5 else "compute"
        if reference is not None and r["device"] == "cpu" and r["precision"] == "exact":
            entry["speedup_vs_reference"] = reference["total"] / r["total"]
            entry["speedup_vs_reference_cpu_time"] = reference["cpu_seconds"] / r["cpu_seconds"]
        targets = {}
        if zoo.kind == "a" and r["device"] == "cuda":
            targets["a: <= 1.0 s end to end"] = r["total"] <= 1.0
            if fl:
                targets["a: <= 2x floor"] = r["total"] <= 2 * fl["total"]
        if zoo.kind == "b" and r["device"] == "cuda":
            targets["b: >= 30 models/s"] = entry["models_per_s"] >= 30
            if reads:
                targets["b: >= 70% of read bandwidth"] = entry["fraction_of_read_bw"] >= 0.7
        if "speedup_vs_reference" in entry:
            targets["cpu: >= 3x reference"] = entry["speedup_vs_reference"] >= 3
        entry["targets"] = targets
        summ["configs"].append(entry)
    return summ


def _strip(run: dict) -> dict:
    return {k: v for k, v in run.items() if k != "result"}


def _sa_list(text: str):
    out = []
    for s in text.split(","):
        s = s.strip()
        out.append(None if s.lower() in ("none", "raw", "") else s)
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", choices=("a", "b"), default="a",
                   help="a: the public 11-model shape, in memory; b: the large zoo, from disk")
    p.add_argument("--scale", type=float, default=0.1,
                   help="shrink N and widths (and zoo b's model count); 1 = the issue's sizes")
    p.add_argument("--models", type=int, help="override the model count")
    p.add_argument("--n", type=int, help="override N (samples)")
    p.add_argument("--width", type=int, help="override D (zoo b; zoo a: every model)")
    p.add_argument("--classes", type=int, default=zoo_synth.N_CLASSES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zoo-dir", help="zoo b's folder (default: a reusable folder in $TMPDIR)")
    p.add_argument("--devices", default="cpu,cuda",
                   help="comma list; a device that is not present is skipped")
    p.add_argument("--precision", default="exact", help="comma list of exact (float64), fast (float32)")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="catalogue names, or all")
    p.add_argument("--sa", default="none,released", help="comma list of SA settings (none = raw)")
    p.add_argument("--linalg", default="cusolver",
                   help="CUDA only: comma list of preferred_linalg_library backends "
                        "(default, cusolver, magma)")
    p.add_argument("--batch-size", type=int, help="models per batch (default: the engine's sizing)")
    p.add_argument("--warmup", type=int, default=-1,
                   help="untimed runs before timing (default: 1 on CUDA, 0 on CPU)")
    p.add_argument("--warmup-models", type=int, default=0,
                   help="warm up on the first K models only (default: the whole zoo)")
    p.add_argument("--repeat", type=int, default=1, help="timed runs; the fastest is kept (all totals are recorded)")
    p.add_argument("--reference", action="store_true", help="also time te_gpu.reference (CPU)")
    p.add_argument("--ref-models", type=int,
                   help="reference on this many models (evenly spaced) and extrapolate "
                        "(default: all for zoo a, 5 for zoo b)")
    p.add_argument("--ref-repeat", type=int, default=1,
                   help="reference runs; the fastest is kept")
    p.add_argument("--no-floor", action="store_true", help="skip the Gram + eigh floor")
    p.add_argument("--evict-cache", action="store_true",
                   help="zoo b: drop the zoo files' cached pages before each timed pass")
    p.add_argument("--threads", type=int,
                   help="CPU threads for torch, OpenMP and BLAS (set before they load)")
    p.add_argument("--out", help="write every number as JSON here")
    args = p.parse_args(argv)
    for prec in args.precision.split(","):
        if prec not in PRECISION_DTYPE:
            p.error(f"unknown precision {prec!r}")
    for lib in args.linalg.split(","):
        if lib not in LINALG:
            p.error(f"unknown linalg backend {lib!r}; choose from {LINALG}")
    try:
        args.metrics = metric_names(args.metrics)
    except ValueError as exc:
        p.error(str(exc))
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    metrics = args.metrics
    sa = _sa_list(args.sa)
    precisions = args.precision.split(",")
    devices, skipped = resolve_devices([d.strip() for d in args.devices.split(",") if d.strip()])
    meta = machine_info()
    meta["command"] = "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None
                                                                          else sys.argv[1:]))
    meta["started"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print(f"machine: {meta['cpu_model']}, {meta['cpu_count']} CPUs, torch {meta['torch']} "
          f"({meta['torch_threads']} threads), numpy {meta['numpy']} ({meta['numpy_blas']})")
    if meta.get("gpu_name"):
        print(f"gpu: {meta['gpu_name']} ({meta['gpu_mem_gib']} GiB), CUDA {meta['cuda_version']}")
    for name, why in skipped:
        print(f"skipping device {name}: {why}")
    load = _loadavg()
    meta["loadavg_start"] = load
    if load is not None and load > 0.5 * (os.cpu_count() or 1):
        print(f"WARNING: load average {load} on {os.cpu_count()} CPUs before starting: other "
              "processes share this machine and CPU timings will be inflated")

    zoo = build_zoo(args)
    fm = floor_model(zoo.widths, zoo.n, zoo.c)
    print(f"zoo {zoo.kind} ({zoo.source}): {len(zoo.names)} models, N={zoo.n}, C={zoo.c}, "
          f"widths={zoo.widths if len(set(zoo.widths)) > 1 else zoo.widths[0]}, "
          f"{fm['input_bytes_f32'] / 1e6:.1f} MB float32"
          + (f", in {zoo.directory}" if zoo.directory else "")
          + f" (prepared in {zoo.prepare_seconds:.1f} s"
          + (", written now" if zoo.written else ", reused" if zoo.written is False else "") + ")")
    print(f"floor by hand: Gram {fm['gram_flops'] / 1e9:.3g} GFLOP, eigh (9 D^3) "
          f"{fm['eigh_flops'] / 1e9:.3g} GFLOP, features {fm['input_bytes_f32'] / 1e6:.1f} MB")
    print(f"metrics {list(metrics)}, sa {sa}, precision {precisions}")

    reads = []
    if zoo.source == "disk":
        for i in range(2):
            if args.evict_cache:
                evict(zoo.paths)
            r = read_bandwidth(zoo.paths, zoo.n, zoo.widths[0])
            r["pass"] = i + 1
            r["evicted_before"] = bool(args.evict_cache)
            reads.append(r)
            print(f"raw read pass {i + 1}{' (after evicting)' if args.evict_cache else ''}: "
                  f"{r['bytes'] / 1e9:.3f} GB in {r['seconds']:.3f} s = {r['gb_per_s']:.2f} GB/s")

    runs = []
    engine_cpu_exact = None
    strata = None
    for dev in devices:
        libs = args.linalg.split(",") if dev.type == "cuda" else [None]
        for lib in libs:
            for precision in precisions:
                used = set_linalg(dev, lib)
                warm = args.warmup if args.warmup >= 0 else (1 if dev.type == "cuda" else 0)
                warm_zoo = zoo.subset(args.warmup_models)
                for _ in range(warm):
                    t = time.perf_counter()
                    if not args.no_floor:
                        run_floor(warm_zoo, dev, precision, args.batch_size)
                    run_engine(warm_zoo, dev, precision, metrics, sa, args.batch_size)
                    print(f"  warm-up {dev.type}/{precision}/{used}: {time.perf_counter() - t:.2f} s")
                for what in (("floor",) if not args.no_floor else ()) + ("te_gpu",):
                    trials = []
                    for _ in range(max(1, args.repeat)):
                        if args.evict_cache and zoo.source == "disk":
                            evict(zoo.paths)
                        if what == "floor":
                            trials.append(run_floor(zoo, dev, precision, args.batch_size))
                        else:
                            trials.append(run_engine(zoo, dev, precision, metrics, sa,
                                                     args.batch_size))
                    totals = [t["total"] for t in trials]
                    keep = trials[totals.index(min(totals))]   # least disturbed run
                    run = dict(what=what, device=dev.type, precision=precision, linalg=used,
                               all_totals=totals, **keep)
                    runs.append(run)
                    print(f"  {what:6s} {dev.type}/{precision}/{used}: {keep['total']:.3f} s"
                          + (f" (runs: {', '.join(f'{t:.3f}' for t in totals)})"
                             if len(totals) > 1 else ""))
                    if what == "te_gpu" and dev.type == "cpu" and precision == "exact":
                        engine_cpu_exact = keep["result"]
                    if what == "te_gpu":
                        res = keep["result"]
                        strata = strata or gate_strata(res)
                        for variant, infos in res.sa.items():
                            opened = sum(1 for i in infos.values() if i["applied"])
                            run.setdefault("sa_gate_open", {})[variant] = opened

    reference = None
    if args.reference:
        k = args.ref_models if args.ref_models else (len(zoo.names) if zoo.kind == "a"
                                                     else min(5, len(zoo.names)))
        k = max(1, min(k, len(zoo.names)))
        subset = pick_subset(zoo, k, strata)
        print(f"  reference (float64 numpy, CPU) on {len(subset)} of {len(zoo.names)} models ...",
              flush=True)
        tries = []
        for _ in range(max(1, args.ref_repeat)):
            if args.evict_cache and zoo.source == "disk":
                evict(zoo.paths)
            tries.append(run_reference(zoo, metrics, sa, subset))
        reference = min(tries, key=lambda r: r["measured_seconds"])
        reference["all_measured"] = [r["measured_seconds"] for r in tries]
        extrapolate(reference, zoo, strata)
        print(f"  reference: {reference['measured_seconds']:.3f} s measured"
              + (f" (runs: {', '.join(f'{t:.3f}' for t in reference['all_measured'])})"
                 if len(tries) > 1 else "")
              + (f", {reference['total']:.3f} s extrapolated to {len(zoo.names)} models "
                 f"({reference['extrapolation']})" if reference["extrapolated"] else ""))
        if engine_cpu_exact is not None:
            reference["parity_max_rel_diff"] = parity(engine_cpu_exact, reference)

    rows = build_rows(runs, reference)
    print()
    print_table(rows)
    summary = summarise(zoo, runs, reference, reads)
    print()
    for e in summary["configs"]:
        parts = [f"te_gpu {e['device']}/{e['precision']}/{e['linalg']}: {e['engine_total']:.3f} s",
                 f"{e['models_per_s']:.1f} models/s"]
        if e.get("ratio_to_floor") is not None:
            parts.append(f"{e['ratio_to_floor']:.2f}x floor end to end "
                         f"({e['floor_total']:.3f} s; {_fmt(e['ratio_to_overlapped_floor'])}x its "
                         f"overlapped bound {e['floor_overlapped_bound']:.3f} s), "
                         f"compute {_fmt(e['compute_ratio_to_floor'])}x")
        if "fraction_of_read_bw" in e:
            parts.append(f"{e['engine_gb_per_s']:.3g} GB/s = {100 * e['fraction_of_read_bw']:.2g}% "
                         f"of the raw read bandwidth ({e['bound']}-bound)")
        if "speedup_vs_reference" in e:
            parts.append(f"{e['speedup_vs_reference']:.2f}x faster than the reference "
                         f"(wall; {e['speedup_vs_reference_cpu_time']:.2f}x in process CPU time"
                         + (", reference extrapolated" if reference["extrapolated"] else "") + ")")
        print("; ".join(parts))
        for name, ok in e["targets"].items():
            print(f"    target {name}: {'met' if ok else 'NOT met'}")
    if reference is not None and "parity_max_rel_diff" in reference:
        worst = max(reference["parity_max_rel_diff"].values())
        print(f"parity te_gpu cpu/exact vs reference: max relative difference {worst:.2e}")
    if not any(d.type == "cuda" for d in devices):
        print("no CUDA device here: GPU numbers pending (run the same command on a GPU machine)")

    meta["loadavg_end"] = _loadavg()
    meta["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    out = dict(meta=meta, args=vars(args), zoo=zoo.describe(), floor_by_hand=fm,
               reads=reads, runs=[_strip(r) for r in runs], skipped_devices=skipped,
               reference={k: v for k, v in reference.items() if k not in ("scores", "sa")}
               if reference else None, summary=summary, rows=rows)
    for r in out["runs"]:
        r["achieved_gflops"] = _achieved(r, fm)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1, default=str))
        print(f"wrote {args.out}")
    return out


def _achieved(run: dict, fm: dict) -> dict | None:
    if run["what"] != "floor":
        return None
    st = run["stages"]
    return dict(gram=fm["gram_flops"] / st["gram"] / 1e9 if st.get("gram") else None,
                eigh_9d3=fm["eigh_flops"] / st["eigh"] / 1e9 if st.get("eigh") else None)


if __name__ == "__main__":
    main()
