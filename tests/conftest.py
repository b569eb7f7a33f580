"""Shared fixtures for the fast core tests: params from the committed fixture (never the
workspace's params.yaml) and one tiny prepared audio store of synthetic clips per session."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

import musicpetl  # noqa: F401  (before any test module imports torch: sets the OpenMP wait policy)

FIXTURE_PARAMS = Path(__file__).parent / "fixtures" / "params.yaml"

# The tiny store: 2 s synthetic clips labelled with their style (the `genre` task on synth).
N_CLIPS, CLIP_SECONDS = 30, 2.0
SEGMENT_SECONDS = 0.75  # 2 s tracks -> segments at 0, 0.75, 1.25 s: several per track, the last overlapping


def fixture_params(overrides: dict | None = None):
    """Params parsed from tests/fixtures/params.yaml with `overrides` ({"train.lr": 0.01, ...}) applied."""
    from musicpetl.config import parse_params

    raw = yaml.safe_load(FIXTURE_PARAMS.read_text())
    raw = copy.deepcopy(raw)
    for dotted, value in (overrides or {}).items():
        node, *path = raw, *dotted.split(".")
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return parse_params(raw)


def _split_of(i: int) -> str:
    return {4: "valid", 5: "test"}.get(i % 6, "train")  # 20 train, 5 valid, 5 test


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    """An AudioStore of N_CLIPS synthetic clips (train/valid/test = 20/5/5), labels = style index."""
    from musicpetl.data.store import AudioStore, prepare_store
    from musicpetl.data.synth import SAMPLE_RATE, STYLES, generate_corpus

    root = tmp_path_factory.mktemp("tiny_corpus")
    rows = generate_corpus(root / "raw", N_CLIPS, CLIP_SECONDS, seed=0, progress=False)
    items = [{"key": r["key"], "split": _split_of(i), "audio_path": r["audio_path"],
              "label": STYLES.index(r["style"])} for i, r in enumerate(rows)]
    prepare_store(items, root / "raw", root / "store", SAMPLE_RATE,
                  {"dataset": "synth", "task": "genre", "classes": list(STYLES)}, progress=False)
    return AudioStore(root / "store")


@pytest.fixture(scope="session")
def genre_task(tiny_store):
    from musicpetl.tasks import make_task

    return make_task(tiny_store.meta["task"], tiny_store.meta["classes"])


@pytest.fixture
def torch_threads():
    """One intra-op thread (2 cores are shared by the whole suite); restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Recorder:
    """What train() logs through dvclive's two calls (log_metric, next_step), kept in memory."""

    def __init__(self):
        self.metrics: dict[str, list[float]] = {}
        self.steps = 0

    def log_metric(self, name: str, value: float) -> None:
        self.metrics.setdefault(name, []).append(float(value))

    def next_step(self) -> None:
        self.steps += 1

    @property
    def losses(self) -> list[float]:
        return self.metrics.get("train/loss", [])
