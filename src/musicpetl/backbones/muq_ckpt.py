"""MuQ's official files (OpenMuQ/MuQ-large-msd-iter) -> our MuQ.

The release is what the `muq` package's `MuQ.save_pretrained` (huggingface_hub's
PyTorchModelHubMixin) writes: `config.json` (the `MuQConfig` fields: sizes, `stat` with the mel
mean/std, `w2v2_config` for transformers' Wav2Vec2ConformerConfig) and `model.safetensors` (also
`pytorch_model.bin`), keys `model.` + MuQModel's names. MuQModel builds its conv front end and
conformer exactly as MusicFM25Hz does, so the key names of what inference uses are MusicFM's
(musicfm_ckpt.CONV_CONFORMER_RENAMES); the rest is pre-training machinery, dropped by name. No
checksum is published here, so config.json is checked field by field instead.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .checkpoints import CheckpointError, HubSource, KeyMap, hf_folder_files, load_strict, read_weights
from .musicfm import MusicFMConfig
from .musicfm_ckpt import COMPUTED, CONV_CONFORMER_RENAMES, POS_CONV_UNUSED, check_mel_stats, set_mel_stats
from .muq import MuQ

KEYS = KeyMap("MuQ", CONV_CONFORMER_RENAMES, (
    (r"rvq\..+", "Mel-RVQ tokenizer (pre-training targets)"),
    (r"quantizer_[^.]+\..+", "random-projection quantizer (pre-training targets without Mel-RVQ)"),
    (r"linear\.(weight|bias)", "token prediction head of pre-training"),
    (r"recon_proj\..+", "mel reconstruction head of pre-training"),
    (r"cls_token", "unused [CLS] vector"),
    POS_CONV_UNUSED,
), ("model.",), final_norm="final_norm.")

HUB = HubSource("OpenMuQ/MuQ-large-msd-iter", {"config.json": "config", "model.safetensors": "weights"},
                "model.safetensors is about 1.3 GB", "CC-BY-NC-4.0")

# MuQConfig fields (top level) -> (our MusicFMConfig field, the package's default when absent)
CONFIG_FIELDS = {"encoder_dim": ("hidden_size", 1024), "encoder_depth": ("num_layers", 12),
                 "conv_dim": ("conv_dim", 512), "hop_length": ("hop_length", 240), "n_mels": ("n_mels", 128)}
# top-level switches our encoder implements one way only (value when absent: the package default)
CONFIG_FIXED = {"label_rate": 25, "features": ["melspec_2048"], "is_flash": False}
# w2v2_config fields -> our field (no default: the package's EasyDict config fails without them)
W2V2_FIELDS = {"num_attention_heads": "num_heads", "intermediate_size": "ffn_dim",
               "conv_depthwise_kernel_size": "depthwise_kernel", "rotary_embedding_base": "rotary_base",
               "layer_norm_eps": "layer_norm_eps"}
W2V2_FIXED = {"hidden_act": ("swish", "silu"), "position_embeddings_type": ("rotary",)}


def _same(got, want) -> bool:
    if isinstance(want, float):
        return isinstance(got, (int, float)) and math.isclose(float(got), want, rel_tol=1e-9)
    return got == want


def check_muq_config(config: dict, cfg: MusicFMConfig, source: str = "config.json") -> tuple[float, float]:
    """Fail on any config.json value our MuQ (with `cfg`) would compute differently; the mel mean/std."""
    bad, absent = [], []
    for name, (ours, default) in CONFIG_FIELDS.items():
        got, want = config.get(name, default), getattr(cfg, ours)
        if not _same(got, want):
            bad.append(f"{name}={got!r} (ours {want!r})")
    if cfg.n_mels != 128 or cfg.n_fft != 2048:
        bad.append(f"MuQ's MelSTFT is fixed at 128 mels, n_fft 2048 (ours {cfg.n_mels}, {cfg.n_fft})")
    for name, want in CONFIG_FIXED.items():
        if name in config and config[name] != want:
            bad.append(f"{name}={config[name]!r} (ours implements {want!r} only)")
    w2v2 = config.get("w2v2_config")
    if not isinstance(w2v2, dict):
        absent.append("w2v2_config")
        w2v2 = {}
    for name, ours in W2V2_FIELDS.items():
        if w2v2 and name not in w2v2:
            absent.append(f"w2v2_config.{name}")
        elif w2v2 and not _same(w2v2[name], getattr(cfg, ours)):
            bad.append(f"w2v2_config.{name}={w2v2[name]!r} (ours {getattr(cfg, ours)!r})")
    for name, allowed in W2V2_FIXED.items():
        if w2v2 and name not in w2v2:
            absent.append(f"w2v2_config.{name}")
        elif w2v2 and w2v2[name] not in allowed:
            bad.append(f"w2v2_config.{name}={w2v2[name]!r} (ours implements {allowed[0]!r} only)")
    stat = config.get("stat")
    mean = std = None
    try:
        mean, std = float(stat["melspec_2048_mean"]), float(stat["melspec_2048_std"])
    except (TypeError, KeyError, ValueError):
        absent.append("stat.melspec_2048_mean/std")
    if absent or bad:
        raise CheckpointError(f"{source}: does not describe our {cfg.hidden_size}-d, {cfg.num_layers}-layer MuQ "
                              "encoder: " + "; ".join(([f"missing fields {absent}"] if absent else []) + bad))
    check_mel_stats(mean, std, source)
    return mean, std


def convert_muq(sd: dict, num_layers: int | None = None, total_layers: int = 12):
    return KEYS.convert(KEYS.strip_prefix(sd), num_layers, total_layers)


def muq_official_to_ours(state_dict: dict, num_layers: int | None = None, total_layers: int = 12) -> dict:
    return KEYS.to_ours(state_dict, num_layers, total_layers)


def muq_ours_to_official(state_dict: dict, prefix: str = "model.") -> dict:
    """Our key names -> MuQ's (the computed mel buffers have none: MuQ's MelSTFT is no nn.Module)."""
    return KEYS.to_official({k: v for k, v in state_dict.items() if k not in COMPUTED}, prefix)


@dataclass(frozen=True)
class MuQFormat:
    hub: HubSource

    def resolve(self, path: Path) -> dict[str, Path]:
        return hf_folder_files(path, self.hub, what="MuQ checkpoint")

    def load(self, model: MuQ, files: dict[str, Path]) -> None:
        config = json.loads(Path(files["config"]).read_text())
        mean, std = check_muq_config(config, model.cfg, str(files["config"]))
        conv = convert_muq(read_weights(files["weights"]), len(model.layers), model.cfg.num_layers)
        load_strict(model, conv, Path(files["weights"]), computed=COMPUTED, keymap=KEYS)
        set_mel_stats(model, mean, std)


MUQ_LARGE_MSD_ITER_FILES = MuQFormat(HUB)
