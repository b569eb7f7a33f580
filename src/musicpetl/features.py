"""Frozen-feature cache (HDF5): every used layer, time-pooled per segment, for every split.

Probing trains on it without the backbone in the loop; the correlation analysis compares a
trained model's features with these pre-trained ones.
Layout: /<split>/features (S, L, d) float32, /<split>/item (S,) int index into /<split>/keys.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from musicpetl.backbones.base import Backbone
from musicpetl.data.store import SPLITS, AudioStore
from musicpetl.io import atomic_path


@torch.no_grad()
def cache_features(store: AudioStore, backbone: Backbone, out_path: Path, num_layers: int,
                   segment_seconds: float, batch_size: int = 8, progress: bool = True) -> dict:
    backbone.eval()
    counts = {}
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs.update({"backbone": backbone.name, "num_layers": num_layers, "hidden_size": backbone.hidden_size,
                         "segment_seconds": segment_seconds, "sample_rate": backbone.sample_rate})
        for split in SPLITS:
            rows = store.rows(split)
            feats, item = [], []
            for i, row in enumerate(tqdm(rows, desc=f"features {split}", disable=not progress, unit="clip")):
                f = backbone.features(torch.from_numpy(store.audio(row)), num_layers, segment_seconds, batch_size)
                feats.append(f.numpy())
                item.extend([i] * len(f))
            g = h5.create_group(split)
            d = backbone.hidden_size
            g.create_dataset("features", data=np.concatenate(feats) if feats else np.zeros((0, num_layers, d), np.float32))
            g.create_dataset("item", data=np.asarray(item, dtype=np.int64))
            g.create_dataset("keys", data=np.asarray([r["key"] for r in rows], dtype=h5py.string_dtype()))
            counts[split] = {"items": len(rows), "segments": len(item)}
    return counts


class FeatureCache:
    """Read side of the cache: one split's (segments, layers, d) features and their item ids."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} not found: run the cache_features stage")
        with h5py.File(self.path, "r") as h5:
            self.attrs = dict(h5.attrs)

    def split(self, split: str, layer: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(features, item ids, keys); `layer` 1-based selects one layer -> (S, d)."""
        with h5py.File(self.path, "r") as h5:
            g = h5[split]
            feats = g["features"][:, layer - 1] if layer else g["features"][:]
            return feats, g["item"][:], [k.decode() if isinstance(k, bytes) else k for k in g["keys"][:]]
