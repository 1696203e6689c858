"""Checkpoint cost at zoo (b)'s model shape (N = 10,000, D = 768, C = 100), from disk.

python bench/checkpoint_cost.py OUT.json THREADS MODELS REPEATS [N]   (from the repository root)
Per repeat: score without a checkpoint, score with one (timing the reader's hashing
with thread CPU time and the checkpoint writes), then rerun on the complete checkpoint
(verification only); the page cache of the feature files is emptied before each pass.
"""
import json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, "bench")
import torch
torch.set_num_threads(int(sys.argv[2]))
import numpy as np
import te_gpu, te_gpu._loader as L, te_gpu.checkpoint as C, zoo_synth as zs
from run import evict

M, REPEATS = int(sys.argv[3]), int(sys.argv[4])
N = int(sys.argv[5]) if len(sys.argv) > 5 else 10_000
root = Path(tempfile.gettempdir()) / f"te_gpu_ckpt_cost_{M}x{N}"
z = zs.write_zoo_to_disk(root, M, N, 768)
paths, y = zs.zoo_paths(root, z["models"]), z["labels"]
KW = dict(metrics=("logme", "sfda", "lda", "gbc", "ncti"), sa=[None, "released"],
          precision="exact", progress=False, device="cpu")
spent = dict(hash=0.0, save=0.0)
real_fp, real_save = L.content_fingerprint, C.Checkpoint.save

def fp(x):
    t = time.thread_time()
    out = real_fp(x)
    spent["hash"] += time.thread_time() - t
    return out

def save(self, s):
    t = time.perf_counter()
    real_save(self, s)
    spent["save"] += time.perf_counter() - t

L.content_fingerprint, C.Checkpoint.save = fp, save
rows = []

def run(what, **kw):
    evict(list(paths.values()))
    spent.update(hash=0.0, save=0.0)
    t0, c0 = time.perf_counter(), time.process_time()
    res = te_gpu.score_zoo(paths, y, **dict(KW, **kw))
    rows.append(dict(what=what, wall=round(time.perf_counter() - t0, 3),
                     cpu=round(time.process_time() - c0, 3), hash_cpu=round(spent["hash"], 3),
                     save=round(spent["save"], 3), load=open("/proc/loadavg").read().split()[0]))
    print(rows[-1], flush=True)
    return res

for rep in range(REPEATS):
    ck = root.parent / f"ckpt_cost_b_{M}x{N}.json"
    ck.unlink(missing_ok=True)
    a = run("score, no checkpoint")
    b = run("score, checkpoint", checkpoint=ck)
    c = run("rerun on the complete checkpoint (verification)", checkpoint=ck)
    assert a.scores == b.scores == c.scores
cpu = [l for l in open("/proc/cpuinfo") if l.startswith("model name")][0].split(":")[1].strip()
Path(sys.argv[1]).write_text(json.dumps(dict(
    meta=dict(threads=int(sys.argv[2]), models=M, n=N, d=768, c=100, cpu=cpu,
              torch=torch.__version__, numpy=np.__version__), rows=rows), indent=1))
