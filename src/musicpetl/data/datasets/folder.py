"""Your own audio: a folder of audio files (any format the decoder reads, any sample rate, channel
count and depth) with a labels file, or with one sub-folder per class for genre.

    data.dataset: folder
    data.overrides:
      folder_dir: /path/to/my_corpus          # required; nothing is downloaded
      folder_labels: labels.csv               # optional; relative to folder_dir, and inside it
      folder_tag_sep: ";"                     # tags column separator (default ";")

The labels file is CSV (`.tsv`/`.tab`: tab-separated), a header row, then one row per audio file:

    column            holds                                                    task
    path              the audio file, relative to folder_dir (or absolute inside it)   (required)
    genre or class    the class name                                           genre
    key               a key as people write it: 'C major', 'c minor', 'Db',   key
                      'C#:min', 'A min', 'Bbm', 'F# Major' (parsers.parse_key_spelling)
    tempo or bpm      the tempo in BPM                                         tempo
    tags              tag names separated by folder_tag_sep                    tagging
    beats             a beat annotation file (one time in seconds a line,      beat
                      more columns ignored; parsers.parse_beat_file)
    split             train / valid / test (optional; also validation, val, dev, test)

Without `folder_labels`, every first-level sub-folder of folder_dir is a class (genre only) and
every audio file below it, at any depth, an item of that class.

Without a split column, the split is seeded (data.split shares, the experiment seed) and stratified
by class where the task has one class per item (genre, key): scikit-learn's `train_test_split`
with `stratify`. A class too small to reach every split goes to train whole, and when scikit-learn
cannot stratify at all (fewer held-out items than classes) that split is drawn at random; either is
said in data/splits/dropped.jsonl as a `split note` entry (no item is left out by it).

Bad input: the labels file's structure (no path column, no column for data.task, rows with the
wrong number of cells, an empty path, a path outside folder_dir, the same path twice, an unknown
split name, a split column with an empty cell) stops the split stage with one line naming the file
and row. A label that cannot be used (an empty cell, a key that cannot be read, a BPM of 0 or a
word, an empty or unsorted beat file) drops that item, listed with its row and reason in
data/splits/dropped.jsonl; so is an audio file that is not there (`audio missing`, counted against
data.min_present), a class folder without audio, and an audio file the labels file does not name.
Undecodable audio is found by the prepare stage, which lists it in data/prepared/rejected.jsonl
and counts it in metrics/prepare.json; the run goes on without it.
"""
from __future__ import annotations

import csv
import io
import math
import posixpath
from collections import Counter
from pathlib import Path, PurePosixPath

from musicpetl.data import parsers
from musicpetl.data.dataset import AUDIO_MISSING, UNLISTED, Context, Dataset, SplitResult, unlisted_audio
from musicpetl.data.splits import seeded_split
from musicpetl.data.walk import walk_files
from musicpetl.errors import InputError, MissingFileError
from musicpetl.tasks.key import KEY_NAMES

NAME = "folder"
TASKS = ("genre", "key", "tempo", "tagging", "beat")
# what the decoder (audio.decode: libsndfile, then librosa/audioread) reads
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".au", ".snd", ".aif", ".aiff", ".aifc",
                    ".caf", ".w64", ".rf64", ".m4a", ".aac", ".wma", ".mp4")
# task -> the column names it may be read from (header names are matched case-insensitively)
TASK_COLUMNS = {"genre": ("genre", "class"), "key": ("key",), "tempo": ("tempo", "bpm"), "tagging": ("tags",),
                "beat": ("beats",)}
SPLIT_NAMES = {"train": "train", "training": "train", "valid": "valid", "validation": "valid", "val": "valid",
               "dev": "valid", "test": "test", "testing": "test"}
MAX_BPM = 299.5  # the tempo head has one bin per BPM, 0..299 (tasks/tempo.py)
SPLIT_NOTE = "split note"  # dropped-file entries that describe the split, not an item left out


def _options(ctx: Context) -> dict:
    over = ctx.overrides or {}
    folder = over.get("folder_dir")
    if not folder or not isinstance(folder, str):
        raise InputError("data.dataset folder reads your own audio: set data.overrides.folder_dir to its folder "
                         f"(e.g. dvc exp run -S ++data.overrides.folder_dir=/data/my_corpus), got {folder!r}")
    labels = over.get("folder_labels") or ""
    if not isinstance(labels, str):
        raise InputError(f"data.overrides.folder_labels must be a path (a string), got {labels!r}")
    sep = over.get("folder_tag_sep", ";")
    if not isinstance(sep, str) or not sep.strip():
        raise InputError(f"data.overrides.folder_tag_sep must be a non-blank string, got {sep!r}")
    return {"dir": Path(folder), "labels": labels, "tag_sep": sep.strip()}


