"""Helpers every real dataset entry uses: repository snapshots, clear missing-file errors, mirrors."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from musicpetl.data import download as dl
from musicpetl.data.dataset import Context
from musicpetl.data.download import DownloadError, Source


def github_archive(owner: str, repo: str, commit: str) -> Source:
    """A repository snapshot at a pinned commit (GitHub does not promise byte-identical archives,
    so no checksum: the extracted files are checked instead)."""
    return Source(f"{repo}-{commit[:12]}.tar.gz",
                  (f"https://codeload.github.com/{owner}/{repo}/tar.gz/{commit}",
                   f"https://github.com/{owner}/{repo}/archive/{commit}.tar.gz"))


# folder name -> archive (alexanderlerch/gtzan_key tag v1.0; gtzan_tempo_beat main, 2021-11-05)
REPO_SOURCES = {
    "gtzan_key": github_archive("alexanderlerch", "gtzan_key", "9ef1591f81ee2f7821c7ce41e774ea7ac7f94cbe"),
    "gtzan_tempo_beat": github_archive("TempoBeatDownbeat", "gtzan_tempo_beat",
                                       "fd9cafdebb6426fee41c3718791be61306323dd7"),
}


def missing_error(name: str, folder: Path, missing: list[str], hint: str) -> FileNotFoundError:
    shown = "\n  ".join(missing[:10]) + (f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else "")
    return FileNotFoundError(f"{name}: {folder} lacks:\n  {shown}\n{hint}")


def require_user_files(name: str, folder: Path, missing: list[str]) -> None:
    """With `<name>_dir` set nothing is downloaded: what is missing there is an error."""
    if missing:
        raise missing_error(name, folder, missing, f"data.overrides.{name}_dir is set, so nothing is downloaded: "
                            f"add the files, or unset {name}_dir to download into data.root.")


def fetch_repo(source: Source, folder: Path, dest_name: str, progress: bool = True) -> Path:
    """Download a repository archive, unpack its single top folder to `folder/dest_name`, remove
    the archive. Into an existing `dest_name` (an incomplete earlier run) the repository's entries
    are merged: what else is there (downloaded audio) stays."""
    dest = folder / dest_name
    archive = dl.fetch(source, folder / "downloads", progress=progress)
    tmp = folder / f".unpack-{dest_name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    dl.extract(archive, tmp, progress=progress)
    tops = [p for p in tmp.iterdir() if not p.name.startswith(".")]
    if len(tops) != 1 or not tops[0].is_dir():
        raise DownloadError(f"{archive.name}: expected one top folder, found {[p.name for p in tops]}")
    if dest.is_dir():
        for entry in tops[0].iterdir():
            out = dest / entry.name
            if out.is_dir() and not out.is_symlink():
                shutil.rmtree(out)
            elif out.exists() or out.is_symlink():
                out.unlink()
            os.replace(entry, out)
    else:
        os.replace(tops[0], dest)
    shutil.rmtree(tmp)
    remove_download(archive)
    return dest


def remove_download(path: Path) -> None:
    """Delete an archive once unpacked (and its downloads/ folder when empty). Its digests live on
    in the extraction marker; its ledger line goes with it."""
    path.unlink(missing_ok=True)
    dl.forget_verified(path)
    try:
        path.parent.rmdir()
    except OSError:
        pass


def with_base_url(source: Source, base: str | None) -> Source:
    """Replace the mirrors of `source` by `<base>/<name>` (a user's mirror or a test server)."""
    if not base:
        return source
    return Source(source.name, (base.rstrip("/") + "/" + source.name,), source.md5, source.sha256, source.size)


def user_dir(ctx: Context, name: str) -> bool:
    return bool((ctx.overrides or {}).get(f"{name}_dir"))
