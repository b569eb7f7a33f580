"""Robust downloads for dataset archives: mirrors, resume, checksums, safe extraction.

Dataset URLs rot and archives are large (MTG-Jamendo: 100 tars of ~5 GB), so every transfer
resumes from a `.part` file, every file is checked against its published hash, and every
archive is extracted defensively. A user who already has a file points a `Source` at it
(plain path or file:// URL) and it is copied and verified like a download.

What was verified is recorded: every file that matched its published hash gets a line in the
ledger `.verified.jsonl` of its folder (name, size, mtime_ns, digests), and an archive's
extraction marker carries the archive's verified digests, so the download index
(data/rawindex.py) names the checksums of what is on disk without hashing it again.

Only the standard library does the transfer (urllib.request): no new dependency.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import posixpath
import re
import shutil
import stat
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from musicpetl.errors import MusicPetlError

log = logging.getLogger(__name__)

CHUNK = 1 << 20                 # read/write/hash block: bounded memory for multi-GB files
RETRY_BACKOFF = 1.0             # seconds before the first retry; doubled each time (tests set 0)
MAX_BACKOFF = 30.0
USER_AGENT = "musicpetl-downloader/0.1 (python urllib; research dataset fetch)"
# HTTP codes that will not change on retry: go straight to the next mirror
_FATAL_HTTP = {400, 401, 403, 404, 405, 410, 451}


class DownloadError(MusicPetlError, RuntimeError):
    """A file could not be fetched, joined or extracted."""


class ChecksumError(DownloadError):
    """A file was fetched but its content does not match the published hash (or size)."""


@dataclass(frozen=True)
class Source:
    """One file to fetch: `name` under the destination folder, tried from each of `urls` in turn."""
    name: str                      # may hold sub-folders, e.g. "audio/123.mp3"
    urls: tuple[str, ...]          # mirrors: http(s)://, file:// or a plain local path
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None


# ---------------------------------------------------------------------------------------------
# checksums

def _hashes(path: Path, algos: tuple[str, ...]) -> dict[str, str]:
    """Hex digests of `path` for each algorithm, reading it once in CHUNK blocks."""
    hs = {a: hashlib.new(a) for a in algos}
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            for h in hs.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hs.items()}


def hash_file(path: Path, algo: str = "sha256") -> str:
    """Hex digest of a file, read in CHUNK blocks."""
    return _hashes(Path(path), (algo,))[algo]


def _expected(md5: str | None, sha256: str | None) -> dict[str, str]:
    return {a: v.strip().lower() for a, v in (("md5", md5), ("sha256", sha256)) if v}


def _mismatch(path: Path, expected: dict[str, str]) -> tuple[str | None, dict[str, str]]:
    """(one-line description of the first mismatch or None, actual digests)."""
    actual = _hashes(path, tuple(expected))
    for algo, want in expected.items():
        if actual[algo] != want:
            return f"{path.name}: {algo} mismatch: expected {want}, got {actual[algo]}", actual
    return None, actual


def verify(path: Path, md5: str | None = None, sha256: str | None = None) -> str | None:
    """None if `path` matches every hash given (trivially so when none is), else a one-line reason."""
    path = Path(path)
    if not path.is_file():
        return f"{path}: missing"
    expected = _expected(md5, sha256)
    if not expected:
        return None
    return _mismatch(path, expected)[0]


def _check(path: Path, source: Source) -> tuple[str | None, str]:
    """Integrity check of a finished file: (reason or None, a hex digest of the file for naming).

    The digest is only computed when needed (a checksum is given, or the file is bad)."""
    expected = _expected(source.md5, source.sha256)
    if source.size is not None and path.stat().st_size != source.size:
        digest = _hashes(path, ("sha256",))["sha256"]
        return (f"{path.name}: size mismatch: expected {source.size} bytes, "
                f"got {path.stat().st_size} (sha256 {digest})"), digest
    if not expected:
        return None, ""
    reason, actual = _mismatch(path, expected)
    return reason, actual.get("sha256") or actual["md5"]


def _move_aside(path: Path, target: Path, digest: str) -> Path:
    """Keep a bad file for inspection rather than deleting it: `<name>.bad-<8 hex>`."""
    bad = target.with_name(f"{target.name}.bad-{digest[:8]}")
    os.replace(path, bad)
    return bad


# ---------------------------------------------------------------------------------------------
# the ledger of verified files

LEDGER = ".verified.jsonl"      # one per folder, next to the files it describes
_LEDGER_LOCK = threading.Lock()  # fetch_all verifies in threads


def record_verified(path: Path, digests: dict) -> None:
    """Note in the ledger of `path`'s folder that `path`, as it is now (size, mtime_ns), matched
    these published digests ({"md5"|"sha256": hex}), or was joined from verified `parts`."""
    if not digests:
        return
    path = Path(path)
    st = path.stat()
    entry = {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
             **{a: v.strip().lower() if isinstance(v, str) else v for a, v in digests.items()}}
    with _LEDGER_LOCK, open(path.parent / LEDGER, "a") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")


def read_ledger(folder: Path) -> dict[str, dict]:
    """File name -> its latest ledger entry in `folder` ({} without a ledger; unreadable lines,
    e.g. the last one of a killed run, are skipped)."""
    out: dict[str, dict] = {}
    try:
        text = (Path(folder) / LEDGER).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            out[entry["name"]] = entry
    return out


def verified_info(path: Path, ledger: dict[str, dict] | None = None) -> dict:
    """What `path` was verified against ({"md5"/"sha256": hex} and/or "parts": [{name, size,
    digests}] for a file joined from verified parts), if its size and mtime_ns are still those
    recorded (the file has not been rewritten since); else {}. `ledger`: `read_ledger` of its folder."""
    path = Path(path)
    entry = (read_ledger(path.parent) if ledger is None else ledger).get(path.name)
    if not entry:
        return {}
    try:
        st = path.stat()
    except OSError:
        return {}
    if (st.st_size, st.st_mtime_ns) != (entry.get("size"), entry.get("mtime_ns")):
        return {}
    return {k: v for k, v in entry.items() if k not in ("name", "size", "mtime_ns")}


def verified_digests(path: Path, ledger: dict[str, dict] | None = None) -> dict[str, str]:
    """The published digests ({"md5"|"sha256": hex}) `path` still matches per the ledger, or {}."""
    info = verified_info(path, ledger)
    return {a: info[a] for a in ("md5", "sha256") if isinstance(info.get(a), str)}


def forget_verified(path: Path) -> None:
    """Drop `path` from its folder's ledger (the file was deleted); the ledger goes when empty."""
    path = Path(path)
    ledger = path.parent / LEDGER
    with _LEDGER_LOCK:
        if not ledger.is_file():
            return
        keep = [ln for ln in ledger.read_text().splitlines()
                if ln.strip() and _ledger_name(ln) != path.name]
        if keep:
            tmp = ledger.with_name(ledger.name + ".tmp")
            tmp.write_text("".join(ln + "\n" for ln in keep))
            os.replace(tmp, ledger)
        else:
            ledger.unlink()


