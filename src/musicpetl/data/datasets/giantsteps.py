"""GiantSteps: key (GiantSteps-MTG-Key for train/valid, GiantSteps Key for test) and tempo.

Layout of the dataset folder (data.root/giantsteps, or `data.overrides.giantsteps_dir`): one
clone per repository, with its audio in `audio/` as the repositories' own audio_dl.sh leaves it.

    giantsteps-mtg-key-dataset/{annotations/annotations.txt, md5/<id>.LOFI.md5, audio/<id>.LOFI.mp3}
    giantsteps-key-dataset/{annotations/key/<id>.LOFI.key, md5/, audio/}
    giantsteps-tempo-dataset/{annotations/tempo/<id>.LOFI.bpm, annotations_v2/tempo/, md5/, audio/}
    splits/tempo_3-1-1_seed<seed>.tsv        written on first use, then reused (stable split)

Splits, as in the paper:
- key train/valid: the 1,486 GiantSteps-MTG-Key tracks with confidence 2 and a single key (1,159),
  split seeded into 925 train / 234 valid (valid share 234/1159; `giantsteps_key_valid_share`);
  key test: the 604 GiantSteps Key tracks minus the four shorter than 120 s (600).
- tempo: the 664 GiantSteps Tempo tracks (annotations/tempo, or annotations_v2 with
  `giantsteps_tempo_annotations: v2`) in a seeded 3:1:1 split (398 / 133 / 133) written to a file.
Both seeded splits use `giantsteps_split_seed` (default 0), not the experiment seed: the items
of each split stay the same across training seeds.

Overrides: `giantsteps_dir` (files already there: download nothing), `giantsteps_base_url` (a
mirror laid out like www.cp.jku.at/datasets/giantsteps/: `mtg_key_backup/` and `backup/`),
`giantsteps_parts` (tasks to fetch, e.g. "key,tempo"; default data.task), `giantsteps_allow_missing_audio`
(go on when some MP3 cannot be fetched from any mirror; build then drops them).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from musicpetl.data import download as dl
from musicpetl.data import parsers
from musicpetl.data.dataset import AUDIO_MISSING, Context, Dataset, SplitResult, unlisted_audio
from musicpetl.data.datasets.common import fetch_repo, github_archive, missing_error, require_user_files, user_dir
from musicpetl.data.download import DownloadError, Source
from musicpetl.data.splits import seeded_split
from musicpetl.tasks.key import KEY_NAMES
from musicpetl.errors import InputError

log = logging.getLogger(__name__)

NAME = "giantsteps"
JKU = "https://www.cp.jku.at/datasets/giantsteps/"
BEATPORT = "https://geo-samples.beatport.com/lofi/"  # the original host; no longer serves the files
KEY_VALID_SHARE = 234 / 1159  # the paper's 925 / 234
TEMPO_SHARES = (0.2, 0.2)  # valid, test: 3:1:1
# GiantSteps Key clips shorter than 120 s (the repository README), left out of the paper's test set
SHORT_KEY_CLIPS = {"1224698": 45, "1442809": 62, "3424038": 77, "4452003": 59}


@dataclass(frozen=True)
class Part:
    repo: str                 # folder name = repository name
    source: Source            # repository archive at a pinned commit
    mirror_dir: str           # sub-folder of the jku mirror that holds the audio
    sentinel: str             # a path that proves the annotations are there
    n_tracks: int             # md5 files in the repository


PARTS = {
    "mtg_key": Part("giantsteps-mtg-key-dataset",
                    github_archive("GiantSteps", "giantsteps-mtg-key-dataset",
                                   "fd7b8c584f7bd6d720d170c325a6d42c9bf75a6b"),
                    "mtg_key_backup/", "annotations/annotations.txt", 1486),
    "key": Part("giantsteps-key-dataset",
                github_archive("GiantSteps", "giantsteps-key-dataset", "6bcd492c825ac9b8597bc650a5f6fd18b6c43d2b"),
                "backup/", "annotations/key", 604),
    "tempo": Part("giantsteps-tempo-dataset",
                  github_archive("GiantSteps", "giantsteps-tempo-dataset", "d51ab2422e76abacfaa86616a57054bc222ec9fd"),
                  "backup/", "annotations/tempo", 664),
}
TASK_PARTS = {"key": ("mtg_key", "key"), "tempo": ("tempo",)}


def _parts(ctx: Context) -> list[str]:
    # only the task being run (data.task), unless the user asks for more
    want = (ctx.overrides or {}).get("giantsteps_parts") or ([ctx.task] if ctx.task in TASK_PARTS else list(TASK_PARTS))
    if isinstance(want, str):
        want = [w.strip() for w in want.split(",") if w.strip()]
    bad = [w for w in want if w not in TASK_PARTS]
    if bad:
        raise InputError(f"giantsteps_parts: unknown task(s) {bad}; valid: {', '.join(TASK_PARTS)}")
    return [p for t in want for p in TASK_PARTS[t]]


def _md5s(repo_dir: Path) -> dict[str, str]:
    """Track id -> MD5 of its MP3, from the repository's md5/ folder."""
    out = {}
    for f in sorted((repo_dir / "md5").glob("*.LOFI.md5")):
        out[parsers.giantsteps_id(f.name)] = parsers.parse_md5_file(parsers.read_text(f))
    return out


