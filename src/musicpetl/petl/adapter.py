"""Adapter (Houlsby et al. 2019): `h + up(GELU(down(h)))` on every adapter site's output.

Each layer's `adapter_sites()` (MERT: attn, ffn; MusicFM: ffn1, attn, ffn2) gets one bottleneck
adapter, attached as a child `<site>.adapter` and run by a forward hook on the site, so the
backbone's code and every frozen weight's name stay as they were. The layer's own LayerNorms
(`norms()`) train too, as in the paper's code (Table 3 counts them).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from musicpetl.backbones.base import Backbone
from musicpetl.errors import InputError


class Adapter(nn.Module):
    def __init__(self, dim: int, bottleneck: int, device=None, dtype=None):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck, device=device, dtype=dtype)
        self.up = nn.Linear(bottleneck, dim, device=device, dtype=dtype)
        # zero up-projection and biases: the adapted model starts as the pre-trained one
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(F.gelu(self.down(h)))


def _adapter_hook(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
    # a module-level function looking its adapter up on the module: survives deepcopy and pickling
    return module.adapter(output)


def apply(backbone: Backbone, cfg: dict) -> None:
    bottleneck = int(cfg["bottleneck"])
    if bottleneck < 1:
        raise InputError(f"petl adapter: bottleneck must be >= 1, got {bottleneck}")
    for i, layer in enumerate(backbone.layers):
        for name, site in layer.adapter_sites().items():
            if hasattr(site, "adapter"):
                raise RuntimeError(f"layer {i} site {name!r} already has an adapter: apply the method once")
            ref = next(site.parameters())
            site.adapter = Adapter(backbone.hidden_size, bottleneck, device=ref.device, dtype=ref.dtype)
            site.register_forward_hook(_adapter_hook)
        for norm in layer.norms().values():
            norm.requires_grad_(True)
