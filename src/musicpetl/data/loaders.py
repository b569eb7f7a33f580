"""Torch datasets: random crops from the audio store (training) and cached features (probing)."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from musicpetl.data.store import AudioStore
from musicpetl.tasks.base import Task


class CropDataset(Dataset):
    """One random crop of `crop_len` samples per item per epoch (whole clip if shorter: padded).

    Offsets come from torch's RNG, which DataLoader seeds per worker from the global seed.
    """

    def __init__(self, store: AudioStore, split: str, task: Task, crop_len: int):
        self.store, self.rows, self.crop_len = store, store.rows(split), crop_len
        self.targets = [task.encode(r["label"]) for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = self.rows[i]
        start = int(torch.randint(0, max(1, row["length"] - self.crop_len + 1), ()))
        wave = self.store.audio(row, start, self.crop_len)
        if wave.size < self.crop_len:
            wave = np.pad(wave, (0, self.crop_len - wave.size))
        return torch.from_numpy(wave), torch.from_numpy(self.targets[i])


class FeatureDataset(Dataset):
    """Cached segment features of one layer with their items' targets (probing)."""

    def __init__(self, feats: np.ndarray, item: np.ndarray, targets: list[np.ndarray]):
        self.feats = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
        self.targets = torch.from_numpy(np.stack([targets[i] for i in item]))

    def __len__(self) -> int:
        return len(self.feats)

    def __getitem__(self, i: int):
        return self.feats[i], self.targets[i]
