"""How far a trained model's features moved from the pre-trained model's, on the test set.

The paper (Sec. 5) compares output features of models trained on genre, key and tempo with the
pre-trained model's. We quantify it per used layer with linear CKA (Kornblith et al. 2019) between
the two (items x d) matrices of time-pooled track features, and the mean per-item cosine
similarity. 1.0 = unchanged (probing), towards 0 = the representation was rewritten.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two (n, d) feature matrices; written here since no listed library provides it."""
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    hsic = np.linalg.norm(x.T @ y, "fro") ** 2
    denom = np.linalg.norm(x.T @ x, "fro") * np.linalg.norm(y.T @ y, "fro")
    return float(hsic / denom) if denom > 0 else float("nan")


def mean_cosine(x: np.ndarray, y: np.ndarray) -> float:
    num = (x * y).sum(1)
    den = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-12)))


def track_means(feats: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray:
    """Per-track mean of per-segment features: (S, L, d) -> (N, L, d)."""
    out = np.zeros((n_items,) + feats.shape[1:], dtype=np.float64)
    np.add.at(out, item, feats)
    return out / np.bincount(item, minlength=n_items)[:, None, None]


@torch.no_grad()
def trained_features(model, store, split: str, segment_seconds: float, batch_size: int,
                     max_items: int, progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """(N, L, d) track-level features of every used layer of the trained (merged) backbone."""
    from tqdm import tqdm

    model.eval()
    rows = store.rows(split)[:max_items]
    out = []
    for row in tqdm(rows, desc="trained features", disable=not progress, unit="clip"):
        f = model.backbone.features(torch.from_numpy(store.audio(row)), model.num_layers, segment_seconds, batch_size)
        out.append(f.mean(0).numpy())
    return np.stack(out), [r["key"] for r in rows]


def compare(pre: np.ndarray, post: np.ndarray) -> dict:
    """Per-layer CKA and cosine between (N, L, d) pre-trained and trained features."""
    layers = range(pre.shape[1])
    return {"cka": [linear_cka(pre[:, i], post[:, i]) for i in layers],
            "cosine": [mean_cosine(pre[:, i], post[:, i]) for i in layers]}


def plot(result: dict, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from musicpetl.io import atomic_path

    n = len(result["cka"])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(range(1, n + 1), result["cka"], "o-", label="linear CKA")
    ax.plot(range(1, n + 1), result["cosine"], "s--", label="mean cosine")
    ax.set(xlabel="layer", ylabel="similarity to pre-trained", ylim=(-0.05, 1.05), title=title)
    ax.set_xticks(range(1, n + 1))
    ax.legend(loc="lower left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
