"""Beat tracking, the first frame-level task: per-frame beat activations at the backbone's frame rate,
madmom's DBN beat tracker on them, mir_eval's beat metrics per track.

- Label: the beat times of a track in seconds (a sorted list), as the datasets write them.
- Targets: one value per backbone frame (frame i covers time i / frame_rate): 1 on the frame
  nearest each beat, `widen_value` (0.5) on the `widen` (1) frames either side, 0 elsewhere: the
  widened targets of Böck et al. (ISMIR 2016, "Joint beat and downbeat tracking"), which tolerate the
  annotations' jitter. Frames with a negative target (padding) are left out of the loss.
- Loss: binary cross-entropy with logits per frame; output: sigmoid activations per frame.
- Post-processing: madmom's `DBNBeatTrackingProcessor` (Böck, Krebs & Widmer, ISMIR 2015; 55-215
  BPM, transition lambda 100, observation lambda 16, peak correction) on the track's activation
  curve. The DBN's tempo states are whole frame intervals, so at the 25 Hz of MusicFM they would be
  coarse (7-27 frames per beat); curves below `dbn_fps` (100, the rate madmom's own networks run
  at) are linearly interpolated to it first, which leaves the 75 Hz MERT frames as fine as madmom's.
- Metrics (per track, so `evaluate` bootstraps them): mir_eval.beat F-measure (+-70 ms), CMLt and
  AMLt (continuity, 17.5 % thresholds). mir_eval's convention of ignoring beats in the first 5 s is
  applied to tracks of at least 15 s (GTZAN, Ballroom: 30 s); shorter clips (the synth corpus'
  6 s) are scored whole, since the convention would leave them a second of beats.

Frame targets depend on where a training crop starts and how many frames the backbone returns, so
`encode` checks the label and returns the beat times; `frame_targets(label, n_frames, start)`
makes the targets of one crop.
"""
from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .base import Task
from musicpetl.errors import InputError

WIDEN = 1            # frames either side of a beat that get `WIDEN_VALUE`
WIDEN_VALUE = 0.5
DBN_FPS = 100.0      # activation curves slower than this are interpolated to it before the DBN
MIN_BPM, MAX_BPM = 55.0, 215.0   # madmom's defaults (DBNBeatTrackingProcessor)
ACT_EPS = 1e-6       # activations are clipped to [ACT_EPS, 1 - ACT_EPS] for the DBN's logarithms
SKIP_SECONDS = 5.0   # mir_eval.beat's convention: beats in the first 5 s are not scored ...
SKIP_MIN_TRACK = 15.0  # ... on tracks at least this long


def check_beats(label) -> np.ndarray:
    """A beat label -> float64 array of beat times; InputError unless 1-D, finite, >= 0, strictly increasing."""
    try:
        beats = np.asarray(label, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"beat label must be a list of beat times in seconds, got {str(label)[:80]!r}") from None
    if beats.ndim != 1:
        raise InputError(f"beat label must be a flat list of beat times in seconds, got shape {beats.shape}")
    if not np.all(np.isfinite(beats)) or (beats.size and beats.min() < 0):
        raise InputError(f"beat times must be finite and non-negative seconds, got {beats[:8].tolist()} ...")
    if np.any(np.diff(beats) <= 0):
        i = int(np.flatnonzero(np.diff(beats) <= 0)[0])
        raise InputError(f"beat times must strictly increase: {beats[i]:g} s is followed by {beats[i + 1]:g} s")
    return beats


def beat_targets(beats, n_frames: int, fps: float, start: float = 0.0, widen: int = WIDEN,
                 widen_value: float = WIDEN_VALUE) -> np.ndarray:
    """(n_frames,) float32 targets of the window [start, start + n_frames / fps) of a track: 1 at the
    frame nearest each beat (frame i at time start + i / fps), `widen_value` on `widen` frames
    either side (never lowering a 1), 0 elsewhere. Beats outside the window are ignored, except
    that a beat just outside still widens onto the window's edge frames."""
    if not fps > 0:
        raise InputError(f"frame rate must be positive, got {fps!r}")
    if n_frames < 0:
        raise InputError(f"n_frames must be >= 0, got {n_frames}")
    beats = check_beats(beats)
    out = np.zeros(int(n_frames), dtype=np.float32)
    idx = np.round((beats - float(start)) * fps).astype(np.int64)
    for k in range(1, int(widen) + 1):
        for side in (idx - k, idx + k):
            ok = side[(side >= 0) & (side < n_frames)]
            out[ok] = np.maximum(out[ok], widen_value)
    ok = idx[(idx >= 0) & (idx < n_frames)]
    out[ok] = 1.0
    return out


