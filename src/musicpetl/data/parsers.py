"""Parsers for the annotation and split files of the paper's datasets, in their published formats.

Pure functions on strings (the `read_*` helpers only read the file they are given). Each one
documents the format it reads and the quirks of the real files; a label that cannot be used comes
back as `None` with the reason, so that dataset entries can report every item they leave out.

Key labels follow tasks/key.py: C-based pitch class + 12 if minor (C major 0 ... B minor 23).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from musicpetl.errors import InputError

_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_ACCIDENTAL = {"#": 1, "♯": 1, "b": -1, "♭": -1}
_MODE = {"major": 0, "maj": 0, "minor": 1, "min": 1}
_KEY_RE = re.compile(r"^([A-Ga-g])([#♯b♭]*)\s+([A-Za-z]+)$")


def read_text(path: str | Path) -> str:
    """The file's text; a UTF-8 BOM and any line-ending style are accepted."""
    return Path(path).read_text(encoding="utf-8-sig")


# --------------------------------------------------------------------------- key names


def key_label(tonic: str, mode: str) -> int:
    """'Eb', 'minor' -> 15. Sharps and flats (any number, as in 'Cb' or 'E#') are both accepted."""
    m = re.fullmatch(r"([A-Ga-g])([#♯b♭]*)", tonic.strip())
    if not m:
        raise InputError(f"not a key tonic: {tonic!r}")
    mode_l = mode.strip().lower()
    if mode_l not in _MODE:
        raise InputError(f"not a key mode (major/minor): {mode!r}")
    pc = (_PC[m.group(1).upper()] + sum(_ACCIDENTAL[a] for a in m.group(2))) % 12
    return pc + 12 * _MODE[mode_l]


def parse_key_name(text: str) -> tuple[int | None, str | None]:
    """A key written as '<tonic> <mode>' -> (label, None), or (None, reason) when there is no
    single key.

    Accepts 'D# minor', 'Eb major', lower case ('d# minor', as in the per-track .key files of
    giantsteps-mtg-key) and surrounding whitespace ('C# major ' occurs). '-' or an empty field means
    no key was annotated; several keys separated by '/' ('F minor / G# major', 'F / F# minor') are
    ambiguous. Anything else raises ValueError: a format we do not know must not pass silently.
    """
    s = " ".join(text.split())
    if s in ("", "-"):
        return None, "no key annotated ('-')" if s == "-" else "empty key annotation"
    if "/" in s:
        return None, f"ambiguous key annotation {s!r}"
    m = _KEY_RE.match(s)
    if not m or m.group(3).lower() not in _MODE:
        raise InputError(f"cannot parse key name {text!r}: expected '<tonic> major|minor', e.g. 'Eb minor'")
    return key_label(m.group(1) + m.group(2), m.group(3)), None


# how people write keys in their own labels files: tonic, accidentals, an optional separator, a mode
_SPELLING_MODES = {"major": 0, "maj": 0, "ma": 0, "dur": 0, "minor": 1, "min": 1, "mi": 1, "moll": 1}
_SPELLING_RE = re.compile(r"([A-Ga-g])((?:[#♯b♭]|\s*-?\s*(?:sharp|flat)(?![a-z]))*)\s*[:_.\-]?\s*([A-Za-z]*)")


