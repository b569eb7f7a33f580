"""Track-level prediction (whole tracks cut into segments, per-segment outputs averaged) and metrics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from musicpetl.data.store import AudioStore
from musicpetl.features import FeatureCache
from musicpetl.tasks.base import Task


@torch.no_grad()
def predict_tracks(model, store: AudioStore, split: str, task: Task, segment_seconds: float,
                   batch_size: int = 8, progress: bool = True, max_items: int | None = None) -> np.ndarray:
    """(N, n_out) track-level probabilities: the mean of per-segment probabilities, as the paper."""
    from musicpetl.audio import segment_starts

    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    seg_len = model.backbone.segment_length(segment_seconds)
    rows = store.rows(split)[:max_items]
    out = []
    for row in tqdm(rows, desc=f"predict {split}", disable=not progress, unit="clip", leave=False):
        wave = torch.from_numpy(store.audio(row))
        seg = min(seg_len, wave.numel())
        starts = segment_starts(wave.numel(), seg)
        probs = []
        for b in range(0, len(starts), batch_size):
            chunk = torch.stack([wave[s:s + seg] for s in starts[b:b + batch_size]]).to(dev)
            probs.append(task.probabilities(model(chunk).float()).cpu())
        out.append(torch.cat(probs).mean(0).numpy())
    model.train(was_training)
    return np.stack(out) if out else np.zeros((0, task.n_outputs), np.float32)


@torch.no_grad()
def predict_tracks_from_cache(head, cache: FeatureCache, split: str, layer: int, task: Task) -> np.ndarray:
    """Probing: the head on cached segment features, averaged per track."""
    was_training = head.training
    head.eval()
    feats, item, keys = cache.split(split, layer)
    probs = task.probabilities(head(torch.from_numpy(feats).float())).numpy()
    head.train(was_training)
    out = np.zeros((len(keys), probs.shape[1]), dtype=np.float64)
    np.add.at(out, item, probs)
    return (out / np.bincount(item, minlength=len(keys))[:, None]).astype(np.float32)


def score(task: Task, labels: list, probs: np.ndarray, n_boot: int = 1000, alpha: float = 0.05,
          seed: int = 0) -> dict:
    """Metrics plus a bootstrap (1 - alpha) interval of every metric over test items."""
    from musicpetl.stats import bootstrap_ci, bootstrap_mean_ci

    result = dict(task.metrics(labels, probs))
    per_item = task.item_scores(labels, probs)
    for name in list(result):
        if name == "tags_scored" or n_boot <= 0:
            continue
        if per_item is not None:
            _, lo, hi = bootstrap_mean_ci(per_item[name], n_boot=n_boot, alpha=alpha, seed=seed)
        else:
            metric = lambda y, p, name=name: task.metrics(list(y), np.asarray(p))[name]  # noqa: E731
            _, lo, hi = bootstrap_ci(metric, list(labels), probs, n_boot=n_boot, alpha=alpha, seed=seed)
        result[f"{name}_low"], result[f"{name}_high"] = float(lo), float(hi)
    return result


def save_predictions(path: Path, keys: list[str], labels: list, probs: np.ndarray, task: Task) -> None:
    from musicpetl.io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, keys=np.asarray(keys), probs=probs.astype(np.float32),
                                labels=np.asarray([json.dumps(lab) for lab in labels]), task=task.name)
