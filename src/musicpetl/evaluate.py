"""Track-level prediction (whole tracks cut into segments, per-segment outputs averaged; for a
frame-level task, per-segment frame curves stitched into one curve per track), metrics with
intervals and the baseline beside them, and what a researcher reads: per-item predictions as CSV
with class names (beat times for beat tracking) and the actual/predicted pairs of a confusion
matrix."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from musicpetl.data.store import AudioStore
from musicpetl.errors import InputError
from musicpetl.features import FeatureCache
from musicpetl.tasks import is_frame_level
from musicpetl.tasks.base import SingleLabelTask, Task
from musicpetl.tasks.tagging import TaggingTask
from musicpetl.tasks.tempo import TempoTask


@torch.no_grad()
def predict_tracks(model, store: AudioStore, split: str, task: Task, segment_seconds: float,
                   batch_size: int = 8, progress: bool = True, max_items: int | None = None,
                   rows: list[dict] | None = None):
    """(N, n_out) track-level probabilities: the mean of per-segment probabilities, as the paper.
    A frame-level task: a list of N per-track curves at the task's frame rate, the segments' frame
    outputs placed on the track's frame grid (frame_head.stitch_frames).
    `rows`: these items instead of the split's (a DDP rank's share of validation)."""
    from musicpetl.features import segment_batches
    from musicpetl.frame_head import stitch_frames

    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    seg_len = model.backbone.segment_length(segment_seconds)
    sr, frame_level = model.backbone.sample_rate, is_frame_level(task)
    rows = store.rows(split)[:max_items] if rows is None else rows
    if hasattr(model.backbone, "estimate"):  # an off-the-shelf estimator (README "Baselines"): its own outputs of whole tracks
        out = [model.backbone.estimate(task.name, store.audio(row), task.classes)
               for row in tqdm(rows, desc=f"estimate {split}", disable=not progress, unit="clip", leave=False)]
        model.train(was_training)
        return out if frame_level else (np.stack(out) if out else np.zeros((0, task.n_outputs), np.float32))
    # segments of consecutive clips share a batch (one clip's few segments would leave a GPU idle:
    # MusicFM's 30-s segments are one per clip), each segment's output goes back to its clip
    pieces: list[list] = [[] for _ in rows]
    bar = tqdm(total=len(rows), desc=f"predict {split}", disable=not progress, unit="clip", leave=False)
    with bar:
        for ids, starts, waves in segment_batches(store, rows, seg_len, batch_size, bar):
            probs = task.probabilities(model(waves.to(dev)).float()).cpu().numpy()
            for i, s, pr in zip(ids, starts, probs):
                pieces[i].append((s, pr))
    out = []
    for row, piece in zip(rows, pieces):
        if frame_level:
            fps = float(task.frame_rate)
            out.append(stitch_frames(piece, sr, fps, int(round(row["length"] / sr * fps))).astype(np.float32))
        else:
            out.append(np.stack([pr for _, pr in piece]).mean(0))
    model.train(was_training)
    if frame_level:
        return out
    return np.stack(out) if out else np.zeros((0, task.n_outputs), np.float32)


@torch.no_grad()
def predict_tracks_from_cache(head, cache: FeatureCache, split: str, layer: int, task: Task,
                              expect: dict | None = None, batch_rows: int = 8192) -> np.ndarray:
    """Probing: the head on cached segment features, averaged per track. `layer`: the last used
    layer (a head that mixes layers reads layers 1..layer). `expect`: the reader's
    `features.feature_fingerprint`, checked against the cache's. The head sees `batch_rows`
    segments at a time (a whole split at once could fill a GPU)."""
    if expect is not None:
        cache.check(expect)
    if is_frame_level(task):
        return _frame_curves_from_cache(head, cache, split, layer, task)
    was_training = head.training
    head.eval()
    if getattr(head, "layer_input", "last") == "last":
        feats, item, keys = cache.split(split, layer)
    else:
        feats, item, keys = cache.split(split, layers=layer)
    dev = next(head.parameters()).device  # the cache is read on the CPU; a probing run's head may be on a GPU
    probs = np.concatenate([task.probabilities(head(torch.from_numpy(feats[i:i + batch_rows]).to(dev).float()))
                            .cpu().numpy() for i in range(0, len(feats), batch_rows)]
                           or [np.zeros((0, task.n_outputs), np.float32)])
    head.train(was_training)
    out = np.zeros((len(keys), probs.shape[1]), dtype=np.float64)
    np.add.at(out, item, probs)
    return (out / np.bincount(item, minlength=len(keys))[:, None]).astype(np.float32)


def _frame_curves_from_cache(head, cache: FeatureCache, split: str, layer: int, task: Task,
                             batch_segments: int = 64) -> list[np.ndarray]:
    """Probing a frame-level task: the frame head on each cached segment's frames, the segments'
    curves stitched per track as `predict_tracks` stitches them from audio."""
    from musicpetl.frame_head import stitch_frames

    last = getattr(head, "layer_input", "last") == "last"
    ff = cache.frames(split, layer) if last else cache.frames(split, layers=layer)
    was_training = head.training
    head.eval()
    dev = next(head.parameters()).device
    pieces: list[list] = [[] for _ in ff.keys]
    for b in range(0, len(ff), batch_segments):
        segs = range(b, min(b + batch_segments, len(ff)))
        width = max(ff.n_frames(s) for s in segs)
        probs = task.probabilities(head(ff.padded(segs, width).to(dev))).cpu().numpy()
        for s, curve in zip(segs, probs):
            pieces[int(ff.seg_item[s])].append((int(ff.seg_start[s]), curve[:ff.n_frames(s)]))
    head.train(was_training)
    fps = float(task.frame_rate)
    return [stitch_frames(pieces[i], ff.sample_rate, fps, int(round(ff.lengths[i] / ff.sample_rate * fps)))
            .astype(np.float32) for i in range(len(ff.keys))]


PROPORTIONS = frozenset({"accuracy", "acc1", "acc2"})
"""Metrics that are the share of items scored right (1) or wrong (0): a Wilson interval, at any n."""


def _metric_names(values: dict) -> list[str]:
    return [k for k, v in values.items() if isinstance(v, float)]  # not counts such as tags_scored


def _intervals(task: Task, labels: list, probs: np.ndarray, names: list[str], n_boot: int, alpha: float,
               seed: int) -> dict:
    """name -> stats.Interval: Wilson for proportions, BCa over resampled items for the rest."""
    from musicpetl.stats import Interval, bootstrap_intervals, mean_interval, metric_interval, tagging_statistic, \
        wilson_interval

    n = len(labels)
    out = {}
    per_item = task.item_scores(labels, probs) or {}
    for name in names:
        s = per_item.get(name)
        if name in PROPORTIONS and s is not None and np.isin(s, (0.0, 1.0)).all():
            out[name] = wilson_interval(int(np.sum(s)), n, alpha)
    rest = [m for m in names if m not in out]
    if rest and n_boot <= 0:
        point = task.metrics(labels, probs)
        return {**out, **{m: Interval(point[m], None, None, n, "none: eval.bootstrap = 0") for m in rest}}
    if isinstance(task, TaggingTask) and set(rest) <= {"mAP", "ROC-AUC"}:
        # vectorised: the generic path calls scikit-learn n + n_boot times (bench/bootstrap.py)
        y = np.stack([task.encode(lab) for lab in labels])
        ivs, _ = bootstrap_intervals(tagging_statistic(y, probs), n, n_boot=n_boot, alpha=alpha, seed=seed,
                                     vectorized=True)
        fast = dict(zip(("mAP", "ROC-AUC"), ivs))
        exact = task.metrics(labels, probs)
        for m in rest:
            if not np.allclose(fast[m].point, exact[m], rtol=0, atol=1e-9, equal_nan=True):
                raise RuntimeError(f"vectorised {m} {fast[m].point} != TaggingTask.metrics {exact[m]}")
            out[m] = fast[m]
        return out
    for name in rest:
        if per_item.get(name) is not None:
            out[name] = mean_interval(per_item[name], n_boot=n_boot, alpha=alpha, seed=seed)
        else:
            metric = lambda y, p, name=name: task.metrics(list(y), np.asarray(p))[name]  # noqa: E731
            out[name] = metric_interval(metric, list(labels), probs, n_boot=n_boot, alpha=alpha, seed=seed)
    return out


def baseline_prediction(task: Task, train_labels: list) -> tuple[np.ndarray, str] | None:
    """(output, description) of a model that ignores its input, learnt from the training labels: the
    majority class (genre, key), the most common tempo (rounded BPM), every tag's training frequency.
    Every test item gets this output; its score is the floor a trained model has to beat."""
    if not len(train_labels):
        return None
    if isinstance(task, TaggingTask):
        return np.mean([task.encode(lab) for lab in train_labels], axis=0), "training tag frequencies"
    if isinstance(task, TempoTask):
        counts = Counter(int(round(float(lab))) for lab in train_labels)
        bpm = min(counts, key=lambda b: (-counts[b], b))
        return task.encode(bpm), f"training mode {bpm} BPM"
    if isinstance(task, SingleLabelTask):
        c = int(np.bincount(np.asarray(train_labels, dtype=int), minlength=task.n_outputs).argmax())
        onehot = np.zeros(task.n_outputs, dtype=np.float32)
        onehot[c] = 1.0
        return onehot, f"training majority class {task.classes[c]!r}"
    return None


def constant_prediction(task: Task, probs: np.ndarray) -> bool:
    """True when every test item gets the same prediction: one class (genre, key), one BPM (to the
    nearest BPM), or for tagging the same score for every item on every tag (its ranking metrics
    then see nothing; identical thresholded tag sets alone are not flagged, mAP does not read them)."""
    if is_frame_level(task):  # beat: no beat found in any test track
        return len(probs) >= 2 and all(len(b) == 0 for b in task.decode(probs))
    probs = np.asarray(probs)
    if len(probs) < 2:
        return False
    if isinstance(task, TaggingTask):
        return bool(np.ptp(probs, axis=0).max() <= 1e-6)
    pred = np.asarray(task.decode(probs))
    if isinstance(task, TempoTask):
        pred = np.round(pred)
    return bool(np.all(pred == pred[0]))


def score(task: Task, labels: list, probs: np.ndarray, n_boot: int = 1000, alpha: float = 0.05,
          seed: int = 0, train_labels: list | None = None) -> dict:
    """Metrics over the test items, each with its interval and the baseline's score beside it.

    Per metric `m`: `m`, `m_low`/`m_high` (absent where no honest interval exists: a bootstrap over
    fewer than stats.MIN_ITEMS items), `m_interval` (how it was made, or why there is none, or
    "degenerate: ..."), `baseline_m` (the score of `baseline_prediction` for every item, when
    `train_labels` are given). Also `n` (test items), `constant_prediction`, and `baseline`.
    """
    probs = list(probs) if is_frame_level(task) else np.asarray(probs)
    labels = list(labels)
    n = len(labels)
    if n == 0:
        raise InputError("no test items to score (the test split is empty)")
    if len(probs) != n:
        raise InputError(f"{n} test labels but {len(probs)} predictions")
    values = task.metrics(labels, probs)
    names = _metric_names(values)
    result: dict = {"n": n, **values}
    for name, iv in _intervals(task, labels, probs, names, n_boot, alpha, seed).items():
        if iv.low is not None:
            result[f"{name}_low"], result[f"{name}_high"] = iv.low, iv.high
        result[f"{name}_interval"] = iv.note
    base = baseline_prediction(task, train_labels) if train_labels is not None else None
    if base is not None:
        row, what = base
        base_values = task.metrics(labels, np.repeat(row[None, :], n, axis=0))
        result["baseline"] = what
        result.update({f"baseline_{m}": float(base_values[m]) for m in names})
    result["constant_prediction"] = constant_prediction(task, probs)
    return result


def save_predictions(path: Path, keys: list[str], labels: list, probs, task: Task) -> None:
    """data/predictions.npz: keys, labels (JSON), probs (items x outputs), task. A frame-level
    task's per-track curves differ in length: `probs` holds them end to end, `probs_offsets` (N + 1)
    where each starts, `frame_rate` their rate (analysis.compare.read_predictions splits them)."""
    from musicpetl.io import atomic_path

    extra: dict = {}
    if is_frame_level(task):
        curves = [np.asarray(c, dtype=np.float32).reshape(-1) for c in probs]
        extra = {"probs_offsets": np.cumsum([0, *map(len, curves)]).astype(np.int64),
                 "frame_rate": np.float64(task.frame_rate)}
        flat = np.concatenate(curves) if curves else np.zeros(0, np.float32)
    else:
        flat = np.asarray(probs).astype(np.float32)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, keys=np.asarray(keys), probs=flat,
                                labels=np.asarray([json.dumps(lab) for lab in labels]), task=task.name,
                                **extra)


def readable(task: Task, label) -> str:
    """A label or a decoded prediction as a person reads it: class name, tag names, BPM, beat times
    (seconds, ';'-separated)."""
    if is_frame_level(task):
        return ";".join(f"{float(t):.3f}" for t in np.asarray(label, dtype=float).reshape(-1))
    if isinstance(task, TaggingTask):
        idx = np.flatnonzero(label) if np.asarray(label).dtype == bool else np.asarray(label, dtype=int)
        return ";".join(task.classes[i] for i in idx)
    if isinstance(task, TempoTask):
        return f"{float(label):.2f}"
    return task.classes[int(label)]


def prediction_rows(keys: list[str], labels: list, probs: np.ndarray, task: Task) -> tuple[list[str], list[list]]:
    """(header, rows): key, label, predicted (class / BPM / tags / beat times), per-item scores, then
    one probability column per class named `p_<class>` (none for a frame-level task: its per-frame
    curves are in predictions.npz)."""
    frame_level = is_frame_level(task)
    probs = list(probs) if frame_level else np.asarray(probs)
    if not len(keys) == len(labels) == len(probs):
        raise InputError(f"{len(keys)} keys, {len(labels)} labels and {len(probs)} predictions differ in number")
    pred = task.decode(probs) if len(probs) else []
    per_item = (task.item_scores(labels, probs) if len(probs) else None) or {}
    classes = () if frame_level else task.classes
    header = ["key", "label", "predicted", *per_item, *[f"p_{c}" for c in classes]]
    rows = []
    for i, key in enumerate(keys):
        rows.append([key, readable(task, labels[i]), readable(task, pred[i]),
                     *[f"{per_item[m][i]:.6g}" for m in per_item], *([] if frame_level else
                                                                    [f"{v:.6g}" for v in probs[i]])])
    return header, rows


def save_predictions_csv(path: Path, keys: list[str], labels: list, probs: np.ndarray, task: Task) -> None:
    """data/predictions.csv: one row per test item, readable in a spreadsheet."""
    from musicpetl.io import atomic_path

    header, rows = prediction_rows(keys, labels, probs, task)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows)


def confusion_pairs(task: Task, labels: list, probs: np.ndarray) -> list[tuple[str, str]]:
    """(actual, predicted) class names per item for single-label tasks; [] for tagging and tempo."""
    if not isinstance(task, SingleLabelTask) or not len(labels):
        return []
    pred = task.decode(np.asarray(probs))
    return [(task.classes[int(t)], task.classes[int(p)]) for t, p in zip(labels, pred)]


def save_confusion(path: Path, task: Task, labels: list, probs: np.ndarray) -> None:
    """The data of DVC's `confusion` plot template (dvc.yaml): actual,predicted per test item. Only
    the header for a task without classes to confuse (tagging, tempo), so the output always exists."""
    from musicpetl.io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["actual", "predicted"])
            w.writerows(confusion_pairs(task, labels, probs))