def parse_key_spelling(text: str) -> tuple[int | None, str | None]:
    """A key as a person writes it in a labels file -> (label, None), or (None, reason).

    Accepted: '<tonic>[<accidentals>][<separator>][<mode>]': the tonic A-G in either case;
    accidentals '#', 'b', '♯', '♭' or the words 'sharp'/'flat' ('F sharp minor'); a separator ' ',
    ':', '_', '-', '.' or none; the mode 'major', 'maj', 'ma', 'dur' or 'minor', 'min', 'mi', 'moll'
    in any case, or the single letters 'M' (major) and 'm' (minor). A bare tonic written in upper case
    is major ('Db', as chord symbols and Beatport write it). Enharmonic alternatives naming one key
    ('C#/Db major') are one key. Examples: 'C major', 'c minor', 'Db', 'C#:min', 'A min', 'Bbm',
    'F# Major', 'Ebmaj', 'C:maj' (JAMS), 'F sharp minor', 'a-moll'.

    Never raises: anything else comes back as (None, reason): an empty cell, a bare lower-case
    tonic ('a': minor in some conventions, major in others), several different keys ('F minor / G#
    major'), modes other than major/minor ('C dorian'), tonics outside A-G ('H major').
    """
    raw = text if isinstance(text, str) else str(text)
    s = " ".join(raw.split())
    if s in ("", "-", "?"):
        return None, "no key given (empty cell)" if s == "" else f"no key given ({s!r})"
    if "/" in s:
        parts = [p.strip() for p in s.split("/")]
        last = _SPELLING_RE.fullmatch(parts[-1])
        shared_mode = last.group(3) if last else ""
        parsed = []
        for part in parts:
            m = _SPELLING_RE.fullmatch(part)
            if m and not m.group(3) and shared_mode:  # 'C#/Db major': the last part's mode holds for bare tonics
                part = f"{part} {shared_mode}"
            parsed.append(parse_key_spelling(part))
        labels = {lab for lab, _ in parsed}
        if None in labels or len(labels) != 1:
            return None, f"several keys in {raw!r}: one key per item"
        return labels.pop(), None
    m = _SPELLING_RE.fullmatch(s)
    if not m:
        return None, f"cannot read {raw!r} as a key: expected e.g. 'C major', 'c# minor', 'Db', 'A min' or 'Bbm'"
    letter, accidentals, mode = m.groups()
    acc = re.sub(r"[\s-]", "", accidentals).replace("sharp", "#").replace("flat", "b")
    if mode in ("M", "m"):
        minor = mode == "m"
    elif len(mode) > 1 and mode.lower() in _SPELLING_MODES:
        minor = bool(_SPELLING_MODES[mode.lower()])
    elif mode == "":
        if letter.islower():
            return None, (f"{raw!r} names no mode and its lower-case tonic is ambiguous (minor in some "
                          "conventions, major in others): write e.g. 'A minor' or 'A major'")
        minor = False
    else:
        return None, f"cannot read {raw!r} as a key: unknown mode {mode!r} (major/maj/M or minor/min/m)"
    return key_label(letter.upper() + acc, "minor" if minor else "major"), None