def _inside(folder: Path, given: str, what: str) -> str:
    """`given` (relative to `folder`, or absolute) as a normalised POSIX path relative to `folder`;
    InputError when it lies outside (judged on the path as written: symlinks inside the folder that
    lead elsewhere are fine, the download index follows them)."""
    text = given.strip().replace("\\", "/")
    p = PurePosixPath(text)
    if p.is_absolute():
        for base in (folder.absolute(), folder.resolve()):
            try:
                text = p.relative_to(PurePosixPath(base.as_posix())).as_posix()
                break
            except ValueError:
                continue
        else:
            raise InputError(f"{what} {given!r} is outside folder_dir {folder}: every file must lie inside it "
                             "(the download index covers that folder only)")
    norm = posixpath.normpath(text)
    if norm in ("", ".") or norm == ".." or norm.startswith("../"):
        raise InputError(f"{what} {given!r} is outside folder_dir {folder}: every file must lie inside it "
                         "(the download index covers that folder only)")
    return norm


def labels_path(folder: Path, labels: str) -> Path:
    return folder / _inside(folder, labels, "data.overrides.folder_labels")


def fetch(root: Path, ctx: Context) -> None:
    """Nothing to download: check that the folder (and the labels file, when given) are there."""
    opts = _options(ctx)
    folder = opts["dir"]
    if not folder.is_dir():
        raise MissingFileError(f"data.overrides.folder_dir {folder} is not a folder")
    if opts["labels"]:
        path = labels_path(folder, opts["labels"])
        if not path.is_file():
            raise MissingFileError(f"data.overrides.folder_labels {opts['labels']!r}: {path} not found")
    elif not any(p.suffix.lower() in AUDIO_EXTENSIONS for p in walk_files(folder)):
        raise MissingFileError(f"{folder} holds no audio files ({', '.join(AUDIO_EXTENSIONS[:6])}, ...)")


# ------------------------------------------------------------------------------------- labels


def parse_bpm_cell(text: str) -> tuple[float | None, str | None]:
    """A tempo cell -> (BPM, None) or (None, reason): a positive finite number below the head's range."""
    s = text.strip()
    if not s:
        return None, "no tempo (empty cell)"
    try:
        bpm = float(s)
    except ValueError:
        return None, f"tempo {s!r} is not a number of BPM"
    if not math.isfinite(bpm) or bpm <= 0:
        return None, f"tempo {s} BPM is not a tempo (must be a positive number)"
    if bpm >= MAX_BPM:
        return None, f"tempo {s} BPM is above the tempo head's range (0-299 BPM)"
    return bpm, None


