"""GTZAN: genre (fault-filtered split), key (Lerch's annotations) and tempo (gtzan_tempo_beat).

Layout of the dataset folder (data.root/gtzan, or `data.overrides.gtzan_dir`):

    <any sub-folders>/<genre>/<genre>.<nnnnn>.wav|.au   the 1,000 clips (any depth, any mirror)
    splits/{train,valid,test}_filtered.txt              coreyker/dnn-mgr `gtzan/`: 443 / 197 / 290
    gtzan_key/gtzan_key/genres/<g>/<id>.lerch.txt       a clone of alexanderlerch/gtzan_key
    gtzan_tempo_beat/tempo/gtzan_<g>_<nnnnn>.bpm        a clone of TempoBeatDownbeat/gtzan_tempo_beat

The original tarball URL is dead and mirrors differ (some hold a corrupt jazz.00054.wav), so the
audio comes from `data.overrides.gtzan_archive` (a URL or a local path of e.g. genres.tar.gz;
optional `gtzan_archive_md5`). With `gtzan_dir` nothing is downloaded: the files must be there.

All three tasks use the fault-filtered split (Kereliuk et al. / Sturm): train 443, valid 197,
test 290. Key leaves out the clips annotated -1 (unknown or modulating): 364 / 165 / 240. Tempo
has no annotation for reggae.00086 (not in the filtered lists); jazz.00031 is 321.6 BPM, above the
300-bin output range: it is in the validation list, where only the metric (madmom, on BPM values)
sees it, so it is kept.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from musicpetl.data import parsers
from musicpetl.data.dataset import Context, Dataset, SplitResult
from musicpetl.data import download as dl
from musicpetl.data.download import DownloadError, Source
from musicpetl.data.datasets.common import fetch_repo, github_archive, missing_error, remove_download, require_user_files, user_dir
from musicpetl.tasks.key import KEY_NAMES

log = logging.getLogger(__name__)

NAME = "gtzan"
GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
AUDIO_EXTENSIONS = (".wav", ".au", ".mp3", ".flac", ".ogg")
SPLITS = {"train": "train", "valid": "valid", "test": "test"}  # our split name -> list file prefix

# coreyker/dnn-mgr at master (2016-08-28); checksums of the files at that commit
_DNN_MGR = "https://raw.githubusercontent.com/coreyker/dnn-mgr/bdad579ea6cb37b665ea6019fe1026a6ce20cbc7/gtzan/"
SPLIT_SOURCES = [
    Source("train_filtered.txt", (_DNN_MGR + "train_filtered.txt",),
           sha256="2b04966cef1486f1a7767b74271533fa23e220388db804a1937835e1fc4fa3fa", size=10152),
    Source("valid_filtered.txt", (_DNN_MGR + "valid_filtered.txt",),
           sha256="f8fbee7c52397a0e0f3a91dc54fedecb2e27f5bdc9a9daeab8cb10d077e26956", size=4522),
    Source("test_filtered.txt", (_DNN_MGR + "test_filtered.txt",),
           sha256="09cafa6a89ce0a27f30ed250d56ecb4d03c22fffb5a693f96c7ae655ee02ac72", size=6616),
]

# folder name -> archive (alexanderlerch/gtzan_key tag v1.0; gtzan_tempo_beat main, 2021-11-05)
REPO_SOURCES = {
    "gtzan_key": github_archive("alexanderlerch", "gtzan_key", "9ef1591f81ee2f7821c7ce41e774ea7ac7f94cbe"),
    "gtzan_tempo_beat": github_archive("TempoBeatDownbeat", "gtzan_tempo_beat",
                                       "fd9cafdebb6426fee41c3718791be61306323dd7"),
}


# --------------------------------------------------------------------------- GTZAN


def _key_dir(folder: Path) -> Path:
    return folder / "gtzan_key" / "gtzan_key" / "genres"


def _tempo_dir(folder: Path) -> Path:
    return folder / "gtzan_tempo_beat" / "tempo"


_AUDIO_RE = re.compile(r"([a-z]+)\.(\d{5})")


def audio_index(folder: Path) -> dict[str, Path]:
    """'blues.00029' -> its audio file, wherever it lies under `folder` (.wav preferred over .au)."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for p in sorted(folder.rglob("*")):
        suffix = p.suffix.lower()
        if suffix not in AUDIO_EXTENSIONS or not p.is_file() or p.name.startswith("."):
            continue
        m = _AUDIO_RE.fullmatch(p.stem)
        if not m or m.group(1) not in GENRES or p.parent.name != m.group(1):
            continue
        if p.stem not in found or suffix == ".wav":
            found[p.stem] = p
    return found


