"""MERT (HuBERT-style) in plain PyTorch: conv feature extractor, positional conv, transformer layers.

Two layer layouts, as the releases' config.json switch `do_stable_layer_norm` says:
- post-LN (MERT-v1-95M, False): LayerNorm before the first layer, each layer `LN(x + f(x))`;
- pre-LN (MERT-v1-330M, True): each layer `x + f(LN(x))`, one LayerNorm after the last layer only.
Both equal transformers' `HubertModel` with feat_extract_norm="group" (tested against it; MERT's
own `MERTModel` is a `HubertModel` subclass that builds the same encoders). Module names are ours
(shared PETL surface); `mert_ckpt.py` maps the official Hugging Face key names onto them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention
from .base import Backbone, init_linear_like_hf


@dataclass(frozen=True)
class MertConfig:
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    layer_norm_eps: float = 1e-5
    dropout: float = 0.1
    sample_rate: int = 24000
    # per-clip (x - mean) / sqrt(var + 1e-7): the model card's preprocessor does it, the authors'
    # benchmark code does not; a param (backbone.normalize_input), see docs/REFERENCE.md
    normalize_input: bool = True
    # config.json's do_stable_layer_norm: pre-LN layers and a final LayerNorm (MERT-v1-330M)
    stable_layer_norm: bool = False
    extra: dict = field(default_factory=dict)


MERT_V1_95M = MertConfig()
# m-a-p/MERT-v1-330M config.json: 24 x 1024, 16 heads, FFN 4096, do_stable_layer_norm true, same CNN
MERT_V1_330M = MertConfig(hidden_size=1024, num_layers=24, num_heads=16, ffn_dim=4096, stable_layer_norm=True)
MERT_TINY = MertConfig(hidden_size=64, num_layers=6, num_heads=4, ffn_dim=256, conv_dim=(32,) * 7,
                       num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
MERT_330M_TINY = replace(MERT_TINY, stable_layer_norm=True)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-D tensor in channels-last memory (no copy when it already is). One channel: both layouts
    hold the same bytes and `contiguous(memory_format=torch.channels_last)` leaves the strides as they
    are, so oneDNN would pick its plain layout for the conv output; the strides are set explicitly."""
    if x.shape[1] == 1:
        x = x.contiguous()
        return x.as_strided(x.shape, (x.shape[2] * x.shape[3], 1, x.shape[3], 1))
    return x.contiguous(memory_format=torch.channels_last)


def gelu_(x: torch.Tensor) -> torch.Tensor:
    """GELU, in place when autograd does not need the input (no-grad front ends, inference): saves
    allocating (and page-faulting) a second activation-sized tensor. Same values as F.gelu."""
    return F.gelu(x) if x.requires_grad else torch.ops.aten.gelu_(x)


class FeatureExtractor(nn.Module):
    """7 strided convs: 24 kHz -> 75 Hz. GroupNorm (one group per channel) after the first only."""

    def __init__(self, cfg: MertConfig):
        super().__init__()
        convs, in_ch = [], 1
        for out_ch, k, s in zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride):
            convs.append(nn.Conv1d(in_ch, out_ch, k, stride=s, bias=False))
            in_ch = out_ch
        self.convs = nn.ModuleList(convs)
        self.norm = nn.GroupNorm(cfg.conv_dim[0], cfg.conv_dim[0], affine=True)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:  # (B, N) -> (B, C, T), memory time-major
        # Each conv runs as a (1, k) conv2d on (B, C, 1, T), the ones after the first in channels-last
        # memory: the same sums as conv1d, but oneDNN then skips reordering every activation to its
        # blocked layout and back (0.7x the time of the conv1d chain on CPU, 30 s of audio). The first
        # conv and its GroupNorm stay in the plain layout: GroupNorm's channels-last CPU kernel
        # computes its statistics 10-30x less accurately (5e-5 off float64 at 30 s, the plain one 2e-6).
        # The result is (B, C, T) with channels innermost: the caller's transpose to (B, T, C) is free.
        x = wave[:, None, None]
        for i, conv in enumerate(self.convs):
            weight = conv.weight.unsqueeze(2)
            x = F.conv2d(x, to_channels_last(weight) if i else weight, conv.bias, (1, conv.stride[0]))
            if i == 0:
                x = gelu_(self.norm(x))  # two statements: the conv's output is freed before the copy below
                x = to_channels_last(x)
            else:
                x = gelu_(x)
        return x.squeeze(2)


class PositionalConv(nn.Module):
    """Grouped conv with weight norm over the kernel dim; drops the last frame for an even kernel."""

    def __init__(self, cfg: MertConfig):
        super().__init__()
        k = cfg.num_conv_pos_embeddings
        conv = nn.Conv1d(cfg.hidden_size, cfg.hidden_size, k, padding=k // 2, groups=cfg.num_conv_pos_embedding_groups)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.trim = 1 if k % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d)
        # as a (1, k) conv2d on (B, d, 1, T): (B, T, d) memory already is its channels-last layout,
        # so neither the input nor the output is copied, and oneDNN's grouped kernel runs without
        # reorders (0.65x the time of the conv1d on CPU, 30 s of audio)
        conv = self.conv
        h = F.conv2d(x.transpose(1, 2).unsqueeze(2), to_channels_last(conv.weight.unsqueeze(2)), conv.bias,
                     padding=(0, conv.padding[0]), groups=conv.groups).squeeze(2)
        if self.trim:
            h = h[..., :-self.trim]
        return gelu_(h).transpose(1, 2)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float, act=F.gelu):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(self.act(self.fc1(x)))))