def _read_table(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(lower-cased header, [(line number, cells)]) of a CSV/TSV file; blank lines are not rows."""
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        text = parsers.read_text(path)
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err}); save the labels file as UTF-8 CSV") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
        rows = []
        for cells in reader:
            if cells and any(c.strip() for c in cells):
                rows.append((reader.line_num, cells))
    except StopIteration:
        raise InputError(f"{path}: empty labels file: expected a header row, e.g. 'path,genre'") from None
    except csv.Error as err:
        raise InputError(f"{path} line {reader.line_num}: not valid CSV ({err})") from None
    names = [h.strip().lower() for h in header]
    dup = [n for n, c in Counter(names).items() if c > 1 and n]
    if dup:
        raise InputError(f"{path}: column {dup[0]!r} appears twice in the header {header}")
    return names, rows


def _column(path: Path, names: list[str], task: str | None, wanted: tuple[str, ...], required: bool) -> int | None:
    found = [n for n in wanted if n in names]
    if len(found) > 1:
        raise InputError(f"{path}: both {found[0]!r} and {found[1]!r} columns: keep one for {task}")
    if found:
        return names.index(found[0])
    if required:
        need = " or ".join(repr(w) for w in wanted)
        for_what = f"data.task {task}" if task else "the audio files"
        raise InputError(f"{path}: no {need} column for {for_what}; its columns are {names}")
    return None


def _label(task: str, cell: str, folder: Path, tag_sep: str, line: int, labels_file: Path):
    """(label, None) or (None, reason); the label before class names become indices."""
    s = cell.strip()
    if task == "genre":
        return (s, None) if s else (None, "no class (empty cell)")
    if task == "key":
        return parsers.parse_key_spelling(cell)
    if task == "tempo":
        return parse_bpm_cell(cell)
    if task == "tagging":
        tags = list(dict.fromkeys(t.strip() for t in s.split(tag_sep) if t.strip()))
        return (tags, None) if tags else (None, "no tags (empty cell)")
    if task == "beat":
        if not s:
            return None, "no beat annotation file (empty cell)"
        rel = _inside(folder, s, f"{labels_file.name} line {line}: beat file")
        f = folder / rel
        if not f.is_file():
            return None, f"beat annotation file {rel} not found"
        try:
            text = parsers.read_text(f)
        except (UnicodeDecodeError, OSError) as err:
            return None, f"beat annotation file {rel} unreadable ({err})"
        beats, reason = parsers.parse_beat_file(text)
        return (beats, None) if reason is None else (None, f"beat annotation file {rel}: {reason}")
    raise InputError(f"folder has no task {task!r}; valid: {', '.join(TASKS)}")


def _from_labels_file(task: str, folder: Path, opts: dict) -> tuple[list[dict], list[dict], bool]:
    """Items `{key, line, label, split?}` with a usable label, dropped records, has_split_column."""
    path = labels_path(folder, opts["labels"])
    if not path.is_file():
        raise MissingFileError(f"data.overrides.folder_labels: {path} not found")
    names, table = _read_table(path)
    col_path = _column(path, names, None, ("path",), True)
    col_label = _column(path, names, task, TASK_COLUMNS[task], True)
    col_split = _column(path, names, None, ("split",), False)
    items, dropped, seen = [], [], {}
    for line, cells in table:
        where = f"{path.name} line {line}"
        if len(cells) != len(names):
            raise InputError(f"{where}: {len(cells)} cells, the header has {len(names)} columns: {cells}")
        if not cells[col_path].strip():
            raise InputError(f"{where}: empty path")
        rel = _inside(folder, cells[col_path], f"{where}: path")
        if rel in seen:
            raise InputError(f"{where}: path {rel!r} again (first on line {seen[rel]}): one row per audio file")
        seen[rel] = line
        split = None
        if col_split is not None:
            raw = cells[col_split].strip()
            split = SPLIT_NAMES.get(raw.lower())
            if split is None:
                raise InputError(f"{where}: split {raw!r} is not one of train, valid, test (a split column needs "
                                 "a value on every row; leave the column out for a seeded split)")
        label, reason = _label(task, cells[col_label], folder, opts["tag_sep"], line, path)
        if reason is not None:
            dropped.append({"key": rel, "line": line, "reason": reason, **({"split": split} if split else {})})
            continue
        items.append({"key": rel, "line": line, "label": label, **({"split": split} if split else {})})
    return items, dropped, col_split is not None


def _from_class_folders(task: str, folder: Path) -> tuple[list[dict], list[dict]]:
    """Genre from first-level sub-folders: items `{key, label}`, dropped records."""
    if task != "genre":
        raise InputError(f"data.task {task} needs a labels file: class-per-sub-folder layouts give genre only; set "
                         f"data.overrides.folder_labels to a CSV with a path and a {TASK_COLUMNS[task][0]!r} column")
    items, dropped, classes = [], [], set()
    for p in walk_files(folder):
        rel = p.relative_to(folder).as_posix()
        if p.suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        parts = rel.split("/")
        if len(parts) == 1:
            dropped.append({"key": rel, "audio_path": str(p),
                            "reason": f"{UNLISTED}: directly in folder_dir, not in a class sub-folder"})
            continue
        classes.add(parts[0])
        items.append({"key": rel, "label": parts[0]})
    for sub in sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")):
        if sub.name not in classes:
            dropped.append({"key": f"{sub.name}/", "reason": "empty class folder: no audio files in it, so no class"})
    if not items:
        raise InputError(f"{folder}: no audio files in class sub-folders (<class>/<file>.wav ...); or set "
                         "data.overrides.folder_labels to a labels file")
    return items, dropped


# ------------------------------------------------------------------------------------- split


def _held_out_counts(n: int, share: float) -> int:
    return int(round(share * n))


def stratified_split(keys: list[str], classes: list, seed: int, valid: float, test: float
                     ) -> tuple[dict[str, str], list[dict]]:
    """key -> train/valid/test, stratified by `classes` (one per key), and the notes on where it
    could not be: a class with fewer items than splits goes to train whole; a split scikit-learn
    cannot stratify (fewer held-out items than classes) is drawn at random. Shares as in
    splits.seeded_split (rounded counts); independent of the order of `keys`."""
    from sklearn.model_selection import train_test_split

    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise InputError(f"split shares must be in [0, 1) and sum below 1, got valid={valid}, test={test}")
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    keys = [keys[i] for i in order]
    classes = [classes[i] for i in order]
    out: dict[str, str] = {}
    notes: list[dict] = []
    need = 1 + (valid > 0) + (test > 0)
    size = Counter(classes)
    small = sorted((c for c, n in size.items() if n < need), key=str)
    for c in small:
        notes.append({"key": f"class {c}", "reason": f"{SPLIT_NOTE}: class {c!r} has {size[c]} item(s), too few for "
                      f"one in each of {need} splits: all in train (no item left out)"})
    pool = [(k, c) for k, c in zip(keys, classes) if size[c] >= need]
    out.update({k: "train" for k, c in zip(keys, classes) if size[c] < need})
    n_total = len(pool)

    def cut(items, n_out, name, seed_offset):
        """(kept, held out): `n_out` items held out, stratified by class where scikit-learn can."""
        if n_out <= 0 or not items:
            return items, []
        try:
            return train_test_split(items, test_size=n_out, random_state=seed + seed_offset,
                                    stratify=[c for _, c in items])
        except ValueError as err:
            notes.append({"key": f"split {name}", "reason": f"{SPLIT_NOTE}: the {name} split is drawn at random, "
                          f"not stratified (scikit-learn: {err}); no item left out"})
            return train_test_split(items, test_size=n_out, random_state=seed + seed_offset)

    rest, held_test = cut(pool, _held_out_counts(n_total, test), "test", 0)
    rest, held_valid = cut(rest, _held_out_counts(n_total, valid), "valid", 1)
    out.update({k: "test" for k, _ in held_test})
    out.update({k: "valid" for k, _ in held_valid})
    out.update({k: "train" for k, _ in rest})
    return out, notes


# ------------------------------------------------------------------------------------- build


def build(task: str, root: Path, ctx: Context) -> SplitResult:
    if task not in TASKS:
        raise InputError(f"folder has no task {task!r}; valid: {', '.join(TASKS)}")
    opts = _options(ctx)
    folder = opts["dir"]
    if not folder.is_dir():
        raise MissingFileError(f"data.overrides.folder_dir {folder} is not a folder")
    if opts["labels"]:
        items, dropped, has_split = _from_labels_file(task, folder, opts)
    else:
        items, dropped = _from_class_folders(task, folder)
        has_split = False
    present = {it["key"]: (folder / it["key"]).is_file() for it in items}
    # class names: those of items whose audio is there (a class with none would be an output nobody trains)
    if task == "genre":
        classes = sorted({it["label"] for it in items if present[it["key"]]})
    elif task == "tagging":
        classes = sorted({t for it in items if present[it["key"]] for t in it["label"]})
    elif task == "key":
        classes = list(KEY_NAMES)
    else:
        classes = []
    if not has_split:
        keys = [it["key"] for it in items]
        valid, test = ctx.split.get("valid_share", 0.15), ctx.split.get("test_share", 0.15)
        if task in ("genre", "key"):
            strata = [it["label"] if task == "genre" else KEY_NAMES[it["label"]] for it in items]
            split, notes = stratified_split(keys, strata, ctx.seed, valid, test)
            dropped += notes
        else:  # no single class per item (tempo, beat; tagging is multi-label): a plain seeded split
            split = seeded_split(keys, ctx.seed, valid=valid, test=test)
        for it in items:
            it["split"] = split[it["key"]]
    rows = []
    for it in items:
        path = folder / it["key"]
        where = {"line": it["line"]} if "line" in it else {}
        if not present[it["key"]]:
            dropped.append({"key": it["key"], "split": it["split"], **where, "reason": AUDIO_MISSING})
            continue
        label = it["label"]
        if task == "genre":
            label = classes.index(label)
        elif task == "tagging":
            label = sorted(classes.index(t) for t in label)
        rows.append({"key": it["key"], "split": it["split"], "audio_path": DATASET.manifest_path(path, root),
                     "label": label, **where})
    if opts["labels"]:
        named = {(folder / k).resolve() for k in present}
        named |= {(folder / d["key"]).resolve() for d in dropped if "line" in d}
        dropped += unlisted_audio(folder, named, AUDIO_EXTENSIONS, folder)
    if not rows and not dropped:
        raise InputError(f"{folder}: no items")
    return SplitResult(rows, dropped, classes)


DATASET = Dataset(NAME, TASKS,
                  "your own audio: data.overrides.folder_dir (+ folder_labels: CSV with path and a column per "
                  "task, or class-per-sub-folder genre); seeded stratified split unless the CSV has a split column",
                  fetch, build, dir="folder")
