"""MERT's official files (m-a-p/MERT-v1-95M, m-a-p/MERT-v1-330M) -> our Mert.

A checkpoint is a Hugging Face folder with `config.json` and `model.safetensors` or
`pytorch_model.bin` (or the path of one of those weight files, config.json beside it), as the
releases publish them: `MERTModel`, a transformers `HubertModel` subclass, so HubertModel's key
names (with `hubert.`, `model.`, `mert_model.` or `mert.` wrappers, and old `weight_g`/`weight_v`
weight-norm names, all accepted). The repos publish no checksum here, so config.json is checked
field by field instead: every value our Mert would compute differently is an error.

The two layer layouts name their norms alike but use them differently:
`encoder.layer_norm` is the norm *before* layer 1 in the post-LN 95M and the norm *after* the last
layer in the pre-LN (do_stable_layer_norm) 330M; each layer's `layer_norm` / `final_layer_norm`
follow attention / FFN (post-LN) or precede them (pre-LN).

MERT input normalisation is the config field `normalize_input` (param `backbone.normalize_input`):
per clip (x - mean) / sqrt(var + 1e-7), default True as in the model card's preprocessor
(`preprocessor_config.json`, Wav2Vec2FeatureExtractor do_normalize); the authors' benchmark code
feeds raw audio, so set it False to reproduce them. Loading does not change it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .checkpoints import CheckpointError, HubSource, KeyMap, hf_folder_files, load_strict, read_weights
from .mert import Mert, MertConfig

_COMMON = (
    ("feature_extractor.conv_layers.0.layer_norm.", "feature_extractor.norm."),
    ("feature_extractor.conv_layers.{n}.conv.", "feature_extractor.convs.{n}."),
    ("feature_projection.layer_norm.", "proj_norm."),
    ("feature_projection.projection.", "proj."),
    ("encoder.pos_conv_embed.conv.", "pos_conv.conv."),
    ("encoder.layers.{n}.attention.q_proj.", "layers.{n}.attn.q_proj."),
    ("encoder.layers.{n}.attention.k_proj.", "layers.{n}.attn.k_proj."),
    ("encoder.layers.{n}.attention.v_proj.", "layers.{n}.attn.v_proj."),
    ("encoder.layers.{n}.attention.out_proj.", "layers.{n}.attn.out_proj."),
    ("encoder.layers.{n}.feed_forward.intermediate_dense.", "layers.{n}.ffn.fc1."),
    ("encoder.layers.{n}.feed_forward.output_dense.", "layers.{n}.ffn.fc2."),
)

# Official keys that inference never reads, dropped by name (regex, full match) with the reason.
UNUSED = (
    (r"masked_spec_embed", "mask embedding of pre-training (SpecAugment-style masking)"),
    (r"label_embs_concat", "HuBERT pre-training label embeddings"),
    (r"final_proj\..+", "HuBERT pre-training projection head"),
    (r"quantizer\..+", "pre-training quantizer / codebook"),
)
PREFIXES = ("hubert.", "model.", "mert_model.", "mert.")

POST_LN = KeyMap("MERT", _COMMON + (
    ("encoder.layer_norm.", "embed_norm."),  # post-LN encoder: the norm *before* the first layer
    ("encoder.layers.{n}.layer_norm.", "layers.{n}.attn_norm."),
    ("encoder.layers.{n}.final_layer_norm.", "layers.{n}.final_norm."),
), UNUSED, PREFIXES)
PRE_LN = KeyMap("MERT (pre-LN)", _COMMON + (
    ("encoder.layer_norm.", "final_norm."),  # pre-LN encoder: the norm *after* the last layer
    ("encoder.layers.{n}.layer_norm.", "layers.{n}.attn_norm."),
    ("encoder.layers.{n}.final_layer_norm.", "layers.{n}.ffn_norm."),
), UNUSED, PREFIXES, final_norm="final_norm.")

_LEGACY_WN = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}

HUB_95M = HubSource("m-a-p/MERT-v1-95M", {"config.json": "config", "pytorch_model.bin": "weights"},
                    "pytorch_model.bin is 378 MB", "CC-BY-NC-4.0")
HUB_330M = HubSource("m-a-p/MERT-v1-330M", {"config.json": "config", "pytorch_model.bin": "weights"},
                     "pytorch_model.bin is 1.26 GB", "CC-BY-NC-4.0")


def keymap(stable_layer_norm: bool) -> KeyMap:
    return PRE_LN if stable_layer_norm else POST_LN


def _normalise(sd: dict, km: KeyMap) -> dict:
    sd = km.strip_prefix(sd)
    out = {}
    for k, v in sd.items():  # old torch weight_norm names -> parametrizations names
        head, _, leaf = k.rpartition(".")
        out[f"{head}.{_LEGACY_WN[leaf]}" if leaf in _LEGACY_WN and "pos_conv_embed" in head else k] = v
    return out


def convert_mert(sd: dict, num_layers: int | None = None, total_layers: int = 12, stable_layer_norm: bool = False):
    """Official MERT keys -> ours, with every dropped key and why (a `Conversion`)."""
    km = keymap(stable_layer_norm)
    return km.convert(_normalise(sd, km), num_layers, total_layers)


def mert_official_to_ours(state_dict: dict, num_layers: int | None = None, total_layers: int = 12,
                          stable_layer_norm: bool = False) -> dict:
    """HubertModel / MERTModel key names -> ours. Keys in UNUSED, layers >= num_layers and (pre-LN,
    truncated) the final norm are dropped; any other unknown key is an error."""
    conv = convert_mert(state_dict, num_layers, total_layers, stable_layer_norm)
    if conv.unexpected:
        raise CheckpointError(f"MERT state dict: {len(conv.unexpected)} unexpected keys: {conv.unexpected[:12]}")
    return conv.state


def mert_ours_to_official(state_dict: dict, legacy_weight_norm: bool = False, stable_layer_norm: bool = False) -> dict:
    """Our MERT key names -> HubertModel's (weight_g/weight_v names if `legacy_weight_norm`)."""
    out = keymap(stable_layer_norm).to_official(state_dict)
    if legacy_weight_norm:
        for name in list(out):
            for old, new in _LEGACY_WN.items():
                if name.endswith("pos_conv_embed.conv." + new):
                    out[name[: -len(new)] + old] = out.pop(name)
    return out


