"""Atomic outputs: an interrupted stage never leaves a half file that DVC would cache.

Outputs are always written to a temporary sibling and renamed into place (a new inode), never
changed in place, so an output that DVC linked from its cache can never change the cache object.
Temporaries left by a killed process (`.<name>.tmp-<pid>`) are removed by the next writer."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from pathlib import Path

from musicpetl.errors import MissingFileError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(path: Path) -> list[Path]:
    """Remove `.<name>.tmp-<pid>` siblings of `path` whose writer process is gone."""
    removed = []
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rpartition("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _fault_point(path: Path) -> None:
    """Fault injection for tests/test_faults.py: SIGKILL this process just before `path` lands
    (MUSICPETL_KILL_BEFORE=<name>), or pause there (MUSICPETL_PAUSE_BEFORE=<name>:<seconds>)."""
    if os.environ.get("MUSICPETL_KILL_BEFORE") == path.name:
        os.kill(os.getpid(), signal.SIGKILL)
    name, _, seconds = os.environ.get("MUSICPETL_PAUSE_BEFORE", "").partition(":")
    if name == path.name:
        import time

        time.sleep(float(seconds or 60))


def _temporary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        yield tmp
        _fault_point(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Build a directory under a temporary name, then swap it in whole."""
    path = Path(path)
    tmp = _temporary(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        _fault_point(path)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | Path, rows) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            for row in rows:
                fh.write(json.dumps(row, sort_keys=True) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path} not found: run the stage that writes it (dvc repro)")
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]