def _missing_metadata(folder: Path) -> list[str]:
    out = [f"splits/{s.name}" for s in SPLIT_SOURCES if not (folder / "splits" / s.name).is_file()]
    if not _key_dir(folder).is_dir():
        out.append("gtzan_key/gtzan_key/genres/ (a clone of github.com/alexanderlerch/gtzan_key)")
    if not _tempo_dir(folder).is_dir():
        out.append("gtzan_tempo_beat/tempo/ (a clone of github.com/TempoBeatDownbeat/gtzan_tempo_beat)")
    return out


_AUDIO_HINT = ("GTZAN has no working official download: set data.overrides.gtzan_archive to a URL or a "
               "local path of the GTZAN archive (e.g. genres.tar.gz; optional gtzan_archive_md5), or "
               "data.overrides.gtzan_dir to a folder that already holds the clips and annotations.")


def fetch(root: Path, ctx: Context) -> None:
    folder = DATASET.folder(root, ctx)
    over = ctx.overrides or {}
    if user_dir(ctx, NAME):
        missing = _missing_metadata(folder)
        if not audio_index(folder):
            missing.append("audio: <genre>/<genre>.<nnnnn>.wav|.au files (none found)")
        require_user_files(NAME, folder, missing)
        return
    folder.mkdir(parents=True, exist_ok=True)
    dl.fetch_all(SPLIT_SOURCES, folder / "splits", progress=ctx.progress)
    if not _key_dir(folder).is_dir():
        fetch_repo(REPO_SOURCES["gtzan_key"], folder, "gtzan_key", ctx.progress)
    if not _tempo_dir(folder).is_dir():
        fetch_repo(REPO_SOURCES["gtzan_tempo_beat"], folder, "gtzan_tempo_beat", ctx.progress)
    n = len(audio_index(folder))
    if n >= 1000 or (n and any((folder / "audio").glob(".extracted-*"))):
        return  # complete, or the user's archive was unpacked already (some mirrors lack clips)
    archive_url = over.get("gtzan_archive")
    if not archive_url:
        raise FileNotFoundError(f"gtzan: no audio under {folder}. {_AUDIO_HINT}")
    archive_url = str(archive_url)
    name = Path(archive_url.split("?")[0].rstrip("/")).name or "gtzan_archive"
    source = Source(name, (archive_url,), md5=over.get("gtzan_archive_md5") or None)
    archive = dl.fetch(source, folder / "downloads", progress=ctx.progress)
    dl.extract(archive, folder / "audio", progress=ctx.progress)
    remove_download(archive)
    n = len(audio_index(folder))
    if n == 0:
        raise DownloadError(f"gtzan: the archive {archive_url} holds no <genre>/<genre>.<nnnnn>.wav|.au files")
    if n < 1000:
        log.warning("gtzan: only %d of 1000 clips found after extracting %s; the rest are dropped", n, name)


def build(task: str, root: Path, ctx: Context) -> SplitResult:
    folder = DATASET.folder(root, ctx)
    need = [m for m in _missing_metadata(folder)
            if m.startswith("splits/") or (task == "key" and "gtzan_key" in m)
            or (task == "tempo" and "gtzan_tempo_beat" in m)]
    if need:
        raise missing_error(NAME, folder, need, "Run the download stage first.")
    audio = audio_index(folder)
    rows, dropped = [], []
    for split in ("train", "valid", "test"):
        for genre, stem in parsers.read_gtzan_list(folder / "splits" / f"{SPLITS[split]}_filtered.txt"):
            if task == "genre":
                label, reason = GENRES.index(genre), None
            elif task == "key":
                f = _key_dir(folder) / genre / f"{stem}.lerch.txt"
                label, reason = (parsers.gtzan_key_label(parsers.read_text(f)) if f.is_file()
                                 else (None, "no key annotation"))
            elif task == "tempo":
                f = _tempo_dir(folder) / parsers.gtzan_tempo_filename(stem)
                label, reason = (parsers.parse_bpm(parsers.read_text(f)), None) if f.is_file() \
                    else (None, "no tempo annotation")
            else:
                raise ValueError(f"gtzan has no task {task!r}; valid: {', '.join(DATASET.tasks)}")
            if reason is None and stem not in audio:
                reason = "audio missing"
            if reason is not None:
                dropped.append({"key": stem, "reason": reason})
                continue
            rows.append({"key": stem, "split": split, "audio_path": str(audio[stem]), "label": label})
    classes = {"genre": list(GENRES), "key": list(KEY_NAMES), "tempo": []}[task]
    return SplitResult(rows, dropped, classes)


DATASET = Dataset(NAME, ("genre", "key", "tempo"),
                  "GTZAN, 1,000 30-s clips: genre (fault-filtered split), key (Lerch) and tempo "
                  "(gtzan_tempo_beat) annotations; audio from a user-given archive or folder",
                  fetch, build)
