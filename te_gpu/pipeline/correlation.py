"""Scores against ground truth, for every label: ``te_gpu.rank.correlate`` plus the
published weighted tau of the same metric (shipped tables) beside ours, and the static
baselines of ``te_gpu.baselines`` (rankings by model facts or a prior, a random ranking)
that a metric must beat."""
from __future__ import annotations

import warnings

from . import PipelineError


def published_for(metric: str, info: dict):
    """The published tau_w of ``metric`` (no SA) for the shipped table of ``info``, or None."""
    from te_gpu import rank

    if not info.get("shipped") or info.get("regime") != "finetune":
        return None
    tables = rank.published_tau_w()
    table = tables.get(f"{info['group']}_finetune")
    if table is None:
        return None
    for name, per_dataset in table.items():
        if name.lower() == metric.lower():
            return per_dataset.get(info["dataset"])
    return None


def correlate_all(scores_by_label: dict, accuracy: dict, info: dict, k=(1, 3)) -> list:
    """One row per label: tau_w, kendall, pearson, weighted_pearson, rel@k, recall@k,
    published (tau_w of the metric without SA, when the truth is a shipped table)."""
    from te_gpu import catalogue, rank

    rows = []
    for label, scores in scores_by_label.items():
        common = [m for m in scores if m in accuracy]
        if len(common) < 2:
            raise PipelineError(f"{label}: {len(common)} model(s) have both a score and an accuracy; "
                                f"scores name {sorted(scores)[:5]}..., the truth {sorted(accuracy)[:5]}...")
        ks = tuple(kk for kk in k if kk <= len(common))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = rank.correlate(catalogue.oriented(label, scores), accuracy, k=ks)
            except ValueError as exc:
                raise PipelineError(f"{label}: {exc}") from None
        dropped = [str(w.message) for w in caught]
        row = dict(label=label, n=len(res["models"]), **{key: v for key, v in res.items() if key != "models"})
        row["published_tau_w"] = published_for(label.split("+")[0], info)
        row["dropped"] = dropped
        row["models"] = res["models"]
        rows.append(row)
    return rows


