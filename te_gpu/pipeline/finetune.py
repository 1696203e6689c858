"""Ground truth: the accuracy each model of a zoo reaches on the target task.

Three regimes, named as in the shipped tables (``te_gpu/data/finetune_accuracy.json``):

* ``lft`` -- linear probe: a multinomial logistic regression (scipy's L-BFGS) on the
  frozen, standardised features, its weight decay chosen on a validation split;
* ``lbft`` -- last-block fine-tuning: the last feature stage of the network (and
  what follows it) plus a new linear head are trained, the rest is frozen;
* ``finetune`` -- full fine-tuning.

``lbft`` and ``finetune`` train with SGD (momentum 0.9, cosine schedule) for each
learning rate x weight decay of a small sweep; the setting with the best
validation accuracy (a stratified 20 % of the training split) is kept and its
test accuracy reported, in percent (rounded to 4 decimals).

The linear probe reads the features of a model from te-gpu extract's stores when
they match (same model record, same samples: see :func:`probe_zoo`), and
otherwise extracts them, every depth of one network in one forward pass.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from . import PipelineError
from .datasets import ImageSet, holdout

REGIMES = ("lft", "lbft", "finetune")
DEFAULT_WDS_PROBE = (1e-3, 1e-2, 1e-1)
# The sweep of lbft and finetune. Its lrs span what real runs kept: 0.01 and 0.001 (the
# earlier default) kept 0.01 in 265 of 270 runs and 0.001 in 5; 0.1, 0.03 and 0.01 kept 0.03
# or 0.1 for 58 of 109 fully fine-tuned models on nine zoos and 47 of 61 last blocks on five
# (bench/RESULTS.md "The sweep widened on nine zoos"). One weight decay, the one every
# shipped table used, keeps the cost of the earlier 2 x 2 sweep.
DEFAULT_LRS = (1e-1, 3e-2, 1e-2, 1e-3)
DEFAULT_WDS = (1e-4,)
VAL_FRACTION = 0.2


# --------------------------------------------------------------------------
# linear probe on features
# --------------------------------------------------------------------------

def _fit_logistic(x: np.ndarray, y: np.ndarray, c: int, wd: float, max_iter: int = 200):
    """Multinomial logistic regression, mean cross-entropy + wd/2 |W|^2 (L-BFGS) -> (W, b)."""
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    n, d = x.shape
    onehot = np.eye(c)[y]

    def loss_grad(theta):
        w, b = theta[:d * c].reshape(d, c), theta[d * c:]
        z = x @ w + b
        lse = logsumexp(z, axis=1)
        loss = float((lse - z[np.arange(n), y]).mean() + 0.5 * wd * (w * w).sum())
        g = (np.exp(z - lse[:, None]) - onehot) / n
        return loss, np.concatenate([(x.T @ g + wd * w).ravel(), g.sum(0)])

    res = minimize(loss_grad, np.zeros(d * c + c), jac=True, method="L-BFGS-B",
                   options=dict(maxiter=max_iter))
    return res.x[:d * c].reshape(d, c), res.x[d * c:]


def percent(correct, total) -> float:
    """Accuracy in percent, rounded to 4 decimals (91.6, not 91.60000000000001)."""
    return round(100.0 * int(correct) / int(total), 4)


def _accuracy(x, y, w, b) -> float:
    return percent(np.sum(np.argmax(x @ w + b, axis=1) == y), len(y))


def why_val_differs(regime: str) -> str:
    """One line: why the sweep's best validation accuracy is not the reported test accuracy."""
    if regime == "lft":
        return ("val (in the sweep) is measured on the 20 % of the training images held out to "
                "choose the weight decay; the reported test accuracy on the test split, by the "
                "probe refit on all training images: other images and another fit, so they differ")
    return ("val (in the sweep) is measured on the 20 % of the training images held out to "
            "choose lr and wd; the reported test accuracy on the test split, by the same network: "
            "other images, so they differ")


