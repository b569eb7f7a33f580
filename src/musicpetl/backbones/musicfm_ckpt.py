"""MusicFM's official files (minzwon/MusicFM: pretrained_msd.pt + msd_stats.json) -> our MusicFM.

A checkpoint is a folder with `pretrained_msd.pt` and `msd_stats.json`, or the path of the .pt
file with its stats file beside it (`pretrained_X.pt` -> `X_stats.json`, else `msd_stats.json`,
else the one `*stats*.json` there). The .pt holds `{"state_dict": {"model." + key: tensor}, ...}`
of `MusicFM25Hz`; its pickle also holds `torch.Size` and `set`, allow-listed for that load and
nothing else. The official files are checked against their md5 (a file with an official name and
another md5 is an error). The conformer's key names are transformers' Wav2Vec2ConformerEncoder's,
shared with MuQ (muq_ckpt.py).
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .checkpoints import (CheckpointError, HubSource, KeyMap, check_checksum, load_strict, read_torch_file)
from .musicfm import MusicFM

# the 2-D conv front end and the conformer, as MusicFM25Hz (and MuQModel) name them
CONV_CONFORMER_RENAMES = (
    ("conv.conv.{n}.", "subsample.blocks.{n}."),
    ("conv.linear.", "subsample.linear."),
    ("conformer.embed_positions.", "rotary."),
    ("conformer.layer_norm.", "final_norm."),
    ("conformer.layers.{n}.ffn1_layer_norm.", "layers.{n}.ffn1_norm."),
    ("conformer.layers.{n}.ffn1.intermediate_dense.", "layers.{n}.ffn1.fc1."),
    ("conformer.layers.{n}.ffn1.output_dense.", "layers.{n}.ffn1.fc2."),
    ("conformer.layers.{n}.self_attn_layer_norm.", "layers.{n}.attn_norm."),
    ("conformer.layers.{n}.self_attn.linear_q.", "layers.{n}.attn.q_proj."),
    ("conformer.layers.{n}.self_attn.linear_k.", "layers.{n}.attn.k_proj."),
    ("conformer.layers.{n}.self_attn.linear_v.", "layers.{n}.attn.v_proj."),
    ("conformer.layers.{n}.self_attn.linear_out.", "layers.{n}.attn.out_proj."),
    ("conformer.layers.{n}.conv_module.layer_norm.", "layers.{n}.conv.norm."),
    ("conformer.layers.{n}.conv_module.pointwise_conv1.", "layers.{n}.conv.pointwise_conv1."),
    ("conformer.layers.{n}.conv_module.depthwise_conv.", "layers.{n}.conv.depthwise_conv."),
    ("conformer.layers.{n}.conv_module.batch_norm.", "layers.{n}.conv.batch_norm."),
    ("conformer.layers.{n}.conv_module.pointwise_conv2.", "layers.{n}.conv.pointwise_conv2."),
    ("conformer.layers.{n}.ffn2_layer_norm.", "layers.{n}.ffn2_norm."),
    ("conformer.layers.{n}.ffn2.intermediate_dense.", "layers.{n}.ffn2.fc1."),
    ("conformer.layers.{n}.ffn2.output_dense.", "layers.{n}.ffn2.fc2."),
    ("conformer.layers.{n}.final_layer_norm.", "layers.{n}.final_norm."),
)
POS_CONV_UNUSED = (r"conformer\.pos_conv_embed\..+",
                   "positional conv that transformers' Wav2Vec2ConformerEncoder builds but never calls (rotary config)")

KEYS = KeyMap("MusicFM", CONV_CONFORMER_RENAMES, (
    (r"preprocessor_[^.]+\..+", "mel front-end buffers (window, filterbank): ours computes the same ones"),
    (r"quantizer_[^.]+\..+", "BEST-RQ random-projection quantizer (pre-training targets)"),
    (r"linear\.(weight|bias)", "BEST-RQ token prediction head"),
    (r"cls_token", "unused [CLS] vector"),
    POS_CONV_UNUSED,
), ("model.",), final_norm="final_norm.")

# our buffers that are computed at build time, not loaded (MelSpectrogram window and filterbank)
COMPUTED = ("frontend.mel.spectrogram.window", "frontend.mel.mel_scale.fb")
_OFFICIAL_MEL = {"frontend.mel.spectrogram.window": "preprocessor_melspec_2048.mel_stft.spectrogram.window",
                 "frontend.mel.mel_scale.fb": "preprocessor_melspec_2048.mel_stft.mel_scale.fb"}

HUB = HubSource("minzwon/MusicFM", {"pretrained_msd.pt": "weights", "msd_stats.json": "stats"},
                "pretrained_msd.pt is 1.32 GB", "MIT")

# md5 of the official release (docs/REFERENCE.md); a file under one of these names must match
OFFICIAL_MD5 = {
    "pretrained_msd.pt": "df930aceac8209818556c4a656a0714c",
    "msd_stats.json": "75ab2e47b093e07378f7f703bdb82c14",
}

# Extra globals the official pickle holds besides tensors and dicts. torch 2.11 already allows both
# by default; naming them keeps the load working where a torch version does not, and nothing
# broader is ever allowed (no weights_only=False fallback).
PICKLE_GLOBALS = (torch.Size, set)


def convert_musicfm(sd: dict, num_layers: int | None = None, total_layers: int = 12):
    """Official MusicFM keys (with or without `model.`) -> ours, with every dropped key and why."""
    return KEYS.convert(KEYS.strip_prefix(sd), num_layers, total_layers)


def musicfm_official_to_ours(state_dict: dict, num_layers: int | None = None, total_layers: int = 12) -> dict:
    """MusicFM25Hz state dict -> our key names. Unused keys, layers >= num_layers and, if truncated,
    `conformer.layer_norm` are dropped; any other unknown key is an error."""
    return KEYS.to_ours(state_dict, num_layers, total_layers)


def musicfm_ours_to_official(state_dict: dict, prefix: str = "model.") -> dict:
    """Our MusicFM key names -> MusicFM25Hz's (computed mel buffers map to its preprocessor's)."""
    mel = {k: v for k, v in state_dict.items() if k in _OFFICIAL_MEL}
    out = KEYS.to_official({k: v for k, v in state_dict.items() if k not in mel}, prefix)
    out.update({prefix + _OFFICIAL_MEL[k]: v for k, v in mel.items()})
    return out


def musicfm_files(path: str | Path) -> dict[str, Path]:
    """{"weights": .pt, "stats": .json} from a folder or the .pt path with the stats file beside it."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        official = folder / "pretrained_msd.pt"
        pts = [official] if official.is_file() else sorted(folder.glob("*.pt"))
        if len(pts) != 1:
            raise CheckpointError(f"{folder}: expected pretrained_msd.pt (or exactly one .pt file), found "
                                  f"{[p.name for p in pts]}; get it from {HUB.url}")
        pt = pts[0]
    elif path.is_file():
        pt = path
    else:
        raise CheckpointError(f"{path}: no such file or folder")
    named = [folder / f"{pt.stem.removeprefix('pretrained_')}_stats.json", folder / "msd_stats.json"]
    cands = [p for p in named if p.is_file()][:1] or sorted(folder.glob("*stats*.json"))
    if len(cands) != 1:
        raise CheckpointError(f"{folder}: needs msd_stats.json (the mel mean/std of the release) beside "
                              f"{pt.name}, found {[c.name for c in cands]}; get it from {HUB.url}")
    return {"weights": pt, "stats": cands[0]}


