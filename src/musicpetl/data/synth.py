"""The embedded synthetic music corpus: short clips rendered from known key, tempo, instruments, style.

It lets the whole pipeline run offline. Every clip is rendered from its labels (a diatonic chord
progression in the key, a melody on the key's scale, a bass on the chord roots, drums on the beat
grid at the exact tempo), so the labels are true by construction; tests/test_synth.py checks them
against madmom's pretrained key and tempo estimators.

Labels follow the pipeline's conventions (see docs/DATASETS.md): key 0-23 = C-based pitch class + 12 if
minor, tempo a float BPM, beats the times in seconds of the clip's beat grid (what every part is
placed on).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter
from tqdm import tqdm

from musicpetl.errors import InputError

SAMPLE_RATE = 24000
# The shortest clip length at which madmom's key and tempo estimators still agree comfortably with
# the labels (tests/test_synth.py); longer clips agree more on average.
DEFAULT_DURATION = 4.0
TEMPO_RANGE = (60.0, 180.0)  # BPM; drawn uniformly, never an integer grid

# Chord instruments come first: every clip has at least one of them, so every clip carries harmony.
CHORD_TAGS = ["piano", "organ", "strings", "guitar", "pad"]
TAGS = CHORD_TAGS + ["lead", "bass", "drums"]
STYLES = ["rock", "swing", "ballad", "dance", "waltz"]

PITCH_CLASSES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]

# Chance that a clip holds each tag; chord instruments are capped so a mix stays readable.
_TAG_PROB = {"piano": 0.45, "organ": 0.3, "strings": 0.35, "guitar": 0.4, "pad": 0.3,
             "lead": 0.65, "bass": 0.75, "drums": 0.75}
_MAX_CHORD_INSTRUMENTS = 3
# Strings, pads and the lead alone leave the beat unstated; every clip gets one of these.
_RHYTHM_TAGS = ["piano", "organ", "guitar", "bass", "drums"]
# These hold each chord for its whole length (their rhythm is the harmonic rhythm); the other
# chord instruments play the style's comping pattern.
_HELD_TAGS = ["strings", "pad"]

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
# Harmonic minor: the raised 7th (leading tone, major V) is what tells a minor key from its
# relative major, which shares every other note.
_HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)
# Scale degrees (0 = tonic) per chord. Every progression starts on the tonic and reaches the
# dominant within its first three chords, so a few seconds already hold the leading tone. No vi/VI:
# it pulls estimates towards the relative key, which short clips cannot afford.
_PROGRESSIONS = ((0, 3, 4, 0), (0, 4, 0, 3), (0, 3, 0, 4), (0, 1, 4, 0))


def key_name(key: int) -> str:
    """'C major' ... 'B minor', the spelling mir_eval and madmom read."""
    _check_key(key)
    return f"{PITCH_CLASSES[key % 12]} {'minor' if key >= 12 else 'major'}"


# --------------------------------------------------------------------------------------- styles

@dataclass(frozen=True)
class _Style:
    meter: int                 # beats per bar
    swing: float               # where the off-beat 8th falls inside the beat (0.5 = straight)
    comp: tuple                # (beat in bar, length in beats, velocity) for comping chord instruments
    arpeggio: bool             # comp plays broken chords (one chord tone per hit) instead of block chords
    bass: tuple                # (beat in bar, length in beats, velocity, role)
    drums: dict                # drum sound -> ((beat in bar, velocity), ...)
    melody_lengths: tuple      # note lengths (beats) the melody draws from
    chord_center: int          # MIDI pitch the chord voicings cluster around
    melody_center: int
    brightness: float          # < 1 low-passes the whole mix
    seventh_on_dominant: bool


def _eighths(n_beats, length, strong=1.0, weak=0.7):
    return tuple((i * 0.5, length, strong if i % 2 == 0 else weak) for i in range(2 * n_beats))


# Styles differ in drum pattern, swing, chord rhythm, register and brightness, so a model can
# learn them from any clip, even one without drums.
_STYLES = {
    "rock": _Style(
        meter=4, swing=0.5, comp=_eighths(4, 0.42), arpeggio=False,
        bass=tuple((i * 0.5, 0.45, 1.0 if i % 2 == 0 else 0.8, "root") for i in range(8)),
        drums={"kick": ((0, 1.0), (2, 0.95), (2.5, 0.7)), "snare": ((1, 0.9), (3, 0.9)),
               "hat": tuple((i * 0.5, 0.5 if i % 2 else 0.7) for i in range(8))},
        melody_lengths=(0.5, 0.5, 1.0, 1.0, 1.5, 2.0), chord_center=60, melody_center=72,
        brightness=1.0, seventh_on_dominant=False),
    "swing": _Style(
        meter=4, swing=2 / 3, comp=((0, 0.45, 0.6), (1, 0.35, 0.85), (2, 0.45, 0.6), (3, 0.35, 0.85),
                                    (3.5, 0.25, 0.5)), arpeggio=False,
        bass=((0, 0.9, 1.0, "root"), (1, 0.9, 0.85, "third"), (2, 0.9, 0.9, "fifth"),
              (3, 0.9, 0.85, "approach")),
        drums={"ride": ((0, 0.8), (1, 0.8), (1.5, 0.55), (2, 0.8), (3, 0.8), (3.5, 0.55)),
               "hat_pedal": ((1, 0.6), (3, 0.6)), "kick": ((0, 0.45), (2, 0.4))},
        melody_lengths=(0.5, 0.5, 0.5, 1.0, 1.0), chord_center=62, melody_center=74,
        brightness=0.85, seventh_on_dominant=True),
    "ballad": _Style(
        meter=4, swing=0.5, comp=tuple((i * 0.5, 1.4, 0.8 if i % 2 == 0 else 0.6) for i in range(8)),
        arpeggio=True, bass=((0, 1.9, 1.0, "root"), (2, 1.9, 0.85, "root")),
        drums={"kick": ((0, 0.8), (2, 0.6)), "rim": ((1, 0.7), (3, 0.7)),
               "shaker": tuple((i * 0.5, 0.45 if i % 2 else 0.6) for i in range(8))},
        melody_lengths=(1.0, 1.0, 2.0, 2.0, 3.0), chord_center=55, melody_center=67,
        brightness=0.45, seventh_on_dominant=False),
    "dance": _Style(
        meter=4, swing=0.5, comp=tuple((i + 0.5, 0.22, 0.9) for i in range(4)), arpeggio=False,
        bass=tuple((i + 0.5, 0.3, 1.0, "root" if i % 2 == 0 else "octave") for i in range(4)),
        drums={"kick": tuple((i, 1.0) for i in range(4)), "clap": ((1, 0.85), (3, 0.85)),
               "hat_open": tuple((i + 0.5, 0.6) for i in range(4)),
               "hat": tuple((i * 0.25, 0.3) for i in range(16) if i % 2)},
        melody_lengths=(0.25, 0.25, 0.5, 0.5, 0.5, 1.0), chord_center=67, melody_center=79,
        brightness=1.0, seventh_on_dominant=False),
    "waltz": _Style(
        meter=3, swing=0.5, comp=((0, 0.9, 0.55), (1, 0.6, 0.75), (2, 0.6, 0.7)), arpeggio=False,
        bass=((0, 0.9, 1.0, "root"),),
        drums={"kick": ((0, 0.9),), "snare": ((1, 0.45), (2, 0.45)), "hat": ((0, 0.5), (1, 0.4), (2, 0.4))},
        melody_lengths=(1.0, 1.0, 2.0, 3.0), chord_center=60, melody_center=72,
        brightness=0.7, seventh_on_dominant=False),
}
assert list(_STYLES) == STYLES


def _swung(beat: float, swing: float) -> float:
    # Only the off-beat 8th moves; swing = 2/3 is the triplet feel.
    whole = np.floor(beat)
    return float(whole + swing) if abs(beat - whole - 0.5) < 1e-9 else float(beat)


# ------------------------------------------------------------------------------------ timbres

@dataclass(frozen=True)
class _Timbre:
    bright: tuple              # harmonic amplitudes at the onset (harmonic k+1 at index k)
    dull: tuple | None         # what a plucked/struck tone decays towards; None = static spectrum
    bright_tau: float          # seconds for the bright spectrum to fade
    attack: float
    decay: float               # seconds for the level to fall by 1/e towards `sustain`
    sustain: float
    release: float
    vibrato: float = 0.0       # frequency deviation, as a ratio
    unison_cents: float = 0.0  # two voices detuned +-, for ensemble width


def _pluck_spectrum(position: float, n: int, tilt: float) -> tuple:
    # A string plucked at `position` lacks the harmonics with a node there.
    k = np.arange(1, n + 1)
    return tuple(np.abs(np.sin(np.pi * k * position)) / k ** tilt)


_ORGAN = [0.0] * 10
for _h, _a in {1: 1.0, 2: 0.8, 3: 0.6, 4: 0.45, 6: 0.25, 8: 0.2}.items():
    _ORGAN[_h - 1] = _a

_TIMBRES = {
    "piano": _Timbre(bright=(1, .55, .4, .3, .22, .16, .12, .09, .07, .05, .04, .03),
                     dull=(1, .25, .08, .03), bright_tau=0.25, attack=0.004, decay=0.9,
                     sustain=0.0, release=0.12),
    "organ": _Timbre(bright=tuple(_ORGAN), dull=None, bright_tau=0.0, attack=0.012, decay=np.inf,
                     sustain=1.0, release=0.05, vibrato=0.0025),
    "strings": _Timbre(bright=tuple(1 / k ** 1.1 for k in range(1, 13)), dull=None, bright_tau=0.0,
                       attack=0.09, decay=np.inf, sustain=1.0, release=0.2, vibrato=0.003,
                       unison_cents=5.0),
    "guitar": _Timbre(bright=_pluck_spectrum(0.18, 12, 1.0), dull=_pluck_spectrum(0.18, 4, 1.5),
                      bright_tau=0.15, attack=0.002, decay=0.6, sustain=0.0, release=0.08),
    "pad": _Timbre(bright=(1, .1, .33, .05, .2, .03, .14, 0, .1), dull=None, bright_tau=0.0,
                   attack=0.15, decay=np.inf, sustain=1.0, release=0.3, unison_cents=7.0),
    "lead": _Timbre(bright=tuple(1 / k for k in range(1, 11)), dull=None, bright_tau=0.0,
                    attack=0.01, decay=1.5, sustain=0.7, release=0.06, vibrato=0.004),
    "bass": _Timbre(bright=(1, .55, .3, .15, .08), dull=(1, .2, .05), bright_tau=0.2, attack=0.005,
                    decay=1.2, sustain=0.25, release=0.05),
}

# Relative RMS of each part in the mix: sustained parts sit lower, as they fill every gap.
_MIX_LEVEL = {"piano": 0.6, "organ": 0.33, "strings": 0.33, "guitar": 0.6, "pad": 0.3,
              "lead": 0.64, "bass": 0.9, "drums": 0.8}
assert set(_MIX_LEVEL) == set(TAGS)

_TABLE_SIZE = 4096


@lru_cache(maxsize=None)
def _wavetable(amps: tuple, n_harmonics: int) -> np.ndarray:
    # One period, band-limited to what stays below Nyquist for the note that asks for it.
    phase = np.arange(_TABLE_SIZE) / _TABLE_SIZE
    table = np.zeros(_TABLE_SIZE)
    for k, a in enumerate(amps[:n_harmonics], start=1):
        if a:
            table += a * np.sin(2 * np.pi * k * phase)
    return (table / max(np.abs(table).max(), 1e-9)).astype(np.float32)


def _midi_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def _render_note(timbre: _Timbre, midi: float, length: float, sr: int) -> np.ndarray:
    """One note at unit velocity, `length` seconds held, plus its release tail."""
    freq = _midi_hz(midi)
    n_harm = max(1, int(0.45 * sr / freq))
    tail = timbre.release * 4
    if np.isfinite(timbre.decay) and timbre.sustain == 0:
        tail = min(tail, max(0.0, timbre.decay * 5 - length))  # the tone is gone before release
    n = max(1, int((length + tail) * sr))
    t = np.arange(n) / sr
    env = np.minimum(t / timbre.attack, 1.0)
    if np.isfinite(timbre.decay):
        env *= timbre.sustain + (1 - timbre.sustain) * np.exp(-t / timbre.decay)
    off = t > length
    env[off] *= np.exp(-(t[off] - length) / timbre.release)
    detunes = (-timbre.unison_cents, timbre.unison_cents) if timbre.unison_cents else (0.0,)
    wave = np.zeros(n, dtype=np.float32)
    for cents in detunes:
        f = freq * 2.0 ** (cents / 1200)
        phase = f * t
        if timbre.vibrato:
            rate = 5.5
            phase += f * timbre.vibrato * (1 - np.cos(2 * np.pi * rate * t)) / (2 * np.pi * rate)
        idx = ((phase % 1.0) * _TABLE_SIZE).astype(np.intp)
        bright = _wavetable(timbre.bright, n_harm)[idx]
        if timbre.dull is None:
            wave += bright
        else:
            mix = np.exp(-t / timbre.bright_tau).astype(np.float32)
            wave += mix * bright + (1 - mix) * _wavetable(timbre.dull, n_harm)[idx]
    return wave * (env / len(detunes)).astype(np.float32)


# --------------------------------------------------------------------------------------- drums

def _one_pole_lowpass(x: np.ndarray, cutoff: float, sr: int) -> np.ndarray:
    a = np.exp(-2 * np.pi * cutoff / sr)
    return lfilter([1 - a], [1, -a], x)


def _drum_kit(sr: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-clip drum samples; noise comes from the clip's rng so the clip stays deterministic."""
    def t_of(seconds):
        return np.arange(int(seconds * sr)) / sr

    def noise(seconds):
        return rng.standard_normal(int(seconds * sr))

    kit = {}
    t = t_of(0.4)
    f0, f1, tau = rng.uniform(110, 150), rng.uniform(45, 58), 0.03
    phase = f1 * t + (f0 - f1) * tau * (1 - np.exp(-t / tau))  # exponential pitch sweep, integrated
    kit["kick"] = np.sin(2 * np.pi * phase) * np.exp(-t / 0.22) + 0.3 * np.exp(-t / 0.004) * noise(0.4)

    t = t_of(0.3)
    body = np.sin(2 * np.pi * rng.uniform(175, 200) * t) * np.exp(-t / 0.06)
    hiss = noise(0.3)
    rattle = hiss - _one_pole_lowpass(hiss, 1500, sr)  # high-passed: the wires, not the drum body
    kit["snare"] = 0.6 * body + 0.7 * rattle * np.exp(-t / 0.09)

    t = t_of(0.25)
    bursts = sum(np.exp(-np.clip(t - d, 0, None) / 0.008) * (t >= d) for d in (0, 0.011, 0.022))
    claps = np.diff(noise(0.25), prepend=0) * (0.5 * bursts + np.exp(-t / 0.08) * (t >= 0.022))
    kit["clap"] = claps

    for name, seconds, tau in (("hat", 0.12, 0.025), ("hat_open", 0.4, 0.12), ("hat_pedal", 0.08, 0.015)):
        t = t_of(seconds)
        kit[name] = 0.5 * np.diff(noise(seconds), prepend=0) * np.exp(-t / tau)

    t = t_of(0.9)
    bell = sum(np.sin(2 * np.pi * f * t) for f in (rng.uniform(500, 540), 790.0, 1160.0, 3150.0))
    hiss = np.diff(noise(0.9), prepend=0)
    kit["ride"] = (0.12 * bell + 0.35 * hiss) * np.exp(-t / 0.5)

    t = t_of(0.06)
    kit["rim"] = (np.sin(2 * np.pi * 1700 * t) + 0.6 * np.sin(2 * np.pi * 420 * t)
                  + 0.5 * noise(0.06)) * np.exp(-t / 0.012)

    t = t_of(0.12)
    shaker = np.diff(noise(0.12), prepend=0)
    kit["shaker"] = 0.5 * shaker * np.minimum(t / 0.012, 1) * np.exp(-t / 0.04)
    return {k: v.astype(np.float32) for k, v in kit.items()}


