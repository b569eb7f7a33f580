"""MagnaTagATune: auto-tagging, top-50 tags, the split of Won et al. (2020).

Layout of the dataset folder (data.root/mtat, or `data.overrides.mtat_dir`):

    mp3/<0-9a-f>/<clip>.mp3            mp3.zip.001-003 joined and unpacked (16 kHz mono, ~29 s);
                                       with mtat_dir the 0-9a-f folders may also sit at the top
    annotations_final.csv, clip_info_final.csv
    split/{train,valid,test,binary,tags}.npy   minzwon/sota-music-tagging-models split/mtat/

Split entries are '<row>\\t<dir>/<clip>.mp3'; <row> indexes binary.npy (clips x 50, columns in
tags.npy order). Train 15,244, valid 1,529, test 4,332. Some MP3s are broken: the prepare stage
drops what it cannot decode. Overrides: `mtat_dir` (files already there: download nothing),
`mtat_base_url` (a mirror holding mp3.zip.001-003 and the CSV files).
"""
from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from musicpetl.data import download as dl
from musicpetl.data import checksums, parsers
from musicpetl.data.dataset import AUDIO_MISSING, Context, Dataset, SplitResult, unlisted_audio
from musicpetl.data.datasets.common import missing_error, remove_download, require_user_files, user_dir, with_base_url
from musicpetl.data.download import DownloadError, Source
from musicpetl.errors import InputError

log = logging.getLogger(__name__)

NAME = "mtat"
SPLITS = ("train", "valid", "test")
_MIRRORS = ("https://mirg.city.ac.uk/datasets/magnatagatune/", "http://mi.soi.city.ac.uk/datasets/magnatagatune/")


def _sources(section: str) -> list[Source]:
    """The files of one section of checksums/mtat.json (MD5s as the dataset page publishes them)."""
    return [Source(name, tuple(m + name for m in _MIRRORS), **sums)
            for name, sums in checksums.table("mtat")[section].items()]


AUDIO_SOURCES = _sources("audio")  # mp3.zip.001-003
META_SOURCES = _sources("meta")    # annotations_final.csv, clip_info_final.csv
# The split files (binary .npy; no checksum published). First the commit that holds them in the
# public index, then the default branch.
_SPLIT_BASES = ("https://raw.githubusercontent.com/minzwon/sota-music-tagging-models/"
                "c5c726c0caff82d3c2127618bd4cd8185940837a/split/mtat/",
                "https://raw.githubusercontent.com/minzwon/sota-music-tagging-models/master/split/mtat/")
SPLIT_SOURCES = [Source(f"{n}.npy", tuple(b + f"{n}.npy" for b in _SPLIT_BASES))
                 for n in ("train", "valid", "test", "binary", "tags")]


def audio_root(folder: Path) -> Path:
    """Where the 0-9a-f folders are: `mp3/`, or the dataset folder itself (a user's copy)."""
    return folder / "mp3" if (folder / "mp3").is_dir() else folder


_AUDIO_DIRS = "0123456789abcdef"


def _has_audio(folder: Path) -> bool:
    root = audio_root(folder)
    return any((root / d).is_dir() and any((root / d).glob("*.mp3")) for d in _AUDIO_DIRS)


def _missing_split_files(folder: Path) -> list[str]:
    return [f"split/{s.name} (github.com/minzwon/sota-music-tagging-models split/mtat/)"
            for s in SPLIT_SOURCES if not (folder / "split" / s.name).is_file()]


