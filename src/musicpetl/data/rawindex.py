"""The download index (data/download.json): the raw files of a dataset identified by content, and
the check that they are still those files before a stage uses them.

Raw audio is not a DVC output (MTG-Jamendo alone is 508 GB); stages depend on this index instead,
so the index has to change whenever the content does. Each file is a row
`[path, size, mtime_ns | null, "sha256:<hex>" | "md5:<hex>" | null]`, chosen per file:

- generated data (the synth corpus): the SHA-256 of every file and no mtime, plus the generator's
  params and one content hash over all files; the same params give the same index on any machine;
- files verified on download: the published digest they matched (the download ledger, see
  data/download.py), with size and mtime_ns; an unpacked archive's own verified digests are listed
  under "archives" (from its extraction marker);
- everything else (a `<name>_dir` user folder, unpacked audio): size and mtime_ns, one stat per
  file, cheap for 500 GB. `data.overrides.hash_raw: true` adds the SHA-256 of every file (reads
  all of it once, at indexing).

`verify_index` re-checks a recorded index: one stat per file; a file whose size or mtime changed is
re-hashed when a digest is recorded (a `touch` is not a change), and is a change otherwise; files
without mtime (generated) are re-hashed. Missing and added files count too.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from musicpetl.data import download as dl
from musicpetl.data.walk import walk_files
from musicpetl.errors import InputError, MissingFileError
from musicpetl.io import atomic_path

FORMAT = 2
ORIGINS = ("generated", "downloaded", "user folder")
_SHOWN = 8  # file names per kind of change in an error message


def _rel(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix()


def content_hash(rows: list[list]) -> str | None:
    """One SHA-256 over (path, size, sha256) of every row, or None when a row has no SHA-256."""
    h = hashlib.sha256()
    for rel, size, _mtime, digest in sorted(rows, key=lambda r: r[0]):
        if not (isinstance(digest, str) and digest.startswith("sha256:")):
            return None
        h.update(f"{rel}\t{size}\t{digest}\n".encode())
    return h.hexdigest()


def folder_content_hash(folder: Path, exclude: tuple[str, ...] = ()) -> str | None:
    """SHA-256 over every file of `folder` (hidden ones and `exclude`d paths left out), hashing all."""
    folder = Path(folder)
    rows = [[_rel(p, folder), p.stat().st_size, None, "sha256:" + dl.hash_file(p)]
            for p in walk_files(folder) if _rel(p, folder) not in exclude]
    return content_hash(rows) if rows else None


def _archives(folder: Path) -> dict[str, dict]:
    """Archives unpacked into `folder` (from their extraction markers): where -> digests, members."""
    out = {}
    for marker in sorted(folder.rglob(".extracted-*")):
        if not marker.is_file() or marker.name.endswith(".tmp"):
            continue
        info, members = dl.read_marker(marker)
        name = marker.name[len(".extracted-"):]
        where = _rel(marker.parent / name, folder)
        out[where] = {**{k: v for k, v in info.items() if k != "name"}, "files": len(members)}
    return out


def build_index(name: str, folder: Path, *, origin: str, hash_all: bool = False,
                generator: dict | None = None) -> dict:
    """The index of every (non-hidden) file under `folder`, symlinked folders followed."""
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {ORIGINS}, got {origin!r}")
    folder = Path(folder)
    generated = origin == "generated"
    ledgers: dict[Path, dict] = {}
    rows = []
    for p in sorted(walk_files(folder)):
        st = p.stat()
        if generated or hash_all:
            digest = "sha256:" + dl.hash_file(p)
        else:
            if p.parent not in ledgers:
                ledgers[p.parent] = dl.read_ledger(p.parent)
            v = dl.verified_digests(p, ledgers[p.parent])
            digest = f"sha256:{v['sha256']}" if "sha256" in v else f"md5:{v['md5']}" if "md5" in v else None
        rows.append([_rel(p, folder), st.st_size, None if generated else st.st_mtime_ns, digest])
    index = {"format": FORMAT, "dataset": name, "folder": str(folder), "origin": origin,
             "policy": ("sha256 of every file" if generated or hash_all else
                        "size + mtime_ns; published digest where verified on download"),
             "files": rows}
    if generator is not None:
        index["generator"] = generator
    archives = _archives(folder) if folder.is_dir() else {}
    if archives:
        index["archives"] = archives
    digest = content_hash(rows)
    if digest and rows:
        index["content_sha256"] = digest
    return index


def write_index(path: str | Path, index: dict) -> None:
    """JSON with one file row a line (readable, and diffable for a 55,000-file dataset)."""
    head = {k: v for k, v in index.items() if k != "files"}
    lines = [json.dumps(r) for r in index["files"]]
    text = json.dumps(head, indent=2, sort_keys=True)[:-2]
    text += ',\n  "files": [\n' + ",\n".join("    " + ln for ln in lines) + ("\n  ]\n}\n" if lines else "  ]\n}\n")
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def load_index(path: str | Path) -> dict:
    """A download index, checked for shape; errors name the file and how to rebuild it."""
    path = Path(path)
    fix = "rerun the download stage (dvc repro -f -s download)"
    if not path.is_file():
        raise MissingFileError(f"{path} not found: run the download stage first (dvc repro)")
    try:
        index = json.loads(path.read_text())
    except ValueError as err:
        raise InputError(f"{path}: not valid JSON ({err}); {fix}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        got = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise InputError(f"{path}: not a download index of format {FORMAT} (got format {got!r}); {fix}")
    for key, kind in (("dataset", str), ("folder", str), ("files", list)):
        if not isinstance(index.get(key), kind):
            raise InputError(f"{path}: \"{key}\" must be a {kind.__name__}, got {index.get(key)!r}; {fix}")
    for row in index["files"]:
        if not (isinstance(row, list) and len(row) == 4 and isinstance(row[0], str)
                and isinstance(row[1], int) and (row[2] is None or isinstance(row[2], int))
                and (row[3] is None or (isinstance(row[3], str) and row[3].split(":")[0] in ("md5", "sha256")))):
            raise InputError(f"{path}: bad file row {row!r}: expected [path, size, mtime_ns|null, "
                             f"'sha256:<hex>'|'md5:<hex>'|null]; {fix}")
    return index


def verify_index(index_path: str | Path = "data/download.json", *, dataset: str | None = None,
                 folder: str | Path | None = None) -> dict:
    """Check that the raw files are still those `index_path` records (see the module doc); raise
    InputError naming the changed, missing and added files. `dataset`/`folder`: what the calling
    stage is about to read (data.dataset and its folder), which must be what was indexed.
    Returns counts: {"files", "rehashed"}."""
    index = load_index(index_path)
    root = Path(index["folder"])
    if dataset is not None and index["dataset"] != dataset:
        raise InputError(f"{index_path} indexes dataset {index['dataset']!r}, but data.dataset is {dataset!r}: "
                         "run the download stage first (dvc repro)")
    if folder is not None and os.path.realpath(folder) != os.path.realpath(root):
        raise InputError(f"{index_path} indexes {root}, but this stage reads {folder}: run the download stage "
                         "first (dvc repro)")
    current = {_rel(p, root): p for p in walk_files(root)}
    changed: list[str] = []
    missing: list[str] = []
    rehashed = 0
    for rel, size, mtime, digest in index["files"]:
        p = current.pop(rel, None)
        if p is None:
            missing.append(rel)
            continue
        st = p.stat()
        if st.st_size != size:
            changed.append(f"{rel} (size {size} -> {st.st_size})")
        elif mtime is not None and st.st_mtime_ns == mtime:
            continue
        elif digest is not None:
            algo, want = digest.split(":", 1)
            rehashed += 1
            if dl.hash_file(p, algo) != want:
                changed.append(f"{rel} (content)")
        else:
            changed.append(f"{rel} (modified)")
    added = sorted(current)
    if changed or missing or added:
        parts = [f"{len(v)} {what} ({_names(v)})" for what, v in
                 (("changed", changed), ("missing", missing), ("added", added)) if v]
        raise InputError(
            f"{root}: the raw data changed after the download stage indexed it in {index_path}: "
            f"{'; '.join(parts)}. Later stages would pair these files with labels, splits and caches made "
            f"for the indexed ones. If the change is wanted, re-index with `dvc repro -f -s download` (a "
            f"generated corpus is regenerated from params) and run again; otherwise restore the files.")
    return {"files": len(index["files"]), "rehashed": rehashed}


def _names(items: list[str]) -> str:
    more = f", ... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more
