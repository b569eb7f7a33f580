"""Compare runs on their stored test predictions: bootstrap intervals and paired bootstrap tests.

A run is the `data/predictions.npz` of a git revision or DVC experiment (read with `dvc.api`, so
queued experiments' outputs are found in the DVC cache) or a plain file. Marks, as the paper's
Table 2 does, the methods that beat both full fine-tuning and probing — here with a computed
paired test instead of eyeballed intervals.
"""
from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicpetl.errors import InputError


@dataclass
class Predictions:
    name: str
    keys: list[str]
    labels: list
    probs: np.ndarray  # (items, outputs); a frame-level task: an object array of per-track curves
    task: str
    frame_rate: float = 0.0  # frame-level tasks: the curves' frames per second


def read_predictions(source: str, repo: str = ".", name: str | None = None) -> Predictions:
    """`source`: a .npz path, or a git revision / experiment name whose outputs DVC can find.
    The file is validated (keys, labels, probs, task; one of each per item): any problem is an
    InputError naming the source."""
    if source.endswith(".npz") and Path(source).exists():
        raw, label = Path(source).read_bytes(), name or Path(source).stem
    else:
        import dvc.api
        from dvc.exceptions import DvcException
        from scmrepo.exceptions import SCMError

        try:
            raw = dvc.api.read("data/predictions.npz", repo=repo, rev=source, mode="rb")
            if name is None:
                test = json.loads(dvc.api.read("metrics/test.json", repo=repo, rev=source))
                name = f"{test.get('method', '?')}@{source}"
        except (DvcException, SCMError, FileNotFoundError, json.JSONDecodeError) as err:
            hint = "" if source.endswith(".npz") else " (a git revision, a DVC experiment name, or an .npz file)"
            raise InputError(f"{source!r}: no predictions found{hint}: {type(err).__name__}: {err}") from None
        label = name
    return _parse_predictions(raw, label, source)


def _parse_predictions(raw: bytes, label: str, source: str) -> Predictions:
    try:
        data = np.load(io.BytesIO(raw), allow_pickle=False)
        fields = {k: data[k] for k in ("keys", "labels", "probs", "task")}
    except KeyError as err:
        raise InputError(f"{source}: predictions file lacks {err}; it needs keys, labels, probs and task") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:  # not an .npz, truncated, pickled objects
        raise InputError(f"{source}: not a readable predictions .npz ({err})") from None
    probs = fields["probs"]
    frame_rate = 0.0
    if "probs_offsets" in data:  # a frame-level task: per-track curves end to end (evaluate.save_predictions)
        probs, frame_rate = _curves(data, probs, source)
    elif not np.issubdtype(probs.dtype, np.number) or probs.ndim != 2:
        raise InputError(f"{source}: probs must be a 2-d numeric array (items x outputs), got {probs.dtype} {probs.shape}")
    if fields["keys"].ndim != 1 or fields["labels"].ndim != 1 or fields["task"].ndim != 0:
        raise InputError(f"{source}: keys and labels must be 1-d arrays and task a single string")
    try:
        labels = [json.loads(str(v)) for v in fields["labels"]]
    except json.JSONDecodeError as err:
        raise InputError(f"{source}: a label is not JSON ({err})") from None
    keys = [str(k) for k in fields["keys"]]
    if not len(keys) == len(labels) == len(probs):
        raise InputError(f"{source}: {len(keys)} keys, {len(labels)} labels and {len(probs)} rows of probs; "
                         f"one of each per test item")
    return Predictions(label, keys, labels, np.asarray(probs), str(fields["task"]), frame_rate)


def _curves(data, flat: np.ndarray, source: str) -> tuple[np.ndarray, float]:
    """(object array of per-track curves, frame rate) of a frame-level predictions file."""
    off = data["probs_offsets"]
    rate = float(data["frame_rate"]) if "frame_rate" in data else 0.0
    if (not np.issubdtype(flat.dtype, np.number) or flat.ndim != 1 or off.ndim != 1 or not len(off)
            or not np.issubdtype(off.dtype, np.integer) or off[0] != 0 or off[-1] != len(flat)
            or np.any(np.diff(off) < 0)):
        raise InputError(f"{source}: frame-level probs must be 1-d curves end to end with offsets 0 .. {len(flat)} "
                         f"(got probs {flat.dtype} {flat.shape}, offsets {off.dtype} {off.shape})")
    if not rate > 0:
        raise InputError(f"{source}: a frame-level predictions file needs its frame_rate (> 0), got {rate}")
    curves = np.empty(len(off) - 1, dtype=object)
    for i in range(len(curves)):
        curves[i] = flat[off[i]:off[i + 1]]
    return curves, rate


