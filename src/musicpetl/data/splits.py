"""Build the manifest of a dataset-task pair, and the seeded splits of datasets that lack one."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from musicpetl.data.dataset import Context, SplitResult


def seeded_split(keys: list[str], seed: int, valid: float, test: float) -> dict[str, str]:
    """key -> train/valid/test, shares `valid` and `test`, from a permutation of the sorted keys
    (so the split does not depend on listing order)."""
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise ValueError(f"split shares must be in [0, 1) and sum below 1, got valid={valid}, test={test}")
    keys = sorted(keys)
    order = np.random.default_rng(int(seed)).permutation(len(keys))
    n_test, n_valid = int(round(test * len(keys))), int(round(valid * len(keys)))
    out = {}
    for rank, i in enumerate(order):
        out[keys[i]] = "test" if rank < n_test else "valid" if rank < n_test + n_valid else "train"
    return out


def build_items(name: str, task: str, root: str | Path, ctx: Context) -> SplitResult:
    from musicpetl.data.registry import get_dataset

    ds = get_dataset(name)
    if task not in ds.tasks:
        raise ValueError(f"dataset {name!r} has no task {task!r}; valid: {', '.join(ds.tasks)}")
    res = ds.build(task, Path(root), ctx)
    keys = [r["key"] for r in res.rows]
    dup = [k for k, n in Counter(keys).items() if n > 1]
    if dup:
        raise ValueError(f"{name}/{task}: duplicate item keys in the manifest, e.g. {dup[:3]}")
    return res


def split_counts(rows: list[dict]) -> dict[str, int]:
    c = Counter(r["split"] for r in rows)
    return {s: c.get(s, 0) for s in ("train", "valid", "test")}
