"""Training data as a pure function of (seed, step): which items a step trains on, and which crop.

`BatchStream` gives the global batch of step s without any state: epoch e = (s - 1) // batches
per epoch; each epoch has its own permutation and one random integer per item (which crop, or
which cached window), both drawn from a generator seeded by (seed, e). So a resumed run needs only
the step number, DataLoader workers compute exactly what the main process would, and DDP ranks and
gradient-accumulation micro-batches take fixed slices (`micro_slices`) of the same global batch.

Sources turn (item, r) pairs into tensors: `CropDataset` (random crops from the audio store),
`FeatureDataset` (cached features, probing: whole batches by indexing one in-memory tensor, no
per-item Python), and the front-end cache's `FrameDataset` (musicpetl.frontend_cache).
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from musicpetl.data.store import AudioStore
from musicpetl.tasks.base import Task


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, epoch, step, ...): independent streams per combination."""
    h = hashlib.blake2b(":".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


class BatchStream:
    """Global batches of (item ids, random integers) for 1-based steps, stateless.

    Batches never cross an epoch; the last partial batch of an epoch is dropped when there is more
    than one batch's worth of items (else the one batch is the whole split)."""

    def __init__(self, n_items: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n_items, batch_size, seed
        self.per_epoch = n_items // batch_size if n_items > batch_size else 1
        self.size = batch_size if n_items > batch_size else n_items
        self._cached: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def epoch(self, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cached is None or self._cached[0] != e:
            g = torch.Generator().manual_seed(mix_seed(self.seed, e))
            perm = torch.randperm(self.n, generator=g)
            r = torch.randint(0, 1 << 62, (self.n,), generator=g)
            self._cached = (e, perm, r)
        return self._cached[1], self._cached[2]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        e, pos = divmod(step - 1, self.per_epoch)
        perm, r = self.epoch(e)
        idx = perm[pos * self.size:(pos + 1) * self.size]
        return idx, r[idx]


def micro_slices(size: int, world: int, accum: int) -> list[tuple[int, int]]:
    """(start, stop) of the world * accum micro-batches of a global batch of `size`, rank-major:
    rank r's k-th micro-batch is slice r * accum + k (equal parts when they divide evenly)."""
    n = world * accum
    bounds = [round(i * size / n) for i in range(n + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


class StepBatches(Sampler):
    """For a DataLoader with workers: the (item, r) keys of this rank's micro-batches, step after
    step from `first_step` to `last_step` (the DataLoader calls the dataset once per key)."""

    def __init__(self, stream: BatchStream, slices: list[tuple[int, int]], first_step: int, last_step: int):
        self.stream, self.slices, self.first, self.last = stream, slices, first_step, last_step

    def __iter__(self):
        for step in range(self.first, self.last + 1):
            idx, r = self.stream.batch(step)
            for a, b in self.slices:
                yield list(zip(idx[a:b].tolist(), r[a:b].tolist()))

    def __len__(self) -> int:
        return (self.last - self.first + 1) * len(self.slices)


class CropDataset(Dataset):
    """One crop of `crop_len` samples per (item, r): start = r mod (length - crop_len + 1); a clip
    shorter than the crop is zero-padded at the end."""

    def __init__(self, store: AudioStore, split: str, task: Task, crop_len: int):
        self.store, self.rows, self.crop_len = store, store.rows(split), crop_len
        self.targets = [task.encode(r["label"]) for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def start(self, i: int, r: int) -> int:
        return int(r) % max(1, self.rows[i]["length"] - self.crop_len + 1)

    def __getitem__(self, key):
        i, r = key
        wave = self.store.audio(self.rows[i], self.start(i, r), self.crop_len)
        if wave.size < self.crop_len:
            wave = np.pad(wave, (0, self.crop_len - wave.size))
        return torch.from_numpy(wave), torch.from_numpy(self.targets[i])

    def batch(self, idx: torch.Tensor, r: torch.Tensor):
        pairs = [self[(i, j)] for i, j in zip(idx.tolist(), r.tolist())]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


class FeatureDataset(Dataset):
    """Cached segment features (S, d) of one layer or (S, L, d) of several, with their items'
    targets (probing). Kept in the cache's dtype; batches come out as float32."""

    def __init__(self, feats: np.ndarray, item: np.ndarray, targets: list[np.ndarray]):
        self.feats = torch.from_numpy(np.ascontiguousarray(feats))
        self.targets = torch.from_numpy(np.stack([targets[i] for i in item])) if len(item) else torch.zeros(0)

    def __len__(self) -> int:
        return len(self.feats)

    def __getitem__(self, key):
        i = key[0] if isinstance(key, (tuple, list)) else key
        return self.feats[i].float(), self.targets[i]

    def batch(self, idx: torch.Tensor, r: torch.Tensor):
        return self.feats[idx].float(), self.targets[idx]
