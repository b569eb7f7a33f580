"""Dataset registry: `DATASETS[name]`, one module per dataset under data/datasets/."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from musicpetl.data.dataset import Context, Dataset, SplitResult
from musicpetl.data.datasets import ballroom, folder, giantsteps, gtzan, mtat, mtg_jamendo, synth
from musicpetl.data.rawindex import build_index, verify_index  # noqa: F401  (verify_index: for the stages)
from musicpetl.errors import InputError

DATASETS: dict[str, Dataset] = {d.name: d for d in (synth.DATASET, mtat.DATASET, mtg_jamendo.DATASET, gtzan.DATASET,
                                                    giantsteps.DATASET, ballroom.DATASET, folder.DATASET)}


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise InputError(f"unknown data.dataset {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name]


def download(name: str, root: str | Path, ctx: Context) -> Path:
    """Fetch (or generate) what is missing; return the dataset's folder."""
    ds = get_dataset(name)
    ds.fetch(Path(root), ctx)
    return ds.folder(Path(root), ctx)


def dataset_index(name: str, root: str | Path, ctx: Context) -> dict:
    """Every file of the dataset identified by content (data/rawindex.py): the download stage's
    output, so DVC and `verify_index` notice any change. `data.overrides.hash_raw: true` hashes
    every file of a downloaded or user folder too (size + mtime_ns otherwise)."""
    ds = get_dataset(name)
    folder = ds.folder(Path(root), ctx)
    hash_raw = (ctx.overrides or {}).get("hash_raw", False)
    if not isinstance(hash_raw, bool):
        raise InputError(f"data.overrides.hash_raw must be true or false, got {hash_raw!r}")
    if ds.generator is not None:
        return build_index(name, folder, origin="generated", generator=ds.generator(folder))
    origin = "user folder" if (ctx.overrides or {}).get(f"{name}_dir") else "downloaded"
    return build_index(name, folder, origin=origin, hash_all=hash_raw)


def build_items(name: str, task: str, root: str | Path, ctx: Context) -> SplitResult:
    """The manifest of a dataset-task pair: parsed annotations and the published split."""
    ds = get_dataset(name)
    if task not in ds.tasks:
        raise InputError(f"dataset {name!r} has no task {task!r}; valid: {', '.join(ds.tasks)}")
    res = ds.build(task, Path(root), ctx)
    keys = [r["key"] for r in res.rows]
    dup = [k for k, n in Counter(keys).items() if n > 1]
    if dup:
        raise InputError(f"{name}/{task}: duplicate item keys in the manifest, e.g. {dup[:3]}")
    return res
