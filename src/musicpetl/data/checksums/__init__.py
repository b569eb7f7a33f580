"""Published checksums of the datasets' files, as data: one JSON file per dataset in this folder
(package data, installed with the package), each saying in "source" where its values come from.

    table("gtzan") -> {"source": ..., "splits": {"train_filtered.txt": {"sha256": ..., "size": ...}}}

Every value is checked on load (hex of the right length, sizes whole numbers), so a damaged table
fails at import with the file and entry named instead of as a checksum mismatch on every download.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources

from musicpetl.errors import InputError

_HEX = {"md5": 32, "sha256": 64}


@lru_cache(maxsize=None)
def table(name: str) -> dict:
    """The checksum table `<name>.json` of this package, checked."""
    res = resources.files(__name__).joinpath(f"{name}.json")
    where = f"musicpetl/data/checksums/{name}.json"
    try:
        data = json.loads(res.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{where} not found: the package was installed without its data files") from None
    except ValueError as err:
        raise InputError(f"{where}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("source"), str):
        raise InputError(f"{where}: expected an object with a \"source\" string")
    _check(data, where)
    return data


def _check(node: dict, where: str) -> None:
    for key, value in node.items():
        path = f"{where}: {key}"
        if key in _HEX:
            n = _HEX[key]
            if not isinstance(value, str) or not re.fullmatch(rf"[0-9a-f]{{{n}}}", value):
                raise InputError(f"{path} must be {n} lower-case hex digits, got {value!r}")
        elif key == "size":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{path} must be a whole number of bytes, got {value!r}")
        elif isinstance(value, dict):
            _check(value, path)
        elif key != "source":
            raise InputError(f"{path}: expected md5, sha256, size or a group of entries, got {value!r}")
