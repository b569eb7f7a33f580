import numpy as np
import pytest
import torch

from musicpetl.tasks import make_task
from musicpetl.tasks.key import KEY_NAMES
from musicpetl.tasks.tempo import decode_tempo, tempo_target


def test_key_metric_is_mir_eval_weighted_score():
    task = make_task("key")
    probs = np.eye(24)[[0, 7, 9, 12]]  # C major predicted as C, G, A(maj), c minor
    labels = [0, 0, 21, 0]  # C, C (fifth: 0.5), A minor vs A major (parallel: 0.2), C major vs c minor (parallel)
    m = task.metrics(labels, probs)
    assert m["weighted_score"] == pytest.approx((1 + 0.5 + 0.2 + 0.2) / 4)
    assert KEY_NAMES[12] == "C minor" and KEY_NAMES[23] == "B minor"


def test_key_label_out_of_range():
    with pytest.raises(ValueError, match="0..23"):
        make_task("key").encode(24)


def test_tempo_target_and_decoding_round_trip():
    t = tempo_target(120.4)
    assert t[120] == 1 and t[119] == t[121] == 0.5 and t.sum() == 2
    for bpm in (61.3, 99.5, 174.8):
        # a smooth bump centred between bins decodes near its centre, not just at the argmax bin
        bins = np.arange(300)
        probs = np.exp(-0.5 * ((bins - bpm) / 2.0) ** 2)
        assert abs(decode_tempo(probs)[0] - bpm) < 0.3
    with pytest.raises(ValueError, match="outside"):
        tempo_target(321.6)


def test_tempo_metrics_are_madmom_accuracies():
    task = make_task("tempo")
    probs = np.stack([task.encode(120), task.encode(60), task.encode(100)])
    m = task.metrics([121.0, 120.0, 140.0], probs)
    assert m["acc1"] == pytest.approx(1 / 3)  # 120 vs 121 within 4 %
    assert m["acc2"] == pytest.approx(2 / 3)  # 60 vs 120 is an octave error: counted by Accuracy 2


def test_tagging_metrics_sklearn_macro():
    task = make_task("tagging", ["a", "b", "c", "never"])
    labels = [[0], [1, 2], [2], [0, 1]]
    probs = np.array([[.9, .1, .2, .1], [.1, .8, .7, .1], [.2, .3, .9, .1], [.7, .6, .1, .1]])
    m = task.metrics(labels, probs)
    assert m["mAP"] == pytest.approx(1.0) and m["ROC-AUC"] == pytest.approx(1.0)
    assert m["tags_scored"] == 3  # a tag absent from the test items has no AP: skipped, and counted


@pytest.mark.parametrize("name,classes", [("key", None), ("tempo", None), ("tagging", list("abcdef")), ("genre", list("abcd"))])
def test_loss_decreases_on_fixed_batch(name, classes):
    task = make_task(name, classes)
    labels = {"key": [3, 15], "tempo": [90.0, 150.0], "tagging": [[0, 2], [5]], "genre": [1, 3]}[name]
    y = torch.from_numpy(np.stack([task.encode(lab) for lab in labels]))
    logits = torch.zeros(2, task.n_outputs, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=1.0)
    first = None
    for _ in range(20):
        loss = task.loss(logits, y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    assert task.metrics(labels, task.probabilities(logits).detach().numpy())[task.primary_metric] == pytest.approx(1.0)


def test_unknown_task_lists_valid():
    with pytest.raises(ValueError, match="valid: key, tempo, tagging, genre, beat"):
        make_task("onsets")
