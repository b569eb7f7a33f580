"""Baselines (README "Baselines"): CNNs trained from scratch (short-chunk CNN; Schreiber & Mueller's
directional CNNs) and an off-the-shelf estimator (madmom) through the same registry, checks, stages
and report as the foundation models.

Scratch networks: build, shapes, their input representations against librosa, a few training steps
that lower the loss. Refusals: every PETL method for a baseline, `none` for anything but an
estimator, tasks a baseline cannot do. madmom: the key class mapping and the tempo/beat outputs on
synthesized audio of known key and tempo, through the task's own decoding; the `none` method's run
file and its evaluation through train/evaluate's functions on a real prepared store. The report:
baseline rows in their own group, never bold or marked. End to end through DVC: slow tests.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from musicpetl.backbones import BACKBONES, build_backbone, load_backbone
from musicpetl.backbones.estimators import MadmomEstimator, estimate, key_order, tempo_curve
from musicpetl.checks import check_params
from musicpetl.config import ConfigError, parse_params
from musicpetl.errors import InputError
from musicpetl.model import PetlModel
from musicpetl.petl import METHODS, apply_method
from musicpetl.tasks import make_task
from musicpetl.tasks.key import KEY_NAMES, key_name

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = [n for n, s in BACKBONES.items() if s.kind == "scratch"]
ESTIMATORS = [n for n, s in BACKBONES.items() if s.kind == "estimator"]
SR = 24000


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def test_registry_has_the_baselines():
    assert SCRATCH == ["shortchunk-cnn", "dirfilter-key", "dirfilter-tempo"] and ESTIMATORS == ["madmom"]
    for name in SCRATCH + ESTIMATORS:
        spec = BACKBONES[name]
        assert spec.baseline and not spec.pretrained and spec.checkpoint is None and spec.tasks and spec.label
    assert not any(s.baseline for n, s in BACKBONES.items() if n not in SCRATCH + ESTIMATORS)


# -- scratch networks ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SCRATCH)
def test_scratch_network_builds_with_its_spec_and_shapes(name):
    spec = BACKBONES[name]
    model = build_backbone(name, num_layers=6, seed=0).eval()
    assert model.name == name and model.sample_rate == spec.sample_rate and model.hidden_size == spec.hidden_size
    assert model.default_segment_seconds == pytest.approx(spec.default_segment_seconds)
    x = 0.1 * torch.randn(2, int(spec.default_segment_seconds * SR), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hs = model(x, 6)
    assert len(hs) == 1 and hs[0].shape[0] == 2 and hs[0].shape[2] == spec.hidden_size
    # one hidden state per segment-long input (the global pooling of the authors' nets), seeded init
    assert hs[0].shape[1] == 1 or name == "dirfilter-tempo"
    again = build_backbone(name, num_layers=6, seed=0).eval()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    other = build_backbone(name, num_layers=6, seed=1)
    assert not all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    head = PetlModel(model, 10, 6, method="finetune").eval()
    with torch.no_grad():
        assert head(x).shape == (2, 10)


@pytest.mark.parametrize("name", SCRATCH)
def test_scratch_input_is_fp32_under_bf16_autocast(name):
    """train.precision bf16 autocasts the forward: the resampling and spectrogram (no parameters)
    still run in fp32, as in validation and evaluation (no autocast), so training sees their input."""
    model = build_backbone(name, num_layers=6, seed=0).eval()
    x = 0.1 * torch.randn(1, int(BACKBONES[name].default_segment_seconds * SR), generator=torch.Generator().manual_seed(0))
    plain = model.embed(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = model.embed(x)
    assert cast.dtype == torch.float32 and torch.equal(cast, plain)


def test_shortchunk_is_won_et_al_s_architecture():
    model = build_backbone("shortchunk-cnn")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128, 128, 256, 256, 256, 256, 512]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert model.mel.sample_rate == 16000 and model.mel.n_mels == 128 and model.net_rate == 16000
    assert model.default_segment_seconds == pytest.approx(59049 / 16000)


@pytest.mark.parametrize("name,shapes,bins", [("dirfilter-tempo", [(1, 5), (1, 3)], 40),
                                               ("dirfilter-key", [(5, 1), (3, 1)], 168)])
def test_directional_filters_point_the_right_way(name, shapes, bins):
    """Tempo: temporal (1 x N) filters on 40 mel bands; key: frequency (N x 1) filters on 168 CQT bins."""
    model = build_backbone(name)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 12 and {c.kernel_size for c in convs} == set(shapes)
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64, 64, 64, 64, 128, 128, 128, 128]
    with torch.no_grad():
        rep = model.embed(0.1 * torch.randn(1, 5 * SR))
    assert rep.shape[2] == bins
    assert rep.mean().abs() < 1e-4 and (rep.std(unbiased=False) - 1).abs() < 1e-3  # standardised per input


def test_tempo_mel_is_the_authors_librosa_mel():
    import librosa

    y = np.random.default_rng(0).standard_normal(11025 * 3).astype(np.float32) * 0.1
    ours = build_backbone("dirfilter-tempo").spec(torch.from_numpy(y)).numpy()
    ref = librosa.feature.melspectrogram(y=y, sr=11025, n_fft=1024, hop_length=512, power=1, n_mels=40, fmin=20,
                                         fmax=5000)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=5e-3, atol=1e-4 * ref.max())  # float32 vs librosa's float64


def test_constant_q_follows_librosa_cqt():
    """Our single-resolution CQT against librosa.cqt (multi-resolution): the same bins, tones peak
    in the same bin, and the magnitudes agree closely."""
    import librosa

    from musicpetl.backbones.dirfilter import KEY_FMIN

    sr = 22050
    t = np.arange(sr * 4) / sr
    y = sum(np.sin(2 * np.pi * f * t) for f in (110.0, 261.63, 659.26, 1760.0)).astype(np.float32) * 0.2
    ours = build_backbone("dirfilter-key").spec(torch.from_numpy(y)).numpy()
    ref = np.abs(librosa.cqt(y, sr=sr, hop_length=4096, fmin=KEY_FMIN, n_bins=168, bins_per_octave=24))
    assert ours.shape == ref.shape
    mid = slice(2, -2)  # frames away from the edges
    assert (ours[:, mid].mean(1).argsort()[-4:] == ref[:, mid].mean(1).argsort()[-4:]).all()
    corr = np.corrcoef(ours[:, mid].ravel(), ref[:, mid].ravel())[0, 1]
    assert corr > 0.99, corr


@pytest.mark.parametrize("name,task", [("shortchunk-cnn", "genre"), ("dirfilter-key", "key"),
                                       ("dirfilter-tempo", "tempo")])
def test_scratch_network_trains_and_its_loss_drops(name, task):
    """finetune on a tiny batch: every parameter trains and the loss goes down within a few steps."""
    torch.manual_seed(0)
    backbone = load_backbone(name, None, 6, seed=0)
    apply_method(backbone, "finetune")
    assert all(p.requires_grad for p in backbone.parameters())
    t = make_task(task, [f"c{i}" for i in range(4)] if task == "genre" else None)
    model = PetlModel(backbone, t.n_outputs, 6, method="finetune", head_dropout=0.0)
    g = torch.Generator().manual_seed(1)
    x = 0.1 * torch.randn(4, int(1.5 * SR), generator=g)
    labels = {"genre": [0, 1, 2, 3], "key": [0, 5, 12, 20], "tempo": [90, 120, 140, 100]}[task]
    y = torch.from_numpy(np.stack([t.encode(lab) for lab in labels]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = t.loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0] and np.mean(losses[-3:]) < np.mean(losses[:3]), losses


# -- refusals --------------------------------------------------------------------------------------

def _params(**edits):
    raw = yaml.safe_load((ROOT / "tests/fixtures/params.yaml").read_text())
    for path, value in edits.items():
        group, key = path.split("__")
        raw[group][key] = value
    return parse_params(raw)


@pytest.mark.parametrize("name,task", [("shortchunk-cnn", "genre"), ("dirfilter-key", "key"),
                                       ("dirfilter-tempo", "tempo"), ("madmom", "key")])
def test_checks_refuse_every_other_method_for_a_baseline(name, task):
    own = "none" if BACKBONES[name].kind == "estimator" else "finetune"
    check_params(_params(backbone__name=name, petl__method=own, data__task=task))  # the one it takes
    for method in METHODS:
        if method == own:
            continue
        with pytest.raises(ConfigError, match=rf"petl.method = '{method}' does not apply to {name} .*allowed: {own}$"):
            check_params(_params(backbone__name=name, petl__method=method, data__task=task))


def test_checks_refuse_none_for_a_foundation_model_and_a_checkpoint_for_a_baseline():
    with pytest.raises(ConfigError, match="petl.method = 'none' does not apply to mert-tiny .*allowed: finetune, probing"):
        check_params(_params(petl__method="none"))
    with pytest.raises(ConfigError, match="backbone.checkpoint = 'x.pt' but shortchunk-cnn is randomly initialised"):
        check_params(_params(backbone__name="shortchunk-cnn", petl__method="finetune", backbone__checkpoint="x.pt"))


@pytest.mark.parametrize("name,method,task", [("madmom", "none", "genre"), ("madmom", "none", "tagging"),
                                              ("shortchunk-cnn", "finetune", "key"),
                                              ("dirfilter-key", "finetune", "tempo"),
                                              ("dirfilter-tempo", "finetune", "genre")])
def test_checks_refuse_tasks_a_baseline_cannot_do(name, method, task):
    with pytest.raises(ConfigError, match=rf"data.task = '{task}' but {name} is a \w+ baseline for"):
        check_params(_params(backbone__name=name, petl__method=method, data__task=task))


def test_baselines_ignore_num_layers_but_refuse_a_layer_mix():
    check_params(_params(backbone__name="dirfilter-key", petl__method="finetune", data__task="key",
                         backbone__num_layers=12))
    with pytest.raises(ConfigError, match="train.layer_input = 'weighted' but shortchunk-cnn gives one hidden"):
        check_params(_params(backbone__name="shortchunk-cnn", petl__method="finetune", train__layer_input="weighted"))


@pytest.mark.parametrize("name", SCRATCH + ESTIMATORS)
def test_apply_method_refuses_petl_methods_for_baselines(name):
    """No PETL method reaches a baseline, even past the checks (a hand-made call or run file)."""
    bare = build_backbone(name)
    for method, spec in METHODS.items():
        bb = copy.deepcopy(bare)
        if BACKBONES[name].kind in spec.kinds:
            apply_method(bb, method)
            continue
        with pytest.raises(InputError, match=f"does not apply to {name}"):
            apply_method(bb, method)
    with pytest.raises(InputError, match="does not apply to mert-tiny, a foundation backbone; allowed: .*lora"):
        apply_method(build_backbone("mert-tiny", 1), "none")


# -- madmom ----------------------------------------------------------------------------------------

def _chords(chords, dur=0.75, reps=3) -> np.ndarray:
    """Piano-like triads (root an octave lower too), `reps` times through the progression, at 24 kHz."""
    t = np.arange(int(SR * dur)) / SR
    env = np.minimum(1.0, t / 0.02) * np.exp(-1.5 * t)
    out = []
    for _ in range(reps):
        for chord in chords:
            notes = [m - 12 for m in chord] + list(chord)
            x = sum(np.sin(2 * np.pi * 440 * 2 ** ((m - 69) / 12) * h * t) / h ** 1.5 for m in notes for h in range(1, 6))
            out.append(x * env / len(notes))
    return (0.5 * np.concatenate(out)).astype(np.float32)


C_MAJOR = [[60, 64, 67], [65, 69, 72], [67, 71, 74], [60, 64, 67]]  # C F G C
A_MINOR = [[57, 60, 64], [62, 65, 69], [64, 68, 71], [57, 60, 64]]  # Am Dm E Am


def _clicks(bpm: float, seconds: float = 12.0, start: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.zeros(int(SR * seconds), np.float32)
    times = np.arange(start, seconds - 0.1, 60.0 / bpm)
    for b in times:
        i = int(b * SR)
        y[i:i + 240] += rng.standard_normal(240).astype(np.float32) * np.hanning(240).astype(np.float32)
    return y, times


def test_key_order_maps_madmom_labels_onto_our_keys():
    from madmom.features.key import KEY_LABELS

    order = key_order(KEY_NAMES)
    assert sorted(order) == list(range(24))
    assert KEY_LABELS[order[KEY_NAMES.index("C major")]] == "C major"
    assert KEY_LABELS[order[KEY_NAMES.index("A# major")]] == "Bb major"
    assert KEY_LABELS[order[KEY_NAMES.index("C# minor")]] == "C# minor"
    assert KEY_LABELS[order[KEY_NAMES.index("G# minor")]] == "G# minor"
    assert KEY_LABELS[order[KEY_NAMES.index("D# minor")]] == "D# minor"
    with pytest.raises(InputError):
        key_order(["C major"] * 24)


@pytest.mark.parametrize("chords,expected", [(C_MAJOR, "C major"), (A_MINOR, "A minor")])
def test_madmom_key_on_synthesized_progressions(chords, expected):
    task = make_task("key")
    probs = estimate("key", _chords(chords), SR, task.classes)
    assert probs.shape == (24,) and probs.sum() == pytest.approx(1.0, abs=1e-4)
    assert key_name(task.decode(probs[None])[0]) == expected


def test_tempo_curve_decodes_to_the_exact_tempo():
    task = make_task("tempo")
    for bpm in (40.0, 117.64705882, 120.0, 181.818, 249.5):
        assert task.decode(tempo_curve(bpm, task.n_outputs)[None])[0] == pytest.approx(bpm, abs=1e-6)


@pytest.mark.parametrize("bpm", [120.0, 95.0])
def test_madmom_tempo_on_clicks_of_known_tempo(bpm):
    from musicpetl.backbones.estimators import madmom_tempi

    task = make_task("tempo")
    y, _ = _clicks(bpm)
    curve = estimate("tempo", y, SR, task.classes)
    decoded = task.decode(curve[None])[0]
    assert decoded == pytest.approx(madmom_tempi(y, SR)[0, 0], abs=1e-6)  # madmom's top tempo, exactly
    assert abs(decoded - bpm) <= 0.04 * bpm  # Accuracy 1's tolerance
    assert task.metrics([bpm], curve[None])["acc1"] == 1.0


def test_madmom_beat_curves_are_madmoms_beat_pipeline():
    """RNN activations at 100 fps; the beat task's DBN (madmom's, at 100 fps) finds the clicks."""
    y, times = _clicks(120.0)
    act = estimate("beat", y, SR)
    assert act.ndim == 1 and abs(act.size - 12.0 * 100) <= 1 and 0 <= act.min() and act.max() <= 1
    task = make_task("beat", frame_rate=BACKBONES["madmom"].frame_rate)
    beats = task.decode([act])[0]
    assert task.item_scores([times], [act])["f_measure"][0] > 0.95, beats
    with pytest.raises(InputError, match="madmom has no estimator for task 'genre'"):
        estimate("genre", y, SR, ("a", "b"))


def _store(tmp_path: Path, task: str):
    """A real prepared store of synthesized key audio: C major and A minor in every split."""
    from musicpetl.data.store import AudioStore, prepare_store

    items = []
    for split in ("train", "valid", "test"):
        for name, chords, label in (("c", C_MAJOR, KEY_NAMES.index("C major")), ("a", A_MINOR, KEY_NAMES.index("A minor"))):
            key = f"{split}-{name}"
            sf.write(tmp_path / f"{key}.wav", _chords(chords), SR)
            items.append({"key": key, "split": split, "audio_path": f"{key}.wav", "label": label})
    prepare_store(items, tmp_path, tmp_path / "prepared", SR, {"dataset": "synth", "task": task}, progress=False)
    return AudioStore(tmp_path / "prepared")


def test_none_method_run_file_and_evaluation(tmp_path):
    """train() with method none writes a run file that records madmom and holds no tensors; the
    reloaded run gives madmom's outputs through predict_tracks, scored as any run."""
    from safetensors.torch import load_file

    from musicpetl.evaluate import predict_tracks, score
    from musicpetl.run_io import load_run, read_config
    from musicpetl.train import train

    store = _store(tmp_path, "key")
    task = make_task("key")
    p = _params(backbone__name="madmom", petl__method="none", data__task="key")
    check_params(p)
    run = tmp_path / "run.safetensors"
    summary = train(p, task, store, None, run, progress=False)
    assert summary["steps"] == 0 and summary["trainable_backbone_params"] == 0
    assert summary["best_valid"] == pytest.approx(1.0)  # both validation keys right
    assert load_file(str(run)) == {}
    cfg = read_config(run)
    assert cfg["backbone"] == "madmom" and cfg["method"] == "none" and cfg["task"] == "key"
    model = load_run(run)
    assert isinstance(model.backbone, MadmomEstimator) and model.method == "none"
    probs = predict_tracks(model, store, "test", task, 30.0, progress=False)
    labels = [r["label"] for r in store.rows("test")]
    assert [key_name(k) for k in task.decode(probs)] == ["C major", "A minor"]
    assert score(task, labels, probs, n_boot=0)["weighted_score"] == 1.0


