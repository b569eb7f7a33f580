"""Training-set augmentation: pitch shift for key, time stretch for tempo (Ding & Lerch 2024).

Key: shift by n semitones, the label moves with the tonic and keeps its mode
(`(pc + n) % 12 + 12 * mode`). Tempo: stretch by rate r (r > 1 = faster), the BPM label is
multiplied by r. Only rows of the training split are augmented (the paper's setting; the reference
code also augmented validation items); other tasks pass through unchanged.

Implementation: librosa (phase vocoder + soxr resampling), chosen by bench/augment_compare.py, see
BENCHMARKS.md "Augmentation": torchaudio's phase vocoder gave madmom's key and tempo estimators the
same agreement at the same speed, and its pitch_shift is up to ~1000x slower for some shifts at
24 kHz (its resampling kernel grows with sr / gcd of the two integer rates).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from musicpetl.audio import AudioError, decode
from musicpetl.errors import InputError

TRAIN_SPLIT = "train"
# Written clips are scaled down to this peak if they would exceed it: a phase vocoder can raise
# peaks above the source's, and PCM_16 would clip them.
PEAK_LIMIT = 0.99


def shift_key_label(label: int, n: int) -> int:
    """Key label (0-23: C-based pitch class + 12 if minor) after shifting the audio by n semitones."""
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < 24:
        raise InputError(f"key label must be an integer 0-23 (pitch class + 12 if minor), got {label!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise InputError(f"pitch shift must be a whole number of semitones, got {n!r}")
    pc, mode = int(label) % 12, int(label) // 12
    return (pc + int(n)) % 12 + 12 * mode


def stretch_tempo_label(bpm: float, rate: float) -> float:
    """BPM after time-stretching by `rate` (> 1 plays faster)."""
    _check_rate(rate)
    return float(bpm) * float(rate)


def _check_rate(rate: float) -> None:
    if not np.isfinite(rate) or rate <= 0:
        raise InputError(f"time-stretch rate must be a positive number (> 1 = faster), got {rate!r}")


def pitch_shift(wave: np.ndarray, sr: int, semitones: int) -> np.ndarray:
    """Shift pitch by a whole number of semitones, keeping the length and tempo."""
    import librosa

    if isinstance(semitones, bool) or not isinstance(semitones, (int, np.integer)):
        raise InputError(f"pitch shift must be a whole number of semitones, got {semitones!r}")
    wave = np.asarray(wave, dtype=np.float32)
    if semitones == 0:
        return wave.copy()
    return librosa.effects.pitch_shift(wave, sr=sr, n_steps=int(semitones)).astype(np.float32)


def time_stretch(wave: np.ndarray, sr: int, rate: float) -> np.ndarray:
    """Change tempo by `rate` (> 1 = faster, output length ~ len / rate), keeping the pitch."""
    import librosa

    _check_rate(rate)
    wave = np.asarray(wave, dtype=np.float32)
    if rate == 1:
        return wave.copy()
    # `sr` is unused by the phase vocoder; it stays in the signature so every implementation
    # compared in bench/augment_compare.py has the same one.
    return librosa.effects.time_stretch(wave, rate=float(rate)).astype(np.float32)


def _variants(task: str, shifts, rates) -> list[tuple[str, object]]:
    if task == "key":
        shifts = list(shifts)
        for n in shifts:
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n == 0:
                raise InputError(f"data.augment.pitch_shifts must be non-zero whole semitones, got {shifts}")
        return [("ps", int(n)) for n in shifts]
    if task == "tempo":
        rates = [float(r) for r in rates]
        for r in rates:
            _check_rate(r)
            if r == 1:
                raise InputError(f"data.augment.time_stretches must not hold 1.0 (a copy), got {rates}")
        return [("ts", r) for r in rates]
    return []


def _safe_name(key: str) -> str:
    # Dataset keys may hold folders ("blues/blues.00000"); augmented clips live in one flat folder.
    return re.sub(r"[^A-Za-z0-9._@+-]", "_", key)


def _write_wav(path: Path, wave: np.ndarray, sr: int) -> None:
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if not np.isfinite(peak):
        raise AudioError(f"augmented clip {path.name} holds non-finite samples")
    if peak > PEAK_LIMIT:
        wave = wave * (PEAK_LIMIT / peak)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        sf.write(str(tmp), wave, sr, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def augment_items(rows: list[dict], task: str, *, audio_root: Path, out_dir: Path, shifts, rates,
                  per_item: int, seed: int, progress: bool = True) -> list[dict]:
    """All input rows unchanged, then for each training row `per_item` augmented rows.

    Variants are drawn without replacement by `np.random.default_rng([seed, row index])`, so the
    draw for one row does not depend on the others; `per_item` 0 takes every variant. Augmented
    clips are written under `out_dir` as PCM_16 wav at the source rate; their rows carry
    `augmented_from` and an `audio_path` relative to `out_dir.parent`.
    """
    variants = _variants(task, shifts, rates)
    out = [dict(r) for r in rows]
    train = [(i, r) for i, r in enumerate(rows) if r.get("split") == TRAIN_SPLIT]
    if not variants or not train:
        return out
    if isinstance(per_item, bool) or not isinstance(per_item, (int, np.integer)) or per_item < 0:
        raise InputError(f"data.augment.per_item must be a whole number >= 0 (0 = every variant), got {per_item!r}")
    if per_item > len(variants):
        raise InputError(f"data.augment.per_item={per_item} but only {len(variants)} variants are listed "
                         f"for {task}: lower per_item or use 0 for all of them")
    take = len(variants) if per_item == 0 else int(per_item)

    audio_root, out_dir = Path(audio_root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rel_dir = out_dir.relative_to(out_dir.parent)
    written: dict[str, str] = {}  # file name -> augmented key, to catch two keys sanitised alike
    for i, row in tqdm(train, desc=f"augment {task}", unit="clip", disable=not progress):
        src = audio_root / row["audio_path"]
        try:
            wave, sr = decode(src)
        except AudioError as err:
            raise AudioError(f"augment: training item {row['key']!r}: {err}") from err
        picks = sorted(np.random.default_rng([int(seed), i]).choice(len(variants), size=take, replace=False))
        for kind, value in (variants[j] for j in picks):
            if kind == "ps":
                key = f"{row['key']}@ps{value:+d}"
                new, label = pitch_shift(wave, sr, value), shift_key_label(row["label"], value)
            else:
                key = f"{row['key']}@ts{value}"
                new, label = time_stretch(wave, sr, value), stretch_tempo_label(row["label"], value)
            name = _safe_name(key) + ".wav"
            if name in written:
                raise InputError(f"augmented items {written[name]!r} and {key!r} map to the same file "
                                 f"{name}: make the dataset keys differ in letters or digits")
            written[name] = key
            _write_wav(out_dir / name, new, sr)
            out.append({**row, "key": key, "augmented_from": row["key"], "label": label,
                        "audio_path": str(rel_dir / name), "sr": int(sr), "length": int(len(new))})
    return out