def align(runs: list[Predictions]) -> list[Predictions]:
    """Paired tests need the same test items in the same order in every run: every run is put in
    the order of its sorted item keys, so results do not depend on any run's stored order (the
    first one's included). Runs of another task, on another set of items, with an item twice or
    with other labels for the same item are refused, naming both runs."""
    if not runs:
        raise InputError("no runs to compare")
    for r in runs:
        if len(r.keys) != len(r.probs) or len(r.keys) != len(r.labels):
            raise InputError(f"{r.name}: {len(r.keys)} item keys, {len(r.labels)} labels and {len(r.probs)} "
                             f"predictions; a run needs one of each per test item")
        dups = sorted(k for k, n in Counter(r.keys).items() if n > 1)
        if dups:
            raise InputError(f"{r.name} lists {len(dups)} test items more than once (e.g. {dups[:3]}); "
                             f"cannot pair its predictions")
    out = []
    for r in runs:
        idx = sorted(range(len(r.keys)), key=r.keys.__getitem__)
        out.append(Predictions(r.name, [r.keys[i] for i in idx], [r.labels[i] for i in idx],
                               np.asarray(r.probs)[idx], r.task, r.frame_rate))
    ref = out[0]
    for r in out[1:]:
        if r.task != ref.task:
            raise InputError(f"{r.name} is a {r.task} run, {ref.name} a {ref.task} run: not comparable")
        if r.keys != ref.keys:
            only_r, only_ref = sorted(set(r.keys) - set(ref.keys)), sorted(set(ref.keys) - set(r.keys))
            raise InputError(f"{r.name} and {ref.name} were scored on different test sets: {len(only_r)} items only "
                             f"in {r.name} (e.g. {only_r[:3]}), {len(only_ref)} only in {ref.name} "
                             f"(e.g. {only_ref[:3]}); paired tests need the same test items")
        bad = [k for k, a, b in zip(ref.keys, ref.labels, r.labels) if a != b]
        if bad:
            raise InputError(f"{r.name} and {ref.name} have different labels for {len(bad)} of the same test items "
                             f"(e.g. {bad[:3]}); paired tests need the same ground truth")
        if r.probs.shape != ref.probs.shape:
            raise InputError(f"{r.name} has {r.probs.shape[1:]} outputs per item, {ref.name} {ref.probs.shape[1:]}: "
                             f"not comparable")
    return out


def compare(runs: list[Predictions], classes: list[str] | None = None, baselines=("finetune", "probing"),
            n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> list[dict]:
    """One row per run: primary metric, its interval, paired delta/p against each baseline present."""
    from musicpetl.stats import (TAGGING_METRICS, bootstrap_ci, bootstrap_intervals, bootstrap_mean_ci,
                                 paired_bootstrap, paired_bootstrap_scores, paired_bootstrap_vectorized,
                                 tagging_statistic)
    from musicpetl.tasks import make_task
    from musicpetl.tasks.tagging import TaggingTask

    runs = align(runs)
    first = runs[0]
    task = make_task(first.task, classes or ([str(i) for i in range(first.probs.shape[1])] if first.probs.ndim == 2
                                             else None), frame_rate=first.frame_rate)
    metric = task.item_metric()
    labels = runs[0].labels
    name = task.primary_metric
    # mean-of-item-score metrics bootstrap on the per-item scores (fast); mAP on whole resamples,
    # vectorised over the resamples (the generic path calls scikit-learn n + n_boot times per
    # interval and twice that per test: hours per run at MTG-Jamendo's 11,356 test items)
    scores = {id(r): (task.item_scores(labels, r.probs) or {}).get(name) for r in runs}
    fast = {}
    if isinstance(task, TaggingTask) and name in TAGGING_METRICS:
        y = np.stack([task.encode(lab) for lab in labels])
        fast = {id(r): tagging_statistic(y, r.probs, name) for r in runs}
    base = {b: next((r for r in runs if r.name.split("@")[0] == b), None) for b in baselines}
    rows = []
    for r in runs:
        if scores[id(r)] is not None:
            point, lo, hi = bootstrap_mean_ci(scores[id(r)], n_boot=n_boot, alpha=alpha, seed=seed)
        elif fast:
            (iv,), _ = bootstrap_intervals(fast[id(r)], len(labels), n_boot=n_boot, alpha=alpha, seed=seed,
                                           vectorized=True)
            point, lo, hi = iv.as_tuple()
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
            elif fast:
                test = paired_bootstrap_vectorized(fast[id(r)], fast[id(ref)], len(labels), n_boot=n_boot, seed=seed)
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
