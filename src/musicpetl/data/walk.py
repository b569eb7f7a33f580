"""Listing the files of a dataset folder the way users lay them out: through symlinked folders.

`Path.rglob` does not descend into directory symlinks, so a folder of links (`genres/blues ->
/disk2/gtzan/blues`) looked empty. `walk_files` follows them (os.walk(followlinks=True)) and visits
each real directory once, so a link to an ancestor cannot loop and two links to one folder do not
list its files twice. Hidden entries (a leading '.': download ledgers, extraction markers, the
temporary folders of an interrupted unpack) are left out.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator


def walk_files(folder: str | Path, *, hidden: bool = False) -> Iterator[Path]:
    """Every regular file under `folder` (symlinks to files included, broken ones not), as paths
    under `folder` (not resolved), in a fixed order (a folder's files by name, then its sub-folders
    by name); directory symlinks are followed, each real directory once."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    seen: set[tuple[int, int]] = set()
    for top, dirs, files in os.walk(folder, followlinks=True):
        st = os.stat(top)
        if (st.st_dev, st.st_ino) in seen:  # reached again through a link: a cycle or a duplicate
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if hidden or not d.startswith("."))
        base = Path(top)
        for name in sorted(files):
            if not hidden and name.startswith("."):
                continue
            p = base / name
            if p.is_file():
                yield p
