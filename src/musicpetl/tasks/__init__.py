"""Task registry: `make_task(name, classes)`; one file per task."""
from __future__ import annotations

from .base import Task
from .beat import BeatTask
from .genre import GenreTask
from .key import KeyTask
from .tagging import TaggingTask
from .tempo import TempoTask
from musicpetl.errors import InputError

TASKS = {"key": KeyTask, "tempo": TempoTask, "tagging": TaggingTask, "genre": GenreTask, "beat": BeatTask}


def make_task(name: str, classes: list[str] | None = None, frame_rate: float | None = None) -> Task:
    """Key and tempo have fixed outputs; tagging and genre take the dataset's class list; beat (a
    frame-level task) takes the backbone's frame rate (hidden states per second)."""
    if name not in TASKS:
        raise InputError(f"unknown data.task {name!r}; valid: {', '.join(TASKS)}")
    if name in ("tagging", "genre"):
        if not classes:
            raise InputError(f"task {name!r} needs the dataset's class list")
        return TASKS[name](classes=tuple(classes))
    if name == "beat":
        return BeatTask(frame_rate=float(frame_rate or 0.0))
    return TASKS[name]()


def is_frame_level(task: Task) -> bool:
    """One output per backbone frame (beat) rather than one per track."""
    return bool(getattr(task, "frame_level", False))
