"""The embedded synthetic corpus (data/synth.py) as a dataset: key, tempo, tagging, style as genre."""
from __future__ import annotations

import json
from pathlib import Path

from musicpetl.data.dataset import Context, Dataset, SplitResult
from musicpetl.data.splits import seeded_split
from musicpetl.tasks.key import KEY_NAMES

NAME = "synth"


def _stamp(ctx: Context) -> dict:
    return {"seed": int(ctx.seed), "n_clips": int(ctx.synth.get("n_clips", 240)),
            "duration": float(ctx.synth.get("duration", 6.0))}


def fetch(root: Path, ctx: Context) -> None:
    from musicpetl.data.synth import generate_corpus

    folder = DATASET.folder(root, ctx)
    stamp_file = folder / "corpus.json"
    stamp = _stamp(ctx)
    # generation is deterministic: an existing corpus from the same settings is reused
    if stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp and (folder / "annotations.jsonl").exists():
        return
    generate_corpus(folder, stamp["n_clips"], stamp["duration"], seed=stamp["seed"], progress=ctx.progress)
    stamp_file.write_text(json.dumps(stamp))


def build(task: str, root: Path, ctx: Context) -> SplitResult:
    from musicpetl.data.synth import STYLES, TAGS

    folder = DATASET.folder(root, ctx)
    ann = folder / "annotations.jsonl"
    if not ann.exists():
        raise FileNotFoundError(f"{ann} not found: run the download stage first (it generates the corpus)")
    base = [json.loads(line) for line in ann.read_text().splitlines() if line.strip()]
    splits = seeded_split([r["key"] for r in base], ctx.seed, valid=ctx.split.get("valid_share", 0.15),
                          test=ctx.split.get("test_share", 0.15))
    label_of = {"key": lambda r: r["key_label"], "tempo": lambda r: float(r["tempo"]),
                "tagging": lambda r: [TAGS.index(t) for t in r["tags"]], "genre": lambda r: STYLES.index(r["style"])}
    classes = {"key": list(KEY_NAMES), "tempo": [], "tagging": list(TAGS), "genre": list(STYLES)}[task]
    rows = [{"key": r["key"], "split": splits[r["key"]], "audio_path": DATASET.manifest_path(folder / r["audio_path"], root),
             "label": label_of[task](r)} for r in base]
    return SplitResult(rows, [], classes)


DATASET = Dataset(NAME, ("key", "tempo", "tagging", "genre"),
                  "embedded synthetic corpus rendered from known key, tempo, instruments and style (offline)",
                  fetch, build)
