"""Beat tracking through the pipeline's code: crop targets (audio path and cached front end), the
frame-level model of every method on every tiny backbone (trains, merges, round-trips a run file),
training with validation on a beat store, evaluation's stored predictions read back for paired
comparison, and `dvc exp run -S data.task=beat` end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from musicpetl.petl import prepare_for_inference
from musicpetl.run_io import load_run, save_run
from musicpetl.tasks import make_task
from test_petl import ALL, BACKBONES, SMALL, adapted, bare, two_steps, wave  # noqa: F401  (bare, wave: fixtures)

from musicpetl.model import PetlModel

CLIP_SECONDS = 6.0


@pytest.fixture(scope="module")
def beat_store(tmp_path_factory):
    """An AudioStore of 12 synth clips of 6 s with their beat times (8 train, 2 valid, 2 test)."""
    from musicpetl.data.store import AudioStore, prepare_store
    from musicpetl.data.synth import SAMPLE_RATE, generate_corpus

    root = tmp_path_factory.mktemp("beat_corpus")
    rows = generate_corpus(root / "raw", 12, CLIP_SECONDS, seed=0, progress=False)
    assert all(r["beats"] for r in rows)
    split = {8: "test", 9: "valid", 10: "valid", 11: "test"}
    items = [{"key": r["key"], "split": split.get(i, "train"), "audio_path": r["audio_path"], "label": r["beats"]}
             for i, r in enumerate(rows)]
    prepare_store(items, root / "raw", root / "store", SAMPLE_RATE, {"dataset": "synth", "task": "beat"},
                  progress=False)
    return AudioStore(root / "store")


# -- targets ---------------------------------------------------------------------------------------

def test_crop_targets_follow_the_crop_and_mark_padding():
    """A crop starting at 1 s sees the beats shifted by 1 s; frames past the clip's end are -1."""
    from musicpetl.data.loaders import CropTargets

    task = make_task("beat", frame_rate=50.0)
    rows = [{"label": [0.5, 1.0, 1.5, 2.0], "length": 24000 * 2}]  # a 2-s clip
    t = CropTargets(task, rows, 24000, n_frames=100)  # 2-s crops at 50 frames/s
    whole = t(0, 0)
    assert whole[[25, 50, 75]].tolist() == [1.0, 1.0, 1.0] and whole[24] == 0.5 and whole.min() == 0.0
    late = t(0, 24000)  # starts at 1 s: beats at 1.0, 1.5, 2.0 s -> frames 0, 25, (50: past the end)
    assert late[0] == 1.0 and late[25] == 1.0 and late[1] == 0.5
    assert (late[50:] == -1).all() and (late[:50] >= 0).all()
    genre = make_task("genre", ["a", "b"])
    assert CropTargets(genre, [{"label": 1, "length": 10}], 24000)(0, 0) == 1


def test_frame_level_crop_targets_need_the_frame_count():
    from musicpetl.data.loaders import CropTargets

    with pytest.raises(ValueError, match="n_frames"):
        CropTargets(make_task("beat", frame_rate=75.0), [{"label": [1.0], "length": 100}], 24000)


@pytest.mark.parametrize("name", BACKBONES)
def test_frame_head_gives_one_logit_per_backbone_frame(bare, name):  # noqa: F811
    """The targets' length (backbone.n_frames of the crop) is what the model outputs, for every
    layer input; the loss accepts them."""
    task = make_task("beat", frame_rate=bare[name].frame_rate)
    x = 0.1 * torch.randn(2, 24000, generator=torch.Generator().manual_seed(0))
    for layer_input in ("last", "mean", "weighted"):
        model = PetlModel(bare[name], 1, 3, method="finetune", layer_input=layer_input, frame_level=True).eval()
        with torch.no_grad():
            out = model(x)
        assert out.shape == (2, bare[name].n_frames(24000)), (name, layer_input, out.shape)
        y = torch.from_numpy(np.stack([task.frame_targets([0.2, 0.7], out.shape[1])] * 2))
        assert torch.isfinite(task.loss(out, y))


