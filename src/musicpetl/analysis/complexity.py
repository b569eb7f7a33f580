"""Trainable-parameter counts per method (the paper's Table 3) on our backbones.

Counts are the backbone's parameters with `requires_grad` after the method is applied; the task
head is not counted (as in Table 3). Every PETL cell of Table 3 is reproduced exactly at the
paper's settings (`paper_options`). Full fine-tuning differs by parameters the reference model
holds but never runs (`REFERENCE_FT_UNUSED`): MusicFM's reference builds transformers'
`Wav2Vec2ConformerEncoder`, whose convolutional positional embedding exists but is never called
with rotary positions, plus its closing LayerNorm (after layer 12 in our 6-layer cut); MERT's
reference keeps the unused `masked_spec_embed`. Ours + those = 179,679,360 (~180M) and
51,844,480 (~51M).
"""
from __future__ import annotations

import copy

from torch import nn

from musicpetl.backbones import build_backbone, check_backbone_name
from musicpetl.backbones.base import Backbone
from musicpetl.petl import METHODS, apply_method
from musicpetl.errors import InputError

# Table 3 of Ding & Lerch (ISMIR 2024): trainable backbone parameters, first 6 layers, head excluded
PAPER_TABLE3: dict[str, dict[str, int | str]] = {
    "musicfm-msd": {"finetune": "~180M", "probing": 0, "adapter": 657_696, "prompt": 65_536,
                    "prefix": 9_649_152, "bitfit": 116_736, "ssf": 190_464, "lora": 405_504},
    "mert-v1-95m": {"finetune": "~51M", "probing": 0, "adapter": 322_752, "prompt": 49_152,
                    "prefix": 7_385_088, "bitfit": 50_688, "ssf": 82_944, "lora": 165_888},
}
# the approximate full fine-tuning cells as numbers
PAPER_FT_APPROX = {"musicfm-msd": 180_000_000, "mert-v1-95m": 51_000_000}

# parameters the reference models hold (and full fine-tuning counts) that no forward pass uses
REFERENCE_FT_UNUSED: dict[str, dict[str, int]] = {
    "musicfm-msd": {
        # Conv1d(1024, 1024, 128, groups=16) with weight norm: 8,388,608 + bias 1,024 + gain 128
        "conformer.pos_conv_embed (built by Wav2Vec2ConformerEncoder, unused with rotary positions)": 8_389_760,
        "conformer.layer_norm (the encoder's closing LayerNorm, after layer 12 in ours)": 2_048,
    },
    "mert-v1-95m": {"masked_spec_embed (masking is off)": 768},
}


# Table 1 says 32 prefix tokens; Table 3's MERT count (7,385,088) is exactly 64 tokens
PAPER_PREFIX_TOKENS = {"mert-v1-95m": 64}


def paper_options(backbone_name: str) -> dict[str, dict]:
    """Each method's settings in the paper (Table 1; prefix tokens from Table 3's counts where it has
    them); a backbone the paper did not evaluate gets Table 1's settings."""
    prefix_tokens = PAPER_PREFIX_TOKENS.get(backbone_name, 32)
    return {"finetune": {}, "probing": {}, "adapter": {"bottleneck": 16}, "prompt": {"tokens": 64},
            "prefix": {"tokens": prefix_tokens, "hidden": 512}, "bitfit": {}, "ssf": {},
            "lora": {"rank": 2, "alpha": 2, "dropout": 0.0}}


def trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_trainable(backbone: Backbone, method: str, cfg: dict | None = None, copy_backbone: bool = True) -> int:
    """Trainable parameters of `backbone` after `method` (a copy is adapted unless told otherwise)."""
    bb = copy.deepcopy(backbone) if copy_backbone else backbone
    apply_method(bb, method, cfg)
    return trainable(bb)


def param_table(backbone_name: str, num_layers: int | None = 6, options_by_method: dict | None = None,
                methods=None) -> dict[str, int]:
    """method -> trainable backbone parameters on a randomly initialised `backbone_name`.

    `methods` defaults to the methods named in `options_by_method` plus the paper's eight, in
    registry order; options missing for a method fall back to its defaults.
    """
    options_by_method = dict(options_by_method or {})
    if methods is None:
        wanted = set(options_by_method) | set(paper_options(backbone_name))
        kind = check_backbone_name(backbone_name).kind  # only the methods that apply to it (`none`: estimators)
        methods = [m for m in METHODS if m in wanted and kind in METHODS[m].kinds]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"unknown petl method(s) {unknown}; valid: {', '.join(METHODS)}")
    backbone = build_backbone(backbone_name, num_layers)
    table = {}
    for m in methods:
        table[m] = count_trainable(backbone, m, options_by_method.get(m))
    return table
