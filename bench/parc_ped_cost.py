"""CPU seconds per model of PARC's engine and of PED's motion on a zoo folder (issue 24).

    python bench/parc_ped_cost.py ZOO DATASET MODEL[,MODEL...] [--threads 1] [--repeat 2]

Prints, per model, PARC's score and its wall / process CPU seconds (float64, one model a
call), then PED's steps and seconds. Run it at two commits to compare engines.
"""
import argparse
import time

import numpy as np
import torch

from te_gpu.engine.parc import parc_batched
from te_gpu.engine.ped import ped_batched
from te_gpu.engine.stats import Labels


def timed(fn):
    wall, cpu = time.time(), time.process_time()
    out = fn()
    return out, time.time() - wall, time.process_time() - cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("zoo")
    ap.add_argument("dataset")
    ap.add_argument("models")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models.split(","):
        stem = f"{args.zoo}/{name}_{args.dataset}"
        x = torch.as_tensor(np.load(f"{stem}_feature.npy"), dtype=torch.float64)[None]
        codes = np.unique(np.load(f"{stem}_label.npy"), return_inverse=True)[1]
        lab = Labels.from_codes(torch.as_tensor(codes), int(codes.max()) + 1, torch.float64)
        for _ in range(args.repeat):
            v, wall, cpu = timed(lambda: parc_batched(x, lab))
            print(f"{name} {tuple(x.shape[1:])} parc {float(v[0])!r} wall {wall:.2f} cpu {cpu:.2f}")
            (_, info), wall, cpu = timed(lambda: ped_batched(x, lab))
            print(f"{name} ped steps {int(info['steps'][0])} wall {wall:.2f} cpu {cpu:.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