def _audio_sources(part: Part, md5s: dict[str, str], base_url: str | None) -> list[Source]:
    bases = ((base_url.rstrip("/") + "/" + part.mirror_dir,) if base_url
             else (JKU + part.mirror_dir, BEATPORT))
    return [Source(f"{i}.LOFI.mp3", tuple(b + f"{i}.LOFI.mp3" for b in bases), md5=m) for i, m in md5s.items()]


def _missing_metadata(folder: Path, parts: list[str]) -> list[str]:
    out = []
    for p in parts:
        part = PARTS[p]
        for rel in (part.sentinel, "md5"):
            if not (folder / part.repo / rel).exists():
                out.append(f"{part.repo}/{rel} (a clone of github.com/GiantSteps/{part.repo})")
    return out


def fetch(root: Path, ctx: Context) -> None:
    folder = DATASET.folder(root, ctx)
    over = ctx.overrides or {}
    parts = _parts(ctx)
    if user_dir(ctx, NAME):
        missing = _missing_metadata(folder, parts)
        for p in parts:
            audio = folder / PARTS[p].repo / "audio"
            if not any(audio.glob("*.LOFI.mp3")):
                missing.append(f"{PARTS[p].repo}/audio/<id>.LOFI.mp3 (none found; the repository's audio_dl.sh "
                               "fetches them)")
        require_user_files(NAME, folder, missing)
        _write_tempo_split(folder, parts, ctx)
        return
    folder.mkdir(parents=True, exist_ok=True)
    failed = []
    for p in parts:
        part = PARTS[p]
        repo_dir = folder / part.repo
        if not (repo_dir / part.sentinel).exists() or not (repo_dir / "md5").is_dir():
            fetch_repo(part.source, folder, part.repo, ctx.progress)
        md5s = _md5s(repo_dir)
        if len(md5s) != part.n_tracks:
            raise DownloadError(f"giantsteps: {repo_dir}/md5 lists {len(md5s)} tracks, expected {part.n_tracks}")
        audio_dir = repo_dir / "audio"
        # files under their final name were verified when written (download.fetch renames only
        # checked files), so only the absent ones are fetched
        todo = [s for s in _audio_sources(part, md5s, over.get("giantsteps_base_url"))
                if not (audio_dir / s.name).is_file()]
        if not todo:
            continue
        try:
            dl.fetch_all(todo, audio_dir, progress=ctx.progress, workers=8)
        except DownloadError as err:
            if not over.get("giantsteps_allow_missing_audio"):
                raise DownloadError(f"{err}\nRun again to retry, or set data.overrides."
                                    "giantsteps_allow_missing_audio: true to go on without them.") from err
            failed.append(str(err).splitlines()[0].rstrip(":"))
    for f in failed:
        log.warning("giantsteps: %s (these items will be dropped as 'audio missing')", f)
    _write_tempo_split(folder, parts, ctx)


def _write_tempo_split(folder: Path, parts: list[str], ctx: Context) -> None:
    """Draw the tempo split file at download time, so the download index covers it and the split
    stage writes nothing into the raw folder."""
    if "tempo" in parts:
        tempo_split(folder, _tempo_tracks(folder), _split_seed(ctx))


def _tempo_tracks(folder: Path) -> list[str]:
    """Every track of GiantSteps Tempo (the v1 annotation list), in id order."""
    ann = folder / PARTS["tempo"].repo / "annotations" / "tempo"
    return sorted((parsers.giantsteps_id(f.name) for f in ann.glob("*.LOFI.bpm")), key=int)


def _split_seed(ctx: Context) -> int:
    return int((ctx.overrides or {}).get("giantsteps_split_seed", 0))


def _audio(folder: Path, part: str, track: str) -> Path:
    return folder / PARTS[part].repo / "audio" / f"{track}.LOFI.mp3"


