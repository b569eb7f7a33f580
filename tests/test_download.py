"""Offline tests of musicpetl.data.download against a local HTTP server with Range support."""
from __future__ import annotations

import hashlib
import io
import random
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from musicpetl.data import download as dl
from musicpetl.data.download import (ChecksumError, DownloadError, Source, extract, fetch,
                                     fetch_all, join_parts, verify)

BODY = random.Random(0).randbytes(300_000)
MD5 = hashlib.md5(BODY).hexdigest()
SHA = hashlib.sha256(BODY).hexdigest()


class _State:
    """What the test server serves and how it misbehaves."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None, str | None]] = []   # (path, Range, User-Agent)
        self.cuts: list[int] = []        # bytes to send before dropping the connection, per request
        self.ignore_range = False
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        st: _State = self.server.state
        with st.lock:
            st.requests.append((self.path, self.headers.get("Range"), self.headers.get("User-Agent")))
            cut = st.cuts.pop(0) if st.cuts else None
        body = st.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and not st.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        chunk = body[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(chunk)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if cut is not None:           # half a body, then the connection is gone
            self.wfile.write(chunk[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(chunk)

    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_BACKOFF", 0.0)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.state = _State()
    srv.state.files["/data.bin"] = BODY
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield base, srv.state
    srv.shutdown()
    srv.server_close()


# ---------------------------------------------------------------------------------------------
# verify / fetch

def test_verify(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(BODY)
    assert verify(p) is None
    assert verify(p, md5=MD5, sha256=SHA.upper()) is None
    msg = verify(p, md5="0" * 32)
    assert msg and "md5" in msg and MD5 in msg and "\n" not in msg
    assert "missing" in verify(tmp_path / "nope", md5=MD5)


def test_fresh_download_then_no_request(server, tmp_path):
    base, st = server
    src = Source("sub/data.bin", (f"{base}/data.bin",), md5=MD5, sha256=SHA, size=len(BODY))
    out = fetch(src, tmp_path, progress=False)
    assert out == tmp_path / "sub/data.bin" and out.read_bytes() == BODY
    assert not (tmp_path / "sub/data.bin.part").exists()
    assert len(st.requests) == 1 and st.requests[0][1] is None and st.requests[0][2]  # User-Agent
    assert fetch(src, tmp_path, progress=False) == out
    assert len(st.requests) == 1          # verified on disk: no network


def test_existing_file_without_checksum_trusted_by_size(server, tmp_path):
    base, st = server
    (tmp_path / "data.bin").write_bytes(b"x" * len(BODY))
    fetch(Source("data.bin", (f"{base}/data.bin",), size=len(BODY)), tmp_path, progress=False)
    assert st.requests == []
    # wrong size: moved aside and fetched again
    (tmp_path / "data.bin").write_bytes(b"short")
    out = fetch(Source("data.bin", (f"{base}/data.bin",), size=len(BODY)), tmp_path, progress=False)
    assert out.read_bytes() == BODY and len(st.requests) == 1
    assert len(list(tmp_path.glob("data.bin.bad-*"))) == 1


def test_existing_bad_file_is_replaced(server, tmp_path):
    base, st = server
    (tmp_path / "data.bin").write_bytes(b"stale")
    out = fetch(Source("data.bin", (f"{base}/data.bin",), md5=MD5), tmp_path, progress=False)
    assert out.read_bytes() == BODY and len(st.requests) == 1
    assert list(tmp_path.glob("data.bin.bad-*"))


def test_resume_after_broken_connection(server, tmp_path):
    base, st = server
    st.cuts = [100_000]
    out = fetch(Source("data.bin", (f"{base}/data.bin",), sha256=SHA), tmp_path, progress=False)
    assert out.read_bytes() == BODY
    assert [r[1] for r in st.requests] == [None, "bytes=100000-"]


def test_retries_exhausted(server, tmp_path):
    base, st = server
    st.cuts = [10_000] * 10
    with pytest.raises(DownloadError, match="gave up after 2 retries") as ei:
        fetch(Source("data.bin", (f"{base}/data.bin",), md5=MD5), tmp_path, progress=False,
              retries=2)
    assert not isinstance(ei.value, ChecksumError)
    assert len(st.requests) == 3
    # the bytes so far stay in .part; the next call resumes from them
    assert (tmp_path / "data.bin.part").stat().st_size == 30_000
    st.cuts = []
    assert fetch(Source("data.bin", (f"{base}/data.bin",), md5=MD5), tmp_path,
                 progress=False).read_bytes() == BODY
    assert st.requests[-1][1] == "bytes=30000-"


def test_existing_part_resumes(server, tmp_path):
    base, st = server
    (tmp_path / "data.bin.part").write_bytes(BODY[:123_456])
    out = fetch(Source("data.bin", (f"{base}/data.bin",), md5=MD5), tmp_path, progress=False)
    assert out.read_bytes() == BODY
    assert [r[1] for r in st.requests] == ["bytes=123456-"]


def test_server_ignoring_range_restarts(server, tmp_path):
    base, st = server
    st.ignore_range = True
    (tmp_path / "data.bin.part").write_bytes(BODY[:50_000])
    out = fetch(Source("data.bin", (f"{base}/data.bin",), md5=MD5), tmp_path, progress=False)
    assert out.read_bytes() == BODY                   # not prefix + whole body
    assert [r[1] for r in st.requests] == ["bytes=50000-"]


def test_oversized_part_and_416_restart(server, tmp_path):
    base, st = server
    part = tmp_path / "data.bin.part"
    part.write_bytes(BODY + b"junk")                  # larger than size: no Range at all
    fetch(Source("data.bin", (f"{base}/data.bin",), md5=MD5, size=len(BODY)), tmp_path,
          progress=False)
    assert [r[1] for r in st.requests] == [None]
    (tmp_path / "data.bin").unlink()
    part.write_bytes(BODY + b"junk")                  # no size known: server answers 416
    out = fetch(Source("data.bin", (f"{base}/data.bin",), md5=MD5), tmp_path, progress=False)
    assert out.read_bytes() == BODY
    assert [r[1] for r in st.requests[1:]] == [f"bytes={len(BODY) + 4}-", None]


def test_bad_checksum_moved_aside(server, tmp_path):
    base, _ = server
    wrong = "f" * 32
    with pytest.raises(ChecksumError) as ei:
        fetch(Source("data.bin", (f"{base}/data.bin",), md5=wrong), tmp_path, progress=False)
    bad = tmp_path / f"data.bin.bad-{MD5[:8]}"
    assert bad.read_bytes() == BODY
    assert not (tmp_path / "data.bin").exists() and not (tmp_path / "data.bin.part").exists()
    msg = str(ei.value)
    assert wrong in msg and MD5 in msg and str(bad) in msg


def test_bad_resumed_part_retried_from_zero(server, tmp_path):
    base, st = server
    (tmp_path / "data.bin.part").write_bytes(b"\0" * 1000)   # corrupt prefix from some old run
    out = fetch(Source("data.bin", (f"{base}/data.bin",), md5=MD5), tmp_path, progress=False)
    assert out.read_bytes() == BODY
    assert [r[1] for r in st.requests] == ["bytes=1000-", None]
    assert len(list(tmp_path.glob("data.bin.bad-*"))) == 1


def test_first_mirror_404_second_works(server, tmp_path):
    base, st = server
    src = Source("data.bin", (f"{base}/gone.bin", f"{base}/data.bin"), md5=MD5)
    assert fetch(src, tmp_path, progress=False).read_bytes() == BODY
    assert [r[0] for r in st.requests] == ["/gone.bin", "/data.bin"]   # 404 is not retried


def test_all_mirrors_fail(server, tmp_path):
    base, _ = server
    with pytest.raises(DownloadError, match="404") as ei:
        fetch(Source("x", (f"{base}/a", f"{base}/b")), tmp_path, progress=False)
    assert not isinstance(ei.value, ChecksumError)
    assert f"{base}/a" in str(ei.value) and f"{base}/b" in str(ei.value)


def test_local_path_and_file_url(tmp_path):
    have = tmp_path / "my archive.bin"
    have.write_bytes(BODY)
    dest = tmp_path / "dest"
    out = fetch(Source("a.bin", (str(have),), md5=MD5), dest, progress=False)
    assert out.read_bytes() == BODY
    out = fetch(Source("b.bin", (have.as_uri(),), sha256=SHA), dest, progress=False)
    assert out.read_bytes() == BODY
    with pytest.raises(ChecksumError, match=MD5):
        fetch(Source("c.bin", (str(have),), md5="0" * 32), dest, progress=False)
    with pytest.raises(DownloadError, match="not found"):
        fetch(Source("d.bin", (str(tmp_path / "nope"),)), dest, progress=False)
    # a missing local copy falls through to the next mirror
    out = fetch(Source("e.bin", (str(tmp_path / "nope"), have.as_uri()), md5=MD5), dest,
                progress=False)
    assert out.read_bytes() == BODY


def test_fetch_all_collects_failures(server, tmp_path):
    base, st = server
    for i in range(8):
        st.files[f"/{i}.mp3"] = bytes([i]) * (1000 + i)
    sources = [Source(f"audio/{i}.mp3", (f"{base}/{i}.mp3",),
                      md5=hashlib.md5(bytes([i]) * (1000 + i)).hexdigest()) for i in range(8)]
    sources.append(Source("audio/missing.mp3", (f"{base}/missing.mp3",)))
    with pytest.raises(DownloadError) as ei:
        fetch_all(sources, tmp_path, progress=False, workers=3)
    msg = str(ei.value)
    assert "1 of 9" in msg and "audio/missing.mp3" in msg and "404" in msg
    assert all((tmp_path / f"audio/{i}.mp3").is_file() for i in range(8))
    paths = fetch_all(sources[:8], tmp_path, progress=False)
    assert paths == [tmp_path / f"audio/{i}.mp3" for i in range(8)]


def test_fetch_all_lists_first_few_and_count(server, tmp_path):
    base, _ = server
    sources = [Source(f"m{i}", (f"{base}/m{i}",)) for i in range(9)]
    with pytest.raises(DownloadError) as ei:
        fetch_all(sources, tmp_path, progress=False)
    msg = str(ei.value)
    assert "9 of 9" in msg and "m0" in msg and "and 4 more" in msg and "m8" not in msg


# ---------------------------------------------------------------------------------------------
# archives

FILES = {"genres/blues/blues.00000.wav": b"a" * 100, "genres/jazz/jazz.00054.wav": b"b" * 50,
         "README": b"hello"}


def _tar(path, members, mode="w:gz"):
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _zip_bytes(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _read_tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".extracted-")}


def test_extract_tar_gz_and_noop(tmp_path):
    arc = _tar(tmp_path / "genres.tar.gz", [_file(n, d) for n, d in FILES.items()])
    target = tmp_path / "out"
    files = extract(arc, target, progress=False)
    assert sorted(files) == sorted(target / n for n in FILES)
    assert _read_tree(target) == FILES
    assert (target / ".extracted-genres.tar.gz").is_file()
    assert not [p for p in tmp_path.iterdir() if ".extracting-" in p.name]
    arc.unlink()                        # second call must not even open the archive
    assert sorted(extract(arc, target, progress=False)) == sorted(files)


def test_extract_zip_and_merge_into_existing_target(tmp_path):
    arc = tmp_path / "a.zip"
    arc.write_bytes(_zip_bytes(FILES))
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("other archive's file")
    files = extract(arc, target, progress=False)
    assert sorted(files) == sorted(target / n for n in FILES)
    assert _read_tree(target) == {**FILES, "keep.txt": b"other archive's file"}
    # a second archive into the same target (MTG-Jamendo: 100 tars, one folder)
    arc2 = _tar(tmp_path / "b.tar", [_file("genres/rock/rock.00001.wav", b"r")], mode="w")
    extract(arc2, target, progress=False)
    assert (target / "genres/rock/rock.00001.wav").read_bytes() == b"r"
    assert (target / "genres/blues/blues.00000.wav").read_bytes() == FILES["genres/blues/blues.00000.wav"]


def _assert_untouched(tmp_path, before, target):
    after = {p for p in tmp_path.rglob("*")}
    assert after == before, after - before          # nothing new anywhere: not in, not outside
    assert not target.exists()


@pytest.mark.parametrize("evil,reason", [
    (_file("../evil", b"x"), "escapes"),
    (_file("ok/../../evil", b"x"), "escapes"),
    (_file("/abs/evil-absolute", b"x"), "absolute"),
    (_link("link", "../../outside"), "symlink"),
    (_link("link", "/etc/passwd"), "symlink"),
    (_link("hard", "../outside", tarfile.LNKTYPE), "hardlink"),
])
def test_extract_tar_refuses_escapes(tmp_path, evil, reason):
    arc = _tar(tmp_path / "evil.tar", [_file("good.txt", b"fine"), evil], mode="w")
    target = tmp_path / "t" / "out"
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(DownloadError, match=reason) as ei:
        extract(arc, target, progress=False)
    assert repr(evil[0].name) in str(ei.value)
    _assert_untouched(tmp_path, before | {tmp_path / "t"}, target)


def test_extract_tar_refuses_symlink_chain(tmp_path):
    # each link looks harmless by name alone; only the on-disk check (tar "data" filter) sees
    # that a/b resolves to <target>/b -> .. ; the error still names the member
    arc = _tar(tmp_path / "chain.tar", [_link("a", "."), _link("a/b", ".."),
                                        _file("a/b/escaped.txt", b"x")], mode="w")
    target = tmp_path / "t" / "out"
    with pytest.raises(DownloadError, match="refusing to extract member"):
        extract(arc, target, progress=False)
    assert not (tmp_path / "t" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not target.exists()


def test_extract_tar_refuses_fifo_and_device(tmp_path):
    for kind in (tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE):
        info = tarfile.TarInfo("dev")
        info.type = kind
        arc = _tar(tmp_path / f"dev{kind!r}.tar", [(info, None)], mode="w")
        with pytest.raises(DownloadError, match="device or fifo"):
            extract(arc, tmp_path / "out", progress=False)
        assert not (tmp_path / "out").exists()


def test_extract_symlink_inside_is_fine(tmp_path):
    arc = _tar(tmp_path / "ok.tar", [_file("d/real.txt", b"r"), _link("d/alias.txt", "real.txt")],
               mode="w")
    extract(arc, tmp_path / "out", progress=False)
    assert (tmp_path / "out/d/alias.txt").read_bytes() == b"r"


@pytest.mark.parametrize("name,reason", [("../evil", "escapes"), ("/abs/evil", "absolute"),
                                         ("a/../../evil", "escapes")])
def test_extract_zip_refuses_escapes(tmp_path, name, reason):
    arc = tmp_path / "evil.zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("good.txt", b"fine")
        zf.writestr(zipfile.ZipInfo(name), b"x")   # ZipInfo keeps the raw name
    arc.write_bytes(buf.getvalue())
    target = tmp_path / "out"
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(DownloadError, match=reason) as ei:
        extract(arc, target, progress=False)
    assert name in str(ei.value)
    _assert_untouched(tmp_path, before, target)


def test_extract_corrupt_archive(tmp_path):
    arc = tmp_path / "broken.tar.gz"
    arc.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(DownloadError):
        extract(arc, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_join_parts_split_zip_then_extract(tmp_path):
    data = _zip_bytes({f"{c}/clip{c}.mp3": bytes([ord(c)]) * 5000 for c in "0a3f"})
    n = len(data)
    parts = []
    for i, (a, b) in enumerate([(0, n // 3), (n // 3, 2 * n // 3), (2 * n // 3, n)], 1):
        parts.append(tmp_path / f"mp3.zip.00{i}")
        parts[-1].write_bytes(data[a:b])
    out = join_parts(parts, tmp_path / "mp3.zip")
    assert out.read_bytes() == data and not (tmp_path / "mp3.zip.part").exists()
    files = extract(out, tmp_path / "mtat", progress=False)
    assert len(files) == 4 and (tmp_path / "mtat/a/clipa.mp3").read_bytes() == b"a" * 5000
    with pytest.raises(DownloadError, match="missing"):
        join_parts([parts[0], tmp_path / "mp3.zip.004"], tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


# ---------------------------------------------------------------------------------------------
# what was verified is recorded (the download index reads it: tests/test_raw_index.py)


def test_verified_files_are_recorded_in_the_ledger(server, tmp_path):
    base, st = server
    out = fetch(Source("sub/data.bin", (f"{base}/data.bin",), md5=MD5, sha256=SHA), tmp_path, progress=False)
    assert dl.verified_digests(out) == {"md5": MD5, "sha256": SHA}
    assert dl.read_ledger(out.parent)["data.bin"]["size"] == len(BODY)
    plain = fetch(Source("plain.bin", (f"{base}/data.bin",)), tmp_path, progress=False)
    assert dl.verified_digests(plain) == {}  # nothing published, nothing verified
    out.write_bytes(BODY[::-1])  # same size, rewritten: the record no longer applies
    assert dl.verified_digests(out) == {}
    out.write_bytes(BODY)
    fetch(Source("sub/data.bin", (f"{base}/data.bin",), sha256=SHA), tmp_path, progress=False)  # verified again
    assert dl.verified_digests(out) == {"sha256": SHA}
    dl.forget_verified(out)
    assert not (out.parent / dl.LEDGER).exists()


def test_archive_digests_survive_in_the_extraction_marker(tmp_path):
    src = _tar(tmp_path / "src.tar.gz", [_file(n, d) for n, d in FILES.items()])
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    arc = fetch(Source("genres.tar.gz", (str(src),), sha256=digest), tmp_path / "downloads", progress=False)
    files = extract(arc, tmp_path / "out", progress=False)
    info, members = dl.read_marker(tmp_path / "out" / ".extracted-genres.tar.gz")
    assert info == {"name": "genres.tar.gz", "size": src.stat().st_size, "sha256": digest}
    assert sorted(members) == sorted(FILES)
    assert sorted(extract(arc, tmp_path / "out", progress=False)) == sorted(files)  # still a no-op
    plain = _tar(tmp_path / "plain.tar", [_file(n, d) for n, d in FILES.items()])  # not verified: no header
    extract(plain, tmp_path / "out2", progress=False)
    assert dl.read_marker(tmp_path / "out2" / ".extracted-plain.tar") == ({}, sorted(FILES))


def test_joined_parts_carry_their_verified_digests(tmp_path):
    parts = []
    for i, chunk in enumerate((b"a" * 10, b"b" * 7), 1):
        src = tmp_path / f"src.00{i}"
        src.write_bytes(chunk)
        parts.append(fetch(Source(f"x.zip.00{i}", (str(src),), md5=hashlib.md5(chunk).hexdigest()), tmp_path / "dl",
                           progress=False))
    out = join_parts(parts, tmp_path / "dl" / "x.zip")
    assert dl.verified_info(out) == {"parts": [{"name": "x.zip.001", "size": 10, "md5": hashlib.md5(b"a" * 10).hexdigest()},
                                               {"name": "x.zip.002", "size": 7, "md5": hashlib.md5(b"b" * 7).hexdigest()}]}
    parts[1].write_bytes(b"c" * 7)
    assert "parts" not in dl.verified_info(join_parts(parts, tmp_path / "dl" / "y.zip"))


# ---------------------------------------------------------------------------------------------
# checksum tables are data files (src/musicpetl/data/checksums/*.json), not Python literals


def test_checksum_tables_load_and_feed_the_sources():
    from musicpetl.data import checksums
    from musicpetl.data.datasets import gtzan, mtat, mtg_jamendo

    assert [s.name for s in gtzan.SPLIT_SOURCES] == ["train_filtered.txt", "valid_filtered.txt", "test_filtered.txt"]
    assert gtzan.SPLIT_SOURCES[0].sha256 == checksums.table("gtzan")["splits"]["train_filtered.txt"]["sha256"]
    assert [s.md5 for s in mtat.AUDIO_SOURCES] == [checksums.table("mtat")["audio"][f"mp3.zip.00{i}"]["md5"]
                                                   for i in (1, 2, 3)]
    assert len(mtg_jamendo.TAR_SHA256["audio"]) == len(mtg_jamendo.TAR_SHA256["audio-low"]) == 100
    assert all(s.size for s in mtg_jamendo.META_SOURCES)
    with pytest.raises(Exception, match="md5 must be 32 lower-case hex digits"):
        checksums._check({"x": {"md5": "ABC"}}, "t.json")
    with pytest.raises(Exception, match="size must be a whole number"):
        checksums._check({"x": {"sha256": "0" * 64, "size": -1}}, "t.json")


def test_no_checksum_literals_left_in_code():
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "musicpetl" / "data"
    files = [src / "download.py", *sorted((src / "datasets").glob("*.py"))]
    found = {f.name: re.findall(r"\b(?:[0-9a-f]{32}|[0-9a-f]{64})\b", f.read_text()) for f in files}
    assert not {k: v for k, v in found.items() if v}


def test_checksum_tables_are_package_data():
    import tomllib
    from fnmatch import fnmatch
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["musicpetl"]
    tables = sorted((root / "src" / "musicpetl" / "data" / "checksums").glob("*.json"))
    assert {t.stem for t in tables} >= {"gtzan", "mtat", "mtg_jamendo"}
    for t in tables:
        rel = t.relative_to(root / "src" / "musicpetl").as_posix()
        assert any(fnmatch(rel, g) for g in globs), f"{rel} is not in [tool.setuptools.package-data]"