def linear_probe(train_x, train_y, test_x, test_y, *, wds=DEFAULT_WDS_PROBE, seed: int = 0) -> dict:
    """Linear-probe test accuracy (%) of one model's features.

    Features are standardised with the training statistics; the weight decay
    with the best accuracy on a validation split of the training set is refit
    on the whole training set.
    """
    train_x = np.asarray(train_x, dtype=np.float64)
    test_x = np.asarray(test_x, dtype=np.float64)
    train_y = np.asarray(train_y, dtype=np.int64)
    test_y = np.asarray(test_y, dtype=np.int64)
    c = int(max(train_y.max(), test_y.max())) + 1
    mu = train_x.mean(0)
    sd = train_x.std(0)
    sd[sd == 0] = 1.0
    xtr = (train_x - mu) / sd
    xte = (test_x - mu) / sd
    if xtr.shape[1] > xtr.shape[0]:
        # With an L2 penalty the optimal weights lie in the span of the training rows:
        # solving in that basis (N <= D coordinates) gives the same classifier, faster.
        _, _, vt = np.linalg.svd(xtr, full_matrices=False)
        xtr, xte = xtr @ vt.T, xte @ vt.T
    sweep = {}
    wds = list(wds)
    if len(wds) > 1:
        fit_idx, val_idx = holdout(train_y, seed, VAL_FRACTION)
        for wd in wds:
            w, b = _fit_logistic(xtr[fit_idx], train_y[fit_idx], c, wd)
            sweep[wd] = _accuracy(xtr[val_idx], train_y[val_idx], w, b)
        best = max(wds, key=lambda k: (sweep[k], -wds.index(k)))
    else:
        best = wds[0]
    w, b = _fit_logistic(xtr, train_y, c, best)
    out = dict(accuracy=_accuracy(xte, test_y, w, b), wd=best,
               sweep={str(k): v for k, v in sweep.items()})
    if sweep:
        out["val_accuracy"] = sweep[best]
    return out


def probe_zoo(specs, train: ImageSet, test: ImageSet, *, stores=(), wds=DEFAULT_WDS_PROBE,
              seed: int = 0, device=None, batch_size: int | None = None, amp: bool = True,
              workers: int = 0, progress: bool = True):
    """Linear-probe accuracy of every spec -> yields ``(name, result)`` one model at a time.

    Features are read from ``stores`` (zoo directories written by te-gpu extract)
    where a model's record and the split's samples match, else extracted: the
    depths of one network in one forward pass per split, images decoded once per
    input size. ``result["features"]`` says where each split's features came from.
    """
    from .extract import ImageCache, find_cached, plan_passes, resolve_device, run_pass

    pin = resolve_device(device).type == "cuda"
    splits = {"train": train, "test": test}
    caches = {k: ImageCache(workers=workers, pin=pin) for k in splits}
    for group in plan_passes(specs):
        feats = {k: {} for k in splits}
        origin = {}
        for split, data in splits.items():
            missing = []
            for spec in group:
                hit = find_cached(stores, spec, data)
                if hit is None:
                    missing.append(spec)
                else:
                    feats[split][spec.name], origin[spec.name, split] = hit[0], str(hit[1])
            if missing:
                res = run_pass(missing, data, images=caches[split], device=device,
                               batch_size=batch_size, amp=amp, workers=workers, progress=progress)
                feats[split].update(res.features)
        for spec in group:
            res = linear_probe(feats["train"][spec.name], train.labels, feats["test"][spec.name],
                               test.labels, wds=wds, seed=seed)
            res["features"] = {k: origin.get((spec.name, k), "extracted") for k in splits}
            yield spec.name, res


# --------------------------------------------------------------------------
# training a network
# --------------------------------------------------------------------------

def _last_block_names(model, stage):
    """Parameter-name prefixes trained by lbft: the last stage used and what follows it."""
    info = model.feature_info
    idx = len(info) - 1 if stage is None else stage % len(info)
    module = info[idx]["module"]
    prefixes = [module + "."]
    if stage is None or idx == len(info) - 1:
        top = module.split(".")[0]
        children = [n for n, _ in model.named_children()]
        cls = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
        if top in children:
            after = children[children.index(top) + 1:]
            prefixes += [n + "." for n in after if n != cls]
    return prefixes