class _MertSurface(nn.Module):
    """The PETL surface both MERT layer layouts share (their norms differ)."""

    def linears(self) -> dict[str, nn.Module]:
        a = self.attn
        return {"attn.q_proj": a.q_proj, "attn.k_proj": a.k_proj, "attn.v_proj": a.v_proj,
                "attn.out_proj": a.out_proj, "ffn.fc1": self.ffn.fc1, "ffn.fc2": self.ffn.fc2}

    def adapter_sites(self) -> dict[str, nn.Module]:
        return {"attn": self.attn, "ffn": self.ffn}

    def bitfit_extras(self) -> dict[str, nn.Parameter]:
        return {}


class MertLayer(_MertSurface):
    """Post-LN transformer layer: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    def __init__(self, cfg: MertConfig):
        super().__init__()
        self.attn = MultiHeadAttention(cfg.hidden_size, cfg.num_heads, dropout=cfg.dropout)
        self.attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg.hidden_size, cfg.ffn_dim, cfg.dropout)
        self.final_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn_norm(x + self.dropout(self.attn(x)))
        return self.final_norm(x + self.ffn(x))

    # PETL surface (see base.py): linears, adapter sites and BitFit extras from _MertSurface
    def norms(self) -> dict[str, nn.LayerNorm]:
        return {"attn_norm": self.attn_norm, "final_norm": self.final_norm}


class MertPreLNLayer(_MertSurface):
    """Pre-LN transformer layer (do_stable_layer_norm): x = x + attn(LN(x)); x = x + ffn(LN(x))."""

    def __init__(self, cfg: MertConfig):
        super().__init__()
        self.attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = MultiHeadAttention(cfg.hidden_size, cfg.num_heads, dropout=cfg.dropout)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg.hidden_size, cfg.ffn_dim, cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x)))
        return x + self.ffn(self.ffn_norm(x))

    # PETL surface (see base.py): linears, adapter sites and BitFit extras from _MertSurface
    def norms(self) -> dict[str, nn.LayerNorm]:
        return {"attn_norm": self.attn_norm, "ffn_norm": self.ffn_norm}


class Mert(Backbone):
    """Post-LN: `embed_norm` before layer 1. Pre-LN: `final_norm` after the model's last layer only
    (so "layer N" for N below the depth is the raw layer output, as `hidden_states[N]` of HubertModel)."""

    def __init__(self, cfg: MertConfig = MERT_V1_95M, name: str = "mert-v1-95m"):
        super().__init__()
        self.cfg, self.name = cfg, name
        self.sample_rate, self.hidden_size = cfg.sample_rate, cfg.hidden_size
        self.frame_rate = cfg.sample_rate / math.prod(cfg.conv_stride)
        self.normalize_input = cfg.normalize_input
        self.feature_extractor = FeatureExtractor(cfg)
        self.proj_norm = nn.LayerNorm(cfg.conv_dim[-1], eps=cfg.layer_norm_eps)
        self.proj = nn.Linear(cfg.conv_dim[-1], cfg.hidden_size)
        self.pos_conv = PositionalConv(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.stable_layer_norm:
            self.layers = nn.ModuleList(MertPreLNLayer(cfg) for _ in range(cfg.num_layers))
            self.final_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        else:
            self.embed_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
            self.layers = nn.ModuleList(MertLayer(cfg) for _ in range(cfg.num_layers))

    def reset_parameters(self, seed: int) -> None:
        with torch.random.fork_rng(devices=[]):  # built on the CPU: its generator only
            torch.default_generator.manual_seed(seed)
            init_linear_like_hf(self)
            # weight norm keeps direction (original1) and gain (original0): re-derive gain from it
            p = self.pos_conv.conv.parametrizations.weight
            nn.init.normal_(p.original1, std=(2.0 / (self.cfg.num_conv_pos_embeddings * self.hidden_size)) ** 0.5)
            with torch.no_grad():
                p.original0.copy_(torch.linalg.vector_norm(p.original1, dim=(0, 1), keepdim=True))

    def frontend_modules(self) -> list[nn.Module]:
        front = [self.feature_extractor, self.proj_norm, self.proj, self.pos_conv]
        return front if self.cfg.stable_layer_norm else front + [self.embed_norm]

    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        if self.normalize_input:
            mean = wave.mean(dim=-1, keepdim=True)
            var = wave.var(dim=-1, keepdim=True, unbiased=False)
            wave = (wave - mean) / torch.sqrt(var + 1e-7)
        x = self.feature_extractor(wave).transpose(1, 2)
        x = self.dropout(self.proj(self.proj_norm(x)))
        x = x + self.pos_conv(x)
        if not self.cfg.stable_layer_norm:
            x = self.embed_norm(x)
        return self.dropout(x)

    def finalize(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_norm(x) if self.cfg.stable_layer_norm else x

    def truncate(self, num_layers: int) -> None:
        super().truncate(num_layers)
        if self.cfg.stable_layer_norm and len(self.layers) < self.cfg.num_layers:
            self.final_norm = None  # follows the last layer only: unused (and not loaded) below the full depth

    def n_frames(self, n_samples: int) -> int:
        for k, s in zip(self.cfg.conv_kernel, self.cfg.conv_stride):
            n_samples = (n_samples - k) // s + 1
        return n_samples
