"""Augmentation: label transforms, that the audio really moves in pitch / time, and the manifest
rows and files augment_items writes (training split only, deterministic, readable)."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from musicpetl.audio import AudioError
from musicpetl.data.augment import (augment_items, pitch_shift, shift_key_label, stretch_tempo_label,
                                    time_stretch)
from musicpetl.data.synth import key_name

SR = 24000
SHIFTS = [-4, -3, -2, -1, 1, 2, 3, 4]
RATES = [0.95, 0.975, 1.025, 1.05]
PCS = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]


def _sine(freq: float, seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wave: np.ndarray, sr: int = SR) -> float:
    spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / sr)[np.argmax(spec)])


# ------------------------------------------------------------------------------------- labels

@pytest.mark.parametrize("label", range(24))
@pytest.mark.parametrize("n", SHIFTS)
def test_key_label_moves_with_the_tonic_and_keeps_the_mode(label, n):
    new = shift_key_label(label, n)
    assert 0 <= new < 24 and (new >= 12) == (label >= 12)
    # Same check through the names: the tonic moved n semitones on the circle of 12.
    tonic, mode = key_name(label).split()
    assert key_name(new) == f"{PCS[(PCS.index(tonic) + n) % 12]} {mode}"
    assert shift_key_label(new, -n) == label


def test_key_label_examples():
    assert key_name(shift_key_label(21, 3)) == "C minor"     # A minor + 3 -> C minor
    assert key_name(shift_key_label(0, -1)) == "B major"     # wraps below C
    assert key_name(shift_key_label(23, 4)) == "Eb minor"  # B minor + 4
    assert shift_key_label(11, 1) == 0 and shift_key_label(12, -4) == 20


@pytest.mark.parametrize("bad", [24, -1, 1.0, True, "3"])
def test_key_label_rejects_out_of_range(bad):
    with pytest.raises(ValueError, match="0-23"):
        shift_key_label(bad, 1)


@pytest.mark.parametrize("rate", RATES)
def test_tempo_label_scales_with_the_rate(rate):
    assert stretch_tempo_label(120.0, rate) == pytest.approx(120.0 * rate)
    assert stretch_tempo_label(100, rate) > 100 if rate > 1 else stretch_tempo_label(100, rate) < 100


# -------------------------------------------------------------------------------------- audio

@pytest.mark.parametrize("n", [-4, -1, 3])
def test_pitch_shift_moves_a_sine_by_the_interval(n):
    f0 = 440.0
    out = pitch_shift(_sine(f0), SR, n)
    assert out.dtype == np.float32 and out.shape == (SR,)
    expected = f0 * 2 ** (n / 12)
    assert abs(_peak_hz(out) - expected) < 3.0, (_peak_hz(out), expected)


@pytest.mark.parametrize("rate", [0.95, 1.05])
def test_time_stretch_changes_length_not_pitch(rate):
    wave = _sine(330.0, 2.0)
    out = time_stretch(wave, SR, rate)
    assert out.dtype == np.float32
    assert abs(len(out) - len(wave) / rate) <= 0.002 * len(wave)
    assert abs(_peak_hz(out) - 330.0) < 3.0


def test_time_stretch_rejects_bad_rates():
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="rate"):
            time_stretch(_sine(440.0, 0.1), SR, bad)
    with pytest.raises(ValueError, match="semitones"):
        pitch_shift(_sine(440.0, 0.1), SR, 1.5)


# ------------------------------------------------------------------------------ augment_items

def _corpus(root, task: str, splits=("train", "train", "valid", "test", "train")) -> list[dict]:
    (root / "clips").mkdir(parents=True)
    rows = []
    for i, split in enumerate(splits):
        # The loudest clip (0.95 peak) checks peak limiting: stretching/shifting may push it over 1.
        wave = _sine(220.0 * (1 + i / 7), 0.5) * (1.9 if i == 0 else 1.0)
        path = f"clips/c{i}.wav"
        sf.write(root / path, wave, SR, subtype="PCM_16")
        label = {"key": i % 24, "tempo": 90.0 + 10 * i}.get(task, "rock")
        rows.append({"key": f"g/c{i}", "split": split, "audio_path": path, "sr": SR,
                     "length": len(wave), "label": label})
    return rows


def _run(tmp_path, task, rows, sub="a", **kw):
    args = dict(shifts=SHIFTS, rates=RATES, per_item=1, seed=0, progress=False)
    args.update(kw)
    out_dir = tmp_path / sub / "audio"
    return augment_items(rows, task, audio_root=tmp_path, out_dir=out_dir, **args), out_dir.parent


@pytest.mark.parametrize("task", ["key", "tempo"])
def test_only_training_rows_are_augmented_and_files_are_listed(tmp_path, task):
    rows = _corpus(tmp_path, task)
    out, base = _run(tmp_path, task, rows, per_item=2)
    assert out[: len(rows)] == rows  # inputs first, unchanged
    added = out[len(rows):]
    train = [r for r in rows if r["split"] == "train"]
    assert len(added) == 2 * len(train)
    by_key = {r["key"]: r for r in rows}
    for r in added:
        src = by_key[r["augmented_from"]]
        assert src["split"] == "train" and r["split"] == "train"
        tag = r["key"][len(src["key"]):]
        if task == "key":
            n = int(tag.removeprefix("@ps"))
            assert tag == f"@ps{n:+d}" and n in SHIFTS and r["label"] == shift_key_label(src["label"], n)
        else:
            rate = float(tag.removeprefix("@ts"))
            assert tag == f"@ts{rate}" and rate in RATES
            assert r["label"] == pytest.approx(src["label"] * rate)
        assert r["audio_path"].startswith("audio/") and "/" not in r["audio_path"][len("audio/"):]
        info = sf.info(base / r["audio_path"])
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
        assert info.frames == r["length"] and r["sr"] == SR
        wave, _ = sf.read(base / r["audio_path"], dtype="float32")
        assert np.abs(wave).max() < 1.0 and np.abs(wave).max() > 0.1
    assert len({r["key"] for r in added}) == len(added)
    assert sorted(p.name for p in (base / "audio").iterdir()) == sorted(
        r["audio_path"].removeprefix("audio/") for r in added)  # no temp files, nothing unlisted


@pytest.mark.parametrize("task", ["key", "tempo"])
def test_per_item_zero_gives_every_variant(tmp_path, task):
    rows = _corpus(tmp_path, task, splits=("train", "valid"))
    out, _ = _run(tmp_path, task, rows, per_item=0)
    tags = sorted(r["key"].split("@")[1] for r in out[len(rows):])
    want = [f"ps{n:+d}" for n in SHIFTS] if task == "key" else [f"ts{r}" for r in RATES]
    assert tags == sorted(want)


def test_same_seed_same_draw_other_seed_other_draw(tmp_path):
    rows = _corpus(tmp_path, "key", splits=("train",) * 6)
    a, base_a = _run(tmp_path, "key", rows, sub="a", seed=3)
    b, base_b = _run(tmp_path, "key", rows, sub="b", seed=3)
    c, _ = _run(tmp_path, "key", rows, sub="c", seed=4)
    assert a == b and [r["key"] for r in a] != [r["key"] for r in c]
    for r in a[len(rows):]:
        assert (base_a / r["audio_path"]).read_bytes() == (base_b / r["audio_path"]).read_bytes()
    # A row's draw depends on (seed, its index), not on what was drawn for the rows before it.
    first, _ = _run(tmp_path, "key", rows[:1], sub="d", seed=3)
    assert first[1]["key"] == a[len(rows)]["key"]


@pytest.mark.parametrize("task", ["genre", "tagging"])
def test_other_tasks_pass_through(tmp_path, task):
    rows = _corpus(tmp_path, task)
    out, base = _run(tmp_path, task, rows, per_item=0)
    assert out == rows and not (base / "audio").exists()


def test_undecodable_training_clip_raises_naming_it(tmp_path):
    rows = _corpus(tmp_path, "key")
    (tmp_path / rows[1]["audio_path"]).write_bytes(b"not audio")
    with pytest.raises(AudioError, match="c1.wav"):
        _run(tmp_path, "key", rows)


def test_per_item_above_the_variants_is_refused(tmp_path):
    rows = _corpus(tmp_path, "tempo", splits=("train",))
    with pytest.raises(ValueError, match="per_item=5"):
        _run(tmp_path, "tempo", rows, per_item=5)
