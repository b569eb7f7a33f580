"""End to end: dvc repro, an experiment that changes the method, and dvc metrics diff, on a copy of
the repo with a tinier config. Proves the DAG, the param wiring and the metrics files."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sh(*cmd, cwd, check=True):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and res.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def tiny_params(path: Path) -> None:
    p = yaml.safe_load(path.read_text())
    p["data"]["task"] = "key"  # the task with augmentation: every stage does real work
    p["data"]["synth"] = {"n_clips": 40, "duration": 4.0}
    p["data"]["split"] = {"valid_share": 0.2, "test_share": 0.2}
    p["train"].update(max_steps=12, eval_every=6, batch_size=8, crop_seconds=3.0)
    p["backbone"]["segment_seconds"] = 3.0
    p["eval"]["bootstrap"] = 50
    path.write_text(yaml.safe_dump(p, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("e2e") / "repo"
    files = sh("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=ROOT).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    for f in ("dvc.lock",):  # start from scratch: nothing cached yet
        (dst / f).unlink(missing_ok=True)
    shutil.rmtree(dst / "metrics", ignore_errors=True)
    tiny_params(dst / "params.yaml")
    sh("git", "init", "-q", cwd=dst)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A", cwd=dst)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init", cwd=dst)
    return dst


@pytest.mark.slow
def test_repro_experiment_and_metrics_diff(repo):
    out = sh("dvc", "repro", cwd=repo)
    for stage in ("download", "split", "augment", "prepare", "cache_features", "train", "evaluate", "correlate"):
        assert f"[{stage}] done" in out.stdout, f"{stage} did not report:\n{out.stdout[-3000:]}"
    test = json.loads((repo / "metrics/test.json").read_text())
    assert test["method"] == "probing" and 0.0 <= test["weighted_score"] <= 1.0
    assert test["weighted_score_low"] <= test["weighted_score"] <= test["weighted_score_high"]
    assert (repo / "plots/correlate.png").stat().st_size > 1000
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A", cwd=repo)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "probing run", cwd=repo)

    # a second repro has nothing to do
    again = sh("dvc", "repro", cwd=repo)
    assert "done in" not in again.stdout

    # the experiment reruns only the stages that read `petl`
    exp = sh("dvc", "exp", "run", "-S", "petl.method=finetune", cwd=repo)
    ran = {s for s in ("download", "split", "augment", "prepare", "cache_features", "train", "evaluate", "correlate")
           if f"[{s}] done" in exp.stdout}
    assert ran == {"train", "evaluate", "correlate"}, exp.stdout[-3000:]
    assert json.loads((repo / "metrics/test.json").read_text())["method"] == "finetune"

    diff = sh("dvc", "metrics", "diff", "--json", cwd=repo)
    changed = json.loads(diff.stdout)
    assert "metrics/test.json" in changed and "weighted_score" in changed["metrics/test.json"]
    assert "metrics/train.json" in changed


def test_bad_param_fails_before_work(repo):
    bad = repo / "params.yaml"
    original = bad.read_text()
    try:
        p = yaml.safe_load(original)
        p["petl"]["method"] = "loraa"
        bad.write_text(yaml.safe_dump(p))
        res = sh(sys.executable, "stages/download.py", cwd=repo, check=False)
        assert res.returncode == 1
        assert "unknown petl.method 'loraa'; valid:" in res.stderr and "lora" in res.stderr
        assert "[download] done" not in res.stdout
    finally:
        bad.write_text(original)
