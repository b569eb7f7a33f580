"""Backbone registry: `load_backbone(name, checkpoint=None, num_layers=6)`.

Full-size names load official weights (a local path, or the official files fetched with
huggingface_hub); tiny names are the same architectures at toy size with a seeded random init,
for tests and the offline default pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from .base import Backbone
from .mert import MERT_TINY, MERT_V1_95M, Mert
from .musicfm import MUSICFM_MSD, MUSICFM_TINY, MusicFM


@dataclass(frozen=True)
class BackboneSpec:
    build: Callable[..., Backbone]
    pretrained: bool  # True: needs official weights; False: random init from a seed
    description: str


BACKBONES: dict[str, BackboneSpec] = {
    "mert-v1-95m": BackboneSpec(lambda **kw: Mert(replace(MERT_V1_95M, **kw), "mert-v1-95m"), True,
                                "MERT-v1-95M (m-a-p/MERT-v1-95M), 12 x 768, 75 Hz"),
    "musicfm-msd": BackboneSpec(lambda **kw: MusicFM(replace(MUSICFM_MSD, **kw), "musicfm-msd"), True,
                                "MusicFM 25 Hz pre-trained on MSD (minzwon/MusicFM), 12 x 1024 conformer"),
    "mert-tiny": BackboneSpec(lambda **kw: Mert(replace(MERT_TINY, **kw), "mert-tiny"), False,
                              "MERT architecture at toy size (6 x 64), random init"),
    "musicfm-tiny": BackboneSpec(lambda **kw: MusicFM(replace(MUSICFM_TINY, **kw), "musicfm-tiny"), False,
                                 "MusicFM architecture at toy size (6 x 64), random init"),
}


def check_backbone_name(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def build_backbone(name: str, num_layers: int | None = 6, seed: int = 0, **cfg_overrides) -> Backbone:
    """The architecture with a seeded random init and only the first `num_layers` layers built."""
    spec = check_backbone_name(name)
    with torch.random.fork_rng():  # construction-time defaults (e.g. a weight-normed conv's bias) seeded too
        torch.manual_seed(seed)
        model = spec.build(**cfg_overrides)
    model.reset_parameters(seed)
    if num_layers is not None:
        model.truncate(num_layers)
    return model


def load_backbone(name: str, checkpoint: str | None = None, num_layers: int | None = 6, seed: int = 0,
                  **cfg_overrides) -> Backbone:
    """Build `name` and, for the pre-trained ones, load its official weights."""
    spec = check_backbone_name(name)
    model = build_backbone(name, num_layers=num_layers, seed=seed, **cfg_overrides)
    if spec.pretrained:
        from .checkpoints import load_pretrained

        load_pretrained(model, checkpoint or None)
    elif checkpoint:
        raise ValueError(f"{name} is randomly initialised from a seed; it takes no checkpoint (got {checkpoint!r})")
    return model
