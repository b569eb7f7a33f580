"""What the trained-from-scratch baselines share: a task-specific CNN behind the backbone interface.

A baseline network (shortchunk.py, dirfilter.py) is registered like a backbone (spec `kind="scratch"`)
so that it goes through the same stages, the same training loop (`petl.method: finetune`, every
weight trains from a seeded random init, no checkpoint) and the same report as the foundation
models. `backbone(wave)` resamples to the network's own rate, computes its own input
representation (no parameters), runs its conv blocks and returns a one-element list holding a
(B, T', d) map of the last block; `PetlModel`'s time-mean and `Head` (Linear-Dropout-ReLU-Linear)
finish it, as each module's docstring explains against its paper.

These networks are not transformers: they do not fit the PETL layer Protocol (backbones/base.py),
so `checks.py` allows them `finetune` only; `backbone.num_layers` is not read (the whole network
always runs: its blocks differ in width and time resolution, so only the last one feeds the head),
and there are no frozen features to cache (stages/cache_features.py writes a marker file).
"""
from __future__ import annotations

import torch
import torchaudio
from torch import nn


class BaselineModule(nn.Module):
    """What every baseline (scratch CNN or off-the-shelf estimator) answers in place of a foundation
    model's PETL surface: no frozen front end, no layers to drop, no re-init, segments in seconds."""

    sample_rate: int = 24000  # what it reads (the prepared store's rate)
    default_segment_seconds: float

    def __init__(self, sample_rate: int = 24000):
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.input_prompt = None  # no PETL slot is ever filled: checks allow `finetune` / `none` only
        self.layers = nn.ModuleList()

    def frontend_modules(self) -> list[nn.Module]:
        return []  # no frozen front end: a scratch net's input representation has no parameters

    def frontend_trainable(self) -> bool:
        return False

    def truncate(self, num_layers: int) -> None:
        """Nothing to drop: a baseline always runs whole (`backbone.num_layers` is not read)."""

    def reset_parameters(self, seed: int = 0) -> None:
        """The construction-time init (seeded by `build_backbone`) is the paper's; nothing to redo."""

    def segment_length(self, seconds: float | None = None) -> int:
        return int(round((seconds or self.default_segment_seconds) * self.sample_rate))


class ScratchNet(BaselineModule):
    """Base of the baseline CNNs: resampling, the no-grad input representation, then `blocks`
    (`self.layers`: the conv blocks, which activation checkpointing wraps each)."""

    kind = "scratch"
    name: str = "scratch"
    net_rate: int = 16000  # what it runs at
    hidden_size: int
    frame_rate: float

    # -- to implement ---------------------------------------------------------------------------
    def representation(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, N) at `net_rate` -> (B, 1, F, T) input of the first block (no parameters)."""
        raise NotImplementedError

    def readout(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, F', T') output of the last block -> (B, T'', d) hidden state the head time-averages."""
        raise NotImplementedError

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Trainable input normalisation before the blocks (default: none)."""
        return x

    # -- shared ---------------------------------------------------------------------------------
    def resample(self, wave: torch.Tensor) -> torch.Tensor:
        if self.sample_rate == self.net_rate:
            return wave
        return torchaudio.functional.resample(wave, self.sample_rate, self.net_rate)

    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        # resampling and the spectrogram have nothing to train, and are computed in fp32 under a bf16
        # autocast too (as validation and evaluation, which run without autocast, compute them)
        with torch.no_grad(), torch.autocast(device_type=wave.device.type, enabled=False):
            return self.representation(self.resample(wave.float()))

    def forward(self, wave: torch.Tensor, num_layers: int | None = None) -> list[torch.Tensor]:
        """[hidden state of the last block, (B, T'', d)]; `num_layers` is not read (the whole net runs)."""
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        x = self.stem(self.embed(wave))
        for block in self.layers:
            x = block(x)
        return [self.readout(x)]

    def n_frames(self, n_samples: int) -> int:
        """Hidden states `forward` returns for `n_samples` of audio."""
        was = self.training
        self.eval()  # no BatchNorm statistics updated by this probe
        try:
            with torch.no_grad():
                device = next(self.parameters()).device  # the probe runs where the model is (a GPU too)
                return int(self(torch.zeros(1, int(n_samples), device=device))[0].shape[1])
        finally:
            self.train(was)


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over each item's whole spectrogram (a constant input stays 0)."""
    dims = tuple(range(1, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True, unbiased=False)
    return (x - mean) / torch.where(std > 0, std, torch.ones_like(std))