def read_stats(path: Path) -> tuple[float, float]:
    try:
        stats = json.loads(Path(path).read_text())
        mean, std = float(stats["melspec_2048_mean"]), float(stats["melspec_2048_std"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: not a MusicFM stats file with melspec_2048_mean/std ({err!r})") from err
    check_mel_stats(mean, std, path)
    return mean, std


def check_mel_stats(mean: float, std: float, source) -> None:
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise CheckpointError(f"{source}: melspec_2048_mean={mean}, melspec_2048_std={std} are not usable")


def set_mel_stats(model: MusicFM, mean: float, std: float) -> None:
    model.frontend.mean, model.frontend.std = mean, std
    model.cfg = replace(model.cfg, mel_mean=mean, mel_std=std)


def _check_mel_buffers(model: MusicFM, sd: dict, source: Path) -> None:
    """The release stores its mel window/filterbank; ours computes them: they must agree."""
    own = model.state_dict()
    for ours, official in _OFFICIAL_MEL.items():
        theirs = sd.get("model." + official, sd.get(official))
        if theirs is None or ours not in own:
            continue
        if theirs.shape != own[ours].shape or not torch.allclose(theirs.float(), own[ours].float(), atol=1e-6):
            warnings.warn(f"{source}: its {official} differs from the one torchaudio computes here; "
                          "mel features will not match the release exactly", stacklevel=3)


@dataclass(frozen=True)
class MusicFMFormat:
    hub: HubSource

    def resolve(self, path: Path) -> dict[str, Path]:
        return musicfm_files(path)

    def load(self, model: MusicFM, files: dict[str, Path]) -> None:
        pt, stats = Path(files["weights"]), Path(files["stats"])
        check_checksum(stats, OFFICIAL_MD5, self.hub)  # cheap one first
        mean, std = read_stats(stats)
        check_checksum(pt, OFFICIAL_MD5, self.hub)
        obj = read_torch_file(pt, PICKLE_GLOBALS)
        sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
        if not isinstance(sd, dict):
            raise CheckpointError(f"{pt}: expected a dict with a 'state_dict' (MusicFM release format)")
        conv = convert_musicfm(sd, len(model.layers), model.cfg.num_layers)
        _check_mel_buffers(model, sd, pt)
        load_strict(model, conv, pt, computed=COMPUTED, keymap=KEYS)
        set_mel_stats(model, mean, std)


MUSICFM_MSD_FILES = MusicFMFormat(HUB)
