"""Official checkpoints -> our backbones, exactly: every key used, dropped by name, or an error.

`load_pretrained(model, checkpoint)` is what `load_backbone` calls. `checkpoint` is

- MERT-v1-95M: a Hugging Face folder with `config.json` and `model.safetensors` or
  `pytorch_model.bin` (or the path of one of those weight files, config.json beside it);
- MusicFM-MSD: a folder with `pretrained_msd.pt` and `msd_stats.json`, or the path of the .pt file
  with its stats file beside it (`pretrained_X.pt` -> `X_stats.json`, else `msd_stats.json`, else
  the one `*stats*.json` there);
- None: the official files, fetched with huggingface_hub into its cache (`m-a-p/MERT-v1-95M`,
  `minzwon/MusicFM`); the cache is tried first, so a filled cache needs no network. With neither
  a local file nor the Hub a `CheckpointError` says which files to get, from where, and where to put them.

What "layer N" means (both backbones, `Backbone.forward(wave, num_layers)[N - 1]`): the hidden
state right after the N-th transformer/conformer layer, i.e. `hidden_states[N]` of the official
code. MERT layers are post-LN, so that is already normalised. MusicFM's encoder-level
`conformer.layer_norm` follows only the 12th layer (as in transformers' Wav2Vec2ConformerEncoder,
which MusicFM uses), so layer 12 is normalised and layers 1..11 are raw layer outputs; a model
truncated below 12 layers never applies (nor loads) that norm.

MERT input normalisation is the config field `normalize_input` (param `backbone.normalize_input`):
per clip (x - mean) / sqrt(var + 1e-7), default True as in the model card's preprocessor
(`preprocessor_config.json`, Wav2Vec2FeatureExtractor do_normalize); the authors' benchmark code
feeds raw audio (no normalisation), so set it False to reproduce them. Loading does not change it.

Reading: `torch.load(..., weights_only=True)` only; MusicFM's pickle holds `torch.Size` and `set`,
which are allow-listed for that load and nothing else. The official MusicFM files are checked
against their md5 (a file with the official name and another md5 is an error); MERT's repo
publishes no checksum here, so its config.json is checked field by field instead.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .mert import Mert, MertConfig
from .musicfm import MusicFM

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded exactly, with the file at fault and what to do."""


# -- the official files -------------------------------------------------------------------------

@dataclass(frozen=True)
class HubSource:
    repo: str
    files: tuple[str, ...]
    note: str


HUB = {
    "mert": HubSource("m-a-p/MERT-v1-95M", ("config.json", "pytorch_model.bin"),
                      "pytorch_model.bin is 378 MB; licence CC-BY-NC-4.0"),
    "musicfm": HubSource("minzwon/MusicFM", ("pretrained_msd.pt", "msd_stats.json"),
                         "pretrained_msd.pt is 1.32 GB; licence MIT"),
}

# md5 of the official MusicFM release (REFERENCE.md); a file under one of these names must match
OFFICIAL_MD5 = {
    "pretrained_msd.pt": "df930aceac8209818556c4a656a0714c",
    "msd_stats.json": "75ab2e47b093e07378f7f703bdb82c14",
}

# Extra globals the official MusicFM pickle holds besides tensors and dicts. torch 2.11 already
# allows both by default; naming them keeps the load working where a torch version does not, and
# nothing broader is ever allowed (no weights_only=False fallback).
MUSICFM_PICKLE_GLOBALS = (torch.Size, set)


# -- key mapping --------------------------------------------------------------------------------
# (official prefix, our prefix); "{n}" is an index. A key is its prefix plus a leaf (weight, bias,
# running_mean, parametrizations.weight.original0, ...), kept as is. Both directions use the table.

