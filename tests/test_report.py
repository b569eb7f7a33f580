"""The summary at the end of ./run: data, n beside every metric, the baseline, the constant warning."""
import json

import numpy as np
import pytest

from musicpetl.errors import InputError
from musicpetl.evaluate import score
from musicpetl.report import summary
from musicpetl.tasks import make_task


def write(d, name, obj):
    (d / name).write_text(json.dumps(obj))


def metrics_dir(tmp_path, test):
    d = tmp_path / "metrics"
    d.mkdir()
    write(d, "test.json", test)
    write(d, "train.json", {"backbone": "mert-tiny", "best_valid": 0.0})
    write(d, "split.json", {"train": 40, "valid": 49, "test": 4, "dropped": 7})
    write(d, "prepare.json", {"kept": {"test": 4, "train": 40, "valid": 49}, "rejected": 2})  # as sort_keys writes it
    return d


def test_tiny_constant_run_is_reported_honestly(tmp_path):
    """Issue 9's partial GTZAN: 4 test items, one class predicted for all; the summary says so."""
    genre = make_task("genre", ["blues", "jazz", "rock", "pop"])
    probs = np.tile([0.1, 0.1, 0.7, 0.1], (4, 1))
    res = score(genre, [0, 1, 3, 3], probs, train_labels=[2, 2, 2, 0, 1])
    d = metrics_dir(tmp_path, {"task": "genre", "dataset": "gtzan", "method": "probing", **res})
    text = summary(d)
    assert "mert-tiny + probing on genre (4 test items)" in text
    assert "data: gtzan; split train 40 / valid 49 / test 4; decoded train 40 / valid 49 / test 4" in text
    assert "7 items dropped at split" in text and "2 clips rejected at prepare" in text
    acc = next(line for line in text.splitlines() if "accuracy:" in line)
    assert "0.000  n=4  [95% CI 0.000-0.490, Wilson]  baseline 0.000" in acc  # never "0.000-0.000"
    assert "baseline: the training majority class 'rock' predicted for every test item" in text
    assert "WARNING: the model gives the same prediction for every one of the 4 test items" in text


def test_every_metric_has_its_n_and_a_missing_interval_says_why(tmp_path):
    key = make_task("key")
    res = score(key, [0, 7, 9, 21, 3], np.eye(24)[[0, 7, 2, 3, 3]], train_labels=[0, 0, 5])
    d = metrics_dir(tmp_path, {"task": "key", "dataset": "synth", "method": "lora", **res})
    lines = summary(d).splitlines()
    metric_lines = [line for line in lines if line.strip().startswith(("weighted_score:", "accuracy:"))]
    assert len(metric_lines) == 2 and all("n=5" in line for line in metric_lines)
    ws = next(line for line in metric_lines if "weighted_score:" in line)
    assert "[no interval: 5 items < 10, too few for a bootstrap interval]" in ws and "baseline" in ws
    assert not any("WARNING" in line for line in lines)


def test_degenerate_interval_is_flagged(tmp_path):
    d = metrics_dir(tmp_path, {"task": "key", "method": "probing", "n": 20, "weighted_score": 1.0,
                               "weighted_score_low": 1.0, "weighted_score_high": 1.0,
                               "weighted_score_interval": "degenerate: every resample gives 1.000"})
    line = next(x for x in summary(d).splitlines() if "weighted_score:" in x)
    assert "[95% CI 1.000-1.000; degenerate: every resample gives 1.000]" in line


def test_missing_or_broken_metrics_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="test.json not found"):
        summary(tmp_path)
    (tmp_path / "test.json").write_text("{truncated")
    with pytest.raises(InputError, match="test.json: not a JSON file"):
        summary(tmp_path)