# -- every method x every tiny backbone -------------------------------------------------------------

@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("method", ALL)
def test_every_method_tracks_beats_on_every_backbone(bare, wave, tmp_path, name, method):  # noqa: F811
    """A frame-level model of the method trains (what the method trains moves, BCE on frame
    targets), its run file records the frame head and reloads to the same frame curves bit for bit,
    and the merged model (what evaluation runs) gives the same curves."""
    bb = adapted(bare, name, method, SMALL.get(method))
    torch.manual_seed(0)
    model = PetlModel(bb, 1, 6, method=method, head_dropout=0.0, frame_level=True).train()
    task = make_task("beat", frame_rate=bb.frame_rate)
    n = bb.n_frames(wave.shape[1])
    y = torch.from_numpy(np.stack([task.frame_targets([0.05 + 0.1 * i, 0.25 + 0.1 * i], n) for i in range(4)]))
    moved = two_steps(model, lambda: task.loss(model(wave), y))
    assert {k for k in moved if k.startswith("backbone.")} or method == "probing", f"{name} {method}: nothing trained"
    assert any(k.startswith("head.") for k in moved)
    model.eval()
    with torch.no_grad():
        expected = model(wave)
    assert expected.shape == (4, n)
    path = tmp_path / "run.safetensors"
    save_run(path, model, method, SMALL.get(method, {}), name, 6,
             task_info={"task": "beat", "seed": 0, "checkpoint": "", "frame_level": True})
    loaded = load_run(path)
    assert loaded.frame_level and loaded.config["frame_level"] is True
    with torch.no_grad():
        assert torch.equal(loaded(wave), expected)
        loaded.backbone = prepare_for_inference(loaded.backbone, method)
        torch.testing.assert_close(loaded(wave), expected, rtol=0, atol=1e-5)


def test_the_run_file_says_whether_the_head_is_frame_level(bare, wave, tmp_path):  # noqa: F811
    """A one-output head has the same tensors either way, so the run file's `frame_level` is what
    decides: with it the reloaded model gives (B, T) curves, without it (B, 1) track outputs."""
    model = PetlModel(adapted(bare, BACKBONES[0], "probing"), 1, 6, method="probing", frame_level=True).eval()
    framed, plain = tmp_path / "framed.safetensors", tmp_path / "plain.safetensors"
    save_run(framed, model, "probing", {}, BACKBONES[0], 6, task_info={"task": "beat", "frame_level": True})
    save_run(plain, model, "probing", {}, BACKBONES[0], 6, task_info={"task": "beat"})
    n = bare[BACKBONES[0]].n_frames(wave.shape[1])
    with torch.no_grad():
        assert load_run(framed)(wave).shape == (len(wave), n)
        assert load_run(plain)(wave).shape == (len(wave), 1)


def test_probing_on_cached_frames_equals_the_frozen_backbone(beat_store, tmp_path, torch_threads):
    """The frame cache (features.cache_features(frames=True)): the frame head on cached segment
    frames, stitched per track, gives the curves of the same head on the frozen backbone's audio
    path (evaluate.predict_tracks), for one layer and for a mix of layers; a cache without frames
    is refused with a message."""
    from musicpetl.backbones import build_backbone
    from musicpetl.errors import InputError
    from musicpetl.evaluate import predict_tracks, predict_tracks_from_cache
    from musicpetl.features import FeatureCache, cache_features

    bb = build_backbone("mert-tiny", 3, seed=0).eval()
    task = make_task("beat", frame_rate=bb.frame_rate)
    path = tmp_path / "features.h5"
    counts = cache_features(beat_store, bb, path, 3, 2.5, batch_size=4, progress=False, frames=True, dtype="float32")
    assert counts["test"]["frames"] == sum(bb.n_frames(int(2.5 * 24000)) * 3 for _ in beat_store.rows("test"))
    cache = FeatureCache(path)
    for layer_input in ("last", "weighted"):
        torch.manual_seed(1)
        model = PetlModel(bb, 1, 3, method="probing", layer_input=layer_input, frame_level=True).eval()
        if layer_input == "weighted":
            with torch.no_grad():
                model.head.layer_weights.copy_(torch.tensor([0.3, -0.2, 0.5]))
        audio = predict_tracks(model, beat_store, "test", task, 2.5, progress=False)
        cached = predict_tracks_from_cache(model.head, cache, "test", 3, task)
        assert [len(c) for c in cached] == [len(c) for c in audio]
        assert max(float(np.abs(a - c).max()) for a, c in zip(audio, cached)) < 1e-5
    pooled = tmp_path / "pooled.h5"
    cache_features(beat_store, bb, pooled, 3, 2.5, progress=False)
    with pytest.raises(InputError, match="time-pooled features only"):
        FeatureCache(pooled).frames("test", 3)


