"""Prefix tuning (Li & Liang 2021): P trainable key and value vectors per layer, inside attention.

Per used layer `Embedding(P, d) -> Linear(d, hidden) -> Tanh -> Linear(hidden, 2d)`: the MLP
re-parameterisation stabilises training (the paper's choice); its output is split into P keys and
P values that the layer's attention prepends after its frozen k/v projections (`attn.kv_prefix`).
"""
from __future__ import annotations

import torch
from torch import nn

from musicpetl.backbones.base import Backbone
from musicpetl.errors import InputError


class PrefixEncoder(nn.Module):
    def __init__(self, tokens: int, dim: int, hidden: int, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.embedding = nn.Embedding(tokens, dim, **kw)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden, **kw), nn.Tanh(), nn.Linear(hidden, 2 * dim, **kw))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.mlp(self.embedding.weight).chunk(2, dim=-1)  # (P, d) each
        return k, v


def apply(backbone: Backbone, cfg: dict) -> None:
    tokens, hidden = int(cfg["tokens"]), int(cfg["hidden"])
    if tokens < 1 or hidden < 1:
        raise InputError(f"petl prefix: tokens and hidden must be >= 1, got {tokens}, {hidden}")
    for i, layer in enumerate(backbone.layers):
        if layer.attn.kv_prefix is not None:
            raise RuntimeError(f"layer {i} already has a kv prefix: apply the method once")
        ref = layer.attn.q_proj.weight
        layer.attn.kv_prefix = PrefixEncoder(tokens, backbone.hidden_size, hidden, device=ref.device, dtype=ref.dtype)