def _ledger_name(line: str) -> str | None:
    try:
        return json.loads(line).get("name")
    except (ValueError, AttributeError):
        return None


# ---------------------------------------------------------------------------------------------
# single-file fetch

def _is_local(url: str) -> bool:
    return url.startswith("file://") or "://" not in url


def _local_path(url: str) -> Path:
    if url.startswith("file://"):
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    return Path(url).expanduser()


def _copy_local(src: Path, part: Path, bar: tqdm) -> None:
    """Copy a user-provided file into `.part` (always from zero: local reads are cheap)."""
    if not src.is_file():
        raise DownloadError(f"local file {src} not found")
    bar.reset(total=src.stat().st_size)
    with open(src, "rb") as fin, open(part, "wb") as fout:
        while block := fin.read(CHUNK):
            fout.write(block)
            bar.update(len(block))


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """`bytes START-END/TOTAL` or `bytes */TOTAL` -> (START, TOTAL); None where absent or '*'."""
    m = re.match(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value or "")
    if not m:
        return None, None
    start = int(m[1]) if m[1] else None
    total = int(m[2]) if m[2] != "*" else None
    return start, total


def _http_download(url: str, part: Path, size: int | None, *, timeout: float, retries: int,
                   bar: tqdm) -> None:
    """Fill `part` with the body of `url`, resuming from its current length.

    Transient failures (dropped connection, timeout, 5xx) are retried `retries` times, each time
    resuming from the bytes already on disk; permanent HTTP errors raise at once."""
    failures = 0
    restarts = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have > size:       # cannot be a prefix of the right file
            log.info("%s: .part larger than expected size; restarting", part.name)
            part.unlink()
            have = 0
        if size is not None and have == size:      # complete already: verification decides
            return
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                        timeout=timeout) as resp:
                start, total = 0, None
                if have and resp.status == 206:
                    start, total = _content_range(resp.headers.get("Content-Range"))
                    if start != have:                # a range we did not ask for: start over
                        restarts += 1
                        if restarts > 2:
                            raise DownloadError(f"{url}: server returns inconsistent ranges")
                        part.unlink()
                        continue
                elif have:
                    # 200 to a Range request: the server ignores ranges, the body is the whole file
                    log.info("%s: server ignored the Range request; restarting from zero", url)
                length = resp.headers.get("Content-Length")
                length = int(length) if length and length.isdigit() else None
                if total is None and length is not None:
                    total = start + length
                bar.reset(total=total if total is not None else size)
                bar.update(start)
                got = 0
                with open(part, "ab" if start else "wb") as f:
                    while block := resp.read(CHUNK):
                        f.write(block)
                        got += len(block)
                        bar.update(len(block))
                if length is not None and got < length:
                    # urllib returns a short body silently when the peer closes early
                    raise http.client.IncompleteRead(b"", length - got)
            return
        except urllib.error.HTTPError as err:
            if err.code == 416:
                _, total = _content_range(err.headers.get("Content-Range"))
                if total is not None and total == have:  # .part already holds the whole file
                    return
                log.info("%s: range not satisfiable; restarting from zero", url)
                part.unlink(missing_ok=True)
                restarts += 1
                if restarts > 2:
                    raise DownloadError(f"{url}: HTTP 416 even without a Range request") from err
                continue
            if err.code in _FATAL_HTTP:
                raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
            reason = f"HTTP {err.code} {err.reason}"
        except DownloadError:
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            reason = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
        failures += 1
        if failures > retries:
            raise DownloadError(f"{url}: {reason} (gave up after {retries} retries)")
        delay = min(MAX_BACKOFF, RETRY_BACKOFF * 2 ** (failures - 1))
        log.warning("%s: %s; retry %d/%d in %.1f s", url, reason, failures, retries, delay)
        time.sleep(delay)


