import numpy as np
import pytest
import soundfile as sf

from musicpetl.audio import segment_starts
from musicpetl.data.store import AudioStore, prepare_store


def test_segment_starts_cover_everything_without_padding():
    assert segment_starts(100, 30) == [0, 30, 60, 70]
    assert segment_starts(90, 30) == [0, 30, 60]
    assert segment_starts(20, 30) == [0]


def test_prepare_resamples_and_lists_rejects(tmp_path):
    sr_in = 22050
    t = np.arange(int(2.0 * sr_in)) / sr_in
    sf.write(tmp_path / "good.wav", 0.5 * np.sin(2 * np.pi * 440 * t), sr_in)
    sf.write(tmp_path / "silent.wav", np.zeros(sr_in * 2), sr_in)
    sf.write(tmp_path / "short.wav", 0.5 * np.sin(2 * np.pi * 440 * t[:1000]), sr_in)
    (tmp_path / "broken.mp3").write_bytes(b"not audio at all")
    rows = [{"key": k, "split": s, "audio_path": f"{k}.{'mp3' if k == 'broken' else 'wav'}", "label": 1}
            for k, s in [("good", "train"), ("silent", "train"), ("short", "test"), ("broken", "valid"), ("missing", "test")]]
    summary = prepare_store(rows, tmp_path, tmp_path / "store", 24000, {"task": "key"}, progress=False)
    assert summary["kept"] == {"train": 1, "valid": 0, "test": 0}
    assert summary["rejected"] == 4
    import json
    rejected = {r["key"]: r["reason"] for r in map(json.loads, (tmp_path / "store/rejected.jsonl").read_text().splitlines())}
    assert rejected["silent"] == "silent" and rejected["short"].startswith("too short")
    assert "missing file" in rejected["missing"] and "cannot decode" in rejected["broken"]
    store = AudioStore(tmp_path / "store")
    (row,) = store.rows("train")
    assert row["length"] == 48000  # 2 s at 24 kHz
    wave = store.audio(row)
    assert wave.dtype == np.float32 and abs(np.abs(wave).max() - 0.5) < 0.01
    crop = store.audio(row, 1000, 500)
    np.testing.assert_array_equal(crop, wave[1000:1500])
    assert store.meta["task"] == "key" and store.meta["sample_rate"] == 24000


def test_prepare_is_atomic(tmp_path, monkeypatch):
    import musicpetl.data.store as st

    sf.write(tmp_path / "a.wav", np.random.default_rng(0).uniform(-.5, .5, 48000), 24000)
    rows = [{"key": "a", "split": "train", "audio_path": "a.wav", "label": 0}] * 2
    calls = {"n": 0}
    real = st.load

    def failing(path, sr):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(path, sr)

    monkeypatch.setattr(st, "load", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare_store(rows, tmp_path, tmp_path / "store", 24000, {}, progress=False)
    assert not (tmp_path / "store").exists()
    assert not any(p.name.startswith(".store.tmp") for p in tmp_path.iterdir())


def test_prepare_from_audio_in_memory(tmp_path):
    """`decode` replaces reading files: the same checks, the same int16 store, nothing read from disk."""
    from musicpetl.audio import AudioError

    sr = 24000
    t = np.arange(2 * sr) / sr
    waves = {"a.wav": (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), "quiet.wav": np.zeros(2 * sr, np.float32)}

    def decode(path, sample_rate):
        assert sample_rate == sr
        if path.name not in waves:
            raise AudioError(f"no such clip in memory: {path.name}")
        return waves[path.name]

    rows = [{"key": k, "split": "train", "audio_path": f"{k}.wav", "label": 0} for k in ("a", "quiet", "gone")]
    summary = prepare_store(rows, tmp_path / "nowhere", tmp_path / "store", sr, {"task": "genre"}, progress=False,
                            decode=decode)
    assert summary["kept"]["train"] == 1 and summary["rejected_reasons"] == {"silent": 1, "no such clip in memory: gone.wav": 1}
    store = AudioStore(tmp_path / "store")
    assert np.abs(store.audio(store.rows("train")[0]) - waves["a.wav"]).max() <= 0.5 / 32767 + 1e-7


def test_prepare_memory_is_one_clip_not_the_split(tmp_path):
    """The split is streamed to disk as it is decoded (MTAT's training split is ~26 GB of int16):
    traced peak memory stays near one clip and one copy chunk, whatever the number of clips."""
    import tracemalloc

    sr, n_clips = 24000, 400
    rows = [{"key": f"c{i}", "split": "train", "audio_path": f"c{i}.wav", "label": 0} for i in range(n_clips)]
    split_bytes = n_clips * 2 * sr * 2  # int16: 37 MiB

    def decode(path, rate):  # clip i is the constant 0.1 + i / 1000, made when asked for
        return np.full(2 * sr, 0.1 + int(path.stem[1:]) / 1000, np.float32)

    tracemalloc.start()
    try:
        prepare_store(rows, tmp_path, tmp_path / "store", sr, {"task": "genre"}, progress=False, decode=decode)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the old way held every clip and then their concatenation (2 x 37 MiB); now a clip and a 2 MiB chunk
    assert peak < split_bytes / 5, f"peak {peak / 2**20:.1f} MiB for a {split_bytes / 2**20:.1f} MiB split"
    store = AudioStore(tmp_path / "store")
    assert [r["offset"] for r in store.rows("train")] == [i * 2 * sr for i in range(n_clips)]
    assert all(abs(float(store.audio(r)[0]) - (0.1 + i / 1000)) < 1e-4 for i, r in enumerate(store.rows("train")))
    assert store.array("valid").size == 0 and not list((tmp_path / "store").glob("*.pcm"))
