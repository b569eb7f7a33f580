"""MusicFM (BEST-RQ, 25 Hz) in plain PyTorch: mel front end, 2-D conv subsampling, conformer.

The conformer equals transformers' `Wav2Vec2ConformerEncoder` with the rotary config (tested
against it); the front end equals torchaudio MelSpectrogram + AmplitudeToDB + the stats
normalisation of the official code. Module names are ours; `musicfm_ckpt.py` maps the official
`pretrained_msd.pt` key names onto them. MuQ's encoder is this same architecture (muq.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from .attention import MultiHeadAttention, RotaryEmbedding
from .base import Backbone, init_linear_like_hf
from .mert import FeedForward, to_channels_last

# msd_stats.json of the official release (docs/REFERENCE.md); used when no stats file is given
MSD_MEL_MEAN = 6.768444971712967
MSD_MEL_STD = 18.417922652295623


@dataclass(frozen=True)
class MusicFMConfig:
    hidden_size: int = 1024
    num_layers: int = 12
    num_heads: int = 16
    ffn_dim: int = 4096
    conv_dim: int = 512
    depthwise_kernel: int = 31
    n_mels: int = 128
    n_fft: int = 2048
    hop_length: int = 240
    rotary_base: float = 10000.0
    layer_norm_eps: float = 1e-5
    dropout: float = 0.1
    sample_rate: int = 24000
    mel_mean: float = MSD_MEL_MEAN
    mel_std: float = MSD_MEL_STD


MUSICFM_MSD = MusicFMConfig()
MUSICFM_TINY = MusicFMConfig(hidden_size=64, num_layers=6, num_heads=4, ffn_dim=256, conv_dim=8)


class MelFrontEnd(nn.Module):
    """Power mel (centred, HTK, torchaudio defaults) -> dB -> stats normalisation, always in fp32."""

    def __init__(self, cfg: MusicFMConfig):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=cfg.sample_rate, n_fft=cfg.n_fft,
                                                        hop_length=cfg.hop_length, n_mels=cfg.n_mels)
        self.to_db = torchaudio.transforms.AmplitudeToDB()
        self.mean, self.std = cfg.mel_mean, cfg.mel_std

    def forward(self, wave: torch.Tensor) -> torch.Tensor:  # (B, N) -> (B, n_mels, T)
        with torch.autocast(device_type=wave.device.type, enabled=False):
            spec = self.to_db(self.mel(wave.float()))[..., :-1]  # official code drops the last frame
        return (spec - self.mean) / self.std


class Res2d(nn.Module):
    def __init__(self, idim: int, odim: int, stride: tuple[int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)
        self.bn1 = nn.BatchNorm2d(odim)
        self.conv2 = nn.Conv2d(odim, odim, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(odim)
        self.conv3 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)  # residual path (always strided here)
        self.bn3 = nn.BatchNorm2d(odim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last memory: oneDNN runs the 3x3 convs without reordering every activation to its
        # blocked layout and back; BatchNorm in eval mode (frozen front end, inference) is folded into
        # the convs' weights and biases, so the three normalisation passes over activation-sized
        # tensors go away; ReLU and the residual sum run in place. 0.64x the time of the plain
        # NCHW module chain on CPU (30 s of audio), the same values within float rounding.
        x = to_channels_last(x)
        if self.bn1.training or self.bn2.training or self.bn3.training:  # BatchNorm updates its statistics
            out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            return F.relu(self.bn3(self.conv3(x)) + out)
        out = F.relu(_conv_bn(self.conv1, self.bn1, x), inplace=True)
        out = _conv_bn(self.conv2, self.bn2, out)
        return F.relu(out.add_(_conv_bn(self.conv3, self.bn3, x)), inplace=True)


def _conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """bn(conv(x)) for BatchNorm in eval mode, as one conv: scale folded into the weight, shift into the bias."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    weight = to_channels_last(conv.weight * scale[:, None, None, None])
    bias = (conv.bias - bn.running_mean) * scale + bn.bias
    return F.conv2d(x, weight, bias, conv.stride, conv.padding)