def fetch(source: Source, dest_dir: Path, *, progress: bool = True, timeout: float = 60,
          retries: int = 3) -> Path:
    """Make `dest_dir/source.name` exist with the right content; return its path.

    An existing file that verifies is returned without touching the network. Otherwise each
    mirror is tried in order; the transfer goes to `<name>.part` (resumed across runs and
    retries) and only a verified file is renamed into place, so a file under its final name is
    always complete. A file failing its checksum is kept as `<name>.bad-<hash8>`."""
    if not source.urls:
        raise DownloadError(f"{source.name}: no URL or local path given")
    target = Path(dest_dir) / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file():
        reason, digest = _check(target, source)
        if reason is None:
            record_verified(target, _expected(source.md5, source.sha256))
            return target
        bad = _move_aside(target, target, digest)
        log.warning("%s fails verification (%s); moved to %s, fetching again", target, reason, bad)
    part = target.with_name(target.name + ".part")
    errors: list[str] = []
    bad_checksum = False
    with tqdm(total=source.size, unit="B", unit_scale=True, unit_divisor=1024, desc=source.name,
              disable=not progress, leave=False) as bar:
        for url in source.urls:
            # a .part left by an earlier run may be the culprit of a mismatch: then retry once
            # from zero on the same mirror before blaming it
            resumed = part.exists() and not _is_local(url)
            for _attempt in range(2 if resumed else 1):
                try:
                    if _is_local(url):
                        _copy_local(_local_path(url), part, bar)
                    else:
                        _http_download(url, part, source.size, timeout=timeout, retries=retries,
                                       bar=bar)
                except DownloadError as err:
                    errors.append(str(err))
                    log.warning("%s", err)
                    break
                reason, digest = _check(part, source)
                if reason is None:
                    os.replace(part, target)     # atomic: the final name only ever holds good data
                    record_verified(target, _expected(source.md5, source.sha256))
                    return target
                bad = _move_aside(part, target, digest)
                bad_checksum = True
                errors.append(f"{url}: {reason}; moved aside to {bad}")
                log.warning("%s: %s; moved aside to %s", url, reason, bad)
    summary = f"{source.name}: every source failed:\n  " + "\n  ".join(errors)
    raise (ChecksumError if bad_checksum else DownloadError)(summary)


