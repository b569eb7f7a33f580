"""Off-the-shelf estimators: madmom's pre-trained networks, evaluated with no training (`petl.method:
none`) on the same test split as every trained system, their outputs turned into the task's.

- key: `CNNKeyRecognitionProcessor` (Korzeniowski & Widmer, "Genre-agnostic key classification
  with convolutional neural networks", ISMIR 2018): its 24 probabilities, reordered from madmom's
  class order (A major, Bb major, ..., G# minor) to tasks/key.py's (C major, ..., B minor);
- tempo: `RNNBeatProcessor` beat activations (100 fps) and `TempoEstimationProcessor` (comb-filter
  histogram, 40-250 BPM, activation smoothing 0.14 s, histogram smoothing 9: madmom's `tempodetector`
  defaults; Böck, Krebs & Widmer, ISMIR 2015), whose strongest tempo becomes a 300-bin curve that
  tasks/tempo.py decodes back to that tempo exactly (`tempo_curve`);
- beat: the same `RNNBeatProcessor` activations at 100 fps, the per-track curves tasks/beat.py decodes
  with madmom's DBN at 100 fps: madmom's own beat tracker (`DBNBeatTrackingProcessor` defaults).

Every estimate is of the whole track (madmom's networks read whole files), resampled from the
store's rate to the 44.1 kHz madmom's processors expect. Content above the store's Nyquist
frequency (12 kHz at 24 kHz) is missing: the price of scoring every system on the same prepared
audio. madmom is imported only when an estimate is asked for.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from musicpetl.errors import InputError

from .scratch import BaselineModule

MADMOM_RATE = 44100
FPS = 100.0
TASKS = ("key", "tempo", "beat")
TEMPO_HALF_WIDTH = 5.0  # bins: the curve around madmom's tempo is a parabola this wide (see tempo_curve)


_PITCH = {"C": 0, "C#": 1, "Db": 1, "D": 2, "D#": 3, "Eb": 3, "E": 4, "F": 5, "F#": 6, "Gb": 6, "G": 7,
          "G#": 8, "Ab": 8, "A": 9, "A#": 10, "Bb": 10, "B": 11}


def _key_index(label: str) -> tuple[int, str]:
    """'Bb major' -> (10, 'major'): pitch class and mode of a key name, sharps or flats."""
    root, mode = label.split()
    return _PITCH[root], mode.lower()


def key_order(classes) -> np.ndarray:
    """order[i] = madmom's class index of the task's key class i (e.g. tasks.key.KEY_NAMES, 'C major',
    ..., 'B minor'); madmom's order is KEY_LABELS ('A major', 'Bb major', ..., 'G# minor'). Both
    sides are read by name, so no index arithmetic can be off."""
    from madmom.features.key import KEY_LABELS

    theirs = {_key_index(label): i for i, label in enumerate(KEY_LABELS)}
    try:
        order = [theirs[_key_index(c)] for c in classes]
    except (KeyError, ValueError):
        raise InputError(f"key classes {list(classes)[:3]}... are not 'pitch mode' names madmom's keys map onto") from None
    if sorted(order) != list(range(len(KEY_LABELS))):
        raise InputError(f"key classes {list(classes)} do not match madmom's 24 keys one to one")
    return np.asarray(order, dtype=np.int64)


def tempo_curve(bpm: float, n_bins: int) -> np.ndarray:
    """A 300-bin tempo output whose decoding (tasks.tempo.decode_tempo: 5-bin Hann smoothing, then the
    vertex of the parabola through the peak bin and its neighbours) is `bpm` itself: an inverted
    parabola centred on `bpm`, wide enough that smoothing and the fit see only parabola (a quadratic
    smoothed by a symmetric window keeps its vertex, and three points of it give the vertex exactly)."""
    x = np.arange(n_bins, dtype=np.float64)
    return np.clip(1.0 - ((x - float(bpm)) / TEMPO_HALF_WIDTH) ** 2, 0.0, 1.0).astype(np.float32)


@lru_cache(maxsize=1)
def _processors():
    from madmom.features.beats import RNNBeatProcessor
    from madmom.features.key import CNNKeyRecognitionProcessor
    from madmom.features.tempo import CombFilterTempoHistogramProcessor, TempoEstimationProcessor

    histogram = CombFilterTempoHistogramProcessor(min_bpm=40.0, max_bpm=250.0, fps=FPS)
    return {"key": CNNKeyRecognitionProcessor(), "beat": RNNBeatProcessor(),
            "tempo": TempoEstimationProcessor(method=None, histogram_processor=histogram, act_smooth=0.14,
                                              hist_smooth=9, fps=FPS)}


def to_madmom_signal(wave, sample_rate: int):
    """A mono float32 madmom Signal at 44.1 kHz."""
    import torchaudio
    from madmom.audio.signal import Signal

    x = torch.as_tensor(np.asarray(wave, dtype=np.float32)).reshape(-1)
    if sample_rate != MADMOM_RATE:
        x = torchaudio.functional.resample(x, int(sample_rate), MADMOM_RATE)
    return Signal(x.numpy().astype(np.float32), sample_rate=MADMOM_RATE)


def beat_activations(wave, sample_rate: int) -> np.ndarray:
    """RNNBeatProcessor's beat activations of the track, one per 10 ms frame (100 fps)."""
    return np.asarray(_processors()["beat"](to_madmom_signal(wave, sample_rate)), dtype=np.float32).reshape(-1)


def madmom_tempi(wave, sample_rate: int) -> np.ndarray:
    """(n, 2) tempi (BPM) and strengths, strongest first, as madmom's tempodetector finds them."""
    return np.asarray(_processors()["tempo"](beat_activations(wave, sample_rate)), dtype=np.float64)


def estimate(task_name: str, wave, sample_rate: int, classes=()):
    """The task's output for one whole track, `classes` the task's: key (24,) probabilities in the
    task's class order; tempo one value per BPM class (the tempo task's 300 one-BPM bins), a curve
    that decodes to madmom's strongest tempo; beat the (T,) activation curve at 100 fps."""
    if task_name == "key":
        probs = np.asarray(_processors()["key"](to_madmom_signal(wave, sample_rate)), dtype=np.float32).reshape(-1)
        return probs[key_order(classes)]
    if task_name == "tempo":
        tempi = madmom_tempi(wave, sample_rate)
        bpm = float(tempi[0, 0]) if len(tempi) else 0.0  # no tempo found: 0 BPM, scored wrong
        return tempo_curve(bpm, len(classes))
    if task_name == "beat":
        return beat_activations(wave, sample_rate)
    raise InputError(f"madmom has no estimator for task {task_name!r}; it estimates: {', '.join(TASKS)}")


class MadmomEstimator(BaselineModule):
    """The `madmom` entry of the backbone registry: nothing to train, `estimate` per whole track.

    It has no parameters and no layers; `PetlModel` still wraps it (so the run file, the evaluate
    stage and `predict` treat it as any run), and `evaluate.predict_tracks` asks it for each test
    track's output instead of running the model on segments."""

    kind = "estimator"
    tasks = TASKS
    name = "madmom"
    hidden_size = 1  # the head PetlModel builds is never called
    frame_rate = FPS
    default_segment_seconds = 30.0  # not used: estimates read whole tracks

    def estimate(self, task_name: str, wave, classes=()):
        return estimate(task_name, wave, self.sample_rate, classes)

    def forward(self, wave: torch.Tensor, num_layers: int | None = None) -> list[torch.Tensor]:
        raise InputError("madmom is an off-the-shelf estimator: it gives task outputs of whole tracks "
                         "(`estimate`), not hidden states")