MERT_RENAMES = (
    ("feature_extractor.conv_layers.0.layer_norm.", "feature_extractor.norm."),
    ("feature_extractor.conv_layers.{n}.conv.", "feature_extractor.convs.{n}."),
    ("feature_projection.layer_norm.", "proj_norm."),
    ("feature_projection.projection.", "proj."),
    ("encoder.pos_conv_embed.conv.", "pos_conv.conv."),
    ("encoder.layer_norm.", "embed_norm."),  # post-LN encoder: the norm *before* the first layer
    ("encoder.layers.{n}.attention.q_proj.", "layers.{n}.attn.q_proj."),
    ("encoder.layers.{n}.attention.k_proj.", "layers.{n}.attn.k_proj."),
    ("encoder.layers.{n}.attention.v_proj.", "layers.{n}.attn.v_proj."),
    ("encoder.layers.{n}.attention.out_proj.", "layers.{n}.attn.out_proj."),
    ("encoder.layers.{n}.layer_norm.", "layers.{n}.attn_norm."),
    ("encoder.layers.{n}.feed_forward.intermediate_dense.", "layers.{n}.ffn.fc1."),
    ("encoder.layers.{n}.feed_forward.output_dense.", "layers.{n}.ffn.fc2."),
    ("encoder.layers.{n}.final_layer_norm.", "layers.{n}.final_norm."),
)

# Official keys that inference never reads, dropped by name (regex, full match) with the reason.
MERT_UNUSED = (
    (r"masked_spec_embed", "mask embedding of pre-training (SpecAugment-style masking)"),
    (r"label_embs_concat", "HuBERT pre-training label embeddings"),
    (r"final_proj\..+", "HuBERT pre-training projection head"),
    (r"quantizer\..+", "pre-training quantizer / codebook"),
)