def fetch_all(sources: list[Source], dest_dir: Path, *, progress: bool = True,
              workers: int = 4) -> list[Path]:
    """Fetch many (small) files in parallel with one overall progress bar.

    Every source is tried; failures are collected and reported together in one DownloadError
    (ChecksumError if all of them are checksum failures), so one dead file does not hide others."""
    names = [s.name for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) < len(names) else []
    if dupes:
        raise DownloadError(f"duplicate names in sources: {', '.join(dupes[:5])}")
    paths: list[Path | None] = [None] * len(sources)
    failures: list[tuple[str, DownloadError]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(sources), unit="file", desc=f"fetch {Path(dest_dir).name}",
                 disable=not progress) as bar:
        futures = {pool.submit(fetch, s, dest_dir, progress=False): i for i, s in enumerate(sources)}
        try:
            for fut in futures:   # in submission order: deterministic error listing
                i = futures[fut]
                try:
                    paths[i] = fut.result()
                except DownloadError as err:
                    failures.append((sources[i].name, err))
                bar.update(1)
        except BaseException:     # Ctrl-C: do not start the thousands still queued
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    if failures:
        shown = "\n".join(f"  {name}: {str(err).splitlines()[-1].strip()}"
                          for name, err in failures[:5])
        more = f"\n  ... and {len(failures) - 5} more" if len(failures) > 5 else ""
        cls = ChecksumError if all(isinstance(e, ChecksumError) for _, e in failures) else DownloadError
        raise cls(f"{len(failures)} of {len(sources)} files could not be fetched into "
                  f"{dest_dir}:\n{shown}{more}")
    return [p for p in paths if p is not None]


# ---------------------------------------------------------------------------------------------
# archives

