"""Beat tracking: frame targets, madmom's DBN on the activations, mir_eval's metrics per track (so
they bootstrap), the frame head and loss learning beats from frame features, the synth corpus'
beat annotations (checked against madmom's own beat tracker), GTZAN's beats and the beat-file parser."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from musicpetl.data import parsers
from musicpetl.data.dataset import Context
from musicpetl.errors import InputError
from musicpetl.frame_head import FrameHead, stack_layers
from musicpetl.tasks import is_frame_level, make_task
from musicpetl.tasks.beat import beat_scores, beat_targets, check_beats, track_beats, upsample_activations
from test_datasets import server, tar_bytes  # noqa: F401  (server: the local HTTP server fixture)


@pytest.fixture(scope="module")
def synth_clips(tmp_path_factory):
    """Eight 6-s synth clips and their annotation rows (tempo and beats known by construction)."""
    from musicpetl.data.synth import generate_corpus

    out = tmp_path_factory.mktemp("beat_synth")
    return out, generate_corpus(out, 8, 6.0, seed=1, progress=False)


# ------------------------------------------------------------------------------------- targets

def test_targets_at_the_frame_rate_widened_by_one_frame():
    t = beat_targets([0.5, 1.0], n_frames=100, fps=75.0)
    assert t.dtype == np.float32 and t.shape == (100,)
    assert np.flatnonzero(t == 1).tolist() == [38, 75]  # round(0.5 * 75) = 38 (37.5 rounds to even: 38)
    assert np.flatnonzero(t == 0.5).tolist() == [37, 39, 74, 76]
    assert t.sum() == 2 + 4 * 0.5
    # a crop starting 0.9 s in: 1.0 s is frame 8 (at 25 Hz: round(0.1 * 25) = 2), 0.5 s is before it
    t = beat_targets([0.5, 1.0, 1.9], n_frames=20, fps=25.0, start=0.9)
    assert np.flatnonzero(t == 1).tolist() == [2] and np.flatnonzero(t == 0.5).tolist() == [1, 3]
    # a beat one frame outside still widens onto the edge frame; two beats close together keep their 1s
    t = beat_targets([0.5, 0.61, 0.61 + 2 / 75], n_frames=20, fps=75.0, start=0.5 + 1 / 75)
    assert t[0] == 0.5 and t[7] == 1 and t[9] == 1 and t[8] == 0.5 and t[6] == 0.5
    assert beat_targets([0.1], 10, 75.0, widen=0).tolist().count(0.5) == 0


@pytest.mark.parametrize("label,message", [
    ([1.0, 0.5], "strictly increase"), ([0.5, 0.5], "strictly increase"), ([-0.1, 1.0], "non-negative"),
    ([float("nan")], "finite"), ([[0.5, 1.0]], "flat list"), ("abc", "list of beat times"),
])
def test_bad_beat_labels_are_refused(label, message):
    with pytest.raises(InputError, match=message):
        check_beats(label)


def test_task_registry_and_frame_rate():
    task = make_task("beat", frame_rate=75)
    assert is_frame_level(task) and not is_frame_level(make_task("key"))
    assert task.n_outputs == 1 and task.primary_metric == "f_measure"
    assert task.frame_targets([0.5], 60, start=0.0)[38] == 1
    with pytest.raises(InputError, match="frame rate"):
        make_task("beat").frame_targets([0.5], 60)
    assert task.encode([0.5, 1.0]).tolist() == [0.5, 1.0]


# ------------------------------------------------------------------------------------- DBN and metrics

@pytest.mark.parametrize("fps", [75.0, 25.0])  # MERT's and MusicFM's frame rates
def test_ideal_activations_track_the_synth_beats_and_shifted_ones_score_lower(synth_clips, fps):
    _, rows = synth_clips
    task = make_task("beat", frame_rate=fps)
    n = int(6.0 * fps)
    labels = [r["beats"] for r in rows]
    ideal = [task.frame_targets(b, n) for b in labels]
    scores = task.item_scores(labels, ideal)
    assert set(scores) == {"f_measure", "cmlt", "amlt"}
    assert scores["f_measure"].min() >= 0.99 and scores["cmlt"].min() >= 0.99, (scores, [r["tempo"] for r in rows])
    # activations a quarter beat late: outside the 70 ms window at these tempi, on the right period
    late = [task.frame_targets(np.asarray(b) + 15.0 / r["tempo"], n) for b, r in zip(labels, rows)]
    late_scores = task.item_scores(labels, late)
    assert late_scores["f_measure"].mean() < 0.3 and late_scores["amlt"].mean() < scores["amlt"].mean()
    # the DBN recovers the beat grid from a noisy curve: still near 1, below the ideal one
    rng = np.random.default_rng(0)
    noisy = [np.clip(0.7 * a + rng.uniform(0, 0.3, a.shape), 0, 1) for a in ideal]
    noisy_f = task.item_scores(labels, noisy)["f_measure"]
    assert 0.8 < noisy_f.mean() <= scores["f_measure"].mean()
    # pure noise tracks no beats
    assert task.item_scores(labels, [rng.uniform(0, 1, n) for _ in labels])["f_measure"].mean() < 0.5


def test_metrics_are_per_track_and_bootstrap(synth_clips):
    from musicpetl.stats import mean_interval

    _, rows = synth_clips
    task = make_task("beat", frame_rate=75)
    labels = [r["beats"] for r in rows]
    good = [task.frame_targets(b, 450) for b in labels[:4]]
    bad = [task.frame_targets(np.asarray(b) + 0.2, 450) for b in labels[4:]]
    per = task.item_scores(labels, good + bad)
    assert per["f_measure"][:4].min() > 0.99 and per["f_measure"][4:].max() < 0.3
    assert task.metrics(labels, good + bad)["f_measure"] == pytest.approx(per["f_measure"].mean())
    # per-item scores -> a bootstrap interval, as evaluate builds for every metric (given enough items)
    many = task.item_scores(labels * 3, (good + bad) * 3)["f_measure"]
    iv = mean_interval(many, n_boot=200, seed=0)
    assert iv.low < iv.point < iv.high and iv.point == pytest.approx(many.mean())
    # mir_eval's first-5-s convention only on tracks of at least 15 s
    assert task.skip_seconds(450) == 0.0 and task.skip_seconds(30 * 75) == 5.0


def test_beat_scores_against_mir_eval_directly():
    import mir_eval

    ref = np.arange(0.5, 29.0, 0.5)
    est = ref[::2] + 0.03
    got = beat_scores(ref, est, skip=5.0)
    r, e = mir_eval.beat.trim_beats(ref), mir_eval.beat.trim_beats(est)
    assert got["f_measure"] == pytest.approx(mir_eval.beat.f_measure(r, e))
    assert got["amlt"] == pytest.approx(mir_eval.beat.continuity(r, e)[3]) and got["amlt"] > 0.9 > got["cmlt"]
    assert beat_scores(ref, []) == {"f_measure": 0.0, "cmlt": 0.0, "amlt": 0.0}


def test_upsampling_and_short_or_saturated_curves():
    a = np.array([0.0, 1.0, 0.0, 0.5])
    up = upsample_activations(a, 25.0, 100.0)
    assert len(up) == 13 and up[4] == 1.0 and up[2] == 0.5
    assert track_beats(np.zeros(10), 75.0).size == 0  # shorter than two beat periods at 55 BPM
    saturated = beat_targets(np.arange(0.3, 6, 0.5), 450, 75.0)  # exact 0s and 1s: log(0) in the DBN
    assert np.allclose(np.diff(track_beats(saturated, 75.0)), 0.5, atol=0.02)
    with pytest.raises(InputError, match="non-finite"):
        track_beats(np.full(450, np.nan), 75.0)


def test_decoding_is_remembered_per_curve(monkeypatch):
    """An evaluation decodes each test curve once, however many of its outputs read the beats."""
    from musicpetl.tasks import beat

    calls = []
    real = beat.track_beats
    monkeypatch.setattr(beat, "track_beats", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(beat, "_DECODED", type(beat._DECODED)())
    monkeypatch.setattr(beat, "DECODED_MAX", 2)
    task = make_task("beat", frame_rate=75.0)
    a = beat_targets(np.arange(0.3, 6, 0.5), 450, 75.0) * 0.8 + 0.1
    b = beat_targets(np.arange(0.2, 6, 0.4), 450, 75.0) * 0.8 + 0.1
    first = task.decode([a, b])
    again = task.decode([a.astype(np.float64), b])  # the same values in another dtype: the same curve
    assert len(calls) == 2 and all(np.array_equal(x, y) for x, y in zip(first, again))
    assert np.allclose(np.diff(first[0]), 0.5, atol=0.02) and np.allclose(np.diff(first[1]), 0.4, atol=0.02)
    assert not first[0].flags.writeable  # a shared result cannot be changed by a caller
    task.decode([a[:-1]])  # another curve: decoded, and the oldest entry (a) leaves the bounded memo
    task.decode([a])
    assert len(calls) == 4 and len(beat._DECODED) == 2
    # another frame rate is another decoding
    make_task("beat", frame_rate=25.0).decode([b])
    assert len(calls) == 5


# ------------------------------------------------------------------------------------- head and loss

def test_frame_head_shapes_and_layer_mixing():
    torch.manual_seed(0)
    hidden = [torch.randn(2, 30, 16) for _ in range(3)]
    for layer_input in ("last", "mean", "weighted"):
        head = FrameHead(16, 1, layer_input=layer_input, num_layers=3)
        x = stack_layers(hidden, layer_input)
        assert x.shape == ((2, 30, 16) if layer_input == "last" else (2, 3, 30, 16))
        assert head(x).shape == (2, 30)
    head = FrameHead(16, 1, layer_input="mean", num_layers=3).eval()
    assert torch.allclose(head(stack_layers(hidden, "mean")), head(torch.stack(hidden).mean(0)), atol=1e-6)
    assert FrameHead(16, 3)(hidden[0]).shape == (2, 30, 3)
    assert FrameHead(16, 1).net[-1].out_features == 1  # run_io reads n_outputs from here, as for Head


def test_loss_ignores_padding_frames():
    task = make_task("beat", frame_rate=75)
    logits = torch.zeros(2, 5, requires_grad=True)
    target = torch.tensor([[1.0, 0.5, 0.0, -1.0, -1.0], [0.0, 0.0, 1.0, 0.0, -1.0]])
    loss = task.loss(logits, target)
    loss.backward()
    assert loss.item() == pytest.approx(np.log(2))  # sigmoid(0) = 0.5 on every counted frame
    assert logits.grad[0, 3:].abs().sum() == 0 and logits.grad[1, 4] == 0
    assert task.loss(logits.unsqueeze(-1), target).item() == pytest.approx(np.log(2))
    with pytest.raises(InputError, match="differ in shape"):
        task.loss(torch.zeros(2, 4), target)
    assert task.probabilities(torch.zeros(1, 3, 1)).shape == (1, 3)
    # the masked mean equals BCE over the counted frames alone; all padding: 0, with a gradient
    rand = torch.randn(2, 5, generator=torch.Generator().manual_seed(0))
    ok = target >= 0
    expect = torch.nn.functional.binary_cross_entropy_with_logits(rand[ok], target[ok])
    assert torch.allclose(task.loss(rand, target), expect, rtol=1e-6, atol=0)
    padded = torch.zeros(2, 5, requires_grad=True)
    empty = task.loss(padded, torch.full((2, 5), -1.0))
    empty.backward()
    assert empty.item() == 0.0 and padded.grad is not None and padded.grad.abs().sum() == 0


def test_frame_head_learns_beats_from_frame_features(synth_clips, torch_threads):
    """The task's pieces end to end without a backbone: frame features whose first channel is an
    onset-like pulse on the beat frames (plus noise), crops of known start, the widened targets, the
    BCE loss, the frame head, then whole tracks through the DBN and mir_eval: F-measure near 1."""
    _, rows = synth_clips
    fps, dim, n = 75.0, 8, 450
    task = make_task("beat", frame_rate=fps)
    rng = np.random.default_rng(0)
    feats = []
    for r in rows:
        x = rng.normal(0, 1, (n, dim)).astype(np.float32)
        x[:, 0] += 4 * beat_targets(r["beats"], n, fps, widen=0)
        feats.append(x)
    torch.manual_seed(0)
    head = FrameHead(dim, 1, dropout=0.1)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    train = range(6)
    for _step in range(100):
        batch, targets = [], []
        for i in rng.choice(list(train), 4):
            start = int(rng.integers(0, n - 150))  # a 2-s crop
            batch.append(feats[i][start:start + 150])
            targets.append(task.frame_targets(rows[i]["beats"], 150, start=start / fps))
        loss = task.loss(head(torch.from_numpy(np.stack(batch))), torch.from_numpy(np.stack(targets)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    with torch.no_grad():
        acts = [task.probabilities(head(torch.from_numpy(feats[i])[None]))[0].numpy() for i in (6, 7)]
    scores = task.item_scores([rows[i]["beats"] for i in (6, 7)], acts)
    assert scores["f_measure"].min() > 0.95, scores


# ------------------------------------------------------------------------------------- synth beats

def test_synth_annotations_hold_the_beat_grid(synth_clips):
    out, rows = synth_clips
    for r in rows:
        beats = np.asarray(r["beats"])
        assert 0 <= beats[0] < 0.05 + 1e-6 and beats[-1] < r["length"] / r["sr"]
        assert np.allclose(np.diff(beats), 60.0 / r["tempo"], atol=2e-6)
        assert len(beats) >= int(6.0 * r["tempo"] / 60.0)
    assert json.loads((out / "annotations.jsonl").read_text().splitlines()[0])["beats"] == rows[0]["beats"]


def test_synth_dataset_offers_beat_and_regenerates_an_old_corpus(tmp_path):
    from musicpetl.data.datasets import synth

    c = Context(seed=0, synth={"n_clips": 12, "duration": 2.0}, split={"valid_share": 0.2, "test_share": 0.2},
                progress=False)
    synth.fetch(tmp_path, c)
    res = synth.build("beat", tmp_path, c)
    assert "beat" in synth.DATASET.tasks and res.classes == [] and len(res.rows) == 12
    assert all(r["label"] == sorted(r["label"]) and len(r["label"]) >= 2 for r in res.rows)
    # a corpus written before beats were annotated (no "beats", an old stamp) is generated again
    folder = tmp_path / "synth"
    ann = folder / "annotations.jsonl"
    old = [{k: v for k, v in json.loads(x).items() if k != "beats"} for x in ann.read_text().splitlines()]
    ann.write_text("".join(json.dumps(r) + "\n" for r in old))
    with pytest.raises(InputError, match="no beat times"):
        synth.build("beat", tmp_path, c)
    stamp = json.loads((folder / "corpus.json").read_text())
    stamp.pop("annotations")
    (folder / "corpus.json").write_text(json.dumps(stamp))
    synth.fetch(tmp_path, c)
    assert synth.build("beat", tmp_path, c).rows == res.rows


@pytest.mark.slow
def test_madmom_beat_tracker_agrees_with_the_synth_beats(synth_clips):
    """Independent evidence the written beats are the audible ones: madmom's pretrained RNN beat
    tracker + DBN (never saw this generator) finds them (AMLt allows the octave and off-beat
    ambiguities a clip without drums leaves), and beats half a beat late score far lower."""
    import librosa
    import soundfile as sf
    from madmom.audio.signal import Signal
    from madmom.features.beats import DBNBeatTrackingProcessor, RNNBeatProcessor

    out, rows = synth_clips
    rnn, dbn = RNNBeatProcessor(), DBNBeatTrackingProcessor(fps=100)
    right, late = [], []
    for r in rows:
        wave, sr = sf.read(out / r["audio_path"], dtype="float32")
        est = dbn(rnn(Signal(librosa.resample(wave, orig_sr=sr, target_sr=44100), sample_rate=44100)))
        right.append(beat_scores(r["beats"], est))
        late.append(beat_scores(np.asarray(r["beats"]) + 30.0 / r["tempo"], est))
    f = np.mean([s["f_measure"] for s in right])
    assert np.mean([s["amlt"] for s in right]) > 0.8 and f > 0.6, right
    assert f > np.mean([s["f_measure"] for s in late]) + 0.3


# ------------------------------------------------------------------------------------- beat files

def test_beat_file_parser_reads_the_published_formats():
    gtzan_tempo_beat = "0.217\t3\n0.695\t4\n1.173\t1\n"
    assert parsers.parse_beat_file(gtzan_tempo_beat) == ([0.217, 0.695, 1.173], None)
    assert parsers.parse_beat_file("0.1944671200 4\n0.8499773240 1\n")[0] == [0.19446712, 0.849977324]  # Ballroom
    assert parsers.parse_beat_file("9.430022675\t9.3\r\n9.9\t10.1\r\n")[0] == [9.430022675, 9.9]  # bar.beat, CRLF
    assert parsers.parse_beat_file("# comment\n\n0.5\n1.0,2\n")[0] == [0.5, 1.0]  # times only (six GTZAN jazz files)


@pytest.mark.parametrize("text,why", [
    ("", "no beats"), ("\n# only a comment\n", "no beats"), ("0.5\n0.5\n", "line 2: beat times must strictly increase"),
    ("1.0\n0.2\n", "line 2"), ("0.5\nx 1\n", "line 2: 'x' is not a beat time"), ("-0.2\n", "line 1"),
    ("nan\n", "line 1"),
])
def test_beat_file_parser_refuses_with_the_line(text, why):
    beats, reason = parsers.parse_beat_file(text)
    assert beats is None and why in reason


# ------------------------------------------------------------------------------------- GTZAN beats

GTZAN_LISTS = {"train": ["blues.00000", "jazz.00003"], "valid": ["reggae.00086"], "test": ["rock.00001", "pop.00002"]}
GTZAN_BEATS = {"blues.00000": "0.217\t3\n0.695\t4\n1.173\t1\n", "jazz.00003": "0.5\n1.1\n1.7\n",
               "rock.00001": "1.0\t1\n0.9\t2\n", "pop.00002": "0.3\t1\n0.8\t2\n"}  # reggae.00086: none, as in the repo


def _wav() -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(800, np.float32), 8000, format="WAV")
    return buf.getvalue()


def _gtzan_files() -> dict[str, dict[str, bytes]]:
    lists = {f"{s}_filtered.txt": "".join(f"{x.split('.')[0]}/{x}.wav\n" for x in items).encode()
             for s, items in GTZAN_LISTS.items()}
    beats = {f"beats/{parsers.gtzan_beats_filename(k)}": v.encode() for k, v in GTZAN_BEATS.items()}
    beats["tempo/gtzan_blues_00000.bpm"] = b"1.2e+02\n"
    audio = {f"genres/{x.split('.')[0]}/{x}.wav": _wav() for items in GTZAN_LISTS.values() for x in items}
    return {"lists": lists, "beats": beats, "audio": audio}


def _write(base: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(data)


def _check_gtzan_beats(root: Path, c: Context) -> None:
    from musicpetl.data.datasets import gtzan

    res = gtzan.build("beat", root, c)
    assert {r["key"]: (r["split"], r["label"]) for r in res.rows} == {
        "blues.00000": ("train", [0.217, 0.695, 1.173]), "jazz.00003": ("train", [0.5, 1.1, 1.7]),
        "pop.00002": ("test", [0.3, 0.8])}
    why = {d["key"]: d["reason"] for d in res.dropped}
    assert why["reggae.00086"] == "no beat annotation"
    assert "gtzan_rock_00001.beats: line 2: beat times must strictly increase" in why["rock.00001"]
    assert res.classes == []


def test_gtzan_beats_build_from_a_user_folder(tmp_path):
    from musicpetl.data.datasets import gtzan

    files = _gtzan_files()
    mine = tmp_path / "mine"
    _write(mine / "splits", files["lists"])
    _write(mine / "gtzan_tempo_beat", files["beats"])
    _write(mine / "audio", files["audio"])
    c = Context(seed=0, task="beat", overrides={"gtzan_dir": str(mine)}, progress=False)
    gtzan.fetch(tmp_path, c)  # a user folder: checks, downloads nothing
    _check_gtzan_beats(tmp_path, c)
    assert "beat" in gtzan.DATASET.tasks
    import shutil

    shutil.rmtree(mine / "gtzan_tempo_beat" / "beats")
    with pytest.raises(FileNotFoundError, match="gtzan_tempo_beat/beats/"):
        gtzan.fetch(tmp_path, c)


def test_gtzan_beats_fetched_from_a_local_server(tmp_path, server, monkeypatch):
    import hashlib

    from musicpetl.data import download as dl
    from musicpetl.data.datasets import gtzan
    from musicpetl.data.download import Source

    monkeypatch.setattr(dl, "RETRY_BACKOFF", 0.0)
    files = _gtzan_files()
    sources = []
    for name, data in files["lists"].items():
        server.files[f"/lists/{name}"] = data
        sources.append(Source(name, (f"{server.url}/lists/{name}",), sha256=hashlib.sha256(data).hexdigest()))
    monkeypatch.setattr(gtzan, "SPLIT_SOURCES", sources)
    server.files["/gh/tb.tar.gz"] = tar_bytes(files["beats"], top="gtzan_tempo_beat-fd9cafdebb64")
    monkeypatch.setattr(gtzan, "REPO_SOURCES", {
        "gtzan_tempo_beat": Source("tb.tar.gz", (f"{server.url}/gh/tb.tar.gz",)),
        "gtzan_key": Source("k.tar.gz", (f"{server.url}/gh/missing.tar.gz",))})
    server.files["/genres.tar.gz"] = tar_bytes(files["audio"])
    c = Context(seed=0, task="beat", overrides={"gtzan_archive": f"{server.url}/genres.tar.gz"}, progress=False)
    gtzan.fetch(tmp_path, c)  # data.task beat: the beat repository, not the key one (that URL is a 404)
    assert (tmp_path / "gtzan" / "gtzan_tempo_beat" / "beats" / "gtzan_jazz_00003.beats").is_file()
    assert "/gh/missing.tar.gz" not in server.requests
    _check_gtzan_beats(tmp_path, c)
    n = len(server.requests)
    gtzan.fetch(tmp_path, c)
    assert len(server.requests) == n  # all there: nothing fetched again