def format_rows(rows: list) -> str:
    keys = ["tau_w", "kendall", "pearson", "weighted_pearson"]
    extra = [key for key in rows[0] if key.startswith("rel@") or key.startswith("recall@")]
    static = any(r.get("best_static") for r in rows)
    head = ["scores", "models", "tau_w", "kendall", "pearson", "w.pearson"] + extra + ["published tau_w"]
    head += ["vs best static"] if static else []
    body = []
    for r in rows:
        pub = r.get("published_tau_w")
        body.append([r["label"], str(r["n"])] + [f"{r[key]:+.3f}" for key in keys] +
                    [f"{r.get(key, float('nan')):.3f}" for key in extra] +
                    ["-" if pub is None else f"{pub:+.3f}"])
        if static:
            best = r.get("best_static")
            body[-1].append("-" if not best else f"{r['tau_w'] - best['tau_w']:+.3f}"
                            + ("  " if r["beats_best_static"] else " *"))
    widths = [max(len(x[j]) for x in [head] + body) for j in range(len(head))]
    lines = ["  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(x, widths)))
             for x in [head] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------
# static baselines (te_gpu.baselines): what a metric must beat
# --------------------------------------------------------------------------

RANDOM_DRAWS = 10000           # permutations behind a random ranking's mean and spread
_RANDOM_WORK = 10 ** 8         # at most draws x models^2 sign comparisons (about a second)
PRIOR_HINT = ("give --prior FILE.json ({model: value}, higher = better, e.g. ImageNet top-1) "
              "to compare with a ranking that never looks at the target data")


def random_draws(n_models: int) -> int:
    """RANDOM_DRAWS, fewer for zoos so large that they would take more than about a second."""
    return int(max(100, min(RANDOM_DRAWS, _RANDOM_WORK // max(1, n_models) ** 2)))


def read_prior_file(path) -> dict:
    """``te_gpu.baselines.read_prior`` with its errors as PipelineError."""
    from te_gpu import baselines

    try:
        return baselines.read_prior(path)
    except (ValueError, FileNotFoundError) as exc:
        raise PipelineError(str(exc)) from None


def static_rankings_for(models, group=None, prior=None, prior_name="prior") -> tuple:
    """The static rankings of ``models``: ``({name: {model: value}}, facts_group or None)``.

    The shipped facts of ``group`` when they name every model, else of any shipped zoo that
    does, with the reversed ones of ``te_gpu.baselines.REVERSED``; then the prior (it must
    name every model: PipelineError otherwise). Names are display names (``ImageNet top-1``,
    ``parameters``, ``feature width``, ``feature width, narrowest first``, ``prior``).
    """
    from te_gpu import baselines

    models = list(models)
    if not (group in baselines.facts_groups() and set(models) <= set(baselines.facts(group))):
        group = baselines.group_with_facts(models)
    rankings = {}
    if group:
        for fact, values in baselines.static_rankings(group, models).items():
            rankings[baselines.FACT_NAMES[fact]] = values
        rankings = baselines.with_reversed(rankings)
    if prior is not None:
        try:
            rankings[prior_name] = baselines.check_prior(prior, models, prior_name)
        except ValueError as exc:
            raise PipelineError(str(exc)) from None
    return rankings, group


def _random_text(res: dict) -> str:
    return f"{res['mean']:+.3f} +- {res['sd']:.3f}"


def add_baselines(rows: list, accuracy: dict, info: dict, prior=None, *, seed: int = 0) -> list:
    """Compare every row of :func:`correlate_all` with the static baselines of its models.

    Adds ``best_static`` ({name, tau_w} of the best defined static ranking, or None) and
    ``beats_best_static`` to each row, and returns the lines that say what the baselines are:
    their tau_w on the same models, a random ranking's mean and spread, and which rows do
    not beat the best one (or how to add a prior when no facts exist for the models).
    """
    from te_gpu import baselines

    lines, any_defined = [], False
    by_models = {}
    for r in rows:
        by_models.setdefault(frozenset(r["models"]), []).append(r)
    largest = max(by_models, key=lambda key: len(by_models[key]))
    for model_set, group_rows in by_models.items():
        models = [m for m in accuracy if m in model_set]
        where = "these" if len(by_models) == 1 else "the"
        which = "" if len(by_models) == 1 else (
            f" (the other {len(group_rows)} scores)" if model_set == largest and len(group_rows) > 3
            else f" (scored by {', '.join(r['label'] for r in group_rows)})")
        rankings, group = static_rankings_for(models, info.get("group"), prior)
        table = {m: accuracy[m] for m in models}
        taus = {name: baselines.static_tau(values, table) for name, values in rankings.items()}
        defined = {name: t["tau_w"] for name, t in taus.items() if t["tau_w"] is not None}
        any_defined = any_defined or bool(defined)
        best = max(defined, key=defined.get) if defined else None
        for r in group_rows:
            r["best_static"] = {"name": best, "tau_w": defined[best]} if best else None
            r["beats_best_static"] = bool(best) and r["tau_w"] > defined[best]
        parts = [f"{name} {t:+.3f}" for name, t in defined.items()]
        undefined = [name for name, t in taus.items() if t["tau_w"] is None]
        if undefined:
            parts.append(f"{' and '.join(undefined)} undefined (the same for every model: "
                         "a constant ranking)")
        source = ", ".join(([f"{group} facts"] if group else []) + (["--prior"] if prior is not None else []))
        if parts:
            lines.append(f"static rankings of {where} {len(models)} models{which}, no target data "
                         f"({source}): " + ", ".join(parts))
        rnd = baselines.random_ranking({"truth": table}, draws=random_draws(len(models)), seed=seed)
        lines.append(f"random ranking of {where} {len(models)} models{which}: tau_w "
                     f"{_random_text(rnd['mean'])} (mean +- sd over {rnd['draws']} permutations, "
                     f"seed {seed})")
        losers = [r["label"] for r in group_rows if best and not r["beats_best_static"]]
        if losers:
            lines.append(f"* does not beat the best static ranking ({best}, {defined[best]:+.3f}): "
                         + ", ".join(losers))
    if not any_defined:
        lines.append("static rankings: none defined for these models; " + PRIOR_HINT)
    return lines


def _truth_tables(truth, *, regime=None, dataset=None, group=None) -> tuple:
    """``({dataset: {model: accuracy}}, info)`` of a shipped group (every data set, or
    ``dataset``) or of a ground-truth JSON file (the table read_ground_truth chooses)."""
    from te_gpu import rank

    from .finetune import read_ground_truth

    shipped = rank.list_ground_truth()
    if truth in shipped:
        regime = regime or "finetune"
        if regime not in shipped[truth]["regimes"]:
            raise PipelineError(f"unknown regime {regime!r} for {truth}; valid: "
                                f"{', '.join(shipped[truth]['regimes'])}")
        names = [dataset] if dataset else shipped[truth]["measured"][regime]
        tables = {}
        for name in names:
            tables[name] = read_ground_truth(truth, regime=regime, dataset=name)[0]
        return tables, dict(group=truth, regime=regime, dataset=dataset, shipped=True)
    accuracy, info = read_ground_truth(truth, group=group, regime=regime, dataset=dataset)
    return {info.get("dataset") or "truth": accuracy}, info


def baselines_report(truth, *, regime=None, dataset=None, group=None, prior=None,
                     prior_name="prior", draws=None, seed=0) -> tuple:
    """``te-gpu baselines``: ``(report, text)``, each static ranking's tau_w per data set,
    its mean, and a random ranking's, from ``te_gpu.baselines.baseline_table``."""
    from te_gpu import baselines, rank

    tables, info = _truth_tables(truth, regime=regime, dataset=dataset, group=group)
    models = list(dict.fromkeys(m for t in tables.values() for m in t))
    rankings, facts_group = static_rankings_for(models, info.get("group"), prior, prior_name)
    draws = random_draws(len(models)) if draws is None else draws
    try:
        report = baselines.baseline_table(tables, rankings, draws=draws, seed=seed)
    except (ValueError, TypeError) as exc:
        raise PipelineError(str(exc)) from None
    report["truth"] = info
    report["facts"] = facts_group
    report["sources"] = baselines.fact_sources(facts_group) if facts_group else {}
    defined = {k: v for k, v in report["rankings"].items() if "mean" in v}
    where = "/".join(str(v) for v in (info["group"], info["regime"]) if v) or str(truth)
    lines = [f"static rankings against {where}: tau_w per data set ({len(models)} models); "
             "none looks at the target data"]
    head = ["data set"] + list(defined) + ["random ranking"]
    body = [[ds] + [f"{defined[k]['tau_w'][ds]:+.3f}" for k in defined]
            + [_random_text(report["random"]["per_dataset"][ds])
               if ds in report["random"]["per_dataset"] else "-"] for ds in tables]
    if len(tables) > 1:
        body.append([f"mean of {len(tables)}"] + [f"{defined[k]['mean']:+.3f}" for k in defined]
                    + [_random_text(report["random"]["mean"])])
    widths = [max(len(row[j]) for row in [head] + body) for j in range(len(head))]
    fmt = [lambda c, w: c.ljust(w)] + [lambda c, w: c.rjust(w)] * (len(head) - 1)
    rows = [head, ["-" * w for w in widths]] + body
    if len(tables) > 1:
        rows.insert(len(rows) - 1, ["-" * w for w in widths])
    lines += ["  ".join(f(c, w) for f, c, w in zip(fmt, row, widths)) for row in rows]
    for name, res in report["rankings"].items():
        if "undefined" in res:
            lines.append(f"{name}: tau_w undefined - {res['undefined']}")
    if not defined:
        lines.append("no static ranking is defined for these models: " + PRIOR_HINT)
    lines.append(f"random ranking: one random order of the models for every data set; mean +- sd "
                 f"of tau_w over {report['random']['draws']} permutations (seed {seed})")
    if info.get("shipped") and info.get("regime") == "finetune":
        published = rank.published_tau_w().get(f"{info['group']}_finetune", {})
        means = {name: sum(per[ds] for ds in tables) / len(tables)
                 for name, per in published.items() if all(ds in per for ds in tables)}
        if means:
            lines.append(f"published metrics (their features), mean over the same {len(tables)} data "
                         "set(s): " + ", ".join(f"{n} {v:+.3f}" for n, v in means.items()))
            report["published_mean_tau_w"] = means
    if info.get("shipped") and info.get("regime") in ("lbft", "lft") and "sun397" in tables:
        lines.append("note: the shipped sun397 lbft/lft accuracies look implausible (above full "
                     "fine-tuning)")
    if facts_group:
        lines.append(f"facts: {facts_group} in te_gpu/data/model_facts.json, each with its source "
                     "there (te_gpu.baselines.fact_sources)")
    return report, "\n".join(lines)
