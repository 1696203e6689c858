"""`te-gpu recommend` with its defaults against `te-gpu score` of the same metrics, in one run.

python bench/recommend_floor.py ZOO OUT.json [--baseline-src DIR --baseline-B 20] [--device D]
(from the repository root; ZOO: a te_gpu store, e.g. the 13-model zoo of issue 21)

Runs, one after the other, as a user would (fresh processes, HF_HUB_OFFLINE=1):
1. ``te-gpu score ZOO --metrics lda,ncti,knn --sa none``;
2. ``te-gpu recommend ZOO`` with its defaults (lda, ncti, knn; up to 200 redraws, stopped
   when the verdict is settled), its JSON kept for the redraws used and stage timings;
3. with ``--baseline-src``: ``recommend -B N`` of an older te_gpu tree (the code before
   redraws from weights), for comparison.
Each: wall time, CPU time of the process (user + system, from the children's rusage), the
1-minute load before and after. The machine's load is what it is: compare ratios of one run.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ap = argparse.ArgumentParser()
ap.add_argument("zoo")
ap.add_argument("out")
ap.add_argument("--baseline-src", default=None, help="PYTHONPATH of the older te_gpu")
ap.add_argument("--baseline-B", type=int, default=20)
ap.add_argument("--device", default=None, help="passed to every command (default: te-gpu's own)")
args = ap.parse_args()
args.zoo = os.path.abspath(args.zoo)
root = Path(__file__).resolve().parent.parent
env = dict(os.environ, HF_HUB_OFFLINE="1")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(name, argv, src):
    argv = argv + (["--device", args.device] if args.device else [])
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), children_cpu()
    # from a neutral folder: ``python -m`` puts the working folder first on sys.path, so run
    # from the repository root it would import that tree's te_gpu whatever PYTHONPATH says
    proc = subprocess.run([sys.executable, "-m", "te_gpu", *argv], env=dict(env, PYTHONPATH=str(src)),
                          cwd=tempfile.gettempdir(),
                          capture_output=True, text=True)
    row = dict(name=name, argv=argv, wall_s=time.perf_counter() - t0, cpu_s=children_cpu() - c0,
               load_before=load0, load_after=os.getloadavg()[0], rc=proc.returncode,
               stdout_tail=proc.stdout[-3000:], stderr_tail=proc.stderr[-1500:])
    print(f"{name}: wall {row['wall_s']:.1f} s, CPU {row['cpu_s']:.1f} s, load "
          f"{load0:.1f} -> {row['load_after']:.1f}, rc {proc.returncode}", flush=True)
    return row


with tempfile.TemporaryDirectory() as tmp:
    rows = [timed("score lda,ncti,knn", ["score", args.zoo, "--metrics", "lda,ncti,knn", "--sa", "none",
                                          "-q", "--out", f"{tmp}/score"], root)]
    rows.append(timed("recommend (defaults)", ["recommend", args.zoo, "-q", "--json", f"{tmp}/rec.json"],
                      root))
    rec = json.loads(Path(f"{tmp}/rec.json").read_text()) if rows[-1]["rc"] == 0 else {}
    if args.baseline_src:
        rows.append(timed(f"recommend -B {args.baseline_B} (before)",
                          ["recommend", args.zoo, "-q", "-B", str(args.baseline_B)], args.baseline_src))
out = dict(zoo=args.zoo, cores=os.cpu_count(), device=args.device, runs=rows,
           recommend=dict(redraws=rec.get("redraws"), verdict=rec.get("verdict"), order=rec.get("order"),
                          p_first=rec.get("p_first"), timings=rec.get("bootstrap", {}).get("timings")),
           ratio_recommend_to_score=rows[1]["wall_s"] / rows[0]["wall_s"])
Path(args.out).write_text(json.dumps(out, indent=1))
print(f"recommend / score (wall): {out['ratio_recommend_to_score']:.1f}; redraws: {out['recommend']['redraws']}")
