"""Compare runs on their stored test predictions: bootstrap intervals and paired bootstrap tests.

A run is the `data/predictions.npz` of a git revision or DVC experiment (read with `dvc.api`, so
queued experiments' outputs are found in the DVC cache) or a plain file. Marks, as the paper's
Table 2 does, the methods that beat both full fine-tuning and probing — here with a computed
paired test instead of eyeballed intervals.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Predictions:
    name: str
    keys: list[str]
    labels: list
    probs: np.ndarray
    task: str


def read_predictions(source: str, repo: str = ".", name: str | None = None) -> Predictions:
    """`source`: a .npz path, or a git revision / experiment name whose outputs DVC can find."""
    if source.endswith(".npz") and Path(source).exists():
        data, label = np.load(source, allow_pickle=False), name or Path(source).stem
    else:
        import dvc.api

        raw = dvc.api.read("data/predictions.npz", repo=repo, rev=source, mode="rb")
        data = np.load(io.BytesIO(raw), allow_pickle=False)
        if name is None:
            test = json.loads(dvc.api.read("metrics/test.json", repo=repo, rev=source))
            name = f"{test['method']}@{source}"
        label = name
    return Predictions(label, [str(k) for k in data["keys"]], [json.loads(s) for s in data["labels"]],
                       np.asarray(data["probs"]), str(data["task"]))


def align(runs: list[Predictions]) -> list[Predictions]:
    """Paired tests need the same test items in the same order in every run."""
    ref = runs[0]
    for r in runs[1:]:
        if r.task != ref.task:
            raise ValueError(f"{r.name} is a {r.task} run, {ref.name} a {ref.task} run: not comparable")
        if set(r.keys) != set(ref.keys):
            raise ValueError(f"{r.name} and {ref.name} were scored on different test items "
                             f"({len(set(r.keys) ^ set(ref.keys))} differ)")
    order = {k: i for i, k in enumerate(ref.keys)}
    out = [ref]
    for r in runs[1:]:
        idx = np.argsort([order[k] for k in r.keys])
        out.append(Predictions(r.name, [r.keys[i] for i in idx], [r.labels[i] for i in idx], r.probs[idx], r.task))
    return out


def compare(runs: list[Predictions], classes: list[str] | None = None, baselines=("finetune", "probing"),
            n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> list[dict]:
    """One row per run: primary metric, its interval, paired delta/p against each baseline present."""
    from musicpetl.stats import bootstrap_ci, bootstrap_mean_ci, paired_bootstrap, paired_bootstrap_scores
    from musicpetl.tasks import make_task

    runs = align(runs)
    task = make_task(runs[0].task, classes or [str(i) for i in range(runs[0].probs.shape[1])])
    metric = task.item_metric()
    labels = runs[0].labels
    name = task.primary_metric
    # mean-of-item-score metrics bootstrap on the per-item scores (fast); mAP on whole resamples
    scores = {id(r): (task.item_scores(labels, r.probs) or {}).get(name) for r in runs}
    base = {b: next((r for r in runs if r.name.split("@")[0] == b), None) for b in baselines}
    rows = []
    for r in runs:
        if scores[id(r)] is not None:
            point, lo, hi = bootstrap_mean_ci(scores[id(r)], n_boot=n_boot, alpha=alpha, seed=seed)
        else:
            point, lo, hi = bootstrap_ci(metric, labels, r.probs, n_boot=n_boot, alpha=alpha, seed=seed)
        row = {"run": r.name, task.primary_metric: point, "low": lo, "high": hi}
        beats_all = True
        for b, ref in base.items():
            if ref is None or ref is r:
                beats_all = False
                continue
            if scores[id(r)] is not None:
                test = paired_bootstrap_scores(scores[id(r)], scores[id(ref)], n_boot=n_boot, seed=seed)
            else:
                test = paired_bootstrap(metric, labels, r.probs, ref.probs, n_boot=n_boot, seed=seed)
            row[f"delta_vs_{b}"], row[f"p_vs_{b}"] = test["delta"], test["p_value"]
            beats_all &= test["delta"] > 0 and test["p_value"] < alpha
        row["better_than_baselines"] = bool(beats_all and all(v is not None for v in base.values()))
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no runs)"
    metric = [k for k in rows[0] if k not in ("run", "low", "high")][0]
    lines = [f"{'run':<28} {metric:>8}  95% CI          vs finetune (p)     vs probing (p)"]
    for r in rows:
        ft = f"{r['delta_vs_finetune']:+.3f} ({r['p_vs_finetune']:.3f})" if "delta_vs_finetune" in r else "-"
        pr = f"{r['delta_vs_probing']:+.3f} ({r['p_vs_probing']:.3f})" if "delta_vs_probing" in r else "-"
        mark = " *" if r["better_than_baselines"] else ""
        lines.append(f"{r['run']:<28} {r[metric]:8.3f}  [{r['low']:.3f}, {r['high']:.3f}]  {ft:<19} {pr}{mark}")
    lines.append("* better than both full fine-tuning and probing (paired bootstrap, p < alpha)")
    return "\n".join(lines)
