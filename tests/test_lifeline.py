"""A stage never outlives the DVC process that started it (musicpetl/lifeline.py), and leaves no
temporaries when stopped that way. A stand-in for DVC (a program named `dvc` that runs the stage
through a shell, as DVC does) is killed with SIGKILL while the stage is writing an output."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STAGE = f'''
import sys, time
sys.path.insert(0, {str(ROOT / "src")!r})
from musicpetl.stage import run_stage
from musicpetl.io import atomic_path

def main(p):
    with atomic_path("out.txt") as tmp:
        tmp.write_text("half")
        print("writing", flush=True)
        time.sleep(120)
    return {{}}

run_stage("sleepy", main)
'''

FAKE_DVC = f'''
import subprocess, sys
subprocess.run({sys.executable!r} + " stage.py > stage.log 2>&1", shell=True)
'''


def _wait(predicate, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_stage_stops_when_its_dvc_is_killed(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "tests/fixtures/params.yaml").read_text())
    (tmp_path / "stage.py").write_text(STAGE)
    (tmp_path / "dvc").write_text(FAKE_DVC)
    env = {k: v for k, v in os.environ.items() if k != "MUSICPETL_NO_LIFELINE"}
    dvc = subprocess.Popen([sys.executable, "dvc", "repro"], cwd=tmp_path, env=env)
    try:
        assert _wait(lambda: "writing" in (tmp_path / "stage.log").read_text()
                     if (tmp_path / "stage.log").exists() else False, 60), "the stage never started writing"
        assert list(tmp_path.glob(".out.txt.tmp-*"))
        dvc.send_signal(signal.SIGKILL)
        dvc.wait()
        log = tmp_path / "stage.log"
        assert _wait(lambda: "stopped: the DVC process that started this stage is gone" in log.read_text(), 20), \
            log.read_text()
        assert _wait(lambda: not list(tmp_path.glob(".out.txt.tmp-*")), 10), "temporary left behind"
        assert not (tmp_path / "out.txt").exists()
    finally:
        subprocess.run(["pkill", "-9", "-f", str(tmp_path / "stage.py")], check=False)


def test_watched_process_is_the_dvc_ancestor_not_the_shell():
    from musicpetl.lifeline import watched_ancestors

    # run by pytest (no DVC above): the parent only
    watched = watched_ancestors()
    assert list(watched) == [os.getppid()]


def test_dvc_is_recognised_however_it_is_started():
    from musicpetl.lifeline import is_dvc

    assert is_dvc(["/repo/.venv/bin/python", "/repo/.venv/bin/dvc", "repro"])
    assert is_dvc(["dvc", "exp", "run"]) and is_dvc(["/usr/bin/dvc", "repro"])
    assert is_dvc(["python3.11", "-m", "dvc", "exp", "queue-worker"])
    assert not is_dvc(["/bin/sh", "-c", "dvc exp run"]) and not is_dvc(["python", "stages/train.py"])
    assert not is_dvc(["python", "dvc_tools.py"])
