"""MuQ (Zhu et al. 2025, OpenMuQ/MuQ-large-msd-iter): the encoder downstream tasks use, in plain PyTorch.

MuQ's pre-training differs from MusicFM's (Mel-RVQ targets instead of BEST-RQ random projections),
its encoder does not: the `muq` package's `MuQModel.get_predictions` is the MusicFM pipeline step
for step: torchaudio MelSpectrogram(n_fft 2048, hop 240, 128 mels) -> AmplitudeToDB -> last frame
dropped -> (x - mean) / std with the release's `stat` -> `Conv2dSubsampling` (two residual 2-D
conv blocks, strides (2, 2) at label_rate 25) -> transformers' `Wav2Vec2ConformerEncoder` with the
rotary config in `w2v2_config`; `hidden_states[N]` is layer N's output, the encoder's closing
LayerNorm applied after the last layer only. So our MuQ is our MusicFM module with MuQ's sizes
(tested against the `muq` package's model at full size, tests/test_backbones.py); only the
checkpoint format differs (muq_ckpt.py: config.json + model.safetensors from PyTorchModelHubMixin,
mel statistics inside config.json).
"""
from __future__ import annotations

from dataclasses import replace

from .musicfm import MUSICFM_MSD, MUSICFM_TINY, MusicFM, MusicFMConfig

# MuQConfig defaults + the rope-large w2v2_config of the release: 12 x 1024, 16 heads, FFN 4096,
# depthwise kernel 31, 512-channel conv front end; MSD mel statistics (the recipe's `Stat` defaults,
# the same numbers as MusicFM's msd_stats.json; loading takes the release's own `stat`)
MUQ_LARGE = replace(MUSICFM_MSD)
MUQ_TINY = replace(MUSICFM_TINY, conv_dim=16)


class MuQ(MusicFM):
    """MusicFM's architecture (see the module docstring) under MuQ's name and checkpoint format."""

    def __init__(self, cfg: MusicFMConfig = MUQ_LARGE, name: str = "muq-large-msd-iter"):
        super().__init__(cfg, name)