def gtzan_key_label(text: str) -> tuple[int | None, str | None]:
    """One `<id>.lerch.txt` of alexanderlerch/gtzan_key -> (label, None) or (None, reason).

    The file holds a bare integer that is NOT C-based: major A=0, A#=1 ... G#=11, minor a=12 ... g#=23
    (KeyEnumeration.txt), and -1 for unknown or modulating (163 files, all classical). Trailing
    whitespace occurs (blues.00034). C-based pitch class = (n % 12 + 9) % 12, mode = n // 12.
    """
    s = text.strip()
    try:
        n = int(s)
    except ValueError:
        raise InputError(f"GTZAN key annotation must be an integer -1..23, got {text!r}") from None
    if n == -1:
        return None, "key unknown or modulating (-1)"
    if not 0 <= n <= 23:
        raise InputError(f"GTZAN key annotation must be -1..23, got {n}")
    return (n % 12 + 9) % 12 + 12 * (n // 12), None


# --------------------------------------------------------------------------- tempo


def parse_bpm(text: str) -> float:
    """A `.bpm` file: one number, plain ('141.68', GiantSteps) or in numpy's scientific notation
    ('1.258700000000000045e+02', gtzan_tempo_beat), maybe followed by a newline. 0.0 (three files
    of GiantSteps annotations_v2) is returned as is: callers treat a non-positive tempo as missing."""
    parts = text.split()
    if len(parts) != 1:
        raise InputError(f"a .bpm file holds exactly one number, got {text[:60]!r}")
    bpm = float(parts[0])
    if not np.isfinite(bpm) or bpm < 0:
        raise InputError(f"tempo must be a finite non-negative BPM, got {text!r}")
    return bpm


def gtzan_tempo_stem(filename: str) -> str:
    """'gtzan_blues_00000.bpm' (gtzan_tempo_beat/tempo) -> 'blues.00000'."""
    m = re.fullmatch(r"gtzan_([a-z]+)_(\d{5})\.bpm", Path(filename).name)
    if not m:
        raise InputError(f"not a gtzan_tempo_beat tempo file name: {filename!r}")
    return f"{m.group(1)}.{m.group(2)}"


def gtzan_tempo_filename(stem: str) -> str:
    """'blues.00000' -> 'gtzan_blues_00000.bpm'."""
    genre, num = stem.split(".")
    return f"gtzan_{genre}_{num}.bpm"


# --------------------------------------------------------------------------- beats


def parse_beat_file(text: str) -> tuple[list[float] | None, str | None]:
    """A beat annotation file -> (beat times in seconds, None), or (None, reason).

    One beat a line: the time in seconds, then optionally more columns, which are ignored: the beat
    position in the bar ('0.217\\t3', gtzan_tempo_beat and CPJKU's Ballroom annotations) or
    'bar.beat' (older Ballroom files). Whitespace- or comma-separated; blank lines and '#' comments
    are skipped; a time-only line is fine (six files of gtzan_tempo_beat, all jazz, have only
    times). Refused with the reason (never raises): a file without beats, a time that is not a
    finite non-negative number (the line is named), and times that do not strictly increase (the
    first offending line is named).
    """
    times: list[float] = []
    lines: list[int] = []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        first = re.split(r"[\s,;]+", s)[0]
        try:
            t = float(first)
        except ValueError:
            return None, f"line {n}: {first!r} is not a beat time in seconds"
        if not np.isfinite(t) or t < 0:
            return None, f"line {n}: beat time {first} is not a finite non-negative number of seconds"
        times.append(t)
        lines.append(n)
    if not times:
        return None, "no beats in the annotation file (empty)"
    for i in range(1, len(times)):
        if times[i] <= times[i - 1]:
            return None, (f"line {lines[i]}: beat times must strictly increase, got {times[i]:g} s after "
                          f"{times[i - 1]:g} s (line {lines[i - 1]})")
    return times, None


def gtzan_beats_filename(stem: str) -> str:
    """'blues.00000' -> 'gtzan_blues_00000.beats' (gtzan_tempo_beat/beats)."""
    genre, num = stem.split(".")
    return f"gtzan_{genre}_{num}.beats"


# --------------------------------------------------------------------------- GTZAN lists


def parse_gtzan_list_line(line: str) -> tuple[str, str] | None:
    """A line of dnn-mgr's `gtzan/{train,valid,test}_filtered.txt`, 'blues/blues.00029.wav' ->
    ('blues', 'blues.00029'); None for a blank line. The extension is dropped: mirrors hold
    .au or .wav."""
    s = line.strip()
    if not s:
        return None
    m = re.fullmatch(r"([a-z]+)/(([a-z]+)\.(\d{5}))\.[A-Za-z0-9]+", s)
    if not m or m.group(1) != m.group(3):
        raise InputError(f"not a GTZAN list entry '<genre>/<genre>.<5 digits>.<ext>': {line!r}")
    return m.group(1), m.group(2)


def read_gtzan_list(path: str | Path) -> list[tuple[str, str]]:
    return [e for e in map(parse_gtzan_list_line, read_text(path).splitlines()) if e]


def gtzan_key_stem(filename: str) -> str | None:
    """'blues.00034.lerch.txt' -> 'blues.00034'; None for anything else in the folders (the stray
    binary `disco/disco.00055.pk`)."""
    m = re.fullmatch(r"([a-z]+\.\d{5})\.lerch\.txt", Path(filename).name)
    return m.group(1) if m else None


# --------------------------------------------------------------------------- MagnaTagATune


def parse_mtat_split_entry(entry: str) -> tuple[int, str]:
    """An entry of Won et al.'s `split/mtat/{train,valid,test}.npy`: '<row>\\t<dir>/<file>.mp3' ->
    (row of binary.npy, 'dir/file.mp3')."""
    parts = str(entry).strip().split("\t")
    if len(parts) != 2 or not parts[0].isdigit() or "/" not in parts[1]:
        raise InputError(f"not an MTAT split entry '<row>\\t<dir>/<file>.mp3': {entry!r}")
    return int(parts[0]), parts[1]


def read_mtat_split(path: str | Path) -> list[tuple[int, str]]:
    """A split .npy file (a 1-d array of strings) -> [(row, relative mp3 path)]."""
    arr = np.load(path, allow_pickle=False)
    if arr.ndim != 1:
        raise InputError(f"{path}: expected a 1-d array of '<row>\\t<path>' strings, got shape {arr.shape}")
    return [parse_mtat_split_entry(e) for e in arr.tolist()]


def read_mtat_binary(path: str | Path, n_tags: int) -> np.ndarray:
    """`binary.npy`: clips x 50 multi-hot matrix."""
    arr = np.load(path, allow_pickle=False)
    if arr.ndim != 2 or arr.shape[1] != n_tags:
        raise InputError(f"{path}: expected a (clips, {n_tags}) tag matrix, got shape {arr.shape}")
    return arr


def read_mtat_tags(path: str | Path) -> list[str]:
    """`tags.npy`: the 50 tag names in column order of binary.npy."""
    arr = np.load(path, allow_pickle=False)
    return [str(t) for t in arr.tolist()]


def multi_hot_indices(row) -> list[int]:
    return [int(i) for i in np.flatnonzero(np.asarray(row) > 0)]


# --------------------------------------------------------------------------- MTG-Jamendo


def parse_mtg_tsv(text: str) -> list[dict]:
    """A split-0 `autotagging_top50tags-*.tsv`: header `TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION
    TAGS`, tab-separated, CRLF line ends, the tags in a variable number of trailing columns
    ('genre---rock', 'mood/theme---happy'). -> [{track_id, artist_id, album_id, path, duration, tags}]."""
    lines = [ln.rstrip("\r") for ln in text.splitlines()]
    if not lines or lines[0].split("\t")[:6] != ["TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS"]:
        raise InputError(f"not an MTG-Jamendo split file: header is {lines[0][:80] if lines else ''!r}")
    out = []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 6:
            raise InputError(f"line {n}: expected at least 6 tab-separated columns, got {len(cols)}: {line[:80]!r}")
        out.append({"track_id": cols[0], "artist_id": cols[1], "album_id": cols[2], "path": cols[3],
                    "duration": float(cols[4]), "tags": [t.strip() for t in cols[5:] if t.strip()]})
    return out


def read_mtg_tsv(path: str | Path) -> list[dict]:
    return parse_mtg_tsv(read_text(path))


def parse_tag_list(text: str) -> list[str]:
    """`data/tags/top50.txt` (one tag a line) -> tags in file order."""
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def mtg_audio_path(path: str, low_quality: bool = False) -> str:
    """'41/241.mp3' -> itself, or '41/241.low.mp3' for the `audio-low` set."""
    return path[:-4] + ".low.mp3" if low_quality and path.endswith(".mp3") else path


# --------------------------------------------------------------------------- GiantSteps


def parse_giantsteps_mtg_annotations(text: str) -> list[tuple[str, str, int]]:
    """giantsteps-mtg-key-dataset `annotations/annotations.txt`: header 'ID\\tMANUAL KEY\\tC', then
    '<id>\\t<key>\\t<confidence 0|1|2>' -> [(id, raw key text, confidence)]. The key text is kept raw
    ('-', 'F minor / G# major', 'C# major '): parse it with `parse_key_name`."""
    lines = [ln.rstrip("\r") for ln in text.splitlines()]
    if not lines or [c.strip() for c in lines[0].split("\t")] != ["ID", "MANUAL KEY", "C"]:
        raise InputError(f"not a giantsteps-mtg-key annotations file: header is {lines[0][:80] if lines else ''!r}")
    out = []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 3 or not cols[0].strip().isdigit() or cols[2].strip() not in ("0", "1", "2"):
            raise InputError(f"line {n}: expected '<id>\\t<key>\\t<0|1|2>', got {line!r}")
        out.append((cols[0].strip(), cols[1], int(cols[2])))
    return out


def giantsteps_mtg_label(key_text: str, confidence: int, min_confidence: int = 2) -> tuple[int | None, str | None]:
    """The authors' filter: confidence 2 and exactly one key."""
    if confidence < min_confidence:
        return None, f"annotation confidence {confidence} (< {min_confidence})"
    return parse_key_name(key_text)


def giantsteps_id(filename: str) -> str:
    """'1234.LOFI.key' / '1234.LOFI.bpm' / '1234.LOFI.md5' / '1234.LOFI.mp3' -> '1234'."""
    m = re.fullmatch(r"(\d+)\.LOFI\.[a-z0-9]+", Path(filename).name)
    if not m:
        raise InputError(f"not a GiantSteps file name '<id>.LOFI.<ext>': {filename!r}")
    return m.group(1)


def parse_md5_file(text: str) -> str:
    """A GiantSteps `md5/<id>.LOFI.md5`: 32 hex digits (maybe followed by a file name)."""
    parts = text.split()
    if not parts or not re.fullmatch(r"[0-9a-fA-F]{32}", parts[0]):
        raise InputError(f"not an MD5 checksum file: {text[:60]!r}")
    return parts[0].lower()


def parse_split_file(text: str) -> dict[str, str]:
    """Our own split files ('<key>\\t<train|valid|test>' a line, '#' comments) -> {key: split}."""
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        cols = s.split("\t")
        if len(cols) != 2 or cols[1] not in ("train", "valid", "test"):
            raise InputError(f"line {n}: expected '<key>\\t<train|valid|test>', got {line!r}")
        out[cols[0]] = cols[1]
    return out


def format_split_file(splits: dict[str, str], header: str = "") -> str:
    lines = [f"# {h}" for h in header.splitlines()] if header else []
    lines += [f"{k}\t{v}" for k, v in sorted(splits.items())]
    return "\n".join(lines) + "\n"
