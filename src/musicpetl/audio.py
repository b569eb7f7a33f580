"""Audio I/O: decode, mono, resample (torchaudio), and fixed-segment cutting."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF

from musicpetl.errors import MusicPetlError


class AudioError(MusicPetlError, RuntimeError):
    """A file that cannot be used, with the reason (the prepare stage lists these)."""


def decode(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode any of wav/flac/au/mp3 to float32 mono; soundfile first (fast), librosa for the rest."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"missing file: {path}")
    try:
        import soundfile as sf

        wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
        wave = wave.mean(axis=1)
    except Exception as sf_err:  # soundfile cannot read it (e.g. some mp3/au): try librosa/audioread
        try:
            import warnings

            import librosa

            with warnings.catch_warnings():  # its "trying audioread" notices are expected here
                warnings.simplefilter("ignore")
                wave, sr = librosa.load(str(path), sr=None, mono=True)
        except Exception as err:
            raise AudioError(f"cannot decode {path}: {err} (soundfile: {sf_err})") from err
    return np.ascontiguousarray(wave, dtype=np.float32), int(sr)


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if orig_sr == target_sr:
        return wave
    out = AF.resample(torch.from_numpy(wave), orig_sr, target_sr)
    return out.numpy()


def load(path: str | Path, target_sr: int) -> np.ndarray:
    wave, sr = decode(path)
    return resample(wave, sr, target_sr)


def segment_starts(n_samples: int, seg_len: int) -> list[int]:
    """Start offsets of fixed segments covering the whole signal without padding.

    Full segments back to back; if a remainder is left, one last segment aligned to the end
    (overlapping its neighbour) so that no audio is ignored.
    """
    if seg_len <= 0 or n_samples < seg_len:
        return [0]
    starts = list(range(0, n_samples - seg_len + 1, seg_len))
    if starts[-1] + seg_len < n_samples:
        starts.append(n_samples - seg_len)
    return starts