def _network(spec, n_classes: int):
    import torch

    from .extract import pooled_features
    from .models import build_model, input_config

    backbone, how = build_model(spec)
    size = input_config(backbone, spec)["size"]

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            with torch.no_grad():
                dim = pooled_features(backbone.eval(), torch.zeros(1, 3, size, size), spec.stage).shape[1]
            self.head = torch.nn.Linear(dim, n_classes)

        def forward(self, x):
            return self.head(pooled_features(self.backbone, x, spec.stage))

    return Net(), how


def _set_trainable(net, regime: str, spec):
    backbone = net.backbone
    if regime == "finetune":
        for p in net.parameters():
            p.requires_grad_(True)
        return
    prefixes = _last_block_names(backbone, spec.stage)
    count = 0
    for name, p in backbone.named_parameters():
        on = any(name.startswith(pre) for pre in prefixes)
        p.requires_grad_(on)
        count += int(on)
    if count == 0:
        raise PipelineError(f"{spec.name}: the last block ({prefixes[0][:-1]}) has no parameters; "
                            "use --regime finetune")


def _train_mode(net, regime):
    """Train mode, but frozen parts (lbft) keep their BatchNorm statistics."""
    net.train()
    if regime == "lbft":
        for m in net.backbone.modules():
            own = list(m.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own):
                m.eval()


def _evaluate(net, data: ImageSet, cfg, dev, batch_size, amp_dtype) -> float:
    import torch

    from .extract import image_batches

    mean = torch.tensor(cfg["mean"], device=dev).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], device=dev).view(1, 3, 1, 1)
    net.eval()
    correct = 0
    labels = torch.from_numpy(data.labels)
    start = 0
    with torch.inference_mode():
        for x in image_batches(data, cfg["size"], batch_size, cfg["crop_pct"]):
            x = (x.to(dev) - mean) / std
            with torch.autocast(device_type=dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                pred = net(x).argmax(1).cpu()
            correct += int((pred == labels[start:start + x.shape[0]]).sum())
            start += x.shape[0]
    return percent(correct, len(data))


def train_once(spec, train: ImageSet, evals: dict, *, regime: str, lr: float, wd: float,
               epochs: int, batch_size: int, device=None, amp: bool = True, seed: int = 0,
               progress: bool = True) -> dict:
    """Train one network for one (lr, wd) -> {name of an eval set: accuracy %}."""
    import torch
    from tqdm.auto import tqdm

    from .extract import image_batches, resolve_device
    from .models import input_config

    dev = resolve_device(device)
    torch.manual_seed(seed)
    n_classes = len(train.classes)
    net, _ = _network(spec, n_classes)
    _set_trainable(net, regime, spec)
    cfg = input_config(net.backbone, spec)
    net = net.to(dev)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    steps = epochs * math.ceil(len(train) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    use_amp = amp and dev.type == "cuda"
    amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if use_amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    mean = torch.tensor(cfg["mean"], device=dev).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], device=dev).view(1, 3, 1, 1)
    rng = np.random.default_rng(seed)
    bar = tqdm(total=steps, unit="step", leave=False, disable=not progress,
               desc=f"{regime} {spec.name} lr={lr:g} wd={wd:g}")
    try:
        for _ in range(epochs):
            order = rng.permutation(len(train))
            shuffled = train.subset(order)
            labels = torch.from_numpy(shuffled.labels)
            start = 0
            _train_mode(net, regime)
            for x in image_batches(shuffled, cfg["size"], batch_size, cfg["crop_pct"]):
                y = labels[start:start + x.shape[0]].to(dev)
                start += x.shape[0]
                x = (x.to(dev) - mean) / std
                with torch.autocast(device_type=dev.type, dtype=amp_dtype, enabled=use_amp):
                    loss = torch.nn.functional.cross_entropy(net(x), y)
                if not torch.isfinite(loss):
                    raise FloatingPointError("loss diverged")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                bar.update(1)
    finally:
        bar.close()
    return {k: _evaluate(net, d, cfg, dev, batch_size, amp_dtype) for k, d in evals.items()}