# -- train, evaluate, compare ------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["probing", "lora"])
def test_train_and_evaluate_beat_on_synth(beat_store, tmp_path, method, torch_threads):
    """train() on a beat store: probing on the cache's frames, LoRA with the backbone in the loop;
    validation scores beats (F-measure); the run reloads and evaluation's curves, one per test
    track and as long as the track, are scored and stored, and read back by the comparison code to
    the same per-item scores."""
    from conftest import fixture_params

    from musicpetl.analysis.compare import compare, read_predictions
    from musicpetl.evaluate import predict_tracks, save_predictions, save_predictions_csv, score
    from musicpetl.train import train

    p = fixture_params({"data.task": "beat", "petl.method": method, "train.max_steps": 6, "train.eval_every": 3,
                        "train.batch_size": 4, "train.crop_seconds": 2.0, "backbone.segment_seconds": 3.0,
                        "train.checkpoint_every": 0})
    task = make_task("beat", frame_rate=75.0)  # mert-tiny
    cache = None
    if method == "probing":
        from musicpetl.backbones import load_from_params
        from musicpetl.features import FeatureCache, cache_features

        cache_features(beat_store, load_from_params(p.backbone, p.seed), tmp_path / "f.h5", 6, 3.0, progress=False,
                       frames=True)
        cache = FeatureCache(tmp_path / "f.h5")
    seen = []
    summary = train(p, task, beat_store, cache, tmp_path / "run.safetensors", progress=False,
                    on_validate=lambda step, s, probs: seen.append((step, s, probs)))
    assert [s for s, _, _ in seen] == [3, 6] and 0.0 <= summary["best_valid"] <= 1.0
    assert len(seen[0][2]) == 2 and all(c.ndim == 1 for c in seen[0][2])
    model = load_run(tmp_path / "run.safetensors")
    assert model.frame_level and model.config["task"] == "beat"
    curves = predict_tracks(model, beat_store, "test", task, 3.0, progress=False)
    rows = beat_store.rows("test")
    assert [len(c) for c in curves] == [round(r["length"] / 24000 * 75) for r in rows]
    assert all(np.isfinite(c).all() and (c >= 0).all() and (c <= 1).all() for c in curves)
    labels = [r["label"] for r in rows]
    result = score(task, labels, curves, n_boot=50, train_labels=[r["label"] for r in beat_store.rows("train")])
    assert result["n"] == 2 and {"f_measure", "cmlt", "amlt"} <= set(result) and "f_measure_low" not in result
    npz = tmp_path / "predictions.npz"
    save_predictions(npz, [r["key"] for r in rows], labels, curves, task)
    back = read_predictions(str(npz), name=method)
    assert back.frame_rate == 75.0 and [len(c) for c in back.probs] == [len(c) for c in curves]
    assert back.labels == labels
    assert task.item_scores(back.labels, back.probs)["f_measure"].tolist() == pytest.approx(
        task.item_scores(labels, curves)["f_measure"].tolist(), abs=1e-6)
    rows_cmp = compare([back, read_predictions(str(npz), name="probing")], n_boot=20)
    assert rows_cmp[0]["f_measure"] == pytest.approx(result["f_measure"], abs=1e-6)
    csv_path = tmp_path / "predictions.csv"
    save_predictions_csv(csv_path, [r["key"] for r in rows], labels, curves, task)
    header = csv_path.read_text().splitlines()[0].split(",")
    assert header == ["key", "label", "predicted", "f_measure", "cmlt", "amlt"]


