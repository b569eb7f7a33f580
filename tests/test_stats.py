import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score

from musicpetl.stats import (bootstrap_ci, bootstrap_mean_ci, paired_bootstrap, paired_bootstrap_scores,
                             resample_indices)


def test_interval_covers_truth_about_95_percent():
    rng = np.random.default_rng(0)
    p_true, n, hits = 0.7, 200, 0
    for rep in range(200):
        correct = rng.random(n) < p_true
        _, lo, hi = bootstrap_mean_ci(correct, n_boot=400, seed=rep)
        hits += lo <= p_true <= hi
    assert 0.90 <= hits / 200 <= 0.99


def test_generic_and_vectorised_agree():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 150)
    pred = np.where(rng.random(150) < 0.6, y, rng.integers(0, 3, 150))
    a = bootstrap_ci(accuracy_score, y, pred, n_boot=300, seed=5)
    b = bootstrap_mean_ci(y == pred, n_boot=300, seed=5)
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_identical_systems_give_zero_delta_and_p_one():
    y = np.arange(50) % 2
    pred = np.random.default_rng(2).integers(0, 2, 50)
    res = paired_bootstrap(accuracy_score, y, pred, pred, n_boot=200)
    assert res["delta"] == 0 and res["p_value"] == 1.0
    assert paired_bootstrap_scores(y == pred, y == pred, n_boot=200)["p_value"] == 1.0


def test_clearly_better_system_is_significant_and_close_one_is_not():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 10, 300)
    good = np.where(rng.random(300) < 0.9, y, (y + 1) % 10)
    bad = np.where(rng.random(300) < 0.5, y, (y + 1) % 10)
    assert paired_bootstrap(accuracy_score, y, good, bad, n_boot=500)["p_value"] < 0.01
    near = good.copy()
    near[:2] = (y[:2] + 1) % 10  # two items apart
    assert paired_bootstrap(accuracy_score, y, good, near, n_boot=500)["p_value"] > 0.1


def test_deterministic_from_seed():
    np.testing.assert_array_equal(resample_indices(10, 5, 7), resample_indices(10, 5, 7))
    assert not np.array_equal(resample_indices(10, 5, 7), resample_indices(10, 5, 8))


def test_multilabel_map_metric():
    rng = np.random.default_rng(4)
    y = (rng.random((120, 5)) < 0.3).astype(int)
    y[0] = 1  # every tag present at least once
    scores = np.clip(y * 0.6 + rng.random((120, 5)) * 0.6, 0, 1)
    mAP = lambda t, p: average_precision_score(t, p, average="macro")  # noqa: E731
    point, lo, hi = bootstrap_ci(mAP, y, scores, n_boot=200)
    assert lo <= point <= hi and 0.5 < point <= 1
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap(mAP, y, scores, scores[:-1])
