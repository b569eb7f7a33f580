"""The short-chunk CNN of Won, Ferraro, Bogdanov & Serra, "Evaluation of CNN-based automatic music
tagging models" (SMC 2020; code: github.com/minzwon/sota-music-tagging-models, training/model.py
`ShortChunkCNN`), the paper's deep-learning baseline for auto-tagging (Table 2, ref. [23]) and, as
in Won et al.'s tutorial (ref. [34]), for genre: trained from scratch.

As the authors' code:
- input: 16 kHz audio (resampled here from the store's rate), torchaudio `MelSpectrogram` (n_fft 512,
  hop 256, 0-8000 Hz, 128 bands, power 2, HTK mel scale), `AmplitudeToDB`, `BatchNorm2d(1)`;
- 7 blocks of Conv2d 3x3 (padding 1) - BatchNorm2d - ReLU - MaxPool2d(2), channels 128, 128, 256,
  256, 256, 256, 512 (128 mel bands -> 1 after seven poolings; see ConvBlock for inputs under 2.05 s);
- global max-pool over time of the last block (here: the hidden state `forward` returns is that
  (B, 1, 512) maximum, so `PetlModel`'s time-mean is the identity on it);
- chunks of 59,049 samples (3.69 s) in training and inference, track outputs averaged over chunks
  (`default_segment_seconds`; set `train.crop_seconds` to 3.69 to train on the same chunks).

Difference: the authors' dense part is Linear(512, 512) - BatchNorm1d - ReLU - Dropout(0.5) -
Linear(512, n) - sigmoid; ours is the pipeline's shared head, Linear(512, 512) - Dropout(0.5) -
ReLU - Linear(512, n) with the task's output function (sigmoid for tagging, softmax for genre).
Dropout before or after a ReLU is the same map; the BatchNorm1d between the two linear maps is
the one thing left out, so that every system in Table 2 has the paper's head.
"""
from __future__ import annotations

import warnings

import torch
import torchaudio
from torch import nn

from .scratch import ScratchNet

CHANNELS = (128, 128, 256, 256, 256, 256, 512)
CHUNK_SAMPLES = 59049  # at 16 kHz: the authors' input length


class ConvBlock(nn.Sequential):
    """Conv2d 3x3 - BatchNorm2d - ReLU - MaxPool2d(2) (the authors' `Conv_2d`). An axis already down
    to one step is not pooled (inputs shorter than 2.05 s, which the authors' net refuses, still run;
    from 2.05 s on this is their net exactly)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        pool = tuple(2 if n >= 2 else 1 for n in x.shape[-2:])
        return nn.functional.max_pool2d(x, pool) if pool != (1, 1) else x


class ShortChunkCNN(ScratchNet):
    net_rate = 16000
    hidden_size = CHANNELS[-1]
    default_segment_seconds = CHUNK_SAMPLES / 16000

    def __init__(self, sample_rate: int = 24000, channels: tuple[int, ...] = CHANNELS, n_mels: int = 128):
        super().__init__(sample_rate)
        self.hidden_size = channels[-1]
        with warnings.catch_warnings():  # 128 HTK bands on 257 FFT bins leave the lowest empty: as the authors' code
            warnings.filterwarnings("ignore", message="At least one mel filterbank has all zero values")
            self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=self.net_rate, n_fft=512, f_min=0.0,
                                                            f_max=8000.0, n_mels=n_mels)
        self.to_db = torchaudio.transforms.AmplitudeToDB()
        self.spec_bn = nn.BatchNorm2d(1)
        self.layers = nn.ModuleList(ConvBlock(a, b) for a, b in zip((1,) + tuple(channels[:-1]), channels))

    def representation(self, wave: torch.Tensor) -> torch.Tensor:
        return self.to_db(self.mel(wave)).unsqueeze(1)  # (B, 1, 128, T)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.spec_bn(x)

    def readout(self, x: torch.Tensor) -> torch.Tensor:
        x = x.amax(dim=2)  # (B, C, T'): the frequency axis is 1 after seven poolings of 128 bands
        return x.amax(dim=2, keepdim=True).transpose(1, 2)  # global max over time -> (B, 1, C)

