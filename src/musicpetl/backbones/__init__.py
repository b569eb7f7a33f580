"""Backbone registry: one `BackboneSpec` per name holds everything the rest of the code may know.

`load_backbone(name, checkpoint=None, num_layers=6)` builds the architecture and, for the
pre-trained names, loads the official weights (a local path, or the official files fetched with
huggingface_hub) through the spec's checkpoint format; the tiny names are the same architectures
at toy size with a seeded random init, for tests and the offline default pipeline. Nothing
outside `backbones/` looks at a backbone's name: callers read the spec (sample rate, depth,
options) or the built model's PETL surface (base.py).

Adding a backbone: an architecture module (or configs of an existing one), a mapping module for
its official files (`<family>_ckpt.py`: a `KeyMap` and a format object), a spec here, and an
oracle test (README "Adding a backbone").

Baselines are registered here too, told apart by the spec's `kind` (README "Baselines"):
"scratch" (a task-specific CNN trained from scratch with `petl.method: finetune`: shortchunk.py,
dirfilter.py) and "estimator" (an off-the-shelf estimator evaluated with `petl.method: none`:
estimators.py). Neither has the PETL layer surface; `tasks` says what each can do and `label` how
the report names it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch

from musicpetl.errors import InputError

from .base import Backbone
from .checkpoints import CheckpointFormat
from .dirfilter import DirectionalCNN
from .estimators import MadmomEstimator
from .mert import MERT_330M_TINY, MERT_TINY, MERT_V1_330M, MERT_V1_95M, Mert
from .mert_ckpt import MERT_V1_330M_FILES, MERT_V1_95M_FILES
from .musicfm import MUSICFM_MSD, MUSICFM_TINY, MusicFM
from .musicfm_ckpt import MUSICFM_MSD_FILES
from .muq import MUQ_LARGE, MUQ_TINY, MuQ
from .muq_ckpt import MUQ_LARGE_MSD_ITER_FILES
from .shortchunk import CHUNK_SAMPLES, ShortChunkCNN

MERT_FRONT_END = ("7 strided 1-D convs on the (normalised) waveform, feature projection and convolutional "
                  "positional embedding")
MEL_FRONT_END = ("log-mel spectrogram (n_fft 2048, hop 240, 128 bands) normalised by the release's statistics, "
                 "then 2-D conv subsampling to 25 Hz")


@dataclass(frozen=True)
class BackboneSpec:
    build: Callable[..., Backbone]  # keyword overrides of the architecture's config -> model
    pretrained: bool  # True: needs official weights; False: random init from a seed
    description: str
    sample_rate: int = 24000  # Hz of the audio it reads
    depth: int = 12  # transformer layers it has (backbone.num_layers may use fewer)
    options: tuple[str, ...] = ()  # `backbone.<option>` params this architecture takes
    hidden_size: int = 768
    frame_rate: float = 75.0  # hidden states per second of audio
    default_segment_seconds: float = 5.0  # whole-track inference segment (its pre-training crop)
    frontend: str = ""  # what its frozen front end is (Backbone.frontend_modules)
    checkpoint: CheckpointFormat | None = None  # official file layout and where to get it (pretrained only)
    kind: str = "foundation"  # foundation (PETL surface) | scratch (baseline trained from scratch) | estimator
    tasks: tuple[str, ...] = ()  # the tasks it can do; empty: every task
    label: str = ""  # how the report's Baselines group names it (baselines only)

    @property
    def baseline(self) -> bool:
        """A reference system (scratch or estimator), not a foundation model: no PETL surface."""
        return self.kind != "foundation"

    def option_values(self, backbone_params) -> dict:
        """The backbone params this architecture takes, as build() keyword arguments."""
        return {name: getattr(backbone_params, name) for name in self.options}

    @property
    def licence(self) -> str | None:
        return self.checkpoint.hub.licence if self.checkpoint else None


def _mert(name, cfg, pretrained, description, segment, files=None) -> BackboneSpec:
    return BackboneSpec(lambda **kw: Mert(replace(cfg, **kw), name), pretrained, description, cfg.sample_rate,
                        cfg.num_layers, ("normalize_input",), cfg.hidden_size,
                        cfg.sample_rate / math.prod(cfg.conv_stride), segment, MERT_FRONT_END, files)


def _mel(name, cls, cfg, pretrained, description, segment, files=None) -> BackboneSpec:
    return BackboneSpec(lambda **kw: cls(replace(cfg, **kw), name), pretrained, description, cfg.sample_rate,
                        cfg.num_layers, (), cfg.hidden_size, cfg.sample_rate / cfg.hop_length / 4, segment,
                        MEL_FRONT_END, files)


BACKBONES: dict[str, BackboneSpec] = {
    # segment: the authors' MERT training crop, 5 s (120,000 samples)
    "mert-v1-95m": _mert("mert-v1-95m", MERT_V1_95M, True, "MERT-v1-95M (m-a-p/MERT-v1-95M), 12 x 768 post-LN, 75 Hz",
                         5.0, MERT_V1_95M_FILES),
    "mert-v1-330m": _mert("mert-v1-330m", MERT_V1_330M, True,
                          "MERT-v1-330M (m-a-p/MERT-v1-330M), 24 x 1024 pre-LN, 75 Hz", 5.0, MERT_V1_330M_FILES),
    # segment: MusicFM and MuQ were pre-trained on 30 s crops
    "musicfm-msd": _mel("musicfm-msd", MusicFM, MUSICFM_MSD, True,
                        "MusicFM 25 Hz pre-trained on MSD (minzwon/MusicFM), 12 x 1024 conformer", 30.0,
                        MUSICFM_MSD_FILES),
    "muq-large-msd-iter": _mel("muq-large-msd-iter", MuQ, MUQ_LARGE, True,
                               "MuQ pre-trained on MSD (OpenMuQ/MuQ-large-msd-iter), 12 x 1024 conformer, 25 Hz",
                               30.0, MUQ_LARGE_MSD_ITER_FILES),
    "mert-tiny": _mert("mert-tiny", MERT_TINY, False, "MERT architecture at toy size (6 x 64), random init", 5.0),
    "mert-330m-tiny": _mert("mert-330m-tiny", MERT_330M_TINY, False,
                            "MERT-v1-330M's pre-LN architecture at toy size (6 x 64), random init", 5.0),
    "musicfm-tiny": _mel("musicfm-tiny", MusicFM, MUSICFM_TINY, False,
                         "MusicFM architecture at toy size (6 x 64), random init", 30.0),
    "muq-tiny": _mel("muq-tiny", MuQ, MUQ_TINY, False, "MuQ architecture at toy size (6 x 64), random init", 30.0),
    # baselines (README "Baselines"): one hidden state of the whole network (depth 1); frame_rate: its states per second
    "shortchunk-cnn": BackboneSpec(
        ShortChunkCNN, False, "short-chunk CNN of Won et al. (SMC 2020), trained from scratch", 24000, 1,
        hidden_size=512, frame_rate=16000 / CHUNK_SAMPLES, default_segment_seconds=CHUNK_SAMPLES / 16000,
        frontend="16 kHz log-mel (n_fft 512, hop 256, 128 bands), no parameters", kind="scratch",
        tasks=("tagging", "genre"), label="Short-chunk CNN"),
    "dirfilter-key": BackboneSpec(
        lambda **kw: DirectionalCNN("key", **kw), False,
        "directional-filter CNN for key of Schreiber & Mueller (SMC 2019), trained from scratch", 24000, 1,
        hidden_size=128, frame_rate=22050 / 4096 / 32, default_segment_seconds=60 * 4096 / 22050,
        frontend="22.05 kHz constant-Q magnitudes (hop 4096, 168 bins from E1, 24 per octave), standardised",
        kind="scratch", tasks=("key",), label="Directional CNN"),
    "dirfilter-tempo": BackboneSpec(
        lambda **kw: DirectionalCNN("tempo", **kw), False,
        "directional-filter CNN for tempo of Schreiber & Mueller (SMC 2019), trained from scratch", 24000, 1,
        hidden_size=128, frame_rate=11025 / 512 / 64, default_segment_seconds=256 * 512 / 11025,
        frontend="11.025 kHz mel magnitudes (1024 / 512, 40 bands, 20-5000 Hz), standardised", kind="scratch",
        tasks=("tempo",), label="Directional CNN"),
    "madmom": BackboneSpec(
        MadmomEstimator, False, "madmom's pre-trained key CNN and beat RNN (+ tempo histogram), no training",
        24000, 1, hidden_size=1, frame_rate=100.0, default_segment_seconds=30.0,
        frontend="madmom's own (whole tracks resampled to 44.1 kHz)", kind="estimator",
        tasks=("key", "tempo", "beat"), label="madmom"),
}


def check_backbone_name(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise InputError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def build_backbone(name: str, num_layers: int | None = 6, seed: int = 0, **cfg_overrides) -> Backbone:
    """The architecture with a seeded random init and only the first `num_layers` layers kept."""
    spec = check_backbone_name(name)
    # construction-time defaults (e.g. a weight-normed conv's bias) seeded too; models are built on the
    # CPU, so only the CPU generator is forked and seeded (forking every GPU's would start CUDA on each)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        model = spec.build(**cfg_overrides)
    model.reset_parameters(seed)
    model.name, model.frame_rate = name, spec.frame_rate
    model.default_segment_seconds = spec.default_segment_seconds
    if num_layers is not None:
        model.truncate(num_layers)
    return model


def load_backbone(name: str, checkpoint: str | None = None, num_layers: int | None = 6, seed: int = 0,
                  **cfg_overrides) -> Backbone:
    """Build `name` and, for the pre-trained ones, load its official weights."""
    spec = check_backbone_name(name)
    model = build_backbone(name, num_layers=num_layers, seed=seed, **cfg_overrides)
    if spec.pretrained:
        from .checkpoints import load_pretrained

        load_pretrained(model, spec.checkpoint, checkpoint or None)
    elif checkpoint:
        raise InputError(f"{name} is randomly initialised from a seed; it takes no checkpoint (got {checkpoint!r})")
    return model


def backbone_options(name: str, backbone_params) -> dict:
    """The `backbone.<option>` values the named architecture takes (e.g. MERT's input normalisation)."""
    return check_backbone_name(name).option_values(backbone_params)


def load_from_params(backbone_params, seed: int) -> Backbone:
    """The backbone that params.yaml's `backbone` group describes."""
    b = backbone_params
    return load_backbone(b.name, b.checkpoint or None, b.num_layers, seed=seed, **backbone_options(b.name, b))
