"""What a task is: output size, target encoding, loss, decoding, metrics. It never sees a backbone."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from musicpetl.errors import InputError


@dataclass
class Task:
    name: str = "task"
    primary_metric: str = "score"
    classes: tuple[str, ...] = ()

    @property
    def n_outputs(self) -> int:
        return len(self.classes)

    def encode(self, label: Any) -> np.ndarray:
        """Manifest label -> float32 training target (class index as float, or a vector)."""
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-segment outputs that are averaged over a track's segments."""
        raise NotImplementedError

    def decode(self, probs: np.ndarray) -> Any:
        """Track-level averaged probabilities (N, n_outputs) -> predictions as the metric takes them."""
        raise NotImplementedError

    def item_scores(self, labels: list, probs: np.ndarray) -> dict[str, np.ndarray] | None:
        """Per-item scores for metrics that are their mean (bootstrapped fast); None if not decomposable."""
        return None

    def metrics(self, labels: list, probs: np.ndarray) -> dict[str, float]:
        """Default: the mean of every per-item score."""
        return {k: float(np.mean(v)) for k, v in self.item_scores(labels, probs).items()}

    def item_metric(self):
        """metric(labels, probs) -> primary score, for bootstrap resampling over test items."""
        return lambda labels, probs: self.metrics(list(labels), np.asarray(probs))[self.primary_metric]


@dataclass
class SingleLabelTask(Task):
    """One class per item (genre, key): class index target, cross-entropy, softmax, arg-max."""

    def encode(self, label) -> np.ndarray:
        if not 0 <= int(label) < self.n_outputs:
            raise InputError(f"{self.name} label must be 0..{self.n_outputs - 1} ({self.classes[0]} .. "
                             f"{self.classes[-1]}), got {label!r}")
        return np.array(int(label), dtype=np.float32)

    def loss(self, logits, target):
        return torch.nn.functional.cross_entropy(logits, target.long())

    def probabilities(self, logits):
        return logits.softmax(dim=-1)

    def decode(self, probs):
        return probs.argmax(axis=-1)