CONFIG_FIELDS = {  # config.json name -> our MertConfig field
    "hidden_size": "hidden_size", "num_hidden_layers": "num_layers", "num_attention_heads": "num_heads",
    "intermediate_size": "ffn_dim", "conv_dim": "conv_dim", "conv_kernel": "conv_kernel",
    "conv_stride": "conv_stride", "num_conv_pos_embeddings": "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups": "num_conv_pos_embedding_groups", "layer_norm_eps": "layer_norm_eps",
    "do_stable_layer_norm": "stable_layer_norm",
}
# architecture switches our Mert implements one way only: required value
CONFIG_FIXED = {"conv_bias": False, "feat_extract_norm": "group", "feat_proj_layer_norm": True,
                "hidden_act": "gelu", "feat_extract_activation": "gelu"}
# MERT-only switches, checked when present (absent in plain HubertConfig)
CONFIG_OPTIONAL = {"feature_extractor_cqt": False, "deepnorm": False, "conv_pos_batch_norm": False}


def check_mert_config(config: dict, cfg: MertConfig, source: str = "config.json") -> None:
    """Fail on any config.json value that our Mert (with `cfg`) would compute differently."""
    bad, absent = [], []
    for name, ours in CONFIG_FIELDS.items():
        if name not in config:
            absent.append(name)
            continue
        want, got = getattr(cfg, ours), config[name]
        if isinstance(want, bool):
            same = got is want
        elif isinstance(want, float):
            same = math.isclose(float(got), want, rel_tol=1e-9)
        else:
            same = tuple(got) == tuple(want) if isinstance(want, tuple) else got == want
        if not same:
            bad.append(f"{name}={got!r} (ours {want!r})")
    for name, want in CONFIG_FIXED.items():
        if name not in config:
            absent.append(name)
        elif config[name] != want:
            bad.append(f"{name}={config[name]!r} (ours implements {want!r} only)")
    for name, want in CONFIG_OPTIONAL.items():
        if name in config and bool(config[name]) != want:
            bad.append(f"{name}={config[name]!r} (ours implements {want!r} only)")
    if "sample_rate" in config and int(config["sample_rate"]) != cfg.sample_rate:
        bad.append(f"sample_rate={config['sample_rate']!r} (ours {cfg.sample_rate})")
    # MERT's attention_relax > 0 (330M: 32.0) only rescales logits before a max-subtraction: the
    # same softmax, accepted (and its pre-LN encoder uses transformers' plain HubertAttention anyway)
    if absent or bad:
        raise CheckpointError(f"{source}: does not describe our {cfg.hidden_size}-d, {cfg.num_layers}-layer MERT "
                              "architecture: " + "; ".join(([f"missing fields {absent}"] if absent else []) + bad))


@dataclass(frozen=True)
class MertFormat:
    """A MERT release: Hugging Face folder (config.json + weights)."""

    hub: HubSource

    def resolve(self, path: Path) -> dict[str, Path]:
        return hf_folder_files(path, self.hub, what="MERT checkpoint")

    def load(self, model: Mert, files: dict[str, Path]) -> None:
        config = json.loads(Path(files["config"]).read_text())
        check_mert_config(config, model.cfg, str(files["config"]))
        sd = read_weights(files["weights"])
        stable = model.cfg.stable_layer_norm
        conv = convert_mert(sd, len(model.layers), model.cfg.num_layers, stable)
        load_strict(model, conv, Path(files["weights"]), keymap=keymap(stable))


MERT_V1_95M_FILES = MertFormat(HUB_95M)
MERT_V1_330M_FILES = MertFormat(HUB_330M)