def _unzip(zip_path: Path, target: Path, progress: bool) -> None:
    """Unpack mp3.zip; the joined archive sometimes needs `zip -FF` first (docs/DATASETS.md)."""
    try:
        dl.extract(zip_path, target, progress=progress)
        return
    except DownloadError as err:
        if shutil.which("zip") is None:
            raise DownloadError(f"{err}\nThe joined MTAT archive may need repairing: install `zip` and run again "
                                f"(it runs `zip -FF {zip_path.name} --out mp3_fixed.zip`).") from err
        log.warning("mtat: %s; repairing with zip -FF", err)
    fixed = zip_path.with_name("mp3_fixed.zip")
    res = subprocess.run(["zip", "-FF", str(zip_path), "--out", str(fixed)], input=b"y\n", capture_output=True)
    if res.returncode != 0 or not fixed.is_file():
        tail = res.stderr.decode(errors="replace")[-500:]
        raise DownloadError(f"zip -FF {zip_path} failed ({res.returncode}): {tail}")
    info = dl.verified_info(zip_path)
    if info:  # the repaired archive is still the verified one, as far as its provenance goes
        dl.record_verified(fixed, {"repaired_from": {"name": zip_path.name, **info}})
    dl.extract(fixed, target, progress=progress)
    remove_download(fixed)


def fetch(root: Path, ctx: Context) -> None:
    folder = DATASET.folder(root, ctx)
    if user_dir(ctx, NAME):
        missing = _missing_split_files(folder)
        if not _has_audio(folder):
            missing.append("mp3/<0-9a-f>/<clip>.mp3 (the unpacked mp3.zip; none found)")
        require_user_files(NAME, folder, missing)
        return
    base = (ctx.overrides or {}).get("mtat_base_url")
    folder.mkdir(parents=True, exist_ok=True)
    dl.fetch_all(SPLIT_SOURCES, folder / "split", progress=ctx.progress)
    dl.fetch_all([with_base_url(s, base) for s in META_SOURCES], folder, progress=ctx.progress)
    if any((folder / "mp3").glob(".extracted-*")):
        return  # unpacked by an earlier run (the marker is written last)
    downloads = folder / "downloads"
    parts = dl.fetch_all([with_base_url(s, base) for s in AUDIO_SOURCES], downloads, progress=ctx.progress,
                         workers=3)
    zip_path = dl.join_parts(parts, downloads / "mp3.zip")
    _unzip(zip_path, folder / "mp3", ctx.progress)
    if not _has_audio(folder):
        raise DownloadError(f"mtat: {zip_path.name} did not unpack to mp3/<0-9a-f>/<clip>.mp3: "
                            f"look at {folder / 'mp3'}")
    for p in (*parts, zip_path):
        remove_download(p)


def build(task: str, root: Path, ctx: Context) -> SplitResult:
    folder = DATASET.folder(root, ctx)
    missing = _missing_split_files(folder)
    if missing:
        raise missing_error(NAME, folder, missing, "Run the download stage first.")
    classes = parsers.read_mtat_tags(folder / "split" / "tags.npy")
    binary = parsers.read_mtat_binary(folder / "split" / "binary.npy", len(classes))
    audio = audio_root(folder)
    rows, dropped, listed = [], [], set()
    for split in SPLITS:
        for row, rel in parsers.read_mtat_split(folder / "split" / f"{split}.npy"):
            if not 0 <= row < len(binary):
                raise InputError(f"split/{split}.npy: row {row} of {rel} is outside binary.npy ({len(binary)} rows)")
            key = rel[:-4] if rel.endswith(".mp3") else rel
            path = audio / rel
            listed.add(path.resolve())
            if not path.is_file():
                dropped.append({"key": key, "split": split, "reason": AUDIO_MISSING})
                continue
            rows.append({"key": key, "split": split, "audio_path": str(path),
                         "label": parsers.multi_hot_indices(binary[row])})
    for d in _AUDIO_DIRS:  # the clips the split leaves out (of 25,863)
        dropped += unlisted_audio(audio / d, listed, (".mp3",), audio)
    return SplitResult(rows, dropped, classes)


DATASET = Dataset(NAME, ("tagging",),
                  "MagnaTagATune, top-50 tags, split of Won et al. 2020 (15,244 / 1,529 / 4,332 clips)",
                  fetch, build)
