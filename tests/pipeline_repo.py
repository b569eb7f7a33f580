"""A throw-away copy of this repository with a tiny config, for the end-to-end and fault tests.
Its params.yaml comes from tests/fixtures/params.yaml, never from the workspace."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ("check", "download", "split", "augment", "prepare", "cache_features", "train", "evaluate", "correlate")
GIT = ("git", "-c", "user.email=t@t", "-c", "user.name=t")


def sh(*cmd, cwd, check=True, capture=True):
    """Run a command in `cwd` with this venv first on PATH. capture=False for commands that leave a
    background process holding their stdout (e.g. `dvc queue start`'s worker): a captured pipe would
    keep us waiting for that process to end."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    if not capture:
        res = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        res.stdout = res.stderr = ""
    else:
        res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and res.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def tiny_params(path: Path) -> None:
    p = yaml.safe_load(path.read_text())
    p["data"]["task"] = "key"  # the task with augmentation: every stage does real work
    p["data"]["synth"] = {"n_clips": 40, "duration": 4.0}
    p["data"]["allow_missing_classes"] = True  # 40 clips cannot cover 24 keys in every split
    p["data"]["split"] = {"valid_share": 0.2, "test_share": 0.2}
    p["train"].update(max_steps=12, eval_every=6, batch_size=8, crop_seconds=3.0)
    p["backbone"]["segment_seconds"] = 3.0
    p["eval"]["bootstrap"] = 50
    path.write_text(yaml.safe_dump(p, sort_keys=False))



def make_repo(dst: Path) -> Path:
    """Copy the checkout's tracked and untracked-not-ignored files to `dst`, tiny params, one commit."""
    files = sh("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=ROOT).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    (dst / "dvc.lock").unlink(missing_ok=True)  # start from scratch: nothing cached yet
    shutil.rmtree(dst / "metrics", ignore_errors=True)
    shutil.copy(ROOT / "tests/fixtures/params.yaml", dst / "params.yaml")  # never the workspace's params
    tiny_params(dst / "params.yaml")
    sh("git", "init", "-q", cwd=dst)
    sh(*GIT, "add", "-A", cwd=dst)
    sh(*GIT, "commit", "-qm", "init", cwd=dst)
    return dst
