"""Which torch device a stage runs on."""
from __future__ import annotations

import torch

from musicpetl.errors import EnvironmentProblem


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EnvironmentProblem("train.device is cuda but no CUDA device is visible; use auto or cpu")
    return torch.device(name)