@pytest.mark.parametrize("task_name", ["tempo", "beat"])
def test_predict_with_a_madmom_run(tmp_path, task_name):
    """`musicpetl predict` with an estimator's run reads each file whole and gives madmom's answer:
    a 120 BPM click track -> 120 BPM (4 %), its beats (F-measure > 0.9); a broken file -> an error row."""
    import csv

    import mir_eval

    from musicpetl.predict import run_predict
    from musicpetl.run_io import save_run

    task = make_task(task_name, frame_rate=100.0)
    model = PetlModel(build_backbone("madmom", 1), task.n_outputs, 1, method="none", frame_level=task_name == "beat")
    run = tmp_path / "run.safetensors"
    save_run(run, model, "none", {}, "madmom", 1, task_info={"task": task_name, "seed": 0, "checkpoint": "",
                                                             **({"frame_level": True} if task_name == "beat" else {})})
    y, times = _clicks(120.0, seconds=12.0)
    sf.write(tmp_path / "clicks.wav", y, SR)
    (tmp_path / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    out = tmp_path / "pred.csv"
    run_predict([str(tmp_path / "clicks.wav"), str(tmp_path / "broken.wav")], run=str(run), out=str(out))
    rows = {Path(r["file"]).name: r for r in csv.DictReader(out.open())}
    assert rows["broken.wav"]["status"] == "error" and rows["broken.wav"]["error"]
    ok = rows["clicks.wav"]
    assert ok["status"] == "ok" and float(ok["seconds"]) == pytest.approx(12.0)
    if task_name == "tempo":
        assert float(ok["predicted"]) == pytest.approx(120.0, rel=0.04)
    else:
        beats = np.asarray([float(t) for t in ok["predicted"].split()])
        assert mir_eval.beat.f_measure(times, beats) > 0.9


# -- the report ------------------------------------------------------------------------------------

def test_report_shows_baselines_in_their_own_group(tmp_path):
    from test_report_table import Fixture, first

    from musicpetl.analysis.report import MARK, build_report, render_html, render_markdown, report_json
    from musicpetl.analysis.table import build_table

    f = Fixture(tmp_path)
    f.run("ft-m", "mert-tiny", "finetune", first(100))
    f.run("pr-m", "mert-tiny", "probing", first(110))
    f.run("lora-m", "mert-tiny", "lora", first(150))
    # the scratch CNN beats every PETL system: still not bold, never tested, never marked
    f.run("sc", "shortchunk-cnn", "finetune", first(180))
    f.run("mm-key", "madmom", "none", first(40), task="key", keys=[f"k{i}" for i in range(60)],
          labels=[i % 24 for i in range(60)])
    f.run("pr-m-key", "mert-tiny", "probing", first(30), task="key", keys=[f"k{i}" for i in range(60)],
          labels=[i % 24 for i in range(60)])
    t = build_table(f.exps, f.preds, n_boot=200)
    cells = {(r.backbone, r.method, col.id): c for (r, col), c in t.cells.items()}
    sc, lora = cells[("shortchunk-cnn", "finetune", "synth/genre")], cells[("mert-tiny", "lora", "synth/genre")]
    assert sc.value == pytest.approx(0.9) and sc.low is not None and sc.high is not None
    assert not sc.best and not sc.better and sc.tests == {} and sc.p_cell is None
    assert lora.best and lora.better  # bold and mark among the PETL systems, as without the baseline
    mm = cells[("madmom", "none", "synth/key")]
    pr_key = cells[("mert-tiny", "probing", "synth/key")]
    assert mm.value > pr_key.value and not mm.best and pr_key.best
    assert [r.baseline for r in t.rows][-2:] == ["scratch", "estimator"] and t.rows[0].baseline is None  # scratch first
    assert t.n_tested == 1  # only LoRA
    report = build_report(f.exps, f.preds, n_boot=200)
    md = render_markdown(report)
    sc_line = next(ln for ln in md.splitlines() if "Short-chunk CNN (scratch)" in ln)
    mm_line = next(ln for ln in md.splitlines() if "madmom (no training)" in ln)
    assert sc_line.startswith("| Baselines ") and mm_line.startswith("| Baselines ")
    assert "0.900 (" in sc_line and "**" not in sc_line and MARK not in sc_line
    assert "**" not in mm_line and "–" in mm_line  # value with its interval, not bold
    assert "Baselines: systems without a foundation model" in md
    assert "Short-chunk CNN (scratch)" in render_html(report)
    js = report_json(report)
    assert {c["label"] for c in js["cells"] if c["baseline"]} == {"Short-chunk CNN (scratch)", "madmom (no training)"}


# -- end to end through DVC ------------------------------------------------------------------------

@pytest.mark.slow
def test_pipeline_runs_the_scratch_and_the_estimator_baselines(tmp_path):
    """`dvc exp run` with the scratch CNN on the synth default (genre), then madmom on synth key:
    every stage runs (the feature cache is a marker file, correlate says why it does not apply)."""
    import h5py
    import json

    from pipeline_repo import make_repo, sh

    repo = make_repo(tmp_path / "repo")
    sh("dvc", "exp", "run", "-S", "data.task=genre", "-S", "backbone.name=shortchunk-cnn",
       "-S", "petl.method=finetune", "-S", "train.max_steps=4", "-S", "train.eval_every=2", cwd=repo)
    with h5py.File(repo / "data/features.h5") as h5:
        assert h5.attrs["kind"] == "scratch" and h5.attrs["num_layers"] == 0 and not list(h5)
    test = json.loads((repo / "metrics/test.json").read_text())
    assert test["task"] == "genre" and test["method"] == "finetune" and 0 <= test["accuracy"] <= 1
    assert "not_applicable" in json.loads((repo / "metrics/correlate.json").read_text())
    train = json.loads((repo / "metrics/train.json").read_text())
    assert train["backbone"] == "shortchunk-cnn" and train["trainable_backbone_params"] > 3_000_000

    sh("dvc", "exp", "run", "-S", "data.task=key", "-S", "backbone.name=madmom", "-S", "petl.method=none", cwd=repo)
    train = json.loads((repo / "metrics/train.json").read_text())
    assert train["backbone"] == "madmom" and train["steps"] == 0 and train["trainable_backbone_params"] == 0
    test = json.loads((repo / "metrics/test.json").read_text())
    assert test["task"] == "key" and test["method"] == "none" and 0 <= test["weighted_score"] <= 1
    assert (repo / "dvclive/train/plots/metrics").is_dir()