def join_parts(parts: list[Path], out: Path) -> Path:
    """Concatenate split-archive parts (MTAT's mp3.zip.001..003) in order into `out`, atomically."""
    if not parts:
        raise DownloadError(f"no parts given to build {out}")
    missing = [str(p) for p in parts if not Path(p).is_file()]
    if missing:
        raise DownloadError(f"cannot build {out}: missing part(s) {', '.join(missing)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    try:
        with open(tmp, "wb") as fout:
            for p in parts:
                with open(p, "rb") as fin:
                    shutil.copyfileobj(fin, fout, CHUNK)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # joined from parts that were each verified: the whole is recorded as made of them
    verified = [{"name": Path(p).name, "size": Path(p).stat().st_size, **verified_digests(p)} for p in parts]
    if all(len(v) > 2 for v in verified):
        record_verified(out, {"parts": verified})
    return out


def _unsafe_name(name: str) -> str | None:
    """Why an archive member name may not be written under the target, or None."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or PurePosixPath(name).is_absolute():
        return "absolute path"
    norm = posixpath.normpath(name.replace("\\", "/"))
    if norm == ".." or norm.startswith("../"):
        return "path escapes the target folder"
    return None


def _escapes(link_from: str, link_to: str) -> bool:
    """Does a link at `link_from` (relative to the archive root) pointing to `link_to` leave it?"""
    if link_to.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", link_to):
        return True
    norm = posixpath.normpath(posixpath.join(posixpath.dirname(link_from), link_to))
    return norm == ".." or norm.startswith("../")


def _check_tar_member(m: tarfile.TarInfo) -> None:
    why = _unsafe_name(m.name)
    if why is None and m.issym() and _escapes(m.name, m.linkname):
        why = f"symlink to {m.linkname!r} points outside the target"
    if why is None and m.islnk() and _escapes("", m.linkname):   # hardlinks are archive-rooted
        why = f"hardlink to {m.linkname!r} points outside the target"
    if why is None and (m.ischr() or m.isblk() or m.isfifo() or m.isdev()):
        why = "device or fifo member"
    if why:
        raise DownloadError(f"refusing to extract member {m.name!r}: {why}")


def _extract_tar(archive: Path, tmp: Path, bar: tqdm) -> None:
    # streaming iteration: members are checked and written one by one, so a 5 GB tar is read once
    bar.reset(total=archive.stat().st_size)
    with open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tar:
        for m in tar:
            _check_tar_member(m)
            try:
                if hasattr(tarfile, "data_filter"):   # 3.11.4+: stdlib's own safety net as well
                    tar.extract(m, tmp, filter="data")
                else:  # pragma: no cover - older 3.11 patch releases
                    tar.extract(m, tmp)
            except tarfile.TarError as err:   # FilterError and friends
                raise DownloadError(f"refusing to extract member {m.name!r}: {err}") from err
            bar.n = raw.tell()
            bar.refresh()


def _extract_zip(archive: Path, tmp: Path, bar: tqdm) -> None:
    root = tmp.resolve()
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        bar.reset(total=sum(i.file_size for i in infos))
        for info in infos:
            why = _unsafe_name(info.filename)
            mode = info.external_attr >> 16
            if why is None and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)):
                why = "device or fifo member"
            # zipfile never creates symlinks (it writes the link text as a file): no link check
            if why is None:
                dest = (tmp / info.filename).resolve()
                if dest != root and root not in dest.parents:
                    why = "path escapes the target folder"
            if why:
                raise DownloadError(f"refusing to extract member {info.filename!r}: {why}")
            try:
                zf.extract(info, tmp)
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise DownloadError(f"{archive.name}: cannot extract member {info.filename!r}: "
                                    f"{err}") from err
            bar.update(info.file_size)


def _archive_kind(archive: Path) -> str:
    name = archive.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if re.search(r"\.(tar|tgz|tbz2?|txz|tar\.(gz|bz2|xz))$", name):
        return "tar"
    if zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    raise DownloadError(f"{archive}: not a tar or zip archive")


def _merge_into(src: Path, dst: Path) -> None:
    """Move the tree `src` into `dst`, replacing files of the same name, keeping everything else."""
    for entry in src.iterdir():
        out = dst / entry.name
        if entry.is_dir() and not entry.is_symlink() and out.is_dir() and not out.is_symlink():
            _merge_into(entry, out)
        else:
            if out.is_dir() and not out.is_symlink():
                shutil.rmtree(out)
            os.replace(entry, out)


MARKER_HEADER = "#musicpetl-archive "  # first line of a marker: the archive's verified digests (JSON)


def read_marker(marker: Path) -> tuple[dict, list[str]]:
    """An extraction marker -> (the archive's record {"name", "size", "md5"/"sha256"} or {} when it
    was not verified, the member paths relative to the target)."""
    lines = [ln for ln in Path(marker).read_text().splitlines() if ln]
    info: dict = {}
    if lines and lines[0].startswith(MARKER_HEADER):
        try:
            info = json.loads(lines[0][len(MARKER_HEADER):])
        except ValueError:
            info = {}
        lines = lines[1:]
    return (info if isinstance(info, dict) else {}), lines


def extract(archive: Path, target: Path, *, progress: bool = True) -> list[Path]:
    """Safely unpack a .tar(.gz/.bz2/.xz)/.tgz or .zip into `target`; return the files written.

    Members with absolute paths, `..` escapes, links leaving the target, or device/fifo entries
    are refused (DownloadError naming the member) before anything reaches `target`: the archive
    is unpacked into a temporary sibling folder and moved into place only when complete. A
    marker `.extracted-<archive name>` (listing the files, after a first line with the archive's
    digests when it was verified on download) makes a second call a no-op; several archives may
    share one target (MTG-Jamendo's 100 tars)."""
    archive, target = Path(archive), Path(target)
    marker = target / f".extracted-{archive.name}"
    if marker.is_file():
        files = [target / line for line in read_marker(marker)[1]]
        if all(p.exists() or p.is_symlink() for p in files):
            return files
        log.warning("%s: files listed in %s are missing; extracting again", archive.name, marker)
    if not archive.is_file():
        raise DownloadError(f"archive {archive} not found")
    kind = _archive_kind(archive)
    info = verified_info(archive)
    header = (MARKER_HEADER + json.dumps({"name": archive.name, "size": archive.stat().st_size, **info},
                                         sort_keys=True) + "\n") if info else ""
    target.parent.mkdir(parents=True, exist_ok=True)
    # fixed name, so a leftover from a killed run is found and cleared next time
    tmp = target.parent / f".{target.name}.extracting-{archive.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        with tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc=f"extract {archive.name}",
                  disable=not progress, leave=False) as bar:
            try:
                (_extract_zip if kind == "zip" else _extract_tar)(archive, tmp, bar)
            except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
                raise DownloadError(f"{archive}: corrupt or truncated archive: {err}") from err
        rel = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")
                     if p.is_file() or p.is_symlink())
        if target.exists():
            _merge_into(tmp, target)
        else:
            os.replace(tmp, target)          # fresh target: appears in one step
        # the marker is written last: without it the extraction counts as not done
        marker_tmp = marker.with_name(marker.name + ".tmp")
        marker_tmp.write_text(header + "".join(r + "\n" for r in rel))
        os.replace(marker_tmp, marker)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return [target / r for r in rel]
