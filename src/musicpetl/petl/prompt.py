"""Prompt tuning (Lester et al. 2021): P trainable d-vectors prepended once, before the first layer.

The tokens enter through the backbone's `input_prompt` slot, after the frozen front end (which so
still runs without autograd); `Backbone.forward` strips them again from every returned hidden
state, so pooling only ever sees the audio frames.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from musicpetl.backbones.base import Backbone
from musicpetl.errors import InputError


class InputPrompt(nn.Module):
    """(B, T, d) -> (B, P + T, d)."""

    def __init__(self, tokens: int, dim: int, device=None, dtype=None):
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(tokens, dim, device=device, dtype=dtype))
        # VPT-style uniform init: tokens of about the scale of layer-normed frames' projections
        bound = math.sqrt(6.0 / (2 * dim))
        nn.init.uniform_(self.tokens, -bound, bound)

    @property
    def prompt_length(self) -> int:
        return self.tokens.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.tokens.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        return torch.cat([p, x], dim=1)


def apply(backbone: Backbone, cfg: dict) -> None:
    tokens = int(cfg["tokens"])
    if tokens < 1:
        raise InputError(f"petl prompt: tokens must be >= 1, got {tokens}")
    if backbone.input_prompt is not None:
        raise RuntimeError("backbone already has an input prompt: apply the method once")
    ref = next(backbone.layers.parameters())
    backbone.input_prompt = InputPrompt(tokens, backbone.hidden_size, device=ref.device, dtype=ref.dtype)