def test_frame_level_predictions_file_is_validated(tmp_path):
    from musicpetl.analysis.compare import read_predictions
    from musicpetl.errors import InputError

    bad = tmp_path / "bad.npz"
    np.savez(bad, keys=np.asarray(["a", "b"]), labels=np.asarray([json.dumps([1.0])] * 2), task="beat",
             probs=np.zeros(10, np.float32), probs_offsets=np.asarray([0, 4, 9]), frame_rate=75.0)
    with pytest.raises(InputError, match="offsets 0 .. 10"):
        read_predictions(str(bad))
    np.savez(bad, keys=np.asarray(["a", "b"]), labels=np.asarray([json.dumps([1.0])] * 2), task="beat",
             probs=np.zeros(10, np.float32), probs_offsets=np.asarray([0, 4, 10]))
    with pytest.raises(InputError, match="frame_rate"):
        read_predictions(str(bad))


def test_cached_front_end_windows_get_the_audio_crops_targets(beat_store, tmp_path, torch_threads):
    """With train.cache_frontend, each cached window's targets are those CropDataset gives for the
    audio crop at the same start."""
    from musicpetl import frontend_cache
    from musicpetl.backbones import build_backbone
    from musicpetl.checkpointing import store_fingerprint
    from musicpetl.data.loaders import CropDataset, CropTargets

    bb = build_backbone("mert-tiny", 2, seed=0).eval()
    task = make_task("beat", frame_rate=bb.frame_rate)
    crop = 2 * 24000
    cache = frontend_cache.ensure(tmp_path, beat_store, "train", bb, crop, crop, "float32",
                                  store_fingerprint(beat_store), progress=False)
    rows = beat_store.rows("train")
    frames = frontend_cache.FrameDataset(cache, CropTargets(task, rows, 24000, bb.n_frames(crop)))
    crops = CropDataset(beat_store, "train", task, crop, bb.n_frames(crop))
    for i in range(len(rows)):
        for r in range(int(cache.count[i])):
            start = int(cache.window_start[frames.window(i, r)])
            _, y_cached = frames[(i, r)]
            _, y_audio = crops[(i, start)]  # CropDataset's start is r mod (length - crop + 1)
            assert torch.equal(y_cached, y_audio)


# -- the pipeline ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_dvc_exp_run_beat_end_to_end(tmp_path):
    """`dvc exp run -S data.task=beat` on the (tiny) embedded default: every stage runs, the test
    metrics are mir_eval's beat metrics with n, the predictions hold one curve per test track; then
    a PETL method (LoRA) on the same data reuses download, split, prepare and the feature cache."""
    from pipeline_repo import make_repo, sh

    repo = make_repo(tmp_path / "repo")
    sh("dvc", "exp", "run", "-S", "data.task=beat", cwd=repo)
    test = json.loads((repo / "metrics/test.json").read_text())
    assert test["task"] == "beat" and test["method"] == "probing" and test["n"] == 8
    assert {"f_measure", "cmlt", "amlt"} <= set(test) and 0.0 <= test["f_measure"] <= 1.0
    with np.load(repo / "data/predictions.npz") as npz:
        assert len(npz["probs_offsets"]) == 9 and float(npz["frame_rate"]) == 75.0
    res = sh("dvc", "exp", "run", "-S", "data.task=beat", "-S", "petl.method=lora", cwd=repo)
    out = res.stdout + res.stderr
    for stage in ("download", "split", "augment", "prepare", "cache_features"):
        assert f"Stage '{stage}' didn't change, skipping" in out or f"'{stage}' is cached" in out, stage
    assert "Running stage 'train'" in out
    lora = json.loads((repo / "metrics/test.json").read_text())
    assert lora["method"] == "lora" and lora["task"] == "beat" and lora["n"] == 8
