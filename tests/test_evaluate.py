"""evaluate.score (intervals, baseline, constant predictor), the predictions CSV and the confusion data."""
import csv
import json
import warnings
from collections import Counter

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from musicpetl.errors import InputError
from musicpetl.evaluate import (baseline_prediction, confusion_pairs, constant_prediction, prediction_rows,
                                save_confusion, save_predictions_csv, score)
from musicpetl.stats import MIN_ITEMS
from musicpetl.tasks import make_task
from musicpetl.tasks.key import KEY_NAMES
from musicpetl.tasks.tempo import tempo_target

GENRES = ["blues", "jazz", "rock"]


def onehot(idx, k):
    out = np.full((len(idx), k), 0.01, dtype=np.float32)
    out[np.arange(len(idx)), idx] = 0.98
    return out


def test_four_test_items_get_no_confident_interval():
    """Issue 9: 4 test items, accuracy 0.000 "[95% CI 0.000-0.000]". Now: Wilson says [0, 0.49] for
    the proportion, and a bootstrap metric gets no interval at all, with n and the reason."""
    genre = make_task("genre", GENRES)
    res = score(genre, [0, 0, 1, 1], onehot([2, 2, 2, 2], 3), train_labels=[2, 2, 0, 1])
    assert res["n"] == 4 and res["accuracy"] == 0.0
    assert res["accuracy_low"] == pytest.approx(0.0, abs=1e-12) and res["accuracy_high"] > 0.45
    assert res["accuracy_interval"] == "Wilson 95%"

    key = make_task("key")
    res = score(key, [0, 7, 9, 21], onehot([0, 7, 2, 3], 24))
    assert res["n"] == 4
    assert "weighted_score_low" not in res and "weighted_score_high" not in res
    assert "too few" in res["weighted_score_interval"] and f"< {MIN_ITEMS}" in res["weighted_score_interval"]
    assert res["accuracy_high"] > res["accuracy"] > res["accuracy_low"] > 0  # 2 of 4: Wilson still given

    tagging = make_task("tagging", ["a", "b"])
    res = score(tagging, [[0], [1], [0, 1], []], np.array([[.9, .1], [.2, .8], [.7, .6], [.1, .2]]))
    assert "mAP_low" not in res and "ROC-AUC_high" not in res and "too few" in res["mAP_interval"]


def test_enough_items_get_bca_and_wilson():
    rng = np.random.default_rng(0)
    labels = list(rng.integers(0, 24, 40))
    pred = [lab if rng.random() < 0.6 else (lab + 7) % 24 for lab in labels]  # right, or a fifth off
    res = score(make_task("key"), labels, onehot(pred, 24), n_boot=200, train_labels=labels)
    assert res["weighted_score_interval"] == "BCa 95%, 200 resamples"
    assert res["weighted_score_low"] < res["weighted_score"] < res["weighted_score_high"]
    assert res["accuracy_interval"] == "Wilson 95%" and res["accuracy_low"] < res["accuracy"] < res["accuracy_high"]
    json.dumps(res)  # the stage writes it as metrics JSON


def test_constant_predictor_is_flagged_with_the_majority_baseline_beside_it():
    genre = make_task("genre", GENRES)
    labels = [0, 1, 2, 2, 1, 2, 0, 2, 2, 1, 2, 2]
    train = [2, 2, 2, 0, 1, 2]
    always_rock = score(genre, labels, onehot([2] * 12, 3), n_boot=50, train_labels=train)
    assert always_rock["constant_prediction"] is True
    assert always_rock["baseline"] == "training majority class 'rock'"
    assert always_rock["baseline_accuracy"] == always_rock["accuracy"] == pytest.approx(7 / 12)
    varied = score(genre, labels, onehot(labels, 3), n_boot=50, train_labels=train)
    assert varied["constant_prediction"] is False and varied["accuracy"] == 1.0
    assert varied["baseline_accuracy"] == pytest.approx(7 / 12)


def test_constant_prediction_per_task():
    tempo = make_task("tempo")
    same_bpm = np.stack([tempo_target(120), tempo_target(120) * 0.9])
    assert constant_prediction(tempo, same_bpm)
    assert not constant_prediction(tempo, np.stack([tempo_target(120), tempo_target(90)]))
    tagging = make_task("tagging", ["a", "b"])
    assert constant_prediction(tagging, np.array([[.3, .6]] * 5))
    # the same thresholded tags for every item but a ranking: mAP reads it, not constant
    assert not constant_prediction(tagging, np.array([[.3, .6], [.2, .7], [.1, .9]]))
    assert not constant_prediction(make_task("genre", GENRES), onehot([1], 3))  # one item: nothing to tell


