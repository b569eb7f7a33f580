"""End to end: dvc repro, an experiment that changes the method, and dvc metrics diff, on a copy of
the repo with a tinier config. Proves the DAG, the param wiring, the metrics files, that damaged
outputs are rebuilt from an intact cache, and that a queued experiment runs its own code.

The copy's params.yaml comes from tests/fixtures/params.yaml, never from the workspace (which a user
changes with `dvc exp run`, `dvc exp apply` or an edit)."""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline_repo import GIT, ROOT, STAGES, make_repo, sh, tiny_params  # noqa: F401  (tiny_params: re-exported)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_repo(tmp_path_factory.mktemp("e2e") / "repo")


@pytest.mark.slow
def test_repro_experiment_and_metrics_diff(repo):
    out = sh("dvc", "repro", cwd=repo)
    for stage in STAGES:
        assert f"[{stage}] done" in out.stdout, f"{stage} did not report:\n{out.stdout[-3000:]}"
    test = json.loads((repo / "metrics/test.json").read_text())
    assert test["method"] == "probing" and 0.0 <= test["weighted_score"] <= 1.0
    if test["n"] >= 10:
        assert test["weighted_score_low"] <= test["weighted_score"] <= test["weighted_score_high"]
    else:  # too few test items for an honest bootstrap interval: none is given, and it says why
        assert "weighted_score_low" not in test and "too few" in test["weighted_score_interval"]
    assert (repo / "plots/correlate.png").stat().st_size > 1000
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A", cwd=repo)
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "probing run", cwd=repo)

    # a second repro has nothing to do
    again = sh("dvc", "repro", cwd=repo)
    assert "done in" not in again.stdout

    # the experiment reruns only the stages that read `petl`
    exp = sh("dvc", "exp", "run", "-S", "petl.method=finetune", cwd=repo)
    ran = {s for s in STAGES if f"[{s}] done" in exp.stdout}
    assert ran == {"check", "train", "evaluate", "correlate"}, exp.stdout[-3000:]  # check: constant output
    assert json.loads((repo / "metrics/test.json").read_text())["method"] == "finetune"

    diff = sh("dvc", "metrics", "diff", "--json", cwd=repo)
    changed = json.loads(diff.stdout)
    assert "metrics/test.json" in changed and "weighted_score" in changed["metrics/test.json"]
    assert "metrics/train.json" in changed


@pytest.mark.slow
@pytest.mark.parametrize("edit,message", [
    ({"petl": {"method": "loraa"}}, "unknown petl.method 'loraa'; valid:"),
    ({"trian": {"lr": 1}}, "unknown param trian; valid:"),
    ({"data": {"sample_rte": 16000}}, "unknown param data.sample_rte; valid:"),
    ({"train": {"max_steps": 0}}, "train.max_steps = 0 is out of range"),
    ({"data": {"sample_rate": 16000}}, "data.sample_rate = 16000 but mert-tiny reads 24000 Hz audio"),
])
def test_bad_param_fails_before_work(repo, edit, message):
    """Whichever stage would run, `dvc repro` stops at `check` with one line; nothing else runs."""
    bad = repo / "params.yaml"
    original = bad.read_text()
    try:
        p = yaml.safe_load(original)
        for group, values in edit.items():
            p.setdefault(group, {}).update(values)
        bad.write_text(yaml.safe_dump(p, sort_keys=False))
        res = sh("dvc", "repro", cwd=repo, check=False)
        assert res.returncode != 0
        assert message in res.stderr + res.stdout, res.stderr[-2000:]
        assert "Traceback" not in res.stderr
        assert not any(f"[{s}] done" in res.stdout for s in STAGES)
    finally:
        bad.write_text(original)


def _cache_objects_intact(repo: Path) -> int:
    """Every DVC cache object's content hashes to its name; returns how many were checked."""
    n = 0
    for obj in (repo / ".dvc/cache/files/md5").glob("*/*"):
        name = obj.parent.name + obj.name.removesuffix(".dir")
        assert hashlib.md5(obj.read_bytes()).hexdigest() == name, f"corrupt cache object {obj}"
        n += 1
    return n


@pytest.mark.slow
def test_damaged_outputs_are_rebuilt_and_cache_stays_intact(repo):
    """Issue 9: with outputs linked into the cache, damaging one in place corrupted the cache object,
    which `dvc repro` then served back. Damage every kind of output (file, directory member, metrics
    file, by truncation and by overwrite); `dvc repro` restores the right content, the cache intact."""
    sh("dvc", "repro", cwd=repo)
    targets = ["data/features.h5", "models/run.safetensors", "data/predictions.npz", "data/download.json",
               "data/splits/items.jsonl", "metrics/test.json"]
    good = {t: (repo / t).read_bytes() for t in targets}
    assert _cache_objects_intact(repo) > 5
    for how in ("truncate", "overwrite"):
        for t in targets:
            path = repo / t
            os.chmod(path, 0o644)
            with open(path, "r+b") as fh:  # in place: the same inode, as a careless tool would
                if how == "truncate":
                    fh.truncate(len(good[t]) // 2)
                else:
                    fh.write(b"\0" * min(64, len(good[t])))
        sh("dvc", "repro", cwd=repo)
        for t in targets:
            assert (repo / t).read_bytes() == good[t], f"{t} not restored after {how}"
        _cache_objects_intact(repo)
    assert "data and pipelines are up to date" in sh("dvc", "status", cwd=repo).stdout.lower()


@pytest.mark.slow
def test_queued_experiment_runs_its_own_code(repo):
    """Issue 8: a queued experiment runs in its own copy of the repository; an edit made to the main
    workspace's src/ after queueing must not reach it (the stages import this checkout's src/)."""
    sh("dvc", "repro", cwd=repo)
    sh(*GIT, "add", "-A", cwd=repo)
    sh(*GIT, "commit", "-qm", "state before queueing", "--allow-empty", cwd=repo)
    sh("dvc", "exp", "run", "--queue", "-n", "queued-bitfit", "-S", "petl.method=bitfit", cwd=repo)
    marker = "EDITED-IN-MAIN-WORKSPACE"
    stage_py = repo / "src/musicpetl/stage.py"
    original = stage_py.read_text()
    edited = original.replace("    t0 = time.time()\n", f"    t0 = time.time()\n    print('{marker}')\n", 1)
    assert edited != original
    stage_py.write_text(edited)
    try:
        # the edit is live in the workspace ...
        assert marker in sh(sys.executable, "stages/check.py", cwd=repo).stdout
        sh("dvc", "queue", "start", cwd=repo, capture=False)
        deadline = time.time() + 600
        while time.time() < deadline:
            status = sh("dvc", "queue", "status", cwd=repo).stdout
            if "queued-bitfit" in status and ("Success" in status or "Failed" in status):
                break
            time.sleep(3)
        logs = sh("dvc", "queue", "logs", "queued-bitfit", cwd=repo, check=False)
        assert "Success" in status, f"{status}\n{logs.stdout[-3000:]}"
        # ... but the queued experiment ran the code it was queued with
        assert "[train] done" in logs.stdout, logs.stdout[-3000:]
        assert marker not in logs.stdout
    finally:
        stage_py.write_text(original)
        sh("dvc", "queue", "stop", "--kill", cwd=repo, check=False, capture=False)
