"""train() for a few steps on tiny configs: the training loss falls, and the run file holds the
best validation step's model, not the last step's (probing on the feature cache, and a PETL
method with the backbone in the loop)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import SEGMENT_SECONDS, Recorder, fixture_params
from musicpetl.evaluate import predict_tracks, predict_tracks_from_cache
from musicpetl.features import FeatureCache, cache_features
from musicpetl.run_io import load_run, read_config
from musicpetl.train import train

LAYERS = 2  # the tiny backbones' first two layers: enough to train, half the cost of six


def run_training(p, task, store, cache, path):
    live, validations = Recorder(), {}
    summary = train(p, task, store, cache, path, live=live, progress=False,
                    on_validate=lambda step, score, probs: validations.setdefault(step, (score, probs.copy())))
    return summary, live, validations


def check_loss_fell(losses: list[float], window: int, margin: float) -> None:
    first, last = np.mean(losses[:window]), np.mean(losses[-window:])
    assert last < first - margin, f"training loss did not fall: first {window} steps {first:.3f}, last {last:.3f}"


def check_best_selected(summary, validations, max_steps: int, eval_every: int) -> int:
    """The reported best step is the first step with the highest validation score, and not the last
    step (else restoring the best state could not be told from keeping the last one)."""
    scores = {step: s for step, (s, _) in validations.items()}
    assert sorted(scores) == sorted(set(range(eval_every, max_steps + 1, eval_every)) | {max_steps})
    best_step = max(scores, key=lambda s: (scores[s], -s))
    assert summary["best_step"] == best_step and summary["best_valid"] == scores[best_step]
    assert best_step != max_steps, "settings must make the best step an earlier one (see the test's seed)"
    best_probs, last_probs = validations[best_step][1], validations[max_steps][1]
    assert not np.array_equal(best_probs, last_probs)  # the two models are distinguishable
    return best_step


@pytest.fixture(scope="module")
def probing_cache(tiny_store, tmp_path_factory):
    from musicpetl.backbones import load_from_params

    p = fixture_params({"backbone.num_layers": LAYERS, "backbone.segment_seconds": SEGMENT_SECONDS})
    path = tmp_path_factory.mktemp("cache") / "features.h5"
    cache_features(tiny_store, load_from_params(p.backbone, p.seed), path, LAYERS, SEGMENT_SECONDS,
                   batch_size=p.eval.batch_size, progress=False)
    return FeatureCache(path)


def test_probing_trains_on_the_cache_and_keeps_the_best_step(tiny_store, genre_task, probing_cache, tmp_path,
                                                             torch_threads):
    # 300 head-only steps on cached features take well under a second; seed 0 puts the best of 30
    # validations at step 10 (accuracy 0.2 on the 5 validation clips; ties keep the earlier step)
    max_steps = 300
    p = fixture_params({"backbone.num_layers": LAYERS, "backbone.segment_seconds": SEGMENT_SECONDS,
                        "train.max_steps": max_steps, "train.eval_every": 10, "train.lr": 0.01,
                        "train.batch_size": 8})
    summary, live, validations = run_training(p, genre_task, tiny_store, probing_cache, tmp_path / "run.safetensors")

    losses = live.metrics["train/loss"]
    assert len(losses) == max_steps and live.steps == max_steps
    check_loss_fell(losses, window=20, margin=0.2)  # seed 0: 1.61 -> 1.00
    best_step = check_best_selected(summary, validations, max_steps, p.train.eval_every)

    run = load_run(tmp_path / "run.safetensors")
    assert read_config(tmp_path / "run.safetensors")["method"] == "probing"
    assert summary["trainable_backbone_params"] == 0
    reloaded = predict_tracks_from_cache(run.head, probing_cache, "valid", LAYERS, genre_task)
    np.testing.assert_array_equal(reloaded, validations[best_step][1])  # bitwise: the same head on the same features


def test_petl_method_trains_with_the_backbone_and_keeps_the_best_step(tiny_store, genre_task, tmp_path,
                                                                      torch_threads):
    # adapters on mert-tiny, random 1 s crops, the backbone in the loop: ~3 s for 80 steps;
    # seed 0 puts the best of 8 validations at step 10 (all score 0.0 on the 5 validation clips:
    # ties keep the earlier step, so restoring it is still told apart from keeping step 80)
    max_steps = 80
    p = fixture_params({"backbone.num_layers": LAYERS, "backbone.segment_seconds": SEGMENT_SECONDS,
                        "petl.method": "adapter", "train.max_steps": max_steps, "train.eval_every": 10,
                        "train.lr": 0.01, "train.batch_size": 5, "train.crop_seconds": 1.0})
    summary, live, validations = run_training(p, genre_task, tiny_store, None, tmp_path / "run.safetensors")

    check_loss_fell(live.metrics["train/loss"], window=10, margin=0.1)  # seed 0: 1.67 -> 1.47
    assert summary["trainable_backbone_params"] > 0
    best_step = check_best_selected(summary, validations, max_steps, p.train.eval_every)

    run = load_run(tmp_path / "run.safetensors")
    assert run.method == "adapter"
    reloaded = predict_tracks(run, tiny_store, "valid", genre_task, SEGMENT_SECONDS, p.eval.batch_size, progress=False)
    np.testing.assert_array_equal(reloaded, validations[best_step][1])  # bitwise: same weights, same ops, same batches


def test_probing_without_a_cache_is_an_input_error(tiny_store, genre_task, tmp_path):
    from musicpetl.errors import InputError

    p = fixture_params({"backbone.num_layers": LAYERS, "train.max_steps": 1})
    with pytest.raises(InputError, match="feature cache"):
        train(p, genre_task, tiny_store, None, tmp_path / "run.safetensors", progress=False)


def test_validation_subset_is_fixed_seeded_and_all_by_default():
    from musicpetl.train import validation_subset

    assert validation_subset(5, 0, 0).tolist() == [0, 1, 2, 3, 4]
    assert validation_subset(5, 9, 0).tolist() == [0, 1, 2, 3, 4]  # more than there are: all
    a = validation_subset(1000, 100, 0)
    assert len(a) == 100 and len(set(a)) == 100 and np.all(np.diff(a) > 0) and a.max() < 1000
    assert np.array_equal(a, validation_subset(1000, 100, 0))  # every validation, every resume: the same
    assert not np.array_equal(a, validation_subset(1000, 100, 1))


@pytest.mark.parametrize("method", ["probing", "adapter"])
def test_training_validates_on_the_subset_only(method, tiny_store, genre_task, probing_cache, tmp_path,
                                               torch_threads):
    """train.valid_items: each validation scores the subset's items, exactly what the whole split's
    validation gives for them (training itself is unchanged)."""
    from musicpetl.train import validation_subset

    over = {"backbone.num_layers": LAYERS, "backbone.segment_seconds": SEGMENT_SECONDS, "petl.method": method,
            "train.max_steps": 4, "train.eval_every": 2, "train.crop_seconds": 1.0, "train.batch_size": 4}
    cache = probing_cache if method == "probing" else None
    _, live_all, every = run_training(fixture_params(over), genre_task, tiny_store, cache, tmp_path / "a.safetensors")
    _, live_sub, subset = run_training(fixture_params({**over, "train.valid_items": 3}), genre_task, tiny_store, cache,
                                       tmp_path / "b.safetensors")
    chosen = validation_subset(len(tiny_store.rows("valid")), 3, 0)
    assert len(chosen) == 3 and live_sub.losses == live_all.losses
    for step in (2, 4):
        assert subset[step][1].shape == (3, genre_task.n_outputs)
        np.testing.assert_allclose(subset[step][1], every[step][1][chosen], rtol=0, atol=1e-6)
        labels = [tiny_store.rows("valid")[i]["label"] for i in chosen]
        assert subset[step][0] == genre_task.metrics(labels, subset[step][1])[genre_task.primary_metric]