class ConvSubsampling(nn.Module):
    """Two residual Conv2d blocks, each /2 in frequency and time (100 Hz -> 25 Hz), then a linear."""

    def __init__(self, cfg: MusicFMConfig):
        super().__init__()
        self.blocks = nn.Sequential(Res2d(1, cfg.conv_dim, (2, 2)), Res2d(cfg.conv_dim, cfg.conv_dim, (2, 2)))
        self.linear = nn.Linear(cfg.conv_dim * cfg.n_mels // 4, cfg.hidden_size)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # (B, F, T) -> (B, T/4, d)
        x = self.blocks(mel.unsqueeze(1))
        b, c, f, t = x.shape
        return self.linear(x.permute(0, 3, 1, 2).reshape(b, t, c * f))


class ConvModule(nn.Module):
    """Conformer convolution: LN -> pointwise (x2) -> GLU -> depthwise -> BN -> swish -> pointwise."""

    def __init__(self, cfg: MusicFMConfig):
        super().__init__()
        d = cfg.hidden_size
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.pointwise_conv1 = nn.Conv1d(d, 2 * d, 1, bias=False)
        self.depthwise_conv = nn.Conv1d(d, d, cfg.depthwise_kernel, padding=(cfg.depthwise_kernel - 1) // 2,
                                        groups=d, bias=False)
        self.batch_norm = nn.BatchNorm1d(d)
        self.pointwise_conv2 = nn.Conv1d(d, d, 1, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d)
        h = self.pointwise_conv1(self.norm(x).transpose(1, 2))
        h = F.glu(h, dim=1)
        h = F.silu(self.batch_norm(self.depthwise_conv(h)))
        return self.dropout(self.pointwise_conv2(h).transpose(1, 2))


class ConformerLayer(nn.Module):
    """Macaron conformer layer: half FFN, rotary self-attention, conv module, half FFN, final LN."""

    def __init__(self, cfg: MusicFMConfig):
        super().__init__()
        d = cfg.hidden_size
        self.ffn1_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.ffn1 = FeedForward(d, cfg.ffn_dim, cfg.dropout, act=F.silu)
        self.attn_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.attn = MultiHeadAttention(d, cfg.num_heads, dropout=cfg.dropout)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.conv = ConvModule(cfg)
        self.ffn2_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.ffn2 = FeedForward(d, cfg.ffn_dim, cfg.dropout, act=F.silu)
        self.final_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, rotary=None) -> torch.Tensor:
        x = x + 0.5 * self.ffn1(self.ffn1_norm(x))
        x = x + self.attn_dropout(self.attn(self.attn_norm(x), rotary=rotary))
        x = x + self.conv(x)
        x = x + 0.5 * self.ffn2(self.ffn2_norm(x))
        return self.final_norm(x)

    # PETL surface (see base.py)
    def linears(self) -> dict[str, nn.Module]:
        a = self.attn
        return {"attn.q_proj": a.q_proj, "attn.k_proj": a.k_proj, "attn.v_proj": a.v_proj,
                "attn.out_proj": a.out_proj, "ffn1.fc1": self.ffn1.fc1, "ffn1.fc2": self.ffn1.fc2,
                "ffn2.fc1": self.ffn2.fc1, "ffn2.fc2": self.ffn2.fc2,
                "conv.pointwise_conv1": self.conv.pointwise_conv1, "conv.pointwise_conv2": self.conv.pointwise_conv2}

    def adapter_sites(self) -> dict[str, nn.Module]:
        return {"ffn1": self.ffn1, "attn": self.attn, "ffn2": self.ffn2}

    def norms(self) -> dict[str, nn.LayerNorm]:
        return {"ffn1_norm": self.ffn1_norm, "attn_norm": self.attn_norm, "ffn2_norm": self.ffn2_norm,
                "final_norm": self.final_norm}

    def bitfit_extras(self) -> dict[str, nn.Parameter]:
        # the conv module's one 1024-vector of Table 3's BitFit count (19,456 per layer): the paper's
        # code trains `conv_module.batch_norm.bias` (its running statistics stay frozen, model.py)
        return {"conv.batch_norm.bias": self.conv.batch_norm.bias}


class MusicFM(Backbone):
    """Mel -> 2-D conv subsampling (4x in time) -> rotary conformer; the encoder's closing LayerNorm
    follows the model's last layer only."""

    def __init__(self, cfg: MusicFMConfig = MUSICFM_MSD, name: str = "musicfm-msd"):
        super().__init__()
        self.cfg, self.name = cfg, name
        self.sample_rate, self.hidden_size = cfg.sample_rate, cfg.hidden_size
        self.frame_rate = cfg.sample_rate / cfg.hop_length / 4
        self.frontend = MelFrontEnd(cfg)
        self.subsample = ConvSubsampling(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.rotary = RotaryEmbedding(cfg.hidden_size // cfg.num_heads, cfg.rotary_base)
        self.layers = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.num_layers))
        self.final_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def reset_parameters(self, seed: int) -> None:
        with torch.random.fork_rng(devices=[]):  # built on the CPU: its generator only
            torch.default_generator.manual_seed(seed)
            init_linear_like_hf(self)

    def frontend_modules(self) -> list[nn.Module]:
        return [self.frontend, self.subsample]

    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.subsample(self.frontend(wave)))

    def layer_context(self, x: torch.Tensor) -> dict:
        return {"rotary": self.rotary(x.shape[1], device=x.device)}

    def finalize(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_norm(x)

    def truncate(self, num_layers: int) -> None:
        super().truncate(num_layers)
        if len(self.layers) < self.cfg.num_layers:
            self.final_norm = None  # follows layer 12 only; "layer N" for N < 12 is the raw layer output

    def n_frames(self, n_samples: int) -> int:
        t = n_samples // self.cfg.hop_length  # centred STFT gives +1 frame, the official code drops it
        for _ in range(2):
            t = (t - 1) // 2 + 1
        return t