# ------------------------------------------------------------------------------------ harmony

def _scale(minor: bool) -> tuple:
    return _HARMONIC_MINOR if minor else _MAJOR


def _chord(degree: int, minor: bool, seventh: bool) -> list[int]:
    """Semitones above the tonic of the triad (or seventh chord) on a scale degree."""
    scale = _scale(minor)
    steps = range(4 if seventh else 3)
    return [scale[(degree + 2 * j) % 7] + 12 * ((degree + 2 * j) // 7) for j in steps]


def _near(pc: int, center: int) -> int:
    """The MIDI pitch of pitch class `pc` in the octave window centred on `center`."""
    low = center - 6
    return low + (pc - low) % 12


def _voice(pcs: list[int], center: int) -> list[int]:
    return sorted(_near(pc, center) for pc in pcs)


def _scale_pitches(tonic: int, minor: bool, low: int, high: int) -> np.ndarray:
    scale = set((tonic + s) % 12 for s in _scale(minor))
    return np.array([m for m in range(low, high + 1) if m % 12 in scale])


# ---------------------------------------------------------------------------------- rendering

def _check_key(key) -> None:
    if not isinstance(key, (int, np.integer)) or not 0 <= key < 24:
        raise InputError(f"key must be an integer 0-23 (pitch class + 12 if minor), got {key!r}")


def _check_args(key, tempo, tags, style, duration, sample_rate) -> None:
    _check_key(key)
    if not np.isfinite(tempo) or not 20 <= tempo <= 400:
        raise InputError(f"tempo must be a BPM in 20-400, got {tempo!r}")
    unknown = [t for t in tags if t not in TAGS]
    if unknown:
        raise InputError(f"unknown tags {unknown}; valid tags are {TAGS}")
    if not any(t in CHORD_TAGS for t in tags):
        raise InputError(f"tags {list(tags)} name no chord instrument; add one of {CHORD_TAGS}")
    if style not in _STYLES:
        raise InputError(f"unknown style {style!r}; valid styles are {STYLES}")
    if not duration > 0:
        raise InputError(f"duration must be positive seconds, got {duration!r}")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate < 8000:
        raise InputError(f"sample_rate must be an integer >= 8000 Hz, got {sample_rate!r}")


def _beats_per_chord(tempo: float, meter: int) -> int:
    # Keep chord changes near 0.9 s whatever the tempo, so a 4 s clip holds a whole cadence.
    choices = (1, 2, 4) if meter == 4 else (1, 3)
    return min(choices, key=lambda b: abs(np.log(b * 60.0 / tempo / 0.9)))


def render_clip(key: int, tempo: float, tags: list[str], style: str, duration: float,
                sample_rate: int, rng: np.random.Generator, return_beats: bool = False):
    """Render one mono float32 clip whose key, tempo, instruments and style are the given labels.

    `rng` only adds mild variety (progression, voicing, melody, levels, detune, drum noise); the
    labels themselves are always honoured exactly: the beat grid runs at `tempo`, the harmony
    stays diatonic to `key`, and exactly the instruments in `tags` sound.

    `return_beats`: return `(wave, beats)`, the times in seconds of the beats inside the clip (the
    grid every part is placed on: beat k at `start + k * 60 / tempo`, `start` a random 0-50 ms;
    swing moves only off-beat eighths, never a beat). The draws are the same either way, so the
    audio does not depend on it.
    """
    _check_args(key, tempo, tags, style, duration, sample_rate)
    sr = int(sample_rate)
    st = _STYLES[style]
    tonic, minor = key % 12, key >= 12
    n = int(round(duration * sr))
    spb = 60.0 / tempo
    start = rng.uniform(0.0, 0.05)  # the first beat need not sit on sample 0
    n_beats = int(np.ceil((duration - start) / spb)) + 1
    bpc = _beats_per_chord(tempo, st.meter)
    progression = _PROGRESSIONS[rng.integers(len(_PROGRESSIONS))]

    def chord_at(beat: float) -> int:
        return progression[int(beat // bpc) % len(progression)]

    def seconds(beat: float) -> float:
        return start + beat * spb

    def events_from_pattern(pattern):
        """Expand a one-bar pattern over the clip: (absolute beat, entries of the pattern)."""
        for bar in range(0, n_beats, st.meter):
            for entry in pattern:
                beat = bar + _swung(entry[0], st.swing)
                if beat < n_beats:
                    yield beat, entry

    parts: dict[str, np.ndarray] = {}

    def add(part: str, wave: np.ndarray, at: float, gain: float) -> None:
        buf = parts.setdefault(part, np.zeros(n, dtype=np.float32))
        i = int(round(at * sr))
        if i >= n:
            return
        seg = wave[: n - i]
        buf[i:i + len(seg)] += gain * seg

    # Detune is per instrument and small (a few cents), like a band slightly off each other.
    detune = {tag: rng.uniform(-6, 6) for tag in TAGS}
    cache: dict = {}

    def note(tag: str, midi: int, beats: float) -> np.ndarray:
        k = (tag, midi, round(beats * spb, 3))
        if k not in cache:
            cache[k] = _render_note(_TIMBRES[tag], midi + detune[tag] / 100, beats * spb, sr)
        return cache[k]

    for tag in tags:
        if tag not in CHORD_TAGS:
            continue
        center = st.chord_center + int(rng.integers(-2, 3))
        if tag in _HELD_TAGS:
            for b in range(0, n_beats, bpc):
                degree = chord_at(b)
                pcs = _chord(degree, minor, st.seventh_on_dominant and degree == 4)
                for m in _voice([(tonic + p) % 12 for p in pcs], center):
                    add(tag, note(tag, m, bpc * 0.97), seconds(b), 0.7)
            continue
        arp_step = 0
        for beat, (_, length, vel) in events_from_pattern(st.comp):
            degree = chord_at(beat)
            pcs = _chord(degree, minor, st.seventh_on_dominant and degree == 4)
            voicing = _voice([(tonic + p) % 12 for p in pcs], center)
            gain = vel * rng.uniform(0.85, 1.0)
            if st.arpeggio:
                # Broken chord: the root an octave below, then the voicing up and down.
                root = _near((tonic + pcs[0]) % 12, center - 12)
                cycle = [root] + voicing + voicing[-2:0:-1]
                add(tag, note(tag, cycle[arp_step % len(cycle)], length), seconds(beat), gain)
                arp_step += 1
            else:
                for m in voicing:
                    add(tag, note(tag, m, length), seconds(beat), gain / np.sqrt(len(voicing)))

    if "bass" in tags:
        for beat, (_, length, vel, role) in events_from_pattern(st.bass):
            degree = chord_at(beat)
            root = (tonic + _chord(degree, minor, False)[0]) % 12
            low = 40 + (root - 40) % 12  # E2 .. Eb3
            if role == "root":
                m = low
            elif role == "octave":
                m = low + 12
            elif role in ("third", "fifth"):
                pcs = _chord(degree, minor, False)
                m = _near((tonic + pcs[1 if role == "third" else 2]) % 12, low + 5)
            else:
                # Walking bass: a scale step next to the coming chord's root leads into it.
                nxt = (tonic + _chord(chord_at(beat + 1), minor, False)[0]) % 12
                target = 40 + (nxt - 40) % 12
                scale = _scale_pitches(tonic, minor, target - 3, target + 3)
                below, above = scale[scale < target][-1], scale[scale > target][0]
                m = int(below if rng.random() < 0.5 else above)
            add("bass", note("bass", m, length), seconds(beat), vel * rng.uniform(0.85, 1.0))

    if "lead" in tags:
        pitches = _scale_pitches(tonic, minor, st.melody_center - 7, st.melody_center + 9)
        idx = int(np.argmin(np.abs(pitches - st.melody_center)))
        beat = 0.0
        lengths = np.array(st.melody_lengths)
        while beat < n_beats:
            length = float(lengths[rng.integers(len(lengths))])
            if abs(beat % bpc) < 1e-9 or rng.random() < 0.4:
                # On chord changes (and often elsewhere) land on a chord tone: the melody then
                # spells the harmony, which is what makes the key audible in the tune.
                degree = chord_at(beat)
                chord_pcs = {(tonic + p) % 12 for p in _chord(degree, minor, False)}
                cands = [i for i, p in enumerate(pitches) if p % 12 in chord_pcs]
                idx = min(cands, key=lambda i: (abs(i - idx), rng.random()))
            else:
                step = int(rng.choice([-2, -1, -1, 1, 1, 2]))
                idx = int(np.clip(idx + step, 0, len(pitches) - 1))
            onset = _swung(beat, st.swing)
            add("lead", note("lead", int(pitches[idx]), length * 0.9), seconds(onset),
                rng.uniform(0.75, 1.0))
            beat += length

    if "drums" in tags:
        kit = _drum_kit(sr, rng)
        for sound, hits in st.drums.items():
            for beat, (_, vel) in events_from_pattern(hits):
                add("drums", kit[sound], seconds(beat), vel * rng.uniform(0.9, 1.0))

    # Each part is brought to its own RMS level, so no instrument drowns the others whatever its
    # note count, then jittered by a few dB.
    mix = np.zeros(n, dtype=np.float64)
    for tag, part in parts.items():
        rms = float(np.sqrt(np.mean(part.astype(np.float64) ** 2)))
        if rms > 0:
            mix += part * (_MIX_LEVEL[tag] / rms * 10 ** (rng.uniform(-3, 3) / 20))
    if st.brightness < 1:
        cutoff = 1000 + st.brightness * 6000
        mix = _one_pole_lowpass(mix, cutoff, sr)
    peak = np.abs(mix).max()
    if peak == 0:
        raise RuntimeError(f"rendered a silent clip for key={key} tempo={tempo} tags={tags} style={style}")
    wave = (mix * (rng.uniform(0.6, 0.95) / peak)).astype(np.float32)
    if return_beats:
        beats = [seconds(b) for b in range(n_beats) if int(round(seconds(b) * sr)) < n]
        return wave, beats
    return wave


# ------------------------------------------------------------------------------------- corpus

def _draw_labels(n_clips: int, rng: np.random.Generator) -> list[dict]:
    # Keys, styles and tempo bins are dealt like cards rather than sampled, so every class turns
    # up (nearly) equally often even in a small corpus.
    keys = rng.permutation(np.arange(n_clips) % 24)
    styles = rng.permutation(np.arange(n_clips) % len(STYLES))
    lo, hi = TEMPO_RANGE
    tempi = lo + (rng.permutation(n_clips) + rng.uniform(size=n_clips)) / n_clips * (hi - lo)
    labels = []
    for i in range(n_clips):
        present = [t for t in TAGS if rng.random() < _TAG_PROB[t]]
        chords = [t for t in present if t in CHORD_TAGS]
        if not chords:
            chords = [CHORD_TAGS[rng.integers(len(CHORD_TAGS))]]
        elif len(chords) > _MAX_CHORD_INSTRUMENTS:
            chords = list(rng.choice(chords, _MAX_CHORD_INSTRUMENTS, replace=False))
        tags = [t for t in TAGS if t in chords or (t not in CHORD_TAGS and t in present)]
        if not any(t in _RHYTHM_TAGS for t in tags):
            extra = ["bass", "drums"] if len(chords) >= _MAX_CHORD_INSTRUMENTS else _RHYTHM_TAGS
            added = extra[rng.integers(len(extra))]
            tags = [t for t in TAGS if t in tags or t == added]
        labels.append({"key_label": int(keys[i]), "tempo": round(float(tempi[i]), 3), "tags": tags,
                       "style": STYLES[int(styles[i])]})
    return labels


def _write_atomic_wav(path: Path, wave: np.ndarray, sr: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(tmp, wave, sr, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def generate_corpus(out_dir: Path, n_clips: int, duration: float, sample_rate: int = SAMPLE_RATE,
                    seed: int = 0, progress: bool = True) -> list[dict]:
    """Write `n_clips` clips to out_dir/audio/synth_NNNNN.wav and their labels to
    out_dir/annotations.jsonl (same order); return the annotation rows. A row holds the labels
    (key_label, tempo, tags, style) and `beats`, the clip's beat times in seconds (to the microsecond).

    Same arguments give byte-identical files. Each clip has its own random stream (spawned from
    `seed` by index), so a clip does not change when another one's rendering does.
    """
    if not isinstance(n_clips, (int, np.integer)) or n_clips < 1:
        raise InputError(f"n_clips must be a positive integer, got {n_clips!r}")
    if not duration > 0:
        raise InputError(f"duration must be positive seconds, got {duration!r}")
    out_dir = Path(out_dir)
    audio_dir = out_dir / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    label_seq, *clip_seqs = np.random.SeedSequence(seed).spawn(n_clips + 1)
    labels = _draw_labels(n_clips, np.random.default_rng(label_seq))

    # Clips left over from a larger earlier run would sit in audio/ without a row: remove them.
    for stale in audio_dir.iterdir():
        m = re.fullmatch(r"\.?synth_(\d{5,})\.wav(\.tmp)?", stale.name)
        if m and (m.group(2) or int(m.group(1)) >= n_clips):
            stale.unlink()

    rows = []
    for i in tqdm(range(n_clips), desc="synth corpus", unit="clip", disable=not progress):
        lab = labels[i]
        wave, beats = render_clip(lab["key_label"], lab["tempo"], lab["tags"], lab["style"], duration,
                                  sample_rate, np.random.default_rng(clip_seqs[i]), return_beats=True)
        name = f"synth_{i:05d}"
        _write_atomic_wav(audio_dir / f"{name}.wav", wave, sample_rate)
        rows.append({"key": name, "audio_path": f"audio/{name}.wav", "sr": int(sample_rate),
                     "length": int(len(wave)), **lab, "beats": [round(b, 6) for b in beats]})

    ann = out_dir / "annotations.jsonl"
    tmp = ann.with_name(f".{ann.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, ann)
    return rows