def finetune_model(spec, train: ImageSet, test: ImageSet, *, regime: str, lrs=DEFAULT_LRS,
                   wds=DEFAULT_WDS, epochs: int = 3, batch_size: int = 32, device=None,
                   amp: bool = True, seed: int = 0, train_seeds=None,
                   progress: bool = True) -> dict:
    """Sweep lr x wd, keep the best validation accuracy -> {accuracy, lr, wd, sweep}.

    ``seed`` draws the hold-out split and, by default, seeds the one training run (the
    head's initialisation and the order of the batches). ``train_seeds`` (a list) trains
    each setting once per seed instead, on the same images and hold-out: the setting with
    the best mean validation accuracy is kept and its mean test accuracy reported, and
    ``runs`` holds each run's test accuracy, so a reader sees how far one training run
    moves a model.
    """
    if regime not in ("lbft", "finetune"):
        raise PipelineError(f"regime must be lbft or finetune here, got {regime!r}")
    given = train_seeds is not None
    train_seeds = [seed] if train_seeds is None else [int(s) for s in train_seeds]
    if not train_seeds or len(set(train_seeds)) < len(train_seeds):
        raise PipelineError(f"train_seeds must be distinct seeds, at least one: got {train_seeds}")
    lrs, wds = list(lrs), list(wds)

    def trained(data, evals, lr, wd):
        per_run = [train_once(spec, data, evals, regime=regime, lr=lr, wd=wd, epochs=epochs,
                              batch_size=batch_size, device=device, amp=amp, seed=s,
                              progress=progress) for s in train_seeds]
        mean = {k: round(float(np.mean([a[k] for a in per_run])), 4) for k in evals}
        return mean, [a["test"] for a in per_run]

    if len(lrs) * len(wds) == 1:
        accs, per_run = trained(train, {"test": test}, lrs[0], wds[0])
        out = dict(accuracy=accs["test"], lr=lrs[0], wd=wds[0], sweep={})
    else:
        fit_idx, val_idx = holdout(train.labels, seed, VAL_FRACTION)
        fit, val = train.subset(fit_idx), train.subset(val_idx)
        sweep, best = {}, None
        for lr in lrs:
            for wd in wds:
                try:
                    accs, runs_test = trained(fit, {"val": val, "test": test}, lr, wd)
                except FloatingPointError:
                    accs, runs_test = {"val": 0.0, "test": 0.0, "diverged": True}, []
                sweep[f"lr={lr:g},wd={wd:g}"] = accs
                if best is None or accs["val"] > best[0]["val"]:
                    best = (accs, lr, wd, runs_test)
        accs, lr, wd, per_run = best
        out = dict(accuracy=accs["test"], val_accuracy=accs["val"], lr=lr, wd=wd, sweep=sweep)
    if given:
        out.update(runs=per_run, train_seeds=train_seeds)
    return out


def lr_edge_lines(kept: dict, lrs) -> list[str]:
    """One line per edge of the lr sweep that some model's kept lr sits on.

    ``kept`` maps a model to the lr its sweep kept. A model whose best lr is the
    sweep's largest (or smallest) value may train better beyond it: with the earlier
    default sweep (0.01, 0.001) the largest lr was kept in 265 of 270 real runs, and
    a wider sweep moved accuracies by up to 49 points (bench/RESULTS.md "The sweep
    widened on nine zoos"). A sweep of one lr has no edge to report.
    """
    grid = sorted({float(v) for v in lrs})
    if len(grid) < 2 or not kept:
        return []
    lines = []
    for edge, word, beyond, wider in (
            (grid[-1], "largest", "larger", (10 * grid[-1], 3 * grid[-1], grid[-1])),
            (grid[0], "smallest", "smaller", (grid[0], 0.3 * grid[0], 0.1 * grid[0]))):
        names = [m for m, lr in kept.items() if float(lr) == edge]
        if not names:
            continue
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        lines.append(f"lr {edge:g}, the {word} of the sweep, was kept for {len(names)} of "
                     f"{len(kept)} model(s) ({shown}): a {beyond} lr may train them better; "
                     f"widen the sweep, e.g. --lr {','.join(f'{v:.3g}' for v in wider)}")
    return lines


# --------------------------------------------------------------------------
# the ground-truth file (format of the shipped tables)
# --------------------------------------------------------------------------

