import math

import numpy as np
import pytest
from scipy.stats import bootstrap
from sklearn.metrics import accuracy_score, average_precision_score

from musicpetl.errors import InputError
from musicpetl.stats import (MIN_ITEMS, _counts, bootstrap_ci, bootstrap_intervals, bootstrap_mean_ci,
                             macro_ap_auc_weighted, mean_interval, metric_interval, paired_bootstrap,
                             paired_bootstrap_scores, tagging_statistic, wilson_interval)
from musicpetl.tasks import make_task


def macro_map(y, p):
    return average_precision_score(y, p, average="macro")


def tag_data(n, n_tags=5, seed=0, prevalence=0.4, signal=0.5):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_tags)) < prevalence).astype(int)
    scores = y * signal + rng.random((n, n_tags))  # overlapping: no perfect ranking
    return y, scores


def test_wilson_at_n4_with_none_correct_is_not_zero_width():
    iv = wilson_interval(0, 4)
    z2 = 1.959963984540054 ** 2
    assert iv.point == 0 and iv.low == pytest.approx(0, abs=1e-12)
    assert iv.high == pytest.approx(z2 / (4 + z2), rel=1e-9)  # 0.49: four misses say little
    assert iv.note == "Wilson 95%"


@pytest.mark.parametrize("k,n", [(0, 4), (3, 4), (7, 36), (36, 36), (12, 200)])
def test_wilson_is_the_score_interval(k, n):
    """The closed form (Wilson 1927), not the continuity-corrected variant or Wald."""
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    iv = wilson_interval(k, n)
    assert iv.low == pytest.approx(max(0.0, centre - half), abs=1e-12)
    assert iv.high == pytest.approx(min(1.0, centre + half), abs=1e-12)
    assert iv.low <= iv.point <= iv.high


def test_wilson_rejects_impossible_counts():
    with pytest.raises(InputError):
        wilson_interval(5, 4)
    with pytest.raises(InputError):
        wilson_interval(0, 0)


def test_below_min_items_no_bootstrap_interval_at_all():
    n = 4
    y, scores = tag_data(n, seed=1, prevalence=0.5)
    y[0], y[1] = 1, 0  # every tag both present and absent
    iv = metric_interval(macro_map, y, scores)
    assert iv.low is None and iv.high is None and iv.n == 4
    assert "too few" in iv.note and str(MIN_ITEMS) in iv.note
    point, lo, hi = bootstrap_ci(macro_map, y, scores)
    assert point == pytest.approx(macro_map(y, scores)) and math.isnan(lo) and math.isnan(hi)
    res = paired_bootstrap(macro_map, y, scores, scores[::-1])
    assert math.isnan(res["low"]) and math.isnan(res["high"]) and math.isnan(res["p_value"])
    assert res["delta"] == pytest.approx(macro_map(y, scores) - macro_map(y, scores[::-1])) and res["n"] == 4


def test_bca_on_macro_map_of_60_items_is_scipy_over_item_indices():
    """Issue 9: scipy.stats.bootstrap takes whole-set metrics when it resamples item indices."""
    y, scores = tag_data(60, seed=2)
    iv = metric_interval(macro_map, y, scores, n_boot=400, seed=3)
    ref = bootstrap((np.arange(60),), lambda i: macro_map(y[i], scores[i]), vectorized=False, method="BCa",
                    n_resamples=400, rng=np.random.default_rng(3))
    assert iv.point == pytest.approx(macro_map(y, scores))
    assert (iv.low, iv.high) == (ref.confidence_interval.low, ref.confidence_interval.high)
    assert iv.low < iv.point < iv.high < 1 and iv.note == "BCa 95%, 400 resamples"


def test_paired_bca_on_macro_map_of_60_items():
    y, good = tag_data(60, seed=4, signal=0.6)
    rng = np.random.default_rng(5)
    bad = np.clip(good * 0.3 + rng.random(good.shape) * 0.7, 0, 1)  # same items, a weaker ranking
    res = paired_bootstrap(macro_map, y, good, bad, n_boot=400, seed=6)
    ref = bootstrap((np.arange(60),), lambda i: macro_map(y[i], good[i]) - macro_map(y[i], bad[i]),
                    vectorized=False, method="BCa", n_resamples=400, rng=np.random.default_rng(6))
    assert res["delta"] == pytest.approx(macro_map(y, good) - macro_map(y, bad))
    assert (res["low"], res["high"]) == (ref.confidence_interval.low, ref.confidence_interval.high)
    assert 0 < res["low"] < res["delta"] < res["high"] and res["p_value"] < 0.01 and res["n"] == 60
    same = paired_bootstrap(macro_map, y, good, good, n_boot=100)
    assert same["delta"] == 0 and same["p_value"] == 1.0


def test_interval_covers_truth_about_95_percent():
    rng = np.random.default_rng(0)
    n, reps, hits = 100, 150, 0
    for rep in range(reps):
        scores = rng.choice([0.0, 0.2, 0.3, 0.5, 1.0], size=n, p=[0.3, 0.1, 0.1, 0.1, 0.4])  # key-score-like
        iv = mean_interval(scores, n_boot=400, seed=rep)
        hits += iv.low <= 0.5 <= iv.high  # true mean: 0.2*.1 + .3*.1 + .5*.1 + 1*.4 = 0.5
    assert 0.89 <= hits / reps <= 0.995, hits / reps


