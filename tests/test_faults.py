"""Fault injection: SIGKILL every stage mid-work, rerun, and the outputs equal an uninterrupted run's,
with no temporaries left behind (issue 9, "interruptions leave no litter").

Each stage is killed with SIGKILL (no clean-up possible) at the moment its main output has been
fully written to its temporary name but not yet renamed into place (`MUSICPETL_KILL_BEFORE`, see
musicpetl/io.py). The runs go on from where the previous one died: every rerun must redo exactly
the killed stage and its successors, and the final dvc.lock must record the same output hashes as
a run that was never interrupted.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipeline_repo import BIN, make_repo, sh

# stage -> the output whose landing is interrupted
KILL_POINTS = {"check": "params_checked", "download": "download.json", "split": "splits", "augment": "augmented",
               "prepare": "prepared", "cache_features": "features.h5", "train": "run.safetensors",
               "evaluate": "predictions.npz", "correlate": "correlate.json"}


def _outs(repo: Path) -> dict[str, str]:
    """Every output's hash as dvc.lock records it (metrics with wall-clock times excluded)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o.get("md5") for st in lock["stages"].values() for o in st.get("outs", [])
            if o["path"] != "metrics/train_time.json"}


def _litter(repo: Path) -> list[str]:
    return [str(p.relative_to(repo)) for p in repo.rglob(".*.tmp-*") if ".dvc" not in p.parts and ".git" not in p.parts]


@pytest.mark.slow
def test_sigkill_every_stage_then_rerun_equals_uninterrupted(tmp_path):
    reference = make_repo(tmp_path / "reference")
    sh("dvc", "repro", cwd=reference)
    want = _outs(reference)

    repo = make_repo(tmp_path / "faulty")
    for stage, out in KILL_POINTS.items():
        env = {**os.environ, "MUSICPETL_KILL_BEFORE": out}
        res = subprocess.run(["dvc", "repro"], cwd=repo, capture_output=True, text=True,
                             env={**env, "PATH": f"{BIN}{os.pathsep}{env['PATH']}"})
        assert res.returncode != 0, f"{stage} was not killed:\n{res.stdout[-2000:]}"
        assert f"[{stage}] done" not in res.stdout
        assert f"Running stage '{stage}'" in res.stdout, res.stdout[-2000:]
    sh("dvc", "repro", cwd=repo)
    assert _litter(repo) == [], "temporaries of killed stages were left behind"
    assert _outs(repo) == want
    assert "up to date" in sh("dvc", "status", cwd=repo).stdout


@pytest.mark.slow
def test_stage_stops_when_dvc_is_killed(tmp_path):
    """A stage never outlives the `dvc repro` that started it: DVC is killed while cache_features is
    about to land its output (paused there by MUSICPETL_PAUSE_BEFORE); the stage stops, leaves no
    temporary, and the next `dvc repro` recovers."""
    repo = make_repo(tmp_path / "repo")
    sh("dvc", "repro", "prepare", cwd=repo)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MUSICPETL_PAUSE_BEFORE": "features.h5:120"}
    env.pop("MUSICPETL_NO_LIFELINE", None)
    proc = subprocess.Popen(["dvc", "repro", "cache_features"], cwd=repo, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 180
    while time.time() < deadline and not list((repo / "data").glob(".features.h5.tmp-*")):
        time.sleep(0.2)
    temps = list((repo / "data").glob(".features.h5.tmp-*"))
    assert temps, "the stage never reached its output"
    stage_pid = int(temps[0].name.rpartition("-")[2])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 40
    while time.time() < deadline and Path(f"/proc/{stage_pid}").exists() and \
            Path(f"/proc/{stage_pid}/stat").read_text().split()[2] != "Z":
        time.sleep(0.5)
    alive = Path(f"/proc/{stage_pid}").exists() and Path(f"/proc/{stage_pid}/stat").read_text().split()[2] != "Z"
    if alive:
        os.kill(stage_pid, signal.SIGKILL)
    assert not alive, "the stage kept running after DVC was killed"
    assert not (repo / "data/features.h5").exists()
    assert _litter(repo) == []  # the stopped stage removed its temporary
    sh("dvc", "repro", cwd=repo)  # recovers: the stale lock of the dead DVC process does not block
    assert _litter(repo) == []
