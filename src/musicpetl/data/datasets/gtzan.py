"""GTZAN: genre (fault-filtered split), key (Lerch's annotations), tempo and beats (gtzan_tempo_beat).

Layout of the dataset folder (data.root/gtzan, or `data.overrides.gtzan_dir`):

    <any sub-folders>/<genre>/<genre>.<nnnnn>.wav|.au   the 1,000 clips (any depth, any mirror)
    splits/{train,valid,test}_filtered.txt              coreyker/dnn-mgr `gtzan/`: 443 / 197 / 290
    gtzan_key/gtzan_key/genres/<g>/<id>.lerch.txt       a clone of alexanderlerch/gtzan_key
    gtzan_tempo_beat/tempo/gtzan_<g>_<nnnnn>.bpm        a clone of TempoBeatDownbeat/gtzan_tempo_beat
    gtzan_tempo_beat/beats/gtzan_<g>_<nnnnn>.beats      (the same clone): '<time>\t<beat in bar>' a line

The original tarball URL is dead and mirrors differ (some hold a corrupt jazz.00054.wav), so the
audio comes from `data.overrides.gtzan_archive` (a URL or a local path of e.g. genres.tar.gz;
optional `gtzan_archive_md5`). With `gtzan_dir` nothing is downloaded: the files must be there.

All four tasks use the fault-filtered split (Kereliuk et al. / Sturm): train 443, valid 197,
test 290. Key leaves out the clips annotated -1 (unknown or modulating): 364 / 165 / 240. Tempo
has no annotation for reggae.00086 (not in the filtered lists); jazz.00031 is 321.6 BPM, above the
300-bin output range: it is in the validation list, where only the metric (madmom, on BPM values)
sees it, so it is kept. Beats (gtzan_tempo_beat/beats): 999 files, reggae.00086 again missing;
six jazz files (00003, 00009, 00010, 00014, 00018, 00020) hold times only, no beat-in-bar column,
which parsers.parse_beat_file reads the same.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from musicpetl.data import checksums, parsers
from musicpetl.data.dataset import AUDIO_MISSING, UNLISTED, Context, Dataset, SplitResult
from musicpetl.data import download as dl
from musicpetl.data.download import DownloadError, Source
from musicpetl.data.datasets.common import fetch_repo, github_archive, missing_error, remove_download, require_user_files, user_dir
from musicpetl.data.walk import walk_files
from musicpetl.tasks.key import KEY_NAMES
from musicpetl.errors import InputError, MissingFileError

log = logging.getLogger(__name__)

NAME = "gtzan"
GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
AUDIO_EXTENSIONS = (".wav", ".au", ".mp3", ".flac", ".ogg")
SPLITS = {"train": "train", "valid": "valid", "test": "test"}  # our split name -> list file prefix

# coreyker/dnn-mgr at master (2016-08-28); checksums of the files at that commit in checksums/gtzan.json
_DNN_MGR = "https://raw.githubusercontent.com/coreyker/dnn-mgr/bdad579ea6cb37b665ea6019fe1026a6ce20cbc7/gtzan/"
SPLIT_SOURCES = [Source(name, (_DNN_MGR + name,), **sums)
                 for name, sums in checksums.table("gtzan")["splits"].items()]

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


def _beats_dir(folder: Path) -> Path:
    return folder / "gtzan_tempo_beat" / "beats"


_AUDIO_RE = re.compile(r"([a-z]+)\.(\d{5})")


def _scan_audio(folder: Path) -> tuple[dict[str, Path], list[Path]]:
    """(clip id -> its audio file, audio files that are not laid out as <genre>/<genre>.<nnnnn>.<ext>)
    under `folder`, at any depth, symlinked folders followed; .wav is preferred over other formats."""
    found: dict[str, Path] = {}
    misnamed: list[Path] = []
    for p in sorted(walk_files(folder)):
        suffix = p.suffix.lower()
        if suffix not in AUDIO_EXTENSIONS:
            continue
        m = _AUDIO_RE.fullmatch(p.stem)
        if not m or m.group(1) not in GENRES or p.parent.name != m.group(1):
            misnamed.append(p)
            continue
        if p.stem not in found or suffix == ".wav":
            found[p.stem] = p
    return found, misnamed


def audio_index(folder: Path) -> dict[str, Path]:
    """'blues.00029' -> its audio file, wherever it lies under `folder` (.wav preferred over .au);
    folders reached through symlinks count."""
    return _scan_audio(folder)[0]


# what each task reads besides the split lists
_TASK_METADATA = {"genre": (), "key": ("key",), "tempo": ("tempo",), "beat": ("beat",)}


def _missing_metadata(folder: Path, task: str = "") -> list[str]:
    """What `task` needs that is not in `folder` (every task's needs when `task` is empty)."""
    parts = _TASK_METADATA.get(task, ("key", "tempo"))
    out = [f"splits/{s.name}" for s in SPLIT_SOURCES if not (folder / "splits" / s.name).is_file()]
    if "key" in parts and not _key_dir(folder).is_dir():
        out.append("gtzan_key/gtzan_key/genres/ (a clone of github.com/alexanderlerch/gtzan_key)")
    if "tempo" in parts and not _tempo_dir(folder).is_dir():
        out.append("gtzan_tempo_beat/tempo/ (a clone of github.com/TempoBeatDownbeat/gtzan_tempo_beat)")
    if "beat" in parts and not _beats_dir(folder).is_dir():
        out.append("gtzan_tempo_beat/beats/ (a clone of github.com/TempoBeatDownbeat/gtzan_tempo_beat)")
    return out


_AUDIO_HINT = ("GTZAN has no working official download: set data.overrides.gtzan_archive to a URL or a "
               "local path of the GTZAN archive (e.g. genres.tar.gz; optional gtzan_archive_md5), or "
               "data.overrides.gtzan_dir to a folder that already holds the clips and annotations.")


def fetch(root: Path, ctx: Context) -> None:
    folder = DATASET.folder(root, ctx)
    over = ctx.overrides or {}
    if user_dir(ctx, NAME):
        missing = _missing_metadata(folder, ctx.task)
        if not audio_index(folder):
            missing.append("audio: <genre>/<genre>.<nnnnn>.wav|.au files (none found)")
        require_user_files(NAME, folder, missing)
        return
    folder.mkdir(parents=True, exist_ok=True)
    dl.fetch_all(SPLIT_SOURCES, folder / "splits", progress=ctx.progress)
    parts = _TASK_METADATA.get(ctx.task, ("key", "tempo"))  # only the annotations data.task reads
    if "key" in parts and not _key_dir(folder).is_dir():
        fetch_repo(REPO_SOURCES["gtzan_key"], folder, "gtzan_key", ctx.progress)
    if ("tempo" in parts and not _tempo_dir(folder).is_dir()) or ("beat" in parts and not _beats_dir(folder).is_dir()):
        fetch_repo(REPO_SOURCES["gtzan_tempo_beat"], folder, "gtzan_tempo_beat", ctx.progress)
    n = len(audio_index(folder))
    if n >= 1000 or (n and any((folder / "audio").glob(".extracted-*"))):
        return  # complete, or the user's archive was unpacked already (some mirrors lack clips)
    archive_url = over.get("gtzan_archive")
    if not archive_url:
        raise MissingFileError(f"gtzan: no audio under {folder}. {_AUDIO_HINT}")
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
    if task not in _TASK_METADATA:
        raise InputError(f"gtzan has no task {task!r}; valid: {', '.join(DATASET.tasks)}")
    need = _missing_metadata(folder, task)
    if need:
        raise missing_error(NAME, folder, need, "Run the download stage first.")
    audio, misnamed = _scan_audio(folder)
    rows, dropped, listed = [], [], set()
    for split in ("train", "valid", "test"):
        for genre, stem in parsers.read_gtzan_list(folder / "splits" / f"{SPLITS[split]}_filtered.txt"):
            listed.add(stem)
            if stem not in audio:  # first: the split checks count the listed items without audio
                label, reason = None, AUDIO_MISSING
            elif task == "genre":
                label, reason = GENRES.index(genre), None
            elif task == "key":
                f = _key_dir(folder) / genre / f"{stem}.lerch.txt"
                label, reason = (parsers.gtzan_key_label(parsers.read_text(f)) if f.is_file()
                                 else (None, "no key annotation"))
            elif task == "tempo":
                f = _tempo_dir(folder) / parsers.gtzan_tempo_filename(stem)
                label, reason = (parsers.parse_bpm(parsers.read_text(f)), None) if f.is_file() \
                    else (None, "no tempo annotation")
            elif task == "beat":
                f = _beats_dir(folder) / parsers.gtzan_beats_filename(stem)
                label, reason = parsers.parse_beat_file(parsers.read_text(f)) if f.is_file() \
                    else (None, "no beat annotation")
                if reason is not None and f.is_file():
                    reason = f"beat annotation {f.name}: {reason}"
            if reason is not None:
                dropped.append({"key": stem, "split": split, "reason": reason})
                continue
            rows.append({"key": stem, "split": split, "audio_path": str(audio[stem]), "label": label})
    dropped += [{"key": stem, "reason": f"{UNLISTED} (not in the fault-filtered split)", "audio_path": str(p)}
                for stem, p in sorted(audio.items()) if stem not in listed]
    dropped += [{"key": p.relative_to(folder).as_posix(), "audio_path": str(p),
                 "reason": f"{UNLISTED}: not laid out as <genre>/<genre>.<nnnnn>.<ext>"} for p in misnamed]
    classes = {"genre": list(GENRES), "key": list(KEY_NAMES), "tempo": [], "beat": []}[task]
    return SplitResult(rows, dropped, classes)


DATASET = Dataset(NAME, ("genre", "key", "tempo", "beat"),
                  "GTZAN, 1,000 30-s clips: genre (fault-filtered split), key (Lerch), tempo and beat "
                  "(gtzan_tempo_beat) annotations; audio from a user-given archive or folder",
                  fetch, build)
