"""Auto-tagging: multi-label, BCE, macro mAP and ROC-AUC (scikit-learn)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score

from .base import Task
from musicpetl.errors import InputError


@dataclass
class TaggingTask(Task):
    name: str = "tagging"
    primary_metric: str = "mAP"

    def encode(self, label) -> np.ndarray:
        target = np.zeros(self.n_outputs, dtype=np.float32)
        idx = np.asarray(label, dtype=int)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_outputs):
            raise InputError(f"tag indices must be in 0..{self.n_outputs - 1}, got {label!r}")
        target[idx] = 1.0
        return target

    def loss(self, logits, target):
        return F.binary_cross_entropy_with_logits(logits, target)

    def probabilities(self, logits):
        return logits.sigmoid()

    def decode(self, probs):
        return np.asarray(probs) >= 0.5

    def metrics(self, labels, probs):
        y = np.stack([self.encode(lab) for lab in labels])
        probs = np.asarray(probs)
        # tags absent (or always present) in the test items have no defined AP/AUC: skip, say how many
        ok = (y.sum(0) > 0) & (y.sum(0) < len(y))
        if not ok.any():
            return {"mAP": float("nan"), "ROC-AUC": float("nan"), "tags_scored": 0}
        return {"mAP": float(average_precision_score(y[:, ok], probs[:, ok], average="macro")),
                "ROC-AUC": float(roc_auc_score(y[:, ok], probs[:, ok], average="macro")),
                "tags_scored": int(ok.sum())}