@lru_cache(maxsize=8)
def _dbn(fps: float, min_bpm: float, max_bpm: float):
    from madmom.features.beats import DBNBeatTrackingProcessor

    return DBNBeatTrackingProcessor(min_bpm=min_bpm, max_bpm=max_bpm, fps=fps, transition_lambda=100,
                                    observation_lambda=16, correct=True, threshold=0)


def upsample_activations(act: np.ndarray, fps: float, target_fps: float) -> np.ndarray:
    """Linear interpolation of a curve sampled at `fps` (frame i at i / fps) onto `target_fps`."""
    act = np.asarray(act, dtype=np.float64)
    if target_fps <= fps or act.size < 2:
        return act
    n = int(np.floor((act.size - 1) / fps * target_fps)) + 1
    return np.interp(np.arange(n) / target_fps, np.arange(act.size) / fps, act)


def track_beats(activations, fps: float, dbn_fps: float = DBN_FPS, min_bpm: float = MIN_BPM,
                max_bpm: float = MAX_BPM) -> np.ndarray:
    """Beat times (seconds) of one track from its per-frame beat activations (0..1) at `fps`:
    madmom's DBN beat tracker, on the curve interpolated to `dbn_fps` when it is slower."""
    act = np.asarray(activations, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(act)):
        raise InputError("beat activations hold non-finite values")
    rate = float(fps)
    if dbn_fps and rate < dbn_fps:
        act, rate = upsample_activations(act, rate, dbn_fps), float(dbn_fps)
    # the DBN needs a few beat periods of signal; anything shorter has no beat to track
    if act.size < int(np.ceil(2 * 60.0 / min_bpm * rate)):
        return np.zeros(0)
    # madmom's observation model takes log(a) and log(1 - a): exact 0s and 1s (a saturated sigmoid,
    # ideal targets) would make every path impossible
    act = np.clip(act, ACT_EPS, 1.0 - ACT_EPS).astype(np.float32)
    return np.asarray(_dbn(rate, float(min_bpm), float(max_bpm))(act), dtype=np.float64)


# Decoded curves, most recent last: one evaluation decodes the same test curves for its metrics,
# intervals, constant-prediction check and CSV (the DBN: ~36 ms per 30-s track).
_DECODED: OrderedDict[tuple, np.ndarray] = OrderedDict()
DECODED_MAX = 4096  # curves remembered (beat arrays: a few hundred floats each)


def decoded_beats(activations, fps: float, dbn_fps: float = DBN_FPS) -> np.ndarray:
    """`track_beats` remembered per curve (by its bytes, frame rate and DBN rate); read-only result.
    A bounded LRU dict of our own: functools.lru_cache would keep every curve alive as its key."""
    act = np.ascontiguousarray(activations, dtype=np.float64).reshape(-1)
    key = (hashlib.blake2b(act.tobytes(), digest_size=16).digest(), float(fps), float(dbn_fps))
    beats = _DECODED.get(key)
    if beats is None:
        beats = track_beats(act, fps, dbn_fps)
        beats.setflags(write=False)
        _DECODED[key] = beats
        if len(_DECODED) > DECODED_MAX:
            _DECODED.popitem(last=False)
    else:
        _DECODED.move_to_end(key)
    return beats


