"""A stage process never outlives the DVC process that started it.

DVC runs a stage's cmd through a shell, so when `dvc repro` / `dvc exp run` is killed (SIGKILL
leaves it no chance to stop its children) the stage would run on and write outputs after DVC
died. The watched processes are the stage's ancestors up to and including the nearest one running
DVC itself (or the parent when no DVC is above, e.g. a stage started by hand; shells in between
are not watched, so a transient wrapper cannot trigger it); when it is gone, the stage is
interrupted (KeyboardInterrupt in the main thread, so temporaries are removed
by their `finally` blocks) and, if it does not stop within a grace period, exits hard.
Linux /proc only; elsewhere it does nothing. Written here: no library watches an ancestor chain.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path


class ParentGone(KeyboardInterrupt):
    """Raised in the main thread when the watched process is gone."""


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process, or None when it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), fields[19]


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def is_dvc(argv: list[str]) -> bool:
    """`dvc ...`, `python .../dvc ...`, `python -m dvc ...` (a queue worker too)."""
    names = [a.rsplit("/", 1)[-1] for a in argv[:2]]
    return names[:1] == ["dvc"] or (len(names) > 1 and names[0].startswith("python") and names[1] == "dvc") \
        or argv[1:3] == ["-m", "dvc"]


def watched_ancestors(pid: int | None = None) -> dict[int, str]:
    """pid -> start time of the process to watch: the nearest DVC ancestor, else the parent."""
    pid = os.getpid() if pid is None else pid
    chain: dict[int, str] = {}
    me = _stat(pid)
    if me is None:
        return chain
    ppid = me[0]
    while ppid > 1:
        st = _stat(ppid)
        if st is None:
            break
        chain[ppid] = st[1]
        if is_dvc(_argv(ppid)):
            return {ppid: st[1]}
        ppid = st[0]
    parent = next(iter(chain.items()), None)  # no DVC above: the parent only
    return dict([parent]) if parent else {}


def start(interval: float = 1.0, grace: float = 20.0) -> threading.Thread | None:
    if not Path("/proc/self/stat").exists() or os.environ.get("MUSICPETL_NO_LIFELINE"):
        return None
    watched = watched_ancestors()
    if not watched:
        return None

    def interrupted(signum, frame):
        raise ParentGone("the DVC process that started this stage is gone")

    # our own signal: SIGINT may be ignored (a stage started in the background inherits SIG_IGN)
    signal.signal(signal.SIGUSR1, interrupted)

    def watch() -> None:
        while True:
            time.sleep(interval)
            gone = [pid for pid, started in watched.items() if (_stat(pid) or (0, None))[1] != started]
            if gone:
                os.kill(os.getpid(), signal.SIGUSR1)  # KeyboardInterrupt: finally blocks remove temporaries
                time.sleep(grace)
                os._exit(130)

    t = threading.Thread(target=watch, name="musicpetl-lifeline", daemon=True)
    t.start()
    return t
