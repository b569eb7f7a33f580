"""Genre (or the synthetic corpus' style): single-label classes, CE, accuracy (scikit-learn)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch.nn.functional as F
from sklearn.metrics import accuracy_score

from .base import Task


@dataclass
class GenreTask(Task):
    name: str = "genre"
    primary_metric: str = "accuracy"

    def encode(self, label) -> np.ndarray:
        if not 0 <= int(label) < self.n_outputs:
            raise ValueError(f"genre label must be 0..{self.n_outputs - 1}, got {label!r}")
        return np.array(int(label), dtype=np.float32)

    def loss(self, logits, target):
        return F.cross_entropy(logits, target.long())

    def probabilities(self, logits):
        return logits.softmax(dim=-1)

    def decode(self, probs):
        return probs.argmax(axis=-1)

    def item_scores(self, labels, probs):
        return {"accuracy": (np.asarray(labels, dtype=int) == self.decode(np.asarray(probs))).astype(float)}

    def metrics(self, labels, probs):
        return {"accuracy": float(accuracy_score(np.asarray(labels, dtype=int), self.decode(np.asarray(probs))))}
