"""Ballroom (audio + CPJKU beat annotations): fetched end to end from a local HTTP server on
127.0.0.1 serving small archives built here, with resume from a partial transfer, checksums for the
audio archive and a content digest for the annotation snapshot; a user folder downloads nothing;
the seeded split is stratified by dance style; bad annotations are listed with their reason."""
from __future__ import annotations

import hashlib
import io
import re
import tarfile
import threading
import urllib.parse
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicpetl.data import checksums
from musicpetl.data import download as dl
from musicpetl.data.dataset import AUDIO_MISSING, Context
from musicpetl.data.datasets import ballroom
from musicpetl.data.download import ChecksumError, DownloadError, Source
from musicpetl.data.registry import DATASETS, build_items

STYLES = {"ChaChaCha": 5, "Waltz": 5, "Samba": 4}


def _wav(seed: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.random.default_rng(seed).uniform(-0.1, 0.1, 2000).astype(np.float32), 8000, format="WAV")
    return buf.getvalue()


def _tar(files: dict[str, bytes], top: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel, data in files.items():
            info = tarfile.TarInfo((top + "/" if top else "") + rel)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _files() -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(audio archive members, annotation repository files): 14 excerpts in 3 styles; one excerpt
    without annotation, one annotation without audio, one unsorted annotation."""
    audio, beats = {}, {}
    i = 0
    for style, n in STYLES.items():
        for k in range(n):
            name = f"Albums-{style}-{k:02d}"
            audio[f"BallroomData/{style}/{name}.wav"] = _wav(i)
            beats[f"{name}.beats"] = "".join(f"{0.2 + 0.5 * b:.10f} {b % 4 + 1}\n" for b in range(8)).encode()
            i += 1
    audio["BallroomData/nada"] = b"not audio"
    audio["BallroomData/Jive/Media-000001.wav"] = _wav(99)          # no annotation
    beats["Media-999999.beats"] = b"0.5 1\n1.0 2\n"                  # no audio
    beats["Albums-Samba-03.beats"] = b"1.0 1\n0.5 2\n"               # unsorted
    beats["README.md"] = b"Ballroom beat and bar annotations\n"
    return audio, beats


def _digest(beats: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(n for n in beats if n.endswith(".beats")):
        h.update(f"{name}\t{hashlib.sha256(beats[name]).hexdigest()}\n".encode())
    return h.hexdigest()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        srv = self.server
        path = urllib.parse.unquote(self.path)
        srv.requests.append((path, self.headers.get("Range")))
        body = srv.files.get(path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1])
        chunk = body[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(chunk)))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        self.wfile.write(chunk)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    """The annotation snapshot and the audio archive on 127.0.0.1, the module's sources pointed at them."""
    real = urllib.request.urlopen

    def guarded(req, *args, **kwargs):  # nothing leaves this machine
        url = req.full_url if isinstance(req, urllib.request.Request) else req
        assert urllib.parse.urlparse(url).hostname == "127.0.0.1", url
        return real(req, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)
    monkeypatch.setattr(dl, "RETRY_BACKOFF", 0.0)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests = {}, []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    audio, beats = _files()
    httpd.archive = _tar(audio)
    httpd.files["/mtg/data1.tar.gz"] = httpd.archive
    httpd.files["/gh/ballroom.tar.gz"] = _tar(beats, top="BallroomAnnotations-1db08914a8ae")
    monkeypatch.setattr(ballroom, "ANNOTATION_SOURCE", Source("ballroom.tar.gz", (f"{httpd.url}/gh/ballroom.tar.gz",)))
    monkeypatch.setattr(ballroom, "ANNOTATION_SHA256", _digest(beats))
    monkeypatch.setattr(ballroom, "N_TRACKS", 15)
    monkeypatch.setattr(ballroom, "AUDIO_SOURCE", Source("data1.tar.gz", ("http://unreachable.invalid/data1.tar.gz",),
                                                         md5=hashlib.md5(httpd.archive).hexdigest()))
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def ctx(**over) -> Context:
    return Context(seed=0, task="beat", overrides=over, split={"valid_share": 0.2, "test_share": 0.2}, progress=False)


def check_build(root: Path, c: Context) -> None:
    res = build_items("ballroom", "beat", root, c)
    assert res.classes == []
    assert len(res.rows) == 13  # 14 annotated excerpts with audio, less the unsorted one
    row = next(r for r in res.rows if r["key"] == "Albums-Waltz-01")
    assert row["label"] == pytest.approx([0.2 + 0.5 * b for b in range(8)]) and row["style"] == "Waltz"
    assert Path(row["audio_path"]).name == "Albums-Waltz-01.wav"
    why = {d["key"]: d["reason"] for d in res.dropped}
    assert "Albums-Samba-03.beats: line 2: beat times must strictly increase" in why["Albums-Samba-03"]
    assert why["Media-999999"] == AUDIO_MISSING
    assert why["Media-000001"].startswith("audio file not in any annotation list")
    per_style = Counter((r["style"], r["split"]) for r in res.rows)
    for style in STYLES:  # stratified by style: every style in train and held out
        assert per_style[(style, "train")] >= 1 and per_style[(style, "valid")] + per_style[(style, "test")] >= 1
    assert build_items("ballroom", "beat", root, c).rows == res.rows  # seeded: the same split again


def test_checksums_table_and_registry():
    table = checksums.table("ballroom")
    assert table["audio"]["data1.tar.gz"]["md5"] == "2872a3e52070bc342a4510a95e2fa0b8"  # the CPJKU README's
    assert len(table["annotations"]["sha256"]) == 64
    assert DATASETS["ballroom"].tasks == ("beat",)
    assert ballroom.AUDIO_SOURCE.md5 == table["audio"]["data1.tar.gz"]["md5"]
    assert ballroom.ANNOTATION_SOURCE.urls[0].endswith("1db08914a8ae15edb01f104046e30bad88effe67")


def test_fetch_end_to_end_then_nothing_again(tmp_path, server):
    c = ctx(ballroom_base_url=f"{server.url}/mtg")
    ballroom.fetch(tmp_path, c)
    folder = tmp_path / "ballroom"
    assert (folder / "audio" / "BallroomData" / "Waltz" / "Albums-Waltz-00.wav").is_file()
    assert (folder / "BallroomAnnotations" / "Albums-Waltz-00.beats").is_file()
    assert not (folder / "downloads").exists()  # the archive is removed once unpacked
    check_build(tmp_path, c)
    n = len(server.requests)
    ballroom.fetch(tmp_path, c)
    assert len(server.requests) == n  # all there and checked: no request


def test_fetch_resumes_a_partial_archive(tmp_path, server):
    part = tmp_path / "ballroom" / "downloads" / "data1.tar.gz.part"
    part.parent.mkdir(parents=True)
    half = len(server.archive) // 2
    part.write_bytes(server.archive[:half])  # what a killed earlier run left
    ballroom.fetch(tmp_path, ctx(ballroom_base_url=f"{server.url}/mtg"))
    assert ("/mtg/data1.tar.gz", f"bytes={half}-") in server.requests
    assert not any(p == "/mtg/data1.tar.gz" and r is None for p, r in server.requests)
    check_build(tmp_path, ctx())


def test_a_corrupt_archive_fails_its_checksum(tmp_path, server):
    server.files["/mtg/data1.tar.gz"] = server.archive[:-10] + b"0123456789"
    with pytest.raises(ChecksumError, match="md5 mismatch"):
        ballroom.fetch(tmp_path, ctx(ballroom_base_url=f"{server.url}/mtg"))
    assert list((tmp_path / "ballroom" / "downloads").glob("data1.tar.gz.bad-*"))  # kept for inspection
    assert not (tmp_path / "ballroom" / "audio").exists()


def test_changed_annotations_are_refused(tmp_path, server, monkeypatch):
    monkeypatch.setattr(ballroom, "ANNOTATION_SHA256", "0" * 64)
    with pytest.raises(DownloadError, match="does not match the pinned"):
        ballroom.fetch(tmp_path, ctx(ballroom_base_url=f"{server.url}/mtg"))


def test_a_user_folder_downloads_nothing(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("nothing may be downloaded here")

    for name in ("fetch", "fetch_all", "extract"):
        monkeypatch.setattr(dl, name, refuse)
    audio, beats = _files()
    mine = tmp_path / "mine"
    for rel, data in audio.items():
        (mine / "audio" / rel).parent.mkdir(parents=True, exist_ok=True)
        (mine / "audio" / rel).write_bytes(data)
    c = ctx(ballroom_dir=str(mine))
    with pytest.raises(FileNotFoundError, match="BallroomAnnotations") as err:
        ballroom.fetch(tmp_path / "root", c)
    assert "ballroom_dir" in str(err.value)
    (mine / "BallroomAnnotations").mkdir()
    for rel, data in beats.items():
        (mine / "BallroomAnnotations" / rel).write_bytes(data)
    ballroom.fetch(tmp_path / "root", c)
    check_build(tmp_path / "root", c)
    assert not (tmp_path / "root").exists()
