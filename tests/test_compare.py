"""`compare` pairs runs' test predictions by item key, whatever order each run stored them in, and
refuses runs that were not scored on the same test set, naming both."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from musicpetl.analysis.compare import Predictions, align, compare, read_predictions
from musicpetl.errors import InputError

N_ITEMS, N_CLASSES, N_BOOT = 30, 4, 200
CLASSES = [f"c{i}" for i in range(N_CLASSES)]


def make_runs(task: str = "genre") -> list[Predictions]:
    """Three runs on the same 30 items (stored in a scrambled key order), of different skill."""
    rng = np.random.default_rng(0)
    keys = [f"track{i:03d}" for i in rng.permutation(N_ITEMS)]
    if task == "genre":
        labels = [int(c) for c in rng.integers(0, N_CLASSES, N_ITEMS)]
        onehot = np.eye(N_CLASSES)[labels]
    else:  # tagging: a list of tag indices per item
        labels = [sorted(int(t) for t in np.flatnonzero(rng.random(N_CLASSES) < 0.4)) for _ in range(N_ITEMS)]
        onehot = np.stack([np.isin(np.arange(N_CLASSES), lab) for lab in labels]).astype(float)
    runs = []
    for name, skill in [("finetune@exp-a", 2.0), ("probing@exp-b", 0.5), ("lora@exp-c", 3.0)]:
        logits = skill * onehot + rng.normal(size=(N_ITEMS, N_CLASSES))
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True) if task == "genre" else 1 / (1 + np.exp(-logits))
        runs.append(Predictions(name, list(keys), list(labels), probs.astype(np.float32), task))
    return runs


def shuffled(run: Predictions, seed: int) -> Predictions:
    idx = np.random.default_rng(seed).permutation(len(run.keys))
    return dataclasses.replace(run, keys=[run.keys[i] for i in idx], labels=[run.labels[i] for i in idx],
                               probs=run.probs[idx])


@pytest.mark.parametrize("which", [0, 2])  # the first run (the old reference order) and another one
def test_shuffling_a_run_changes_nothing(which):
    runs = make_runs()
    expected = compare(runs, CLASSES, n_boot=N_BOOT)
    runs[which] = shuffled(runs[which], seed=which + 1)
    assert runs[which].keys != make_runs()[which].keys
    assert compare(runs, CLASSES, n_boot=N_BOOT) == expected
    assert [r["run"] for r in expected] == ["finetune@exp-a", "probing@exp-b", "lora@exp-c"]
    assert "delta_vs_finetune" in expected[2] and "p_vs_probing" in expected[2]


def test_shuffling_a_tagging_run_changes_nothing():
    # tags as lists of indices; mAP is no mean of item scores: whole resamples (vectorised)
    runs = make_runs("tagging")[1:]
    expected = compare(runs, CLASSES, n_boot=N_BOOT)
    runs[0] = shuffled(runs[0], seed=3)
    assert compare(runs, CLASSES, n_boot=N_BOOT) == expected
    assert "delta_vs_probing" in expected[1]


def test_tagging_comparison_equals_scikit_learn_on_every_resample():
    """The vectorised mAP path of compare gives the intervals and paired tests that calling
    scikit-learn's mAP on every resample gives (same resamples, same BCa), to 1e-9."""
    from musicpetl.stats import bootstrap_ci, paired_bootstrap
    from musicpetl.tasks import make_task

    runs = align(make_runs("tagging"))
    task = make_task("tagging", CLASSES)
    metric = task.item_metric()
    rows = compare(runs, CLASSES, n_boot=N_BOOT)
    labels = runs[0].labels
    for row, r in zip(rows, runs):
        point, lo, hi = bootstrap_ci(metric, labels, r.probs, n_boot=N_BOOT)
        assert (row["mAP"], row["low"], row["high"]) == pytest.approx((point, lo, hi), abs=1e-9)
    for row, r in zip(rows[1:], runs[1:]):  # probing and lora against finetune
        slow = paired_bootstrap(metric, labels, r.probs, runs[0].probs, n_boot=N_BOOT)
        assert row["delta_vs_finetune"] == pytest.approx(slow["delta"], abs=1e-9)
        assert row["p_vs_finetune"] == pytest.approx(slow["p_value"], abs=1e-9)
    assert rows[2]["delta_vs_probing"] > 0  # the skilled run is ahead: the comparison sees something


