"""The directional-filter CNNs of Schreiber & Mueller, "Musical tempo and key estimation using
convolutional neural networks with directional filters" (SMC 2019; code: github.com/hendriks73/
directional_cnns, network/vgg.py `create_vgg_like_model`, training.py, feature_extraction.py): the
paper's deep-learning baselines for key and tempo (Table 2, ref. [35], "re-implementation with our
dataset and data split"), trained from scratch. The deep variants ("DeepTemp" / "DeepSpec"):

- tempo (`dirfilter-tempo`): 11,025 Hz audio, mel spectrogram of magnitudes (window 1024, hop 512,
  40 bands, 20-5000 Hz; librosa's Slaney mel as their feature extraction), standardised per input
  (zero mean, unit variance), inputs of 256 frames (11.9 s). Filters are temporal, 1 x 5 then 1 x 3;
- key (`dirfilter-key`): 22,050 Hz audio, constant-Q magnitudes (hop 4096, 2 bins per semitone,
  168 bins from E1 = their 8 octaves from C1 without the 8 lowest and 16 highest bins they keep for
  pitch-shift augmentation; our pitch shifting works on the audio), standardised per input, inputs
  of 60 frames (11.1 s). Filters are in frequency, 5 x 1 then 3 x 1;
- six blocks of [Conv (ReLU) - BatchNorm] x 2 - MaxPool (2, 2) - Dropout(0.3), with k, k, 2k, 2k,
  4k, 4k, 4k, 4k, 8k, 8k, 8k, 8k filters; a pooling direction is skipped once 2^block exceeds the
  nominal input size in it (their `possible_pool`; here also when the actual size is 1, so shorter
  inputs than theirs still run). k = 16, as their published DeepTemp / DeepSpec default models.
  Keras' init (Glorot-uniform kernels, zero biases) and BatchNorm (eps 1e-3, momentum 0.99).

Difference: their output is a 1 x 1 conv to the classes with ReLU, a global average and a softmax
over 256 BPM classes (tempo) or 24 keys; ours is the pipeline's shared head on the global average
of the last block (the time-mean of `PetlModel` over the frequency-averaged map `forward` returns):
Linear(8k, 8k) - Dropout(0.5) - ReLU - Linear(8k, n) with the task's outputs (24 keys, softmax; the
tempo task's 300 one-BPM bins with soft targets). Train on their input length with
`train.crop_seconds` 11.9 (tempo) or 11.1 (key); `default_segment_seconds` is that length.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torchaudio
from torch import nn

from .scratch import ScratchNet, standardize

K = 16
DROPOUT = 0.3
TEMPO = {"net_rate": 11025, "frames": 256, "hop": 512, "bins": 40, "filters": ((1, 5), (1, 3))}
KEY = {"net_rate": 22050, "frames": 60, "hop": 4096, "bins": 168, "filters": ((5, 1), (3, 1))}
KEY_FMIN = 32.703195662574764 * 2 ** (8 / 24)  # C1 raised by the 8 bins the authors cut off: E1
BINS_PER_OCTAVE = 24


def _same_conv(c_in: int, c_out: int, shape: tuple[int, int]) -> nn.Conv2d:
    # Keras padding='same' for odd kernels
    return nn.Conv2d(c_in, c_out, shape, padding=(shape[0] // 2, shape[1] // 2))


class _ConvBN(nn.Sequential):
    """Keras Conv2D(activation='relu') then BatchNormalization, in that order."""

    def __init__(self, c_in: int, c_out: int, shape: tuple[int, int]):
        super().__init__(_same_conv(c_in, c_out, shape), nn.ReLU(), nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01))


class Block(nn.Module):
    """Two directional conv layers, max pooling (per direction, as `possible_pool`), dropout."""

    def __init__(self, c_in: int, c_out: int, filters, pool: tuple[int, int], dropout: float):
        super().__init__()
        self.convs = nn.Sequential(_ConvBN(c_in, c_out, filters[0]), _ConvBN(c_out, c_out, filters[1]))
        self.pool = pool
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)
        pool = tuple(p if size >= p else 1 for p, size in zip(self.pool, x.shape[-2:]))
        if pool != (1, 1):
            x = nn.functional.max_pool2d(x, pool)
        return self.dropout(x)


class DirectionalCNN(ScratchNet):
    """DeepTemp / DeepSpec: six directional blocks on a standardised mel / constant-Q spectrogram."""

    def __init__(self, task: str, sample_rate: int = 24000, k: int = K, dropout: float = DROPOUT):
        super().__init__(sample_rate)
        cfg = {"tempo": TEMPO, "key": KEY}[task]
        self.task, self.net_rate, self.hop = task, cfg["net_rate"], cfg["hop"]
        self.hidden_size = 8 * k
        self.default_segment_seconds = cfg["frames"] * cfg["hop"] / cfg["net_rate"]
        if task == "tempo":
            self.spec = torchaudio.transforms.MelSpectrogram(
                sample_rate=self.net_rate, n_fft=1024, hop_length=512, f_min=20.0, f_max=5000.0, n_mels=40,
                power=1.0, norm="slaney", mel_scale="slaney", pad_mode="constant")
        else:
            self.spec = ConstantQ(self.net_rate, KEY_FMIN, cfg["bins"], BINS_PER_OCTAVE, cfg["hop"])
        widths = (k, 2 * k, 4 * k, 4 * k, 8 * k, 8 * k)
        nominal = (cfg["bins"], cfg["frames"])
        blocks = []
        for i, (c_in, c_out) in enumerate(zip((1,) + widths[:-1], widths), start=1):
            pool = tuple(1 if 2 ** i > n else 2 for n in nominal)
            blocks.append(Block(c_in, c_out, cfg["filters"], pool, dropout))
        self.layers = nn.ModuleList(blocks)
        self._glorot()

    def _glorot(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def representation(self, wave: torch.Tensor) -> torch.Tensor:
        return standardize(self.spec(wave)).unsqueeze(1)  # (B, 1, bins, T)

    def readout(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=2).transpose(1, 2)  # frequency-averaged map (B, T', 8k): its time-mean is the GAP


class ConstantQ(nn.Module):
    """|CQT| as librosa's single-resolution algorithm (Brown & Puckette's spectral kernel): Hann-windowed
    complex filters of Q = 1 / (2^(1/B) - 1) (librosa.filters.wavelet, L1-normalised, scaled to the
    FFT length), applied to a rectangular-window STFT of the padded-to-power-of-2 filter length, then
    divided by sqrt(filter length) as librosa.cqt's `scale=True`. The kernel is a non-persistent
    buffer: built from the settings, never stored in a run file."""

    def __init__(self, sr: int, fmin: float, n_bins: int, bins_per_octave: int, hop: int):
        super().__init__()
        import librosa

        freqs = fmin * 2.0 ** (np.arange(n_bins) / bins_per_octave)
        basis, lengths = librosa.filters.wavelet(freqs=freqs, sr=sr, filter_scale=1, norm=1, pad_fft=True,
                                                 window="hann")
        n_fft = max(basis.shape[1], 2 ** (1 + math.ceil(math.log2(hop))))
        basis = basis * (lengths[:, None] / n_fft)
        fft_basis = np.fft.fft(basis, n=n_fft, axis=1)[:, : n_fft // 2 + 1]
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("kernel", torch.from_numpy(fft_basis.astype(np.complex64)), persistent=False)
        self.register_buffer("scale", torch.from_numpy((1.0 / np.sqrt(lengths)).astype(np.float32))[:, None],
                             persistent=False)
        self.register_buffer("window", torch.ones(n_fft), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, n_bins, T) magnitudes, frame t centred on sample t * hop."""
        stft = torch.stft(wave, self.n_fft, self.hop, window=self.window, center=True, pad_mode="constant",
                          return_complex=True)
        return (self.kernel @ stft).abs() * self.scale
