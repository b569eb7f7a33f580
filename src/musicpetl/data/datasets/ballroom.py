"""Ballroom: 698 excerpts of ballroom dance music (~30 s, 44.1 kHz mono WAV; Gouyon et al. 2006)
with the beat annotations of Krebs, Böck & Widmer (ISMIR 2013), CPJKU/BallroomAnnotations.

Layout of the dataset folder (data.root/ballroom, or `data.overrides.ballroom_dir`):

    audio/BallroomData/<Style>/<name>.wav     data1.tar.gz unpacked (any depth; the style is the folder)
    BallroomAnnotations/<name>.beats          a clone of CPJKU/BallroomAnnotations: '<time> <beat in bar>'

Sources: the audio archive `data1.tar.gz` from MTG (md5 2872a3e5..., published in the annotation
repository's README; resumed and checked like every download, `ballroom_base_url` points at a
mirror folder holding a file of that name), the annotations as a repository snapshot at a pinned
commit, checked after unpacking by one SHA-256 over every .beats file's name and SHA-256
(checksums/ballroom.json). With `ballroom_dir` set nothing is downloaded: the files must be there.

Split: none is published (papers use 8-fold cross-validation), so a seeded one with the data.split
shares and the experiment seed, stratified by dance style (scikit-learn, see
datasets/folder.py `stratified_split`). Tasks: beat. Intros without music are not annotated
(the README): the first annotated beat can come seconds into the file.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from musicpetl.data import checksums, parsers
from musicpetl.data import download as dl
from musicpetl.data.dataset import AUDIO_MISSING, UNLISTED, Context, Dataset, SplitResult
from musicpetl.data.datasets.common import (fetch_repo, github_archive, missing_error, remove_download,
                                            require_user_files, user_dir, with_base_url)
from musicpetl.data.datasets.folder import stratified_split
from musicpetl.data.download import DownloadError, Source
from musicpetl.data.walk import walk_files
from musicpetl.errors import InputError

log = logging.getLogger(__name__)

NAME = "ballroom"
N_TRACKS = 698
ANNOTATIONS = "BallroomAnnotations"
_MTG = "http://mtg.upf.edu/ismir2004/contest/tempoContest/"
AUDIO_SOURCE = Source("data1.tar.gz", (_MTG + "data1.tar.gz", _MTG.replace("http://", "https://") + "data1.tar.gz"),
                      **checksums.table(NAME)["audio"]["data1.tar.gz"])
ANNOTATION_SOURCE = github_archive("CPJKU", "BallroomAnnotations", "1db08914a8ae15edb01f104046e30bad88effe67")
ANNOTATION_SHA256 = checksums.table(NAME)["annotations"]["sha256"]


def _ann_dir(folder: Path) -> Path:
    return folder / ANNOTATIONS


def annotation_files(folder: Path) -> dict[str, Path]:
    """'<name>' -> its .beats file."""
    d = _ann_dir(folder)
    return {p.stem: p for p in sorted(d.glob("*.beats"))} if d.is_dir() else {}


def annotations_digest(folder: Path) -> str:
    """SHA-256 over '<file name>\\t<sha256>\\n' of every .beats file, sorted by name (checksums/ballroom.json)."""
    h = hashlib.sha256()
    for name, p in sorted((p.name, p) for p in annotation_files(folder).values()):
        h.update(f"{name}\t{dl.hash_file(p)}\n".encode())
    return h.hexdigest()


def _scan_audio(folder: Path) -> tuple[dict[str, tuple[Path, str]], list[Path]]:
    """('<name>' -> (wav file, style folder), the .wav files whose name was found before)."""
    found: dict[str, tuple[Path, str]] = {}
    duplicates = []
    for p in walk_files(folder / "audio") if (folder / "audio").is_dir() else walk_files(folder):
        if p.suffix.lower() != ".wav" or _ann_dir(folder) in p.parents:
            continue
        if p.stem in found:
            duplicates.append(p)
            continue
        found[p.stem] = (p, p.parent.name)
    return found, duplicates


def fetch(root: Path, ctx: Context) -> None:
    folder = DATASET.folder(root, ctx)
    over = ctx.overrides or {}
    if user_dir(ctx, NAME):
        missing = []
        if not annotation_files(folder):
            missing.append(f"{ANNOTATIONS}/<name>.beats (a clone of github.com/CPJKU/BallroomAnnotations)")
        if not _scan_audio(folder)[0]:
            missing.append("audio/.../<Style>/<name>.wav (data1.tar.gz unpacked; none found)")
        require_user_files(NAME, folder, missing)
        return
    folder.mkdir(parents=True, exist_ok=True)
    if not annotation_files(folder) or annotations_digest(folder) != ANNOTATION_SHA256:
        fetch_repo(ANNOTATION_SOURCE, folder, ANNOTATIONS, ctx.progress)
    digest = annotations_digest(folder)
    if digest != ANNOTATION_SHA256:
        n = len(annotation_files(folder))
        raise DownloadError(f"ballroom: {_ann_dir(folder)} ({n} .beats files) does not match the pinned "
                            f"CPJKU/BallroomAnnotations snapshot (content sha256 {digest}, expected "
                            f"{ANNOTATION_SHA256}); delete the folder to fetch it again")
    if len(_scan_audio(folder)[0]) >= N_TRACKS or any((folder / "audio").glob(".extracted-*")):
        return  # complete, or the archive was unpacked already (what it lacks, build lists as missing)
    source = with_base_url(AUDIO_SOURCE, over.get("ballroom_base_url"))
    archive = dl.fetch(source, folder / "downloads", progress=ctx.progress)
    dl.extract(archive, folder / "audio", progress=ctx.progress)
    remove_download(archive)
    n = len(_scan_audio(folder)[0])
    if n == 0:
        raise DownloadError(f"ballroom: {source.name} holds no .wav files")
    if n < N_TRACKS:
        log.warning("ballroom: %d of %d excerpts after extracting %s; the rest are dropped", n, N_TRACKS, source.name)


def build(task: str, root: Path, ctx: Context) -> SplitResult:
    if task != "beat":
        raise InputError(f"ballroom has no task {task!r}; valid: {', '.join(DATASET.tasks)}")
    folder = DATASET.folder(root, ctx)
    ann = annotation_files(folder)
    if not ann:
        raise missing_error(NAME, folder, [f"{ANNOTATIONS}/<name>.beats"], "Run the download stage first.")
    audio, duplicates = _scan_audio(folder)
    usable, dropped = {}, []
    for name, f in ann.items():
        beats, reason = parsers.parse_beat_file(parsers.read_text(f))
        if reason is not None:
            dropped.append({"key": name, "reason": f"beat annotation {f.name}: {reason}"})
        else:
            usable[name] = beats
    # the split covers every usable annotation (missing audio does not move other items around),
    # stratified by the dance style of the audio's folder
    names = sorted(usable)
    split, notes = stratified_split(names, [audio[n][1] if n in audio else "(audio missing)" for n in names],
                                    ctx.seed, valid=ctx.split.get("valid_share", 0.15),
                                    test=ctx.split.get("test_share", 0.15))
    dropped += notes
    rows = []
    for name in names:
        if name not in audio:
            dropped.append({"key": name, "split": split[name], "reason": AUDIO_MISSING})
            continue
        path, style = audio[name]
        rows.append({"key": name, "split": split[name], "audio_path": DATASET.manifest_path(path, root),
                     "label": usable[name], "style": style})
    dropped += [{"key": n, "audio_path": str(p), "reason": f"{UNLISTED} (no beat annotation)"}
                for n, (p, _) in sorted(audio.items()) if n not in ann]
    dropped += [{"key": p.relative_to(folder).as_posix(), "audio_path": str(p),
                 "reason": f"{UNLISTED}: a second file named {p.name}"} for p in duplicates]
    return SplitResult(rows, dropped, [])


DATASET = Dataset(NAME, ("beat",),
                  "Ballroom, 698 ~30-s dance excerpts (MTG data1.tar.gz) with CPJKU beat annotations; seeded split "
                  "stratified by dance style", fetch, build)
