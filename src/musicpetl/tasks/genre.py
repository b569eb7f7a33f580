"""Genre (or the synthetic corpus' style): single-label classes, CE, accuracy (scikit-learn)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score

from .base import SingleLabelTask


@dataclass
class GenreTask(SingleLabelTask):
    name: str = "genre"
    primary_metric: str = "accuracy"

    def item_scores(self, labels, probs):
        return {"accuracy": (np.asarray(labels, dtype=int) == self.decode(np.asarray(probs))).astype(float)}

    def metrics(self, labels, probs):
        return {"accuracy": float(accuracy_score(np.asarray(labels, dtype=int), self.decode(np.asarray(probs))))}
