"""Dataset registry: `DATASETS[name]`, one module per dataset under data/datasets/."""
from __future__ import annotations

from pathlib import Path

from musicpetl.data.dataset import Context, Dataset
from musicpetl.data.datasets import giantsteps, gtzan, mtat, mtg_jamendo, synth

DATASETS: dict[str, Dataset] = {d.name: d for d in (synth.DATASET, mtat.DATASET, mtg_jamendo.DATASET, gtzan.DATASET, giantsteps.DATASET)}


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise ValueError(f"unknown data.dataset {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name]


def download(name: str, root: str | Path, ctx: Context) -> Path:
    """Fetch (or generate) what is missing; return the dataset's folder."""
    ds = get_dataset(name)
    ds.fetch(Path(root), ctx)
    return ds.folder(Path(root), ctx)


def dataset_index(name: str, root: str | Path, ctx: Context) -> dict:
    """Every file of the dataset with its size: the download stage's output, so DVC notices changes."""
    folder = get_dataset(name).folder(Path(root), ctx)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return {"dataset": name, "folder": str(folder),
            "files": [[str(p.relative_to(folder)), p.stat().st_size] for p in files]}