def beat_scores(reference, estimated, skip: float = 0.0) -> dict[str, float]:
    """mir_eval.beat F-measure, CMLt and AMLt of one track, ignoring beats before `skip` seconds."""
    import mir_eval

    ref = check_beats(reference)
    est = np.asarray(estimated, dtype=np.float64)
    if skip > 0:
        ref, est = mir_eval.beat.trim_beats(ref, skip), mir_eval.beat.trim_beats(est, skip)
    with warnings.catch_warnings():
        # mir_eval warns on an empty side (and scores 0): the score says it, per track
        warnings.filterwarnings("ignore", message=r".*beats are empty", category=UserWarning)
        f = mir_eval.beat.f_measure(ref, est)
        _cmlc, cmlt, _amlc, amlt = mir_eval.beat.continuity(ref, est)
    return {"f_measure": float(f), "cmlt": float(cmlt), "amlt": float(amlt)}


@dataclass
class BeatTask(Task):
    """Frame-level: one logit per backbone frame. `probs` for `decode`, `item_scores` and
    `metrics` is a sequence of per-track activation curves (1-D, at `frame_rate`), not a 2-D array."""
    name: str = "beat"
    primary_metric: str = "f_measure"
    classes: tuple[str, ...] = ("beat",)
    frame_rate: float = 0.0      # the backbone's hidden states per second (MERT 75, MusicFM 25)
    widen: int = WIDEN
    widen_value: float = WIDEN_VALUE
    dbn_fps: float = DBN_FPS
    frame_level: ClassVar[bool] = True

    def _fps(self) -> float:
        if not self.frame_rate or self.frame_rate <= 0:
            raise InputError("the beat task needs the backbone's frame rate: make_task('beat', frame_rate=...)")
        return float(self.frame_rate)

    def encode(self, label) -> np.ndarray:
        """The checked beat times (float32); a crop's frame targets come from `frame_targets`."""
        return check_beats(label).astype(np.float32)

    def frame_targets(self, label, n_frames: int, start: float = 0.0) -> np.ndarray:
        """(n_frames,) targets of the crop that starts `start` seconds into the track."""
        return beat_targets(label, n_frames, self._fps(), start, self.widen, self.widen_value)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-frame BCE with logits, (B, T) or (B, T, 1) against (B, T); frames with a negative
        target (padding of shorter crops) do not count."""
        if logits.dim() == 3 and logits.shape[-1] == 1:
            logits = logits.squeeze(-1)
        if logits.shape != target.shape:
            raise InputError(f"beat logits {tuple(logits.shape)} and targets {tuple(target.shape)} differ in shape")
        # the mean over counted frames as a weighted sum: no data-dependent shape or branch, so a GPU
        # step never waits for the device here (a boolean index or `if valid.any()` would)
        weight = (target >= 0).to(logits.dtype)
        per_frame = F.binary_cross_entropy_with_logits(logits, target.clamp(min=0).to(logits.dtype), reduction="none")
        return (per_frame * weight).sum() / weight.sum().clamp(min=1.0)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-frame beat activations, (B, T)."""
        if logits.dim() == 3 and logits.shape[-1] == 1:
            logits = logits.squeeze(-1)
        return logits.sigmoid()

    def decode(self, probs) -> list[np.ndarray]:
        """Per-track activation curves -> per-track beat times (DBN)."""
        fps = self._fps()
        return [decoded_beats(a, fps, self.dbn_fps) for a in _curves(probs)]

    def skip_seconds(self, n_frames: int) -> float:
        """Beats before this time are not scored: mir_eval's 5 s, on tracks of at least 15 s."""
        return SKIP_SECONDS if n_frames / self._fps() >= SKIP_MIN_TRACK else 0.0

    def item_scores(self, labels, probs) -> dict[str, np.ndarray]:
        curves = _curves(probs)
        if len(curves) != len(labels):
            raise InputError(f"{len(labels)} beat labels but {len(curves)} activation curves")
        scores = [beat_scores(ref, est, self.skip_seconds(len(act)))
                  for ref, act, est in zip(labels, curves, self.decode(curves))]
        return {m: np.asarray([s[m] for s in scores], dtype=float) for m in ("f_measure", "cmlt", "amlt")}


def _curves(probs) -> list[np.ndarray]:
    """A sequence of 1-D activation curves (a list, an object array, or a 2-D array of equal-length ones)."""
    if isinstance(probs, np.ndarray) and probs.dtype != object:
        probs = np.atleast_2d(probs)
    return [np.asarray(p, dtype=np.float64).reshape(-1) for p in probs]
