"""Training data as a pure function of (seed, step): which items a step trains on, and which crop.

`BatchStream` gives the global batch of step s without any state: epoch e = (s - 1) // batches
per epoch; each epoch has its own permutation and one random integer per item (which crop, or
which cached window), both drawn from a generator seeded by (seed, e). So a resumed run needs only
the step number, DataLoader workers compute exactly what the main process would, and DDP ranks and
gradient-accumulation micro-batches take fixed slices (`micro_slices`) of the same global batch.

Sources turn (item, r) pairs into tensors: `CropDataset` (random crops from the audio store),
`FeatureDataset` (cached features, probing: whole batches by indexing one in-memory tensor, no
per-item Python), `SegmentFramesDataset` (cached per-frame features, probing a frame-level task),
and the front-end cache's `FrameDataset` (musicpetl.frontend_cache).
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


class CropTargets:
    """The training target of a crop of item i starting at sample `start`: the item's encoded label
    for a track-level task; for a frame-level task (beat) the targets of exactly that crop's
    `n_frames` frames (`task.frame_targets`), with the frames past the clip's end (the crop's zero
    padding) set to -1, which the task's loss leaves out."""

    def __init__(self, task: Task, rows: list[dict], sample_rate: int, n_frames: int | None = None):
        from musicpetl.tasks import is_frame_level

        self.task, self.sample_rate, self.n_frames = task, int(sample_rate), n_frames
        self.frame_level = is_frame_level(task)
        if self.frame_level and not n_frames:
            raise ValueError("a frame-level task's crop targets need the frames per crop (n_frames)")
        self.labels = [task.encode(r["label"]) for r in rows]
        self.lengths = [int(r["length"]) for r in rows]

    def __call__(self, i: int, start: int) -> np.ndarray:
        if not self.frame_level:
            return self.labels[i]
        t = self.task.frame_targets(self.labels[i], self.n_frames, start / self.sample_rate)
        audible = int(np.ceil((self.lengths[i] - start) / self.sample_rate * self.task.frame_rate))
        if audible < len(t):
            t[max(audible, 0):] = -1.0
        return t


class CropDataset(Dataset):
    """One crop of `crop_len` samples per (item, r): start = r mod (length - crop_len + 1); a clip
    shorter than the crop is zero-padded at the end. Targets from `CropTargets` (frame-level tasks:
    `n_frames`, the frames the backbone gives for `crop_len` samples)."""

    def __init__(self, store: AudioStore, split: str, task: Task, crop_len: int, n_frames: int | None = None):
        self.store, self.rows, self.crop_len = store, store.rows(split), crop_len
        self.targets = CropTargets(task, self.rows, store.meta.get("sample_rate", 0), n_frames)

    def __len__(self) -> int:
        return len(self.rows)

    def start(self, i: int, r: int) -> int:
        return int(r) % max(1, self.rows[i]["length"] - self.crop_len + 1)

    def __getitem__(self, key):
        i, r = key
        start = self.start(i, r)
        wave = self.store.audio(self.rows[i], start, self.crop_len)
        if wave.size < self.crop_len:
            wave = np.pad(wave, (0, self.crop_len - wave.size))
        return torch.from_numpy(wave), torch.from_numpy(self.targets(i, start))

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


class SegmentFramesDataset(Dataset):
    """Cached per-frame features of whole segments (probing a frame-level task): one item per
    segment, as `FeatureDataset` for pooled ones; frames zero-padded to `n_frames` (the frames of a
    full segment) with targets from `targets(item, segment start)` (CropTargets: -1 past the
    clip's end, so the padding is left out of the loss)."""

    def __init__(self, frames, targets: CropTargets, n_frames: int):
        self.frames, self.targets, self.n_frames = frames, targets, int(n_frames)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, key):
        s = key[0] if isinstance(key, (tuple, list)) else key
        return self.frames.padded([s], self.n_frames)[0], torch.from_numpy(self._target(int(s)))

    def _target(self, s: int) -> np.ndarray:
        return self.targets(int(self.frames.seg_item[s]), int(self.frames.seg_start[s]))

    def batch(self, idx: torch.Tensor, r: torch.Tensor):
        ids = idx.tolist()
        return self.frames.padded(ids, self.n_frames), torch.from_numpy(np.stack([self._target(s) for s in ids]))