def test_alignment_pairs_by_key():
    runs = make_runs()
    runs[1] = shuffled(runs[1], seed=5)
    by_key = [{k: (lab, p) for k, lab, p in zip(r.keys, r.labels, r.probs)} for r in runs]
    aligned = align(runs)
    assert all(a.keys == aligned[0].keys for a in aligned)
    for a, ref in zip(aligned, by_key):
        for k, lab, p in zip(a.keys, a.labels, a.probs):
            assert lab == ref[k][0] and np.array_equal(p, ref[k][1])
    # the point estimate is each run's own accuracy, computed by key
    rows = compare(runs, CLASSES, n_boot=N_BOOT)
    for row, r in zip(rows, runs):
        acc = np.mean([int(np.argmax(p)) == lab for lab, p in zip(r.labels, r.probs)])
        assert row["accuracy"] == pytest.approx(acc)


def test_pairing_matters():
    # the same predictions paired with the wrong items (keys left in place, rows moved) give another
    # result: the shuffle test above would fail if compare paired by position
    runs = make_runs()
    expected = compare(runs, CLASSES, n_boot=N_BOOT)
    idx = np.random.default_rng(1).permutation(N_ITEMS)
    runs[2] = dataclasses.replace(runs[2], probs=runs[2].probs[idx])
    assert compare(runs, CLASSES, n_boot=N_BOOT) != expected


def test_runs_on_different_test_sets_are_refused_naming_both():
    runs = make_runs()
    other = dataclasses.replace(runs[2], keys=runs[2].keys[:-1] + ["track999"])
    with pytest.raises(InputError, match="different test sets") as err:
        compare([runs[0], runs[1], other], CLASSES, n_boot=N_BOOT)
    msg = str(err.value)
    assert "lora@exp-c" in msg and "finetune@exp-a" in msg and "track999" in msg
    # a subset of the items is a different test set too
    subset = dataclasses.replace(runs[1], keys=runs[1].keys[:-1], labels=runs[1].labels[:-1], probs=runs[1].probs[:-1])
    with pytest.raises(InputError, match="probing@exp-b.*finetune@exp-a"):
        compare([runs[0], subset], CLASSES, n_boot=N_BOOT)


def test_other_unpairable_runs_are_refused():
    runs = make_runs()
    dup = dataclasses.replace(runs[1], keys=runs[1].keys[:-1] + [runs[1].keys[0]])
    with pytest.raises(InputError, match="probing@exp-b lists 1 test items more than once"):
        compare([runs[0], dup], CLASSES, n_boot=N_BOOT)
    relabelled = dataclasses.replace(runs[1], labels=[(lab + 1) % N_CLASSES for lab in runs[1].labels])
    with pytest.raises(InputError, match="different labels"):
        compare([runs[0], relabelled], CLASSES, n_boot=N_BOOT)
    with pytest.raises(InputError, match="tagging run"):
        compare([runs[0], dataclasses.replace(runs[1], task="tagging")], CLASSES, n_boot=N_BOOT)


def test_stored_predictions_round_trip_into_compare(tmp_path):
    from musicpetl.evaluate import save_predictions
    from musicpetl.tasks import make_task

    task = make_task("genre", CLASSES)
    runs = make_runs()
    runs[0] = shuffled(runs[0], seed=9)
    paths = []
    for r in runs:
        paths.append(tmp_path / f"{r.name.split('@')[0]}.npz")
        save_predictions(paths[-1], r.keys, r.labels, r.probs, task)
    read = [read_predictions(str(p), name=r.name) for p, r in zip(paths, runs)]
    assert [r.keys for r in read] == [r.keys for r in runs] and read[0].task == "genre"
    assert compare(read, CLASSES, n_boot=N_BOOT) == compare(make_runs(), CLASSES, n_boot=N_BOOT)