def _build_key(folder: Path, ctx: Context) -> SplitResult:
    rows, dropped = [], []
    ann = parsers.parse_giantsteps_mtg_annotations(
        parsers.read_text(folder / PARTS["mtg_key"].repo / "annotations" / "annotations.txt"))
    usable = {}
    for track, text, conf in ann:
        label, reason = parsers.giantsteps_mtg_label(text, conf)
        if reason is not None:
            dropped.append({"key": f"mtg-key/{track}", "reason": reason})
        else:
            usable[track] = label
    share = float((ctx.overrides or {}).get("giantsteps_key_valid_share", KEY_VALID_SHARE))
    # the split is drawn over every usable annotation, so missing audio does not move items around
    split = seeded_split(list(usable), _split_seed(ctx), valid=share, test=0.0)
    for track in sorted(usable, key=int):
        path = _audio(folder, "mtg_key", track)
        if not path.is_file():
            dropped.append({"key": f"mtg-key/{track}", "split": split[track], "reason": AUDIO_MISSING})
            continue
        rows.append({"key": f"mtg-key/{track}", "split": split[track], "audio_path": str(path),
                     "label": usable[track]})
    key_files = sorted((folder / PARTS["key"].repo / "annotations" / "key").glob("*.LOFI.key"),
                       key=lambda f: int(parsers.giantsteps_id(f.name)))
    for f in key_files:
        track = parsers.giantsteps_id(f.name)
        if track in SHORT_KEY_CLIPS:
            dropped.append({"key": f"key/{track}", "split": "test",
                            "reason": f"clip shorter than 120 s ({SHORT_KEY_CLIPS[track]} s), excluded by the paper"})
            continue
        path = _audio(folder, "key", track)
        label, reason = (None, AUDIO_MISSING) if not path.is_file() else parsers.parse_key_name(parsers.read_text(f))
        if reason is not None:
            dropped.append({"key": f"key/{track}", "split": "test", "reason": reason})
            continue
        rows.append({"key": f"key/{track}", "split": "test", "audio_path": str(path), "label": label})
    dropped += _unlisted(folder, "mtg_key", [t for t, _, _ in ann])
    dropped += _unlisted(folder, "key", [parsers.giantsteps_id(f.name) for f in key_files])
    return SplitResult(rows, dropped, list(KEY_NAMES))


def _unlisted(folder: Path, part: str, tracks: list[str]) -> list[dict]:
    """The MP3s in a part's audio/ that its annotations do not name."""
    listed = {_audio(folder, part, t).resolve() for t in tracks}
    return unlisted_audio(folder / PARTS[part].repo / "audio", listed, (".mp3",), folder)


def tempo_split(folder: Path, tracks: list[str], seed: int) -> dict[str, str]:
    """The seeded 3:1:1 split of the GiantSteps Tempo tracks, read from its file in the dataset
    folder, or drawn and written there on first use (so it never changes afterwards; the download
    stage draws it)."""
    path = folder / "splits" / f"tempo_3-1-1_seed{seed}.tsv"
    if path.is_file():
        split = parsers.parse_split_file(parsers.read_text(path))
        missing = sorted(set(tracks) - set(split))
        if missing:
            raise InputError(f"{path} lacks {len(missing)} annotated tracks (e.g. {missing[:3]}): it belongs to "
                             "another version of the annotations; delete it to draw a new split")
        return split
    split = seeded_split(tracks, seed, valid=TEMPO_SHARES[0], test=TEMPO_SHARES[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(parsers.format_split_file(
        split, f"GiantSteps Tempo: seeded 3:1:1 split (musicpetl seeded_split, seed {seed}); keep this file"))
    tmp.replace(path)
    return split


def _build_tempo(folder: Path, ctx: Context) -> SplitResult:
    repo_dir = folder / PARTS["tempo"].repo
    version = str((ctx.overrides or {}).get("giantsteps_tempo_annotations", "v1"))
    if version not in ("v1", "v2"):
        raise InputError(f"giantsteps_tempo_annotations must be 'v1' (annotations/) or 'v2' (annotations_v2/), "
                         f"got {version!r}")
    ann_dir = repo_dir / ("annotations" if version == "v1" else "annotations_v2") / "tempo"
    # the split covers every track of the dataset (the v1 list), whichever annotations are used
    tracks = _tempo_tracks(folder)
    split = tempo_split(folder, tracks, _split_seed(ctx))
    rows, dropped = [], []
    for track in tracks:
        f = ann_dir / f"{track}.LOFI.bpm"
        bpm = parsers.parse_bpm(parsers.read_text(f)) if f.is_file() else None
        path = _audio(folder, "tempo", track)
        reason = (AUDIO_MISSING if not path.is_file() else "no tempo annotation" if bpm is None
                  else f"no tempo annotation ({bpm})" if bpm <= 0 else None)
        if reason is not None:
            dropped.append({"key": track, "split": split[track], "reason": reason})
            continue
        rows.append({"key": track, "split": split[track], "audio_path": str(path), "label": bpm})
    dropped += _unlisted(folder, "tempo", tracks)
    return SplitResult(rows, dropped, [])


def build(task: str, root: Path, ctx: Context) -> SplitResult:
    if task not in TASK_PARTS:
        raise InputError(f"giantsteps has no task {task!r}; valid: {', '.join(DATASET.tasks)}")
    folder = DATASET.folder(root, ctx)
    missing = _missing_metadata(folder, list(TASK_PARTS[task]))
    if missing:
        raise missing_error(NAME, folder, missing, "Run the download stage first.")
    return _build_key(folder, ctx) if task == "key" else _build_tempo(folder, ctx)


DATASET = Dataset(NAME, ("key", "tempo"),
                  "GiantSteps EDM previews: key (MTG-Key train/valid, GiantSteps Key test) and tempo "
                  "(seeded 3:1:1 split)", fetch, build)
