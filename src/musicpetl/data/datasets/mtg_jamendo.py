"""MTG-Jamendo: auto-tagging, top-50 tags, the official split-0.

Layout of the dataset folder (data.root/mtg_jamendo, or `data.overrides.mtg_jamendo_dir`), the
paths of the MTG/mtg-jamendo-dataset repository plus the unpacked audio tars:

    data/splits/split-0/autotagging_top50tags-{train,validation,test}.tsv   32,136 / 10,888 / 11,356
    data/tags/top50.txt                                                      the 50 classes, in order
    audio/<NN>/<id>.mp3            raw_30s_audio-00..99.tar (508 GB), or with
    audio-low/<NN>/<id>.low.mp3    `mtg_jamendo_audio: audio-low`, the mono low-bitrate set (156 GB)

Each tar is downloaded (SHA-256 from the repository's data/download/raw_30s_<type>_sha256_tars.txt),
unpacked and deleted before the next batch, so the disk never holds much more than the audio.
Overrides: `mtg_jamendo_dir` (files already there: download nothing), `mtg_jamendo_audio`
("audio" | "audio-low"), `mtg_jamendo_base_url` (a mirror laid out like cdn.freesound.org/mtg-jamendo/:
`raw_30s/<type>/<tar>`), `mtg_jamendo_workers` (tars fetched at once, default 4).
"""
from __future__ import annotations

from pathlib import Path

from musicpetl.data import download as dl
from musicpetl.data import checksums, parsers
from musicpetl.data.dataset import AUDIO_MISSING, Context, Dataset, SplitResult, unlisted_audio
from musicpetl.data.datasets.common import missing_error, remove_download, require_user_files, user_dir
from musicpetl.data.download import Source
from musicpetl.errors import InputError

NAME = "mtg_jamendo"
SPLITS = {"train": "train", "valid": "validation", "test": "test"}
MIRRORS = ("https://cdn.freesound.org/mtg-jamendo/",  # the repository's "mtg-fast" mirror
           "https://essentia.upf.edu/documentation/datasets/mtg-jamendo/")
AUDIO_TYPES = ("audio", "audio-low")

# MTG/mtg-jamendo-dataset at master (2024-07-09); the checksums of its split and tag files at that
# commit, and of every raw_30s tar (the repository's data/download/raw_30s_<type>_sha256_tars.txt),
# are in checksums/mtg_jamendo.json
_REPO = "https://raw.githubusercontent.com/MTG/mtg-jamendo-dataset/1b4fa8c32e076c73b5175c1703ae805b4109309d/"
META_SOURCES = [Source(name, (_REPO + name,), **sums)
                for name, sums in checksums.table("mtg_jamendo")["meta"].items()]
# audio type -> tar name -> SHA-256
TAR_SHA256 = {t: {name: sums["sha256"] for name, sums in checksums.table("mtg_jamendo")["tars"][t].items()}
              for t in AUDIO_TYPES}


def audio_sources(audio_type: str = "audio", base_url: str | None = None) -> list[Source]:
    """The 100 tars of one audio type, each with its mirrors and SHA-256."""
    bases = (base_url.rstrip("/") + "/",) if base_url else MIRRORS
    return [Source(name, tuple(f"{b}raw_30s/{audio_type}/{name}" for b in bases), sha256=sha)
            for name, sha in sorted(TAR_SHA256[audio_type].items())]


def _audio_type(ctx: Context) -> str:
    t = str((ctx.overrides or {}).get("mtg_jamendo_audio", "audio"))
    if t not in AUDIO_TYPES:
        raise InputError(f"mtg_jamendo_audio must be one of {AUDIO_TYPES}, got {t!r}")
    return t


def _missing_metadata(folder: Path) -> list[str]:
    return [f"{s.name} (from github.com/MTG/mtg-jamendo-dataset)" for s in META_SOURCES
            if not (folder / s.name).is_file()]


def fetch(root: Path, ctx: Context) -> None:
    folder = DATASET.folder(root, ctx)
    over = ctx.overrides or {}
    audio_type = _audio_type(ctx)
    audio_dir = folder / audio_type
    if user_dir(ctx, NAME):
        missing = _missing_metadata(folder)
        if not audio_dir.is_dir() or not any(p.is_dir() for p in audio_dir.iterdir()):
            missing.append(f"{audio_type}/<NN>/<id>{'.low' if audio_type == 'audio-low' else ''}.mp3 "
                           "(the unpacked raw_30s tars; none found)")
        require_user_files(NAME, folder, missing)
        return
    folder.mkdir(parents=True, exist_ok=True)
    dl.fetch_all(META_SOURCES, folder, progress=ctx.progress)
    # a tar is done once download.extract has written its marker; then the tar itself is gone
    todo = [s for s in audio_sources(audio_type, over.get("mtg_jamendo_base_url"))
            if not (audio_dir / f".extracted-{s.name}").is_file()]
    workers = max(1, int(over.get("mtg_jamendo_workers", 4)))
    downloads = folder / "downloads"
    for i in range(0, len(todo), workers):
        batch = todo[i:i + workers]
        for tar in dl.fetch_all(batch, downloads, progress=ctx.progress, workers=workers):
            dl.extract(tar, audio_dir, progress=ctx.progress)
            remove_download(tar)


def build(task: str, root: Path, ctx: Context) -> SplitResult:
    folder = DATASET.folder(root, ctx)
    missing = _missing_metadata(folder)
    if missing:
        raise missing_error(NAME, folder, missing, "Run the download stage first.")
    audio_type = _audio_type(ctx)
    classes = parsers.parse_tag_list(parsers.read_text(folder / "data" / "tags" / "top50.txt"))
    index = {t: i for i, t in enumerate(classes)}
    rows, dropped, listed = [], [], set()
    for split, file_split in SPLITS.items():
        path = folder / "data" / "splits" / "split-0" / f"autotagging_top50tags-{file_split}.tsv"
        for rec in parsers.read_mtg_tsv(path):
            unknown = [t for t in rec["tags"] if t not in index]
            if unknown:
                raise InputError(f"{path}: {rec['track_id']} has tags outside data/tags/top50.txt: {unknown}")
            audio = folder / audio_type / parsers.mtg_audio_path(rec["path"], audio_type == "audio-low")
            listed.add(audio.resolve())
            if not audio.is_file():
                dropped.append({"key": rec["track_id"], "split": split, "reason": AUDIO_MISSING})
                continue
            rows.append({"key": rec["track_id"], "split": split, "audio_path": str(audio),
                         "label": sorted(index[t] for t in rec["tags"])})
    # tracks of raw_30s without a top-50 tag are in no split-0 list
    dropped += unlisted_audio(folder / audio_type, listed, (".mp3",), folder)
    return SplitResult(rows, dropped, classes)


DATASET = Dataset(NAME, ("tagging",),
                  "MTG-Jamendo raw_30s, top-50 tags, split-0 (32,136 / 10,888 / 11,356 tracks)", fetch, build)
