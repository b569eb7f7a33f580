"""PETL method registry: `METHODS[name].apply(backbone, cfg)`.

A method only wraps or adds modules and marks what trains; it never forks a backbone's code. It
works through the PETL-facing surface every backbone layer exposes (see backbones/base.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from musicpetl.backbones.base import Backbone


@dataclass(frozen=True)
class Method:
    name: str
    apply: Callable[[Backbone, dict], None]
    description: str
    # probing trains the head on cached frozen features: no backbone in the training loop
    uses_feature_cache: bool = False
    # reparameterisable methods fold into plain backbone weights for inference
    merge: Callable[[Backbone], None] | None = None
    defaults: dict = field(default_factory=dict)


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def _apply_finetune(backbone: Backbone, cfg: dict) -> None:
    for p in backbone.parameters():
        p.requires_grad_(True)


def _apply_probing(backbone: Backbone, cfg: dict) -> None:
    freeze(backbone)


METHODS: dict[str, Method] = {
    "finetune": Method("finetune", _apply_finetune, "full fine-tuning: every backbone weight trains"),
    "probing": Method("probing", _apply_probing, "frozen backbone, MLP head on cached features",
                      uses_feature_cache=True),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown petl.method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name]


def apply_method(backbone: Backbone, name: str, cfg: dict | None = None) -> Method:
    """Freeze the backbone, then let the method add/unfreeze what it trains."""
    method = get_method(name)
    freeze(backbone)
    method.apply(backbone, {**method.defaults, **(cfg or {})})
    return method