def test_baselines_of_tagging_and_tempo():
    tagging = make_task("tagging", ["a", "b", "c"])
    prior, what = baseline_prediction(tagging, [[0], [0, 1], [], [0, 2]])
    np.testing.assert_allclose(prior, [0.75, 0.25, 0.25])
    assert what == "training tag frequencies"
    labels = [[0], [1], [0, 1], [], [2], [0]] * 2
    probs = np.random.default_rng(1).random((12, 3))
    res = score(tagging, labels, probs, n_boot=50, train_labels=[[0], [0, 1], [], [0, 2]])
    assert res["baseline_ROC-AUC"] == pytest.approx(0.5)  # one score for every item: chance ranking
    assert res["baseline_mAP"] == pytest.approx(np.mean([6 / 12, 4 / 12, 2 / 12]))  # AP of ties = prevalence

    tempo = make_task("tempo")
    _, what = baseline_prediction(tempo, [120.2, 119.8, 90, 60.4, 140])
    assert what == "training mode 120 BPM"
    test_bpm = [121.0, 60.0, 240.0, 124.0, 126.0, 100.0, 120.0, 80.0, 119.0, 118.0]
    res = score(tempo, test_bpm, np.stack([tempo_target(b) for b in test_bpm]), n_boot=50,
                train_labels=[120.2, 119.8, 90, 60.4, 140])
    assert res["baseline_acc1"] == pytest.approx(5 / 10)  # 121, 124, 120, 119, 118 within 4 % of 120
    assert res["baseline_acc2"] == pytest.approx(7 / 10)  # + 60 (half), 240 (double)
    assert res["acc1"] == 1.0 and res["constant_prediction"] is False


def test_score_refuses_empty_or_mismatched_input():
    genre = make_task("genre", GENRES)
    with pytest.raises(InputError, match="no test items"):
        score(genre, [], np.zeros((0, 3)))
    with pytest.raises(InputError, match="3 test labels but 2 predictions"):
        score(genre, [0, 1, 2], onehot([0, 1], 3))


def test_tempo_metrics_do_not_warn():
    """madmom's "no annotated tempo strengths" warning (issue 9, 8) is silenced where it cannot apply."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_task("tempo").item_scores([120.0, 90.0], np.stack([tempo_target(120), tempo_target(60)]))


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_predictions_csv_has_class_names(tmp_path):
    genre = make_task("genre", GENRES)
    probs = np.array([[.7, .2, .1], [.1, .3, .6], [.2, .5, .3]], dtype=np.float32)
    save_predictions_csv(tmp_path / "p.csv", ["a/1.wav", "b,2.wav", "c"], [0, 2, 0], probs, genre)
    rows = _read_csv(tmp_path / "p.csv")
    assert rows[0] == ["key", "label", "predicted", "accuracy", "p_blues", "p_jazz", "p_rock"]
    assert rows[1][:4] == ["a/1.wav", "blues", "blues", "1"]
    assert rows[2][:4] == ["b,2.wav", "rock", "rock", "1"]  # a comma in a key stays one field
    assert rows[3][:4] == ["c", "blues", "jazz", "0"] and float(rows[3][5]) == pytest.approx(0.5)

    header, rows = prediction_rows(["x"], [21], onehot([9], 24), make_task("key"))
    assert header[3:5] == ["weighted_score", "accuracy"] and header[5] == "p_C major" and len(header) == 5 + 24
    assert rows[0][1:5] == [KEY_NAMES[21], "A major", "0.2", "0"]  # A minor read as A major: parallel, 0.2
    tagging = make_task("tagging", ["guitar", "piano", "vocals"])
    header, rows = prediction_rows(["x"], [[0, 2]], np.array([[.9, .6, .2]]), tagging)
    assert header == ["key", "label", "predicted", "p_guitar", "p_piano", "p_vocals"]
    assert rows[0][1:3] == ["guitar;vocals", "guitar;piano"]
    header, rows = prediction_rows(["x"], [120.0], tempo_target(120)[None, :], make_task("tempo"))
    assert header[3:6] == ["acc1", "acc2", "p_0 BPM"] and rows[0][1:5] == ["120.00", "120.00", "1", "1"]


def test_confusion_data_on_a_tiny_example(tmp_path):
    genre = make_task("genre", GENRES)
    labels, pred = [0, 0, 1, 2, 2, 2], [0, 1, 1, 1, 2, 2]
    pairs = confusion_pairs(genre, labels, onehot(pred, 3))
    assert pairs == [("blues", "blues"), ("blues", "jazz"), ("jazz", "jazz"), ("rock", "jazz"), ("rock", "rock"),
                     ("rock", "rock")]
    counts = Counter(pairs)  # what DVC's confusion template draws
    matrix = [[counts[(a, p)] for p in GENRES] for a in GENRES]
    assert matrix == confusion_matrix(labels, pred).tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 2]]
    save_confusion(tmp_path / "plots" / "confusion.csv", genre, labels, onehot(pred, 3))
    assert _read_csv(tmp_path / "plots" / "confusion.csv") == [["actual", "predicted"], *map(list, pairs)]
    tagging = make_task("tagging", ["a", "b"])
    save_confusion(tmp_path / "t.csv", tagging, [[0], [1]], np.array([[.9, .1], [.2, .8]]))
    assert _read_csv(tmp_path / "t.csv") == [["actual", "predicted"]]  # no classes to confuse: header only