MUSICFM_RENAMES = (
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

MUSICFM_UNUSED = (
    (r"preprocessor_[^.]+\..+", "mel front-end buffers (window, filterbank): ours computes the same ones"),
    (r"quantizer_[^.]+\..+", "BEST-RQ random-projection quantizer (pre-training targets)"),
    (r"linear\.(weight|bias)", "BEST-RQ token prediction head"),
    (r"cls_token", "unused [CLS] vector"),
    (r"conformer\.pos_conv_embed\..+",
     "positional conv that transformers' Wav2Vec2ConformerEncoder builds but never calls (rotary config)"),
)

# our buffers that are computed at build time, not loaded (MelSpectrogram window and filterbank)
MUSICFM_COMPUTED = ("frontend.mel.spectrogram.window", "frontend.mel.mel_scale.fb")
_MUSICFM_OFFICIAL_MEL = {"frontend.mel.spectrogram.window": "preprocessor_melspec_2048.mel_stft.spectrogram.window",
                         "frontend.mel.mel_scale.fb": "preprocessor_melspec_2048.mel_stft.mel_scale.fb"}

_MERT_PREFIXES = ("hubert.", "model.", "mert_model.", "mert.")  # wrappers seen around HubertModel keys
_LEGACY_WN = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


@functools.lru_cache(maxsize=None)
def _template_regex(template: str) -> re.Pattern:
    return re.compile(re.escape(template).replace(re.escape("{n}"), r"(\d+)"))


def _rename(key: str, table: tuple[tuple[str, str], ...], reverse: bool = False) -> str | None:
    for official, ours in table:
        src, dst = (ours, official) if reverse else (official, ours)
        m = _template_regex(src).match(key)
        if m:
            return (dst.replace("{n}", m.group(1)) if m.groups() else dst) + key[m.end():]
    return None


def _layer_index(our_key: str) -> int | None:
    m = re.match(r"layers\.(\d+)\.", our_key)
    return int(m.group(1)) if m else None


@dataclass
class Conversion:
    state: dict[str, torch.Tensor] = field(default_factory=dict)  # our names
    source: dict[str, str] = field(default_factory=dict)  # our name -> official name
    dropped: dict[str, str] = field(default_factory=dict)  # official name -> why
    unexpected: list[str] = field(default_factory=list)  # official names matching no rule


def _convert(sd: dict, renames, unused, keep_layers: int | None, total_layers: int,
             final_norm: str | None = None) -> Conversion:
    out = Conversion()
    truncated = keep_layers is not None and keep_layers < total_layers
    for key, value in sd.items():
        why = next((reason for pat, reason in unused if re.fullmatch(pat, key)), None)
        if why:
            out.dropped[key] = why
            continue
        ours = _rename(key, renames)
        if ours is None:
            out.unexpected.append(key)
            continue
        i = _layer_index(ours)
        if truncated and i is not None and keep_layers <= i < total_layers:
            out.dropped[key] = f"layer {i + 1} > num_layers={keep_layers}"
            continue
        if truncated and final_norm and ours.startswith(final_norm):
            out.dropped[key] = f"final norm after layer {total_layers}, unused with num_layers={keep_layers}"
            continue
        out.state[ours] = value
        out.source[ours] = key
    return out


def _strip_prefix(sd: dict, prefixes: tuple[str, ...]) -> dict:
    """Remove a wrapper prefix (the one most keys carry) from every key that has it."""
    for p in prefixes:
        if 2 * sum(k.startswith(p) for k in sd) > len(sd):
            return {k.removeprefix(p): v for k, v in sd.items()}
    return dict(sd)


def _mert_normalise(sd: dict) -> dict:
    sd = _strip_prefix(sd, _MERT_PREFIXES)
    out = {}
    for k, v in sd.items():  # old torch weight_norm names -> parametrizations names
        head, _, leaf = k.rpartition(".")
        out[f"{head}.{_LEGACY_WN[leaf]}" if leaf in _LEGACY_WN and "pos_conv_embed" in head else k] = v
    return out


def convert_mert(sd: dict, num_layers: int | None = None, total_layers: int = 12) -> Conversion:
    """Official MERT keys -> ours, with every dropped key and why (see mert_official_to_ours)."""
    return _convert(_mert_normalise(sd), MERT_RENAMES, MERT_UNUSED, num_layers, total_layers)


def convert_musicfm(sd: dict, num_layers: int | None = None, total_layers: int = 12) -> Conversion:
    """Official MusicFM keys -> ours, with every dropped key and why (see musicfm_official_to_ours)."""
    sd = _strip_prefix(sd, ("model.",))
    return _convert(sd, MUSICFM_RENAMES, MUSICFM_UNUSED, num_layers, total_layers, final_norm="final_norm.")


def _raise_unexpected(conv: Conversion, what: str) -> None:
    if conv.unexpected:
        raise CheckpointError(f"{what}: {len(conv.unexpected)} unexpected keys: {_short(conv.unexpected)}")


def mert_official_to_ours(state_dict: dict, num_layers: int | None = None, total_layers: int = 12) -> dict:
    """transformers HubertModel / MERT key names -> ours (weight_g/v or parametrizations; `hubert.`,
    `model.`, `mert_model.` prefixes). Keys in MERT_UNUSED and layers >= num_layers are dropped."""
    conv = convert_mert(state_dict, num_layers, total_layers)
    _raise_unexpected(conv, "MERT state dict")
    return conv.state


def mert_ours_to_official(state_dict: dict, legacy_weight_norm: bool = False) -> dict:
    """Our MERT key names -> HubertModel's (weight_g/weight_v names if `legacy_weight_norm`)."""
    out = {}
    for k, v in state_dict.items():
        name = _rename(k, MERT_RENAMES, reverse=True)
        if name is None:
            raise CheckpointError(f"no official name for our MERT key {k!r}")
        if legacy_weight_norm:
            for old, new in _LEGACY_WN.items():
                if name.endswith("pos_conv_embed.conv." + new):
                    name = name[: -len(new)] + old
        out[name] = v
    return out


def musicfm_official_to_ours(state_dict: dict, num_layers: int | None = None, total_layers: int = 12) -> dict:
    """MusicFM25Hz state dict (with or without the `model.` prefix) -> our key names. Keys in
    MUSICFM_UNUSED, layers >= num_layers and, if truncated, `conformer.layer_norm` are dropped."""
    conv = convert_musicfm(state_dict, num_layers, total_layers)
    _raise_unexpected(conv, "MusicFM state dict")
    return conv.state


def musicfm_ours_to_official(state_dict: dict, prefix: str = "model.") -> dict:
    """Our MusicFM key names -> MusicFM25Hz's (computed mel buffers map to its preprocessor's)."""
    out = {}
    for k, v in state_dict.items():
        name = _MUSICFM_OFFICIAL_MEL.get(k) or _rename(k, MUSICFM_RENAMES, reverse=True)
        if name is None:
            raise CheckpointError(f"no official name for our MusicFM key {k!r}")
        out[prefix + name] = v
    return out


# -- loading ------------------------------------------------------------------------------------

def _short(keys, n: int = 12) -> str:
    keys = list(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def _load_converted(model: torch.nn.Module, conv: Conversion, source: Path, computed=(), reverse=None) -> None:
    """Strict load with one error listing every missing, unexpected and mis-shaped key."""
    own = model.state_dict()
    state = dict(conv.state)
    for k in computed:  # buffers our model computes itself: keep ours
        if k in own:
            state[k] = own[k]
    missing = [f"{k} (official {reverse(k)})" if reverse and reverse(k) else k for k in own if k not in state]
    unexpected = conv.unexpected + [conv.source[k] for k in state if k not in own]
    shapes = [f"{conv.source.get(k, k)}: {tuple(v.shape)} in the file, {tuple(own[k].shape)} in the model"
              for k, v in state.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{source}: does not fit {getattr(model, 'name', type(model).__name__)} exactly"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {_short(shapes)}")
        parts.append("is it the right checkpoint for this backbone and config?")
        raise CheckpointError("; ".join(parts))
    for k, v in state.items():
        if not own[k].is_floating_point() and v.is_floating_point():
            state[k] = v.to(own[k].dtype)  # BatchNorm num_batches_tracked stored as float
    model.load_state_dict(state, strict=True)


def md5sum(path: Path, chunk: int = 1 << 23) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_official_md5(path: Path) -> None:
    """A file under an official name must be the official file; another name only gets a warning."""
    path = Path(path)
    want = OFFICIAL_MD5.get(path.name)
    if want is None:
        warnings.warn(f"{path}: not an official MusicFM file name ({', '.join(OFFICIAL_MD5)}); "
                      "loading it without a checksum", stacklevel=3)
        return
    got = md5sum(path)
    if got != want:
        raise CheckpointError(f"{path}: md5 {got} is not the official {path.name} ({want}); the file is "
                              f"corrupt, truncated or replaced: download it again from "
                              f"https://huggingface.co/{HUB['musicfm'].repo}")


def read_torch_file(path: Path, extra_globals=()) -> dict:
    """torch.load with weights_only=True and only `extra_globals` allow-listed; mmap when possible."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(extra_globals)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        lines = str(err).splitlines()
        why = next((ln.strip().split(" was not")[0] for ln in lines if "WeightsUnpickler error" in ln), lines[0])
        raise CheckpointError(f"{path}: not loadable with torch.load(weights_only=True) ({why}); "
                              "it needs a pickle global that is not allow-listed, or is not a torch file. "
                              "We do not unpickle arbitrary objects: re-save its state dict with torch.save or "
                              "safetensors") from err
    except (RuntimeError, EOFError) as err:
        raise CheckpointError(f"{path}: cannot read as a torch checkpoint ({err})") from err


MERT_CONFIG_FIELDS = {  # config.json name -> our MertConfig field
    "hidden_size": "hidden_size", "num_hidden_layers": "num_layers", "num_attention_heads": "num_heads",
    "intermediate_size": "ffn_dim", "conv_dim": "conv_dim", "conv_kernel": "conv_kernel",
    "conv_stride": "conv_stride", "num_conv_pos_embeddings": "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups": "num_conv_pos_embedding_groups", "layer_norm_eps": "layer_norm_eps",
}
# architecture switches our Mert implements one way only: required value
MERT_CONFIG_FIXED = {"conv_bias": False, "feat_extract_norm": "group", "do_stable_layer_norm": False,
                     "feat_proj_layer_norm": True, "hidden_act": "gelu", "feat_extract_activation": "gelu"}
# MERT-only switches, checked when present (absent in plain HubertConfig)
MERT_CONFIG_OPTIONAL = {"feature_extractor_cqt": False, "deepnorm": False, "conv_pos_batch_norm": False}


def check_mert_config(config: dict, cfg: MertConfig, source: str = "config.json") -> None:
    """Fail on any config.json value that our Mert (with `cfg`) would compute differently."""
    bad, absent = [], []
    for name, ours in MERT_CONFIG_FIELDS.items():
        if name not in config:
            absent.append(name)
            continue
        want, got = getattr(cfg, ours), config[name]
        same = math.isclose(float(got), want, rel_tol=1e-9) if isinstance(want, float) else \
            (tuple(got) == tuple(want) if isinstance(want, tuple) else got == want)
        if not same:
            bad.append(f"{name}={got!r} (ours {want!r})")
    for name, want in MERT_CONFIG_FIXED.items():
        if name not in config:
            absent.append(name)
        elif config[name] != want:
            bad.append(f"{name}={config[name]!r} (ours implements {want!r} only)")
    for name, want in MERT_CONFIG_OPTIONAL.items():
        if name in config and bool(config[name]) != want:
            bad.append(f"{name}={config[name]!r} (ours implements {want!r} only)")
    if "sample_rate" in config and int(config["sample_rate"]) != cfg.sample_rate:
        bad.append(f"sample_rate={config['sample_rate']!r} (ours {cfg.sample_rate})")
    # MERT's attention_relax > 0 only rescales logits before a max-subtraction: same softmax, accepted
    if absent or bad:
        raise CheckpointError(f"{source}: does not describe our {cfg.hidden_size}-d MERT architecture: "
                              + "; ".join(([f"missing fields {absent}"] if absent else []) + bad))


def mert_files(path: str | Path) -> tuple[Path, Path]:
    """(config.json, weights) from a Hugging Face folder or the path of its weight file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    folder = path if path.is_dir() else path.parent
    if path.is_file():
        weights = path
    else:
        found = [folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()]
        if not found:
            raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin there; a MERT checkpoint is a "
                                  f"Hugging Face folder ({', '.join(HUB['mert'].files)} from "
                                  f"https://huggingface.co/{HUB['mert'].repo})")
        weights = found[0]
    config = folder / "config.json"
    if not config.is_file():
        raise CheckpointError(f"{folder}: config.json missing beside {weights.name}; get it from "
                              f"https://huggingface.co/{HUB['mert'].repo}")
    return config, weights


def musicfm_files(path: str | Path) -> tuple[Path, Path]:
    """(checkpoint .pt, stats .json) from a folder or the .pt path with the stats file beside it."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        official = folder / "pretrained_msd.pt"
        pts = [official] if official.is_file() else sorted(folder.glob("*.pt"))
        if len(pts) != 1:
            raise CheckpointError(f"{folder}: expected pretrained_msd.pt (or exactly one .pt file), found "
                                  f"{[p.name for p in pts]}; get it from https://huggingface.co/{HUB['musicfm'].repo}")
        pt = pts[0]
    elif path.is_file():
        pt = path
    else:
        raise CheckpointError(f"{path}: no such file or folder")
    # the stats of the same release: pretrained_X.pt -> X_stats.json (msd, fma), else msd_stats.json,
    # else the one *stats*.json there
    named = [folder / f"{pt.stem.removeprefix('pretrained_')}_stats.json", folder / "msd_stats.json"]
    cands = [p for p in named if p.is_file()][:1] or sorted(folder.glob("*stats*.json"))
    if len(cands) != 1:
        raise CheckpointError(f"{folder}: needs msd_stats.json (the mel mean/std of the release) beside "
                              f"{pt.name}, found {[c.name for c in cands]}; get it from "
                              f"https://huggingface.co/{HUB['musicfm'].repo}")
    stats = cands[0]
    return pt, stats


def read_musicfm_stats(path: Path) -> tuple[float, float]:
    try:
        stats = json.loads(Path(path).read_text())
        mean, std = float(stats["melspec_2048_mean"]), float(stats["melspec_2048_std"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: not a MusicFM stats file with melspec_2048_mean/std ({err!r})") from err
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise CheckpointError(f"{path}: melspec_2048_mean={mean}, melspec_2048_std={std} are not usable")
    return mean, std


def load_mert(model: Mert, config_path: Path, weights_path: Path) -> None:
    config = json.loads(Path(config_path).read_text())
    check_mert_config(config, model.cfg, str(config_path))
    if Path(weights_path).suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(weights_path))
    else:
        sd = read_torch_file(weights_path)
    conv = convert_mert(sd, len(model.layers), model.cfg.num_layers)
    _load_converted(model, conv, Path(weights_path),
                    reverse=lambda k: _rename(k, MERT_RENAMES, reverse=True))


def load_musicfm(model: MusicFM, ckpt_path: Path, stats_path: Path) -> None:
    ckpt_path, stats_path = Path(ckpt_path), Path(stats_path)
    check_official_md5(stats_path)  # cheap one first
    mean, std = read_musicfm_stats(stats_path)
    check_official_md5(ckpt_path)
    obj = read_torch_file(ckpt_path, MUSICFM_PICKLE_GLOBALS)
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{ckpt_path}: expected a dict with a 'state_dict' (MusicFM release format)")
    conv = convert_musicfm(sd, len(model.layers), model.cfg.num_layers)
    _check_mel_buffers(model, sd, ckpt_path)
    _load_converted(model, conv, ckpt_path, computed=MUSICFM_COMPUTED,
                    reverse=lambda k: _rename(k, MUSICFM_RENAMES, reverse=True))
    model.frontend.mean, model.frontend.std = mean, std
    model.cfg = replace(model.cfg, mel_mean=mean, mel_std=std)


def _check_mel_buffers(model: MusicFM, sd: dict, source: Path) -> None:
    """The release stores its mel window/filterbank; ours computes them: they must agree."""
    own = model.state_dict()
    for ours, official in _MUSICFM_OFFICIAL_MEL.items():
        theirs = sd.get("model." + official, sd.get(official))
        if theirs is None or ours not in own:
            continue
        if theirs.shape != own[ours].shape or not torch.allclose(theirs.float(), own[ours].float(), atol=1e-6):
            warnings.warn(f"{source}: its {official} differs from the one torchaudio computes here; "
                          "mel features will not match the release exactly", stacklevel=3)


def fetch_official(kind: str, cache_dir: str | Path | None = None) -> dict[str, Path]:
    """The official files of `kind` ('mert' or 'musicfm') from the Hugging Face cache or the Hub."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    src = HUB[kind]
    out = {}
    for name in src.files:
        try:  # the cache first: no HEAD request (and its retries) when the file is there
            out[name] = Path(hf_hub_download(src.repo, name, cache_dir=cache_dir, local_files_only=True))
            continue
        except LocalEntryNotFoundError:
            pass
        log.info("downloading %s from https://huggingface.co/%s (%s)", name, src.repo, src.note)
        try:
            out[name] = Path(hf_hub_download(src.repo, name, cache_dir=cache_dir))
        except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, ConnectionError, TimeoutError) as err:
            urls = " ".join(f"https://huggingface.co/{src.repo}/resolve/main/{f}" for f in src.files)
            raise CheckpointError(
                f"cannot get {name} of {src.repo} ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
                f"No local checkpoint was given and the Hugging Face Hub is unreachable or offline. Download "
                f"{' and '.join(src.files)} ({src.note}) from https://huggingface.co/{src.repo}: {urls} "
                f"-- put them in one folder and set backbone.checkpoint to that folder in params.yaml "
                f"(load_backbone(..., checkpoint=FOLDER)), or fill the Hugging Face cache with "
                f"`hf download {src.repo} {' '.join(src.files)}` on a machine with network.") from err
    return out


def load_pretrained(model: torch.nn.Module, checkpoint: str | Path | None = None) -> None:
    """Load the official weights into `model` (a Mert or MusicFM, possibly truncated), in place.

    See the module docstring for what `checkpoint` may be. Every key of the file is used, dropped
    by name (MERT_UNUSED / MUSICFM_UNUSED, layers >= num_layers, MusicFM's final norm of a
    truncated model), or the load fails listing missing and unexpected keys.
    """
    if isinstance(model, Mert):
        if checkpoint:
            config, weights = mert_files(checkpoint)
        else:
            files = fetch_official("mert")
            config, weights = files["config.json"], files["pytorch_model.bin"]
        load_mert(model, config, weights)
    elif isinstance(model, MusicFM):
        if checkpoint:
            pt, stats = musicfm_files(checkpoint)
        else:
            files = fetch_official("musicfm")
            pt, stats = files["pretrained_msd.pt"], files["msd_stats.json"]
        load_musicfm(model, pt, stats)
    else:
        raise CheckpointError(f"no official checkpoint format for {type(model).__name__}")
