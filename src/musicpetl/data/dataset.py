"""What a dataset entry is: where its files come from, how its annotations and split are read."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from musicpetl.data.walk import walk_files

# reasons in SplitResult.dropped that the split checks count (data/splits.py)
AUDIO_MISSING = "audio missing"                          # listed by an annotation file, not on disk
UNLISTED = "audio file not in any annotation list"       # on disk, listed nowhere


@dataclass
class Context:
    """Everything a dataset entry may read from params, passed to `fetch` and `build`."""
    seed: int = 0
    task: str = ""  # data.task: a dataset serving several tasks fetches only what this one needs
    overrides: dict = field(default_factory=dict)  # data.overrides: local paths / archive URLs
    split: dict = field(default_factory=dict)  # data.split: shares for datasets without an official split
    synth: dict = field(default_factory=dict)  # data.synth
    progress: bool = True

    @classmethod
    def from_params(cls, p) -> "Context":
        """What dataset entries read of params.yaml (a config.Params)."""
        return cls(seed=p.seed, task=p.data.task, overrides=dict(p.data.overrides), split=vars(p.data.split),
                   synth=vars(p.data.synth))


@dataclass
class SplitResult:
    """Manifest rows `{key, split, audio_path, label, ...}` (audio_path relative to data.root, or
    absolute), the items left out `{key, reason, split?, audio_path?}` (split: where the dataset's
    lists put it, when they do), and the class names of the task (empty for regression)."""
    rows: list[dict]
    dropped: list[dict]
    classes: list[str]


@dataclass(frozen=True)
class Dataset:
    name: str
    tasks: tuple[str, ...]
    description: str
    # fetch(root, ctx): download (or generate) whatever is missing under root / <dir>
    fetch: Callable[[Path, Context], None]
    # build(task, root, ctx): parse annotations and apply the published split
    build: Callable[[str, Path, Context], SplitResult]
    # per-dataset folder under data.root; `data.overrides[<name>_dir]` points it at files a user has
    dir: str = ""
    # generated datasets only: generator(folder) -> the params the files there were generated from
    generator: Callable[[Path], dict] | None = None

    def folder(self, root: Path, ctx: Context | None = None) -> Path:
        """Where this dataset's files are: an override path if given, else data.root/<dir>."""
        over = (ctx.overrides if ctx else {}).get(f"{self.name}_dir")
        return Path(over) if over else Path(root) / (self.dir or self.name)

    @staticmethod
    def manifest_path(path: Path, root: Path) -> str:
        """A manifest's audio_path: relative to data.root when the file is under it (manifests stay
        portable between clones), else absolute (a `<name>_dir` override elsewhere)."""
        path, root = Path(path), Path(root)
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            return str(path.resolve())


def unlisted_audio(audio_dir: Path, listed: Iterable[Path], extensions: tuple[str, ...],
                   key_base: Path) -> list[dict]:
    """Dropped-item records for the audio files under `audio_dir` (symlinked folders followed) that
    no annotation list names: `listed` holds the resolved paths of those the lists do name. Keys are
    paths relative to `key_base`."""
    listed = set(listed)
    out = []
    for p in walk_files(audio_dir):
        if p.suffix.lower() in extensions and p.resolve() not in listed:
            out.append({"key": p.relative_to(key_base).as_posix(), "reason": UNLISTED, "audio_path": str(p)})
    return out
