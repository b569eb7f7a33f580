"""BitFit (Ben Zaken et al. 2022): only bias vectors train.

Per used layer: the bias of every linear map in `linears()` that has one (attention q/k/v/out and
the FFN linears; MusicFM's pointwise convs have none), the LayerNorm biases of `norms()` (not
their weights), and the layer's `bitfit_extras()` (MusicFM: one 1024-vector of the conv module).
Nothing is added, so there is nothing to merge.
"""
from __future__ import annotations

from musicpetl.backbones.base import Backbone


def apply(backbone: Backbone, cfg: dict) -> None:
    for layer in backbone.layers:
        for m in layer.linears().values():
            if getattr(m, "bias", None) is not None:
                m.bias.requires_grad_(True)
        for norm in layer.norms().values():
            norm.bias.requires_grad_(True)
        for p in layer.bitfit_extras().values():
            p.requires_grad_(True)


def merge(backbone: Backbone) -> Backbone:
    """Trained biases already are plain backbone biases: inference needs no change."""
    return backbone