def write_ground_truth(path, *, group: str, regime: str, dataset: str, accuracies: dict,
                       details: dict | None = None) -> dict:
    """Merge ``{model: accuracy %}`` into ``path`` (``{"groups": {group: {"models": [...],
    "regimes": {regime: {dataset: {model: acc}}}}}}``, the shipped tables' format). Runs
    that write one file at once (say, one per network) take turns: each merge holds
    ``path``.lock for its read and write, so none loses another's accuracies."""
    from te_gpu.locks import exclusive_lock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.with_name(path.name + ".lock"), f"ground-truth file {path}",
                        wait=60.0):
        return _merge_ground_truth(path, group, regime, dataset, accuracies, details)


def _merge_ground_truth(path: Path, group, regime, dataset, accuracies, details) -> dict:
    from te_gpu.io import atomic_write

    data = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PipelineError(f"{path} exists but is not valid JSON ({exc}); choose another --out") from None
        if not isinstance(data, dict) or not isinstance(data.get("groups", {}), dict):
            raise PipelineError(f"{path} exists but is not a ground-truth table; choose another --out")
    data.setdefault("_source", "Accuracies (%) measured by `te-gpu finetune` (regimes: lft = linear "
                    "probe, lbft = last-block fine-tuning, finetune = full fine-tuning)")
    g = data.setdefault("groups", {}).setdefault(group, {"models": [], "regimes": {}})
    for m in accuracies:
        if m not in g["models"]:
            g["models"].append(m)
    table = g["regimes"].setdefault(regime, {}).setdefault(dataset, {})
    table.update({m: round(float(a), 4) for m, a in accuracies.items()})
    if details:
        d = data.setdefault("_details", {}).setdefault(group, {}).setdefault(regime, {})
        d.setdefault(dataset, {}).update(details)
    text = json.dumps(data, indent=1, allow_nan=False) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
    return data


def read_ground_truth(source: str, *, group=None, regime=None, dataset=None):
    """Accuracies ``{model: acc}`` and a description, from a shipped table or a JSON file.

    ``source`` is ``group1``/``group2`` (shipped) or a path to a JSON file holding
    ``{model: acc}``, ``{dataset: {model: acc}}`` or the shipped tables' format.
    Returns ``(accuracies, info)`` with info's ``group``, ``regime``, ``dataset``
    and ``shipped`` (True for the packaged tables).
    """
    from te_gpu import rank

    shipped = rank.list_ground_truth()
    if source in shipped:
        regime = regime or "finetune"
        if dataset is None:
            raise PipelineError(f"--truth {source} needs --dataset (one of "
                                f"{', '.join(shipped[source]['datasets'])})")
        try:
            acc = rank.ground_truth(source, regime, dataset)
        except ValueError as exc:
            raise PipelineError(str(exc)) from None
        return dict(acc), dict(group=source, regime=regime, dataset=dataset, shipped=True)
    path = Path(source)
    if not path.is_file():
        raise PipelineError(f"--truth {source}: neither a shipped table ({', '.join(shipped)}) "
                            "nor a JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a JSON object")

    def choose(mapping, key, what):
        options = [k for k in mapping if not str(k).startswith("_")]
        if key is None:
            if len(options) == 1:
                return options[0]
            raise PipelineError(f"{path} holds several {what}s ({', '.join(options)}); "
                                f"choose one with --{what}")
        if key not in mapping:
            raise PipelineError(f"{path}: no {what} {key!r}; it has {', '.join(options)}")
        return key

    info = dict(group=None, regime=None, dataset=dataset, shipped=False)
    if "groups" in data:
        info["group"] = group = choose(data["groups"], group, "group")
        regimes = data["groups"][group].get("regimes", {})
        info["regime"] = regime = choose(regimes, regime, "regime")
        table = regimes[regime]
        info["dataset"] = dataset = choose(table, dataset, "dataset")
        acc = table[dataset]
    else:
        flat = {k: v for k, v in data.items() if not str(k).startswith("_")}
        if flat and all(isinstance(v, dict) for v in flat.values()):
            info["dataset"] = dataset = choose(flat, dataset, "dataset")
            acc = flat[dataset]
        else:
            acc = flat
    bad = [m for m, v in acc.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
    if bad or not acc:
        raise PipelineError(f"{path}: expected numeric accuracies per model, got {bad[:3] or 'none'}")
    return {m: float(v) for m, v in acc.items()}, info
