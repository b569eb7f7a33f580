"""The embedded synthetic corpus (data/synth.py) as a dataset: key, tempo, tagging, style as genre, beats."""
from __future__ import annotations

import json
from pathlib import Path

from musicpetl.data.dataset import AUDIO_MISSING, Context, Dataset, SplitResult, unlisted_audio
from musicpetl.data.rawindex import folder_content_hash
from musicpetl.data.splits import seeded_split
from musicpetl.tasks.key import KEY_NAMES
from musicpetl.errors import InputError, MissingFileError

NAME = "synth"


STAMP = "corpus.json"  # the generator's params and a hash of what it wrote
ANNOTATIONS_VERSION = 2  # 2: rows carry "beats"


def _params(ctx: Context) -> dict:
    from musicpetl.data.synth import SAMPLE_RATE

    # "annotations": the version of what annotations.jsonl holds (2: with beat times), so that a
    # corpus written before a new field is generated again rather than reused without it
    return {"seed": int(ctx.seed), "n_clips": int(ctx.synth.get("n_clips", 240)),
            "duration": float(ctx.synth.get("duration", 6.0)), "sample_rate": SAMPLE_RATE,
            "annotations": ANNOTATIONS_VERSION}


def fetch(root: Path, ctx: Context) -> None:
    from musicpetl.data.synth import generate_corpus

    folder = DATASET.folder(root, ctx)
    stamp_file = folder / STAMP
    params = _params(ctx)
    # generation is deterministic: an existing corpus from the same params is reused, if its files
    # are still those the generator wrote (else it is written again)
    if stamp_file.is_file() and (folder / "annotations.jsonl").is_file():
        try:
            stamp = json.loads(stamp_file.read_text())
        except ValueError:
            stamp = {}
        if (isinstance(stamp, dict) and {k: stamp.get(k) for k in params} == params
                and stamp.get("content_sha256") == folder_content_hash(folder, exclude=(STAMP,))):
            return
    stamp_file.unlink(missing_ok=True)  # an interrupted generation leaves no stamp to trust
    generate_corpus(folder, params["n_clips"], params["duration"], params["sample_rate"], seed=params["seed"],
                    progress=ctx.progress)
    stamp_file.write_text(json.dumps({**params, "content_sha256": folder_content_hash(folder, exclude=(STAMP,))},
                                     sort_keys=True) + "\n")


def generator(folder: Path) -> dict:
    """The params the corpus in `folder` was generated from (the download index records them)."""
    path = Path(folder) / STAMP
    if not path.is_file():
        raise MissingFileError(f"{path} not found: run the download stage (it generates the corpus)")
    try:
        stamp = json.loads(path.read_text())
    except ValueError as err:
        raise InputError(f"{path}: not valid JSON ({err}); rerun the download stage to regenerate") from None
    if not isinstance(stamp, dict):
        raise InputError(f"{path}: expected an object of generator params; rerun the download stage")
    return stamp


def build(task: str, root: Path, ctx: Context) -> SplitResult:
    from musicpetl.data.synth import STYLES, TAGS

    folder = DATASET.folder(root, ctx)
    ann = folder / "annotations.jsonl"
    if not ann.exists():
        raise MissingFileError(f"{ann} not found: run the download stage first (it generates the corpus)")
    base = [json.loads(line) for line in ann.read_text().splitlines() if line.strip()]
    splits = seeded_split([r["key"] for r in base], ctx.seed, valid=ctx.split.get("valid_share", 0.15),
                          test=ctx.split.get("test_share", 0.15))
    if task == "beat" and base and "beats" not in base[0]:
        raise InputError(f"{ann} has no beat times (a corpus from before they were written): regenerate it with "
                         "`dvc repro -f -s download`")
    label_of = {"key": lambda r: r["key_label"], "tempo": lambda r: float(r["tempo"]),
                "tagging": lambda r: [TAGS.index(t) for t in r["tags"]], "genre": lambda r: STYLES.index(r["style"]),
                "beat": lambda r: [float(b) for b in r["beats"]]}
    classes = {"key": list(KEY_NAMES), "tempo": [], "tagging": list(TAGS), "genre": list(STYLES), "beat": []}[task]
    rows, dropped = [], []
    for r in base:
        path = folder / r["audio_path"]
        if not path.is_file():
            dropped.append({"key": r["key"], "split": splits[r["key"]], "reason": AUDIO_MISSING})
            continue
        rows.append({"key": r["key"], "split": splits[r["key"]], "audio_path": DATASET.manifest_path(path, root),
                     "label": label_of[task](r)})
    listed = {(folder / r["audio_path"]).resolve() for r in base}
    dropped += unlisted_audio(folder / "audio", listed, (".wav",), folder)
    return SplitResult(rows, dropped, classes)


DATASET = Dataset(NAME, ("key", "tempo", "tagging", "genre", "beat"),
                  "embedded synthetic corpus rendered from known key, tempo, beats, instruments and style (offline)",
                  fetch, build, generator=generator)