def test_generic_and_per_item_paths_agree():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 150)
    pred = np.where(rng.random(150) < 0.6, y, rng.integers(0, 3, 150))
    a = bootstrap_ci(accuracy_score, y, pred, n_boot=300, seed=5)
    b = bootstrap_mean_ci(y == pred, n_boot=300, seed=5)
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_clearly_better_system_is_significant_and_close_one_is_not():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 10, 300)
    good = np.where(rng.random(300) < 0.9, y, (y + 1) % 10)
    bad = np.where(rng.random(300) < 0.5, y, (y + 1) % 10)
    assert paired_bootstrap(accuracy_score, y, good, bad, n_boot=500)["p_value"] < 0.01
    assert paired_bootstrap_scores(y == good, y == bad, n_boot=500)["p_value"] < 0.01
    near = good.copy()
    near[:2] = (y[:2] + 1) % 10  # two items apart
    assert paired_bootstrap(accuracy_score, y, good, near, n_boot=500)["p_value"] > 0.1


def test_degenerate_data_is_flagged_not_raised():
    iv = mean_interval(np.ones(20))  # every item perfect: every resample gives 1.0, BCa undefined
    assert iv.degenerate and iv.point == iv.low == iv.high == 1.0 and iv.note.startswith("degenerate")
    y = np.arange(30) % 2
    res = paired_bootstrap_scores(y == y, y == y)
    assert res["delta"] == 0 and res["low"] == res["high"] == 0 and res["p_value"] == 1.0
    assert res["note"].startswith("degenerate")


def test_bca_undefined_falls_back_to_a_flagged_percentile_interval():
    # the share of distinct items: 1 on the test set, below 1 in every resample, so BCa's bias
    # correction is infinite; the resamples still differ from each other
    (iv,), dist = bootstrap_intervals(lambda i: len(np.unique(i)) / 30, 30, n_boot=300)
    assert not iv.degenerate and iv.note.startswith("percentile")
    assert iv.low == pytest.approx(np.quantile(dist[0], 0.025)) and iv.high == pytest.approx(np.quantile(dist[0], 0.975))


def test_deterministic_from_seed():
    y, scores = tag_data(40, seed=8)
    assert metric_interval(macro_map, y, scores, n_boot=100, seed=7) == metric_interval(macro_map, y, scores,
                                                                                        n_boot=100, seed=7)
    assert metric_interval(macro_map, y, scores, n_boot=100, seed=7) != metric_interval(macro_map, y, scores,
                                                                                        n_boot=100, seed=8)


def test_mismatched_inputs_are_input_errors():
    y, scores = tag_data(20)
    with pytest.raises(InputError, match="same items"):
        paired_bootstrap(macro_map, y, scores, scores[:-1])
    with pytest.raises(InputError, match="labels but"):
        metric_interval(macro_map, y[:-1], scores)
    with pytest.raises(InputError, match="empty"):
        mean_interval([])


def test_fast_tagging_metrics_equal_scikit_learn_on_resamples():
    """The vectorised path: weighted macro AP/ROC-AUC == TaggingTask.metrics on the resampled rows,
    with ties (rounded scores) and rare tags that some resamples miss."""
    rng = np.random.default_rng(9)
    n, n_tags = 80, 8
    y = (rng.random((n, n_tags)) < np.linspace(0.03, 0.5, n_tags)).astype(int)
    y[0] = 1
    scores = np.round(np.clip(y * 0.3 + rng.random((n, n_tags)) * 0.7, 0, 1), 1)  # many ties
    task = make_task("tagging", [f"tag{i}" for i in range(n_tags)])
    labels = [list(np.flatnonzero(r)) for r in y]
    idx = rng.integers(0, n, (60, n))
    fast = macro_ap_auc_weighted(y, scores, _counts(idx, n))
    for b, i in enumerate(idx):
        ref = task.metrics([labels[j] for j in i], scores[i])
        assert fast[0, b] == pytest.approx(ref["mAP"], abs=1e-12)
        assert fast[1, b] == pytest.approx(ref["ROC-AUC"], abs=1e-12)


def test_fast_tagging_intervals_equal_the_generic_path():
    y, scores = tag_data(50, n_tags=4, seed=10)
    task = make_task("tagging", ["a", "b", "c", "d"])
    labels = [list(np.flatnonzero(r)) for r in y]
    fast, _ = bootstrap_intervals(tagging_statistic(y, scores), 50, n_boot=300, seed=11, vectorized=True)
    for iv, name in zip(fast, ("mAP", "ROC-AUC")):
        slow = metric_interval(lambda lab, p, name=name: task.metrics(list(lab), p)[name], labels, scores,
                               n_boot=300, seed=11)
        assert iv.point == pytest.approx(slow.point, abs=1e-12)
        assert (iv.low, iv.high) == pytest.approx((slow.low, slow.high), abs=1e-9)
