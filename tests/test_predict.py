"""`musicpetl predict`: a run file applied to new audio files and folders (mixed rates, stereo, MP3,
a broken file, a missing one), one CSV row per file; the streaming decoder equals decoding the whole
file, holds a bounded amount of audio, and the predictions equal the evaluate stage's way (whole
track in segments, outputs averaged) on the merged model."""
from __future__ import annotations

import csv
import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from musicpetl.audio import load, segment_starts
from musicpetl.errors import InputError
from musicpetl.frame_head import stitch_frames
from musicpetl.predict import (collect_inputs, load_predictor, predict_files, resampled_blocks, row, run_predict,
                               segments)

SR = 24000


def write(path: Path, wave: np.ndarray, sr: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_24"), ".ogg": ("OGG", "VORBIS"),
           ".mp3": ("MP3", "MPEG_LAYER_III")}[path.suffix]
    sf.write(path, wave, sr, format=fmt[0], subtype=fmt[1])
    return path


def noise(seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(-0.4, 0.4, (int(seconds * sr), channels)).astype(np.float32)
    return x[:, 0] if channels == 1 else x


def make_run(path: Path, task: str, classes: list[str], method: str = "lora") -> Path:
    """A mert-tiny run file as training writes it (save_run), its trainable tensors moved off their
    initialisation (LoRA's B starts at zero: merging would otherwise change nothing)."""
    from musicpetl.backbones import build_backbone
    from musicpetl.model import PetlModel
    from musicpetl.petl import apply_method
    from musicpetl.run_io import save_run
    from musicpetl.tasks import make_task

    n_out = make_task(task, classes).n_outputs
    backbone = build_backbone("mert-tiny", 2, seed=0)
    apply_method(backbone, method, {})
    model = PetlModel(backbone, n_out, 2, method=method)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    save_run(path, model, method, {}, "mert-tiny", 2, task_info={"task": task, "classes": list(classes), "seed": 0,
                                                                 "checkpoint": ""})
    return path


@pytest.fixture(scope="module")
def genre_run(tmp_path_factory) -> Path:
    from musicpetl.data.synth import STYLES

    return make_run(tmp_path_factory.mktemp("run") / "run.safetensors", "genre", list(STYLES))


@pytest.fixture
def audio_dir(tmp_path) -> Path:
    d = tmp_path / "incoming"
    write(d / "a_stereo_44k.wav", noise(7.2, 44100, 2, seed=1), 44100)
    write(d / "sub" / "deeper" / "b_22k.flac", noise(3.0, 22050, seed=2), 22050)
    write(d / "c_48k.mp3", noise(5.5, 48000, 2, seed=3), 48000)
    write(d / "d_short.ogg", noise(1.2, 16000, seed=4), 16000)
    (d / "e_broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    (d / "notes.txt").write_text("not audio")
    return d


# ------------------------------------------------------------------------------------- decoding

@pytest.mark.parametrize("sr,channels,suffix", [(44100, 2, ".wav"), (22050, 1, ".flac"), (48000, 2, ".mp3"),
                                                (24000, 1, ".wav"), (11025, 1, ".ogg")])
def test_streaming_decode_equals_whole_file_decode(tmp_path, sr, channels, suffix):
    path = write(tmp_path / f"x{suffix}", noise(6.3, sr, channels), sr)
    whole = load(path, SR)  # what the prepare stage stores (before int16)
    for block in (0.07, 2.5, 30.0):
        blocks = list(resampled_blocks(path, SR, block))
        assert (len(blocks) > 1) == (block < 6.3)  # in blocks, not the whole file at once
        got = np.concatenate(blocks)
        assert got.shape == whole.shape and np.abs(got - whole).max() < 1e-6


def test_segments_cut_a_stream_as_segment_starts_cuts_a_whole_signal():
    rng = np.random.default_rng(0)
    for n, seg in ((10_000, 3000), (9000, 3000), (2000, 3000), (3000, 3000), (3001, 3000)):
        x = rng.standard_normal(n).astype(np.float32)
        blocks = np.array_split(x, 7)
        got = list(segments(iter(blocks), seg))
        starts = segment_starts(n, seg)
        assert [s for s, _ in got] == starts
        for s, part in got:
            assert np.array_equal(part, x[s:s + min(seg, n)])


def test_long_file_streams_in_bounded_memory(tmp_path):
    """44.1 kHz stereo files of 40 s and 160 s: the decoder's peak of held audio (numpy's
    allocations, which tracemalloc sees) is a few blocks, the same for both lengths."""
    def peak_of(seconds: int) -> tuple[int, int]:
        path = tmp_path / f"long{seconds}.wav"
        with sf.SoundFile(path, "w", 44100, 2, "PCM_16") as f:
            for i in range(seconds // 10):
                f.write(noise(10.0, 44100, 2, seed=i))
        tracemalloc.start()
        n = 0
        for _, seg in segments(resampled_blocks(path, SR, block_seconds=4.0), 5 * SR):
            n += seg.size
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert n >= seconds * SR
        return peak, seconds * SR * 4  # the whole resampled track as float32

    short, _ = peak_of(40)
    long, whole = peak_of(160)
    assert long < 1.25 * short and long < whole / 2, (short, long, whole)


def test_missing_and_unreadable_files_raise_for_their_row(tmp_path):
    from musicpetl.audio import AudioError

    with pytest.raises(AudioError, match="missing file"):
        list(resampled_blocks(tmp_path / "nope.wav", SR))
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="cannot decode"):
        list(resampled_blocks(tmp_path / "bad.wav", SR))


def test_stitch_frames_keeps_every_frame_on_the_track_grid():
    fps, sr = 75.0, SR
    track = np.arange(600, dtype=float)  # 8 s of frames, value = frame index
    # 5-s segments at 0 and (aligned to the end) 3 s; each exactly 375 frames
    assert np.array_equal(stitch_frames([(0, track[:375]), (3 * sr, track[225:600])], sr, fps), track)
    # what MERT returns: 374 frames per 5 s (its convolutions' edges), 3 back-to-back segments and
    # an end-aligned tail of a 17-s track: no frame drifts, the uncovered frames are interpolated
    track = np.arange(17 * 75, dtype=float)
    pieces = [(s * sr, track[s * 75:s * 75 + 374]) for s in (0, 5, 10)] + [(12 * sr, track[900:900 + 374])]
    got = stitch_frames(pieces, sr, fps, n_frames=len(track))
    assert np.allclose(got[:-1], track[:-1])
    assert got[-1] == track[-2]  # the very last frame, past every segment, holds its neighbour's value
    assert stitch_frames([], sr, fps).size == 0


# ------------------------------------------------------------------------------------- prediction

def test_collect_inputs(audio_dir, tmp_path):
    files = collect_inputs([audio_dir, tmp_path / "gone.wav"])
    names = [f.name for f in files]
    assert names == ["a_stereo_44k.wav", "c_48k.mp3", "d_short.ogg", "e_broken.wav", "b_22k.flac", "gone.wav"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no audio files"):
        collect_inputs([tmp_path / "empty"])


def test_a_device_failure_stops_predict_instead_of_filling_error_rows(genre_run, audio_dir, torch_threads):
    """Out of memory or a CUDA error is the device's, not a file's: predict stops (a bad file still
    gets its error row, the previous test)."""
    import torch

    predictor = load_predictor(genre_run, device="cpu", batch_size=3)
    files = collect_inputs([audio_dir])
    for failure in (torch.OutOfMemoryError("CUDA out of memory"), torch.AcceleratorError("CUDA error: device-side assert")):
        def fail(path, failure=failure):
            raise failure

        predictor.file = fail
        with pytest.raises(type(failure)):
            predict_files(predictor, files, io.StringIO(), progress=False)
    predictor.file = lambda path: (_ for _ in ()).throw(RuntimeError("a decoder's complaint"))
    stats = predict_files(predictor, files, io.StringIO(), progress=False)
    assert stats["errors"] == len(files)


def test_predict_rows_match_the_evaluate_way_on_the_merged_model(genre_run, audio_dir, tmp_path, torch_threads):
    from musicpetl.data.synth import STYLES
    from musicpetl.run_io import load_run

    out = io.StringIO()
    predictor = load_predictor(genre_run, device="cpu", batch_size=3, block_seconds=2.0)
    files = collect_inputs([audio_dir, tmp_path / "gone.wav"])
    stats = predict_files(predictor, files, out, progress=False)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [Path(r["file"]).name for r in rows] == [f.name for f in files]
    assert stats["files"] == 6 and stats["ok"] == 4 and stats["errors"] == 2
    assert list(rows[0]) == ["file", "status", "error", "seconds", "segments", "predicted", "confidence",
                             *[f"p_{s}" for s in STYLES]]
    by_name = {Path(r["file"]).name: r for r in rows}
    assert by_name["e_broken.wav"]["status"] == "error" and "cannot decode" in by_name["e_broken.wav"]["error"]
    assert by_name["gone.wav"]["status"] == "error" and "missing file" in by_name["gone.wav"]["error"]
    assert by_name["gone.wav"]["p_rock"] == ""
    # the evaluate stage's way: the whole decoded track, segments of the backbone's default, the
    # unmerged model, per-segment softmax averaged
    model = load_run(genre_run).eval()
    seg = model.backbone.segment_length(None)
    for name in ("a_stereo_44k.wav", "c_48k.mp3", "d_short.ogg", "b_22k.flac"):
        r = by_name[name]
        wave = torch.from_numpy(load(next(f for f in files if f.name == name), SR))
        n = min(seg, wave.numel())
        starts = segment_starts(wave.numel(), n)
        with torch.no_grad():
            probs = model(torch.stack([wave[s:s + n] for s in starts])).softmax(-1).mean(0).numpy()
        got = np.array([float(r[f"p_{s}"]) for s in STYLES])
        assert r["status"] == "ok" and int(r["segments"]) == len(starts)
        assert float(r["seconds"]) == pytest.approx(wave.numel() / SR, abs=1e-3)
        assert np.allclose(got, probs, atol=2e-5), (name, got, probs)
        assert r["predicted"] == STYLES[int(np.argmax(probs))]
        assert float(r["confidence"]) == pytest.approx(probs.max(), abs=1e-5)
    assert stats["audio_seconds"] == pytest.approx(7.2 + 3.0 + 5.5 + 1.2, abs=0.01)


@pytest.mark.parametrize("task,classes", [("key", None), ("tempo", None), ("tagging", ["piano", "drums", "bass"])])
def test_rows_of_every_track_level_task(tmp_path, task, classes, torch_threads):
    from musicpetl.tasks.key import KEY_NAMES

    run = make_run(tmp_path / "run.safetensors", task, classes or [], method="bitfit")
    path = write(tmp_path / "x.wav", noise(3.0, 32000), 32000)
    out = io.StringIO()
    stats = predict_files(load_predictor(run, device="cpu"), [path], out, threshold=0.5, progress=False)
    (r,) = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert stats["ok"] == 1 and r["status"] == "ok"
    if task == "key":
        assert r["predicted"] in KEY_NAMES and len([k for k in r if k.startswith("p_")]) == 24
    elif task == "tempo":
        assert 0 <= float(r["predicted"]) < 300 and not any(k.startswith("p_") for k in r)
    else:
        probs = {c: float(r[f"p_{c}"]) for c in classes}
        assert r["predicted"] == ";".join(c for c in classes if probs[c] >= 0.5)


def test_beat_rows_hold_the_tracked_beats():
    from musicpetl.tasks import make_task
    from musicpetl.tasks.beat import beat_targets

    task = make_task("beat", frame_rate=75.0)
    beats = np.arange(0.2, 10.0, 0.5)
    cells = row(task, Path("x.wav"), beat_targets(beats, 750, 75.0), 10.0, 2, 0.5)
    got = np.array([float(t) for t in cells[5].split()])
    assert np.allclose(got, beats, atol=0.02) and cells[6] == len(beats)
    assert float(cells[7]) == pytest.approx(120, abs=0.5)


def test_frame_level_prediction_is_one_curve_on_the_track_grid(tmp_path, torch_threads):
    """The beat path of Predictor.file with a real backbone and the real frame head (the model
    shape a frame-level run has: backbone -> FrameHead on the last used layer): a 12.4-s file in
    5-s segments gives one activation curve of 12.4 x 75 frames, each segment's frames at their
    place, and a row of beat times."""
    from musicpetl.backbones import build_backbone
    from musicpetl.frame_head import FrameHead, stack_layers
    from musicpetl.predict import Predictor
    from musicpetl.tasks import make_task

    class FrameModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = build_backbone("mert-tiny", 2, seed=0)
            torch.manual_seed(0)
            self.head = FrameHead(self.backbone.hidden_size, 1)

        def forward(self, wave):
            return self.head(stack_layers(self.backbone(wave, 2), "last"))

    model = FrameModel().eval()
    task = make_task("beat", frame_rate=75.0)
    path = write(tmp_path / "x.flac", noise(12.4, 44100), 44100)
    curve, seconds, n_seg = Predictor(model, task, SR, 5 * SR, batch_size=2).file(path)
    assert n_seg == 3 and seconds == pytest.approx(12.4) and curve.shape == (930,)
    wave = torch.from_numpy(load(path, SR))
    with torch.no_grad():
        for s in segment_starts(wave.numel(), 5 * SR)[:2]:  # the back-to-back ones
            own = task.probabilities(model(wave[s:s + 5 * SR][None]))[0].numpy()
            i0 = round(s / SR * 75)
            assert np.allclose(curve[i0:i0 + len(own)], own, atol=1e-5)
    cells = row(task, path, curve, seconds, n_seg, 0.5)
    assert cells[1] == "ok" and cells[6] == len(cells[5].split())


def test_cli_writes_the_csv_and_summarises(genre_run, audio_dir, tmp_path, capsys, torch_threads):
    from musicpetl.cli import main

    out = tmp_path / "preds" / "out.csv"
    code = main(["predict", str(audio_dir / "c_48k.mp3"), str(audio_dir / "e_broken.wav"), "--run", str(genre_run),
                 "--out", str(out), "--device", "cpu", "--quiet"])
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["status"] for r in rows] == ["ok", "error"]
    err = capsys.readouterr().err
    assert "1 of 2 files predicted, 1 with an error row" in err and "per minute of audio" in err
    code = main(["predict", str(audio_dir / "e_broken.wav"), "--run", str(genre_run), "--out", str(out), "--quiet"])
    assert code == 1  # nothing could be predicted
    assert main(["predict", str(audio_dir), "--run", str(tmp_path / "none.safetensors")]) == 2  # one-line error
    assert "not found" in capsys.readouterr().err


def test_run_predict_refuses_bad_arguments(genre_run, audio_dir):
    with pytest.raises(InputError, match="threshold"):
        run_predict([str(audio_dir / "c_48k.mp3")], str(genre_run), device="cpu", threshold=0, progress=False)
    with pytest.raises(InputError, match="batch-size"):
        run_predict([str(audio_dir / "c_48k.mp3")], str(genre_run), device="cpu", batch_size=0, progress=False)
