"""SSF (Lian et al. 2022): a trainable per-channel scale and shift after every linear map.

Each map in a layer's `linears()` is wrapped as `ScaleShift(base)`: `scale * base(x) + shift` on
the output channels. A map without a bias (MusicFM's pointwise convs) gets a scale only, so that
merging never has to invent a bias (and the counts are Table 3's). `merge` folds both into the
frozen weight and bias and puts the plain map back: inference costs what the backbone costs.
"""
from __future__ import annotations

import torch
from torch import nn

from musicpetl.backbones.base import Backbone


class ScaleShift(nn.Module):
    """`scale * base(x) + shift` over the output channels of a Linear (last dim) or Conv1d (dim 1)."""

    def __init__(self, base: nn.Module):
        super().__init__()
        if isinstance(base, nn.Linear):
            out, self.channel_dim = base.out_features, -1
        elif isinstance(base, nn.Conv1d):
            out, self.channel_dim = base.out_channels, 1
        else:
            raise TypeError(f"SSF wraps nn.Linear or nn.Conv1d, got {type(base).__name__}")
        self.base = base
        kw = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.scale = nn.Parameter(torch.empty(out, **kw))
        self.shift = nn.Parameter(torch.empty(out, **kw)) if base.bias is not None else None
        nn.init.normal_(self.scale, mean=1.0, std=0.02)  # the reference's init: near identity, not exactly
        if self.shift is not None:
            nn.init.normal_(self.shift, std=0.02)

    def _view(self, v: torch.Tensor) -> torch.Tensor:
        return v if self.channel_dim == -1 else v.view(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        y = y * self._view(self.scale).to(y.dtype)  # keeps an autocast (bf16) output in its dtype
        return y if self.shift is None else y + self._view(self.shift).to(y.dtype)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """The base map with W' = scale * W (per output channel) and b' = scale * b + shift."""
        w = self.base.weight
        self.base.weight = nn.Parameter(w * self.scale.view(-1, *([1] * (w.dim() - 1))), requires_grad=False)
        if self.shift is not None:
            self.base.bias = nn.Parameter(self.base.bias * self.scale + self.shift, requires_grad=False)
        return self.base


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


def apply(backbone: Backbone, cfg: dict) -> None:
    for i, layer in enumerate(backbone.layers):
        for role, m in layer.linears().items():
            if isinstance(m, ScaleShift):
                raise RuntimeError(f"layer {i} {role} already has SSF: apply the method once")
            if layer.get_submodule(role) is not m:
                raise RuntimeError(f"layer {i}: linears() role {role!r} is not the sub-module path of its map")
            _replace(layer, role, ScaleShift(m))


def merge(backbone: Backbone) -> Backbone:
    """Fold every ScaleShift into its map, in place; the result has no SSF module left."""
    wrapped = [(n, m) for n, m in backbone.named_modules() if isinstance(m, ScaleShift)]
    for name, m in wrapped:
        _replace(backbone, name, m.merged())
    return backbone
