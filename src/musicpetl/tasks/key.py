"""Key: 24 classes (C-based pitch class + 12 if minor), CE, mir_eval weighted score."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import SingleLabelTask

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
KEY_NAMES = tuple(f"{pc} major" for pc in PITCH_CLASSES) + tuple(f"{pc} minor" for pc in PITCH_CLASSES)


def key_name(label: int) -> str:
    return KEY_NAMES[int(label)]


@dataclass
class KeyTask(SingleLabelTask):
    name: str = "key"
    primary_metric: str = "weighted_score"
    classes: tuple[str, ...] = KEY_NAMES

    def item_scores(self, labels, probs):
        import mir_eval  # here: importing the task registry stays light

        pred = self.decode(np.asarray(probs))
        # mir_eval's MIREX weighting: 1 same, 0.5 fifth, 0.3 relative, 0.2 parallel
        scores = [mir_eval.key.weighted_score(key_name(t), key_name(p)) for t, p in zip(labels, pred)]
        return {"weighted_score": np.asarray(scores, dtype=float),
                "accuracy": (np.asarray(labels, dtype=int) == pred).astype(float)}
