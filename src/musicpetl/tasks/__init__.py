"""Task registry: `make_task(name, classes)`; one file per task."""
from __future__ import annotations

from .base import Task
from .genre import GenreTask
from .key import KeyTask
from .tagging import TaggingTask
from .tempo import TempoTask

TASKS = {"key": KeyTask, "tempo": TempoTask, "tagging": TaggingTask, "genre": GenreTask}


def make_task(name: str, classes: list[str] | None = None) -> Task:
    """Key and tempo have fixed outputs; tagging and genre take the dataset's class list."""
    if name not in TASKS:
        raise ValueError(f"unknown data.task {name!r}; valid: {', '.join(TASKS)}")
    if name in ("tagging", "genre"):
        if not classes:
            raise ValueError(f"task {name!r} needs the dataset's class list")
        return TASKS[name](classes=tuple(classes))
    return TASKS[name]()
