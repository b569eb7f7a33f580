"""The paper's datasets as registry entries: build() on tiny folders in each real layout, and fetch()
end to end from a local HTTP server (127.0.0.1, port 0) with the modules' sources redirected."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
import threading
import urllib.parse
import urllib.request
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicpetl.data import download as dl
from musicpetl.data.dataset import Context
from musicpetl.data.datasets import giantsteps, gtzan, mtat, mtg_jamendo
from musicpetl.data.download import ChecksumError, DownloadError, Source
from musicpetl.data.registry import DATASETS
from musicpetl.data.splits import seeded_split, split_counts
from musicpetl.tasks.key import KEY_NAMES


def _wav_bytes(seconds: float = 0.05, sr: int = 8000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * sr), dtype=np.float32), sr, format="WAV")
    return buf.getvalue()


WAV = _wav_bytes()  # also the payload of files named .mp3/.au: only their existence matters at split time


def write_tree(base: Path, files: dict[str, bytes | str]) -> None:
    for rel, data in files.items():
        p = base / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)


def tar_bytes(files: dict[str, bytes | str], top: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel, data in files.items():
            data = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo((top + "/" if top else "") + rel)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ctx(**overrides) -> Context:
    return Context(seed=0, overrides=overrides, progress=False)


def reasons(dropped: list[dict]) -> dict[str, str]:
    return {d["key"]: d["reason"] for d in dropped}


# ------------------------------------------------------------------------------------- server


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        path = urllib.parse.unquote(self.path)
        self.server.requests.append(path)
        body = self.server.files.get(path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """An in-memory HTTP server: `srv.files['/path'] = bytes`, `srv.url`, `srv.requests`."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests = {}, []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test reaches beyond 127.0.0.1, whatever URL a module holds."""
    real = urllib.request.urlopen

    def guarded(req, *args, **kwargs):
        url = req.full_url if isinstance(req, urllib.request.Request) else req
        host = urllib.parse.urlparse(url).hostname
        if host not in ("127.0.0.1", "localhost"):
            raise AssertionError(f"test tried to reach {url}")
        return real(req, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)
    monkeypatch.setattr(dl, "RETRY_BACKOFF", 0.0)


@pytest.fixture
def no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("nothing may be downloaded here")

    for name in ("fetch", "fetch_all", "extract", "join_parts"):
        monkeypatch.setattr(dl, name, refuse)


def test_registry_lists_the_paper_datasets():
    assert {"mtat", "mtg_jamendo", "gtzan", "giantsteps"} <= set(DATASETS)
    assert DATASETS["mtat"].tasks == ("tagging",) and "key" not in DATASETS["mtat"].tasks
    assert DATASETS["mtg_jamendo"].tasks == ("tagging",)
    assert set(DATASETS["gtzan"].tasks) == {"genre", "key", "tempo", "beat"}
    assert set(DATASETS["giantsteps"].tasks) == {"key", "tempo"}


# ------------------------------------------------------------------------------------- GTZAN

GTZAN_LISTS = {"train": ["blues.00000", "blues.00001", "classical.00000"],
               "valid": ["jazz.00031", "reggae.00086"],
               "test": ["rock.00000", "classical.00001", "hiphop.00002"]}
GTZAN_KEYS = {"blues.00000": "17 ", "blues.00001": "3", "classical.00000": "-1", "jazz.00031": "12",
              "reggae.00086": "5", "rock.00000": "0", "hiphop.00002": "23"}  # classical.00001: no file
GTZAN_BPM = {"blues.00000": "1.258700000000000045e+02\n", "blues.00001": "9.000000000000000000e+01\n",
             "classical.00000": "6.000000000000000000e+01\n", "jazz.00031": "3.216399999999999864e+02\n",
             "rock.00000": "1.200000000000000000e+02\n", "classical.00001": "7.000000000000000000e+01\n",
             "hiphop.00002": "9.500000000000000000e+01\n"}  # reggae.00086: missing, as in the real repo


UNLISTED_GTZAN = "audio file not in any annotation list (not in the fault-filtered split)"


def gtzan_parts() -> dict[str, dict[str, bytes | str]]:
    lists = {f"{s}_filtered.txt": "".join(f"{st.split('.')[0]}/{st}.wav\n" for st in items)
             for s, items in GTZAN_LISTS.items()}
    key = {f"gtzan_key/genres/{st.split('.')[0]}/{st}.lerch.txt": v for st, v in GTZAN_KEYS.items()}
    key["gtzan_key/genres/disco/disco.00055.pk"] = b"\x80\x04\x95stray"
    key["gtzan_key/KeyEnumeration.txt"] = "Labels\n"
    tempo = {f"tempo/gtzan_{st.replace('.', '_')}.bpm": v for st, v in GTZAN_BPM.items()}
    every = [st for items in GTZAN_LISTS.values() for st in items] + ["disco.00055"]
    audio = {f"genres/{st.split('.')[0]}/{st}.{'au' if st == 'blues.00001' else 'wav'}": WAV
             for st in every if st != "rock.00000"}  # rock.00000: audio missing
    return {"lists": lists, "key": key, "tempo": tempo, "audio": audio}


def make_gtzan(folder: Path) -> None:
    parts = gtzan_parts()
    write_tree(folder / "splits", parts["lists"])
    write_tree(folder / "gtzan_key" / "gtzan_key", {k[len("gtzan_key/"):]: v for k, v in parts["key"].items()})
    write_tree(folder / "gtzan_tempo_beat", parts["tempo"])
    write_tree(folder / "somewhere" / "Data", parts["audio"])


def check_gtzan(root: Path, c: Context) -> None:
    res = gtzan.build("genre", root, c)
    assert res.classes == list(gtzan.GENRES)
    assert split_counts(res.rows) == {"train": 3, "valid": 2, "test": 2}
    assert reasons(res.dropped) == {"rock.00000": "audio missing", "disco.00055": UNLISTED_GTZAN}
    assert {d["key"]: d.get("split") for d in res.dropped} == {"rock.00000": "test", "disco.00055": None}
    by_key = {r["key"]: r for r in res.rows}
    assert by_key["hiphop.00002"]["label"] == gtzan.GENRES.index("hiphop")
    assert by_key["blues.00001"]["audio_path"].endswith("blues.00001.au")
    assert all(Path(r["audio_path"]).is_file() for r in res.rows)

    res = gtzan.build("key", root, c)
    assert res.classes == list(KEY_NAMES)
    labels = {r["key"]: KEY_NAMES[r["label"]] for r in res.rows}
    assert labels == {"blues.00000": "D minor", "blues.00001": "C major", "jazz.00031": "A minor",
                      "reggae.00086": "D major", "hiphop.00002": "G# minor"}
    why = reasons(res.dropped)
    assert "unknown" in why["classical.00000"] and why["classical.00001"] == "no key annotation"
    assert why["rock.00000"] == "audio missing" and why["disco.00055"] == UNLISTED_GTZAN and len(why) == 4

    res = gtzan.build("tempo", root, c)
    labels = {r["key"]: r["label"] for r in res.rows}
    assert labels["jazz.00031"] == pytest.approx(321.64)  # above the 300-bin head: kept (validation)
    assert labels["blues.00000"] == pytest.approx(125.87)
    assert reasons(res.dropped) == {"reggae.00086": "no tempo annotation", "rock.00000": "audio missing",
                                    "disco.00055": UNLISTED_GTZAN}
    assert split_counts(res.rows) == {"train": 3, "valid": 1, "test": 2}


def test_gtzan_build(tmp_path):
    make_gtzan(tmp_path / "gtzan")
    check_gtzan(tmp_path, ctx())
    with pytest.raises(ValueError, match="no task"):
        gtzan.build("tagging", tmp_path, ctx())


def test_gtzan_build_names_missing_files(tmp_path):
    make_gtzan(tmp_path / "gtzan")
    (tmp_path / "gtzan" / "splits" / "valid_filtered.txt").unlink()
    with pytest.raises(FileNotFoundError, match="valid_filtered.txt"):
        gtzan.build("genre", tmp_path, ctx())


def test_gtzan_dir_override_downloads_nothing(tmp_path, no_downloads):
    make_gtzan(tmp_path / "mine")
    c = ctx(gtzan_dir=str(tmp_path / "mine"))
    gtzan.fetch(tmp_path / "root", c)
    check_gtzan(tmp_path / "root", c)
    assert not (tmp_path / "root").exists()
    (tmp_path / "mine" / "splits" / "test_filtered.txt").unlink()
    with pytest.raises(FileNotFoundError, match="test_filtered.txt") as err:
        gtzan.fetch(tmp_path / "root", c)
    assert "gtzan_dir" in str(err.value)


@pytest.fixture
def gtzan_server(server, monkeypatch):
    parts = gtzan_parts()
    sources = []
    for name, text in parts["lists"].items():
        server.files[f"/dnn-mgr/{name}"] = text.encode()
        sources.append(Source(name, (f"{server.url}/dnn-mgr/{name}",), sha256=sha256(text.encode())))
    monkeypatch.setattr(gtzan, "SPLIT_SOURCES", sources)
    server.files["/gh/gtzan_key.tar.gz"] = tar_bytes(parts["key"], top="gtzan_key-9ef1591f81ee")
    server.files["/gh/tempo.tar.gz"] = tar_bytes({**parts["tempo"], "README.md": "x"}, top="gtzan_tempo_beat-main")
    monkeypatch.setattr(gtzan, "REPO_SOURCES", {
        "gtzan_key": Source("gtzan_key.tar.gz", (f"{server.url}/gh/gtzan_key.tar.gz",)),
        "gtzan_tempo_beat": Source("tempo.tar.gz", (f"{server.url}/missing.tar.gz", f"{server.url}/gh/tempo.tar.gz")),
    })
    server.files["/mirror/genres.tar.gz"] = tar_bytes(parts["audio"])
    return server


def test_gtzan_fetch_end_to_end(tmp_path, gtzan_server):
    srv = gtzan_server
    archive = srv.files["/mirror/genres.tar.gz"]
    c = ctx(gtzan_archive=f"{srv.url}/mirror/genres.tar.gz", gtzan_archive_md5=md5(archive))
    gtzan.fetch(tmp_path, c)
    folder = tmp_path / "gtzan"
    assert (folder / "audio" / "genres" / "blues" / "blues.00000.wav").is_file()
    assert (folder / "gtzan_key" / "gtzan_key" / "genres" / "disco" / "disco.00055.pk").is_file()
    assert not (folder / "downloads").exists()  # archives are removed once unpacked
    check_gtzan(tmp_path, c)
    n = len(srv.requests)
    gtzan.fetch(tmp_path, c)  # everything there: no request at all
    assert len(srv.requests) == n


def test_gtzan_fetch_archive_checksum_and_missing_archive(tmp_path, gtzan_server):
    with pytest.raises(FileNotFoundError, match="gtzan_archive"):
        gtzan.fetch(tmp_path, ctx())
    with pytest.raises(ChecksumError):
        gtzan.fetch(tmp_path, ctx(gtzan_archive=f"{gtzan_server.url}/mirror/genres.tar.gz",
                                  gtzan_archive_md5="0" * 32))


def test_gtzan_fetch_from_a_local_archive(tmp_path, gtzan_server):
    local = tmp_path / "genres.tar.gz"
    local.write_bytes(gtzan_server.files["/mirror/genres.tar.gz"])
    gtzan.fetch(tmp_path / "root", ctx(gtzan_archive=str(local)))
    check_gtzan(tmp_path / "root", ctx())
    assert local.is_file()  # the user's file is left alone


# ------------------------------------------------------------------------------------- GiantSteps

GS_MTG = ("ID\tMANUAL KEY\tC\n"
          "5061\tD# minor\t2\n5881\tA major\t2\n7217\tF minor\t2\n10359\tD minor\t2\n10981\t-\t0\n"
          "16484\tA minor\t1\n61578\tC minor / F# minor\t2\n70001\tC# major \t2\n70002\tG minor\t2\n"
          "70003\tB major\t2\n70004\tF / F# minor\t2\n")
GS_MTG_IDS = ["5061", "5881", "7217", "10359", "10981", "16484", "61578", "70001", "70002", "70003", "70004"]
GS_KEY = {"10089": "D major", "1224698": "C minor", "3333": "Eb minor", "4452003": "Bb major", "5555": "Gb major"}
GS_TEMPO = {str(100 + i): f"{120 + i}.5" for i in range(10)}
GS_TEMPO_V2 = {**GS_TEMPO, "105": "0.0"}


def _payload(track: str) -> bytes:
    return WAV + track.encode()  # distinct bytes (and MD5s) per track


def giantsteps_repos() -> dict[str, dict[str, bytes | str]]:
    mtg = {"annotations/annotations.txt": GS_MTG, "README.md": "x"}
    mtg.update({f"md5/{t}.LOFI.md5": md5(_payload(t)) + "\n" for t in GS_MTG_IDS})
    key = {f"annotations/key/{t}.LOFI.key": v for t, v in GS_KEY.items()}
    key.update({f"md5/{t}.LOFI.md5": md5(_payload(t)) + "\n" for t in GS_KEY})
    tempo = {f"annotations/tempo/{t}.LOFI.bpm": v for t, v in GS_TEMPO.items()}
    tempo.update({f"annotations_v2/tempo/{t}.LOFI.bpm": v for t, v in GS_TEMPO_V2.items()})
    tempo.update({f"md5/{t}.LOFI.md5": md5(_payload(t)) + "\n" for t in GS_TEMPO})
    return {"mtg_key": mtg, "key": key, "tempo": tempo}


def make_giantsteps(folder: Path, skip_audio: tuple[str, ...] = ("7217",)) -> None:
    for part, files in giantsteps_repos().items():
        repo = folder / giantsteps.PARTS[part].repo
        write_tree(repo, files)
        for f in (repo / "md5").glob("*.md5"):
            t = f.name.split(".")[0]
            if t not in skip_audio:
                write_tree(repo / "audio", {f"{t}.LOFI.mp3": _payload(t)})


def check_giantsteps(root: Path, c: Context) -> None:
    res = giantsteps.build("key", root, c)
    assert res.classes == list(KEY_NAMES)
    labels = {r["key"]: (r["split"], KEY_NAMES[r["label"]]) for r in res.rows}
    train_valid = {k: v for k, v in labels.items() if k.startswith("mtg-key/")}
    assert {k: v[1] for k, v in train_valid.items()} == {
        "mtg-key/5061": "D# minor", "mtg-key/5881": "A major", "mtg-key/10359": "D minor",
        "mtg-key/70001": "C# major", "mtg-key/70002": "G minor", "mtg-key/70003": "B major"}
    # the split is drawn over the 7 usable annotations (7217 included, though its audio is missing):
    # valid share 234/1159 of 7 -> 1 item
    usable = ["5061", "5881", "7217", "10359", "70001", "70002", "70003"]
    expected = seeded_split(usable, int(c.overrides.get("giantsteps_split_seed", 0)), valid=234 / 1159, test=0.0)
    assert Counter(expected.values()) == Counter({"train": 6, "valid": 1})
    assert {k: v[0] for k, v in train_valid.items()} == {f"mtg-key/{t}": expected[t] for t in usable if t != "7217"}
    assert {k: v for k, v in labels.items() if k.startswith("key/")} == {
        "key/10089": ("test", "D major"), "key/3333": ("test", "D# minor"), "key/5555": ("test", "F# major")}
    why = reasons(res.dropped)
    assert why["mtg-key/7217"] == "audio missing"
    assert "confidence 0" in why["mtg-key/10981"] and "confidence 1" in why["mtg-key/16484"]
    assert "ambiguous" in why["mtg-key/61578"] and "ambiguous" in why["mtg-key/70004"]
    assert "shorter than 120 s" in why["key/1224698"] and "shorter than 120 s" in why["key/4452003"]
    assert len(why) == 7

    res = giantsteps.build("tempo", root, c)
    assert split_counts(res.rows) == {"train": 6, "valid": 2, "test": 2}
    assert {r["key"]: r["label"] for r in res.rows}["109"] == pytest.approx(129.5)
    assert res.dropped == []


def test_giantsteps_build(tmp_path):
    make_giantsteps(tmp_path / "giantsteps")
    check_giantsteps(tmp_path, ctx())


def test_giantsteps_key_valid_share_gives_the_papers_counts(tmp_path):
    lines = ["ID\tMANUAL KEY\tC"] + [f"{1000 + i}\t{KEY_NAMES[i % 24]}\t2" for i in range(1159)]
    repo = tmp_path / "giantsteps" / giantsteps.PARTS["mtg_key"].repo
    write_tree(repo, {"annotations/annotations.txt": "\n".join(lines) + "\n", "md5/x": ""})
    for i in range(1159):
        write_tree(repo / "audio", {f"{1000 + i}.LOFI.mp3": b""})
    write_tree(tmp_path / "giantsteps" / giantsteps.PARTS["key"].repo, {"annotations/key/.keep": "", "md5/x": ""})
    res = giantsteps.build("key", tmp_path, ctx())
    assert split_counts(res.rows) == {"train": 925, "valid": 234, "test": 0}
    other_seed = giantsteps.build("key", tmp_path, Context(seed=5, overrides={}, progress=False))
    assert other_seed.rows == res.rows  # the split seed is not the experiment seed


def test_giantsteps_tempo_split_file_is_written_and_reused(tmp_path):
    make_giantsteps(tmp_path / "giantsteps")
    first = giantsteps.build("tempo", tmp_path, ctx())
    split_file = tmp_path / "giantsteps" / "splits" / "tempo_3-1-1_seed0.tsv"
    assert split_file.is_file()
    text = split_file.read_text()
    moved = next(r["key"] for r in first.rows if r["split"] == "train")
    split_file.write_text(text.replace(f"{moved}\ttrain", f"{moved}\ttest"))
    again = giantsteps.build("tempo", tmp_path, ctx())
    assert {r["key"]: r["split"] for r in again.rows}[moved] == "test"
    assert split_counts(again.rows) == {"train": 5, "valid": 2, "test": 3}
    # another split seed draws (and keeps) another file
    giantsteps.build("tempo", tmp_path, ctx(giantsteps_split_seed=3))
    assert (tmp_path / "giantsteps" / "splits" / "tempo_3-1-1_seed3.tsv").is_file()
    # a stale file (tracks missing) is refused
    split_file.write_text("# old\n100\ttrain\n")
    with pytest.raises(ValueError, match="lacks 9 annotated tracks"):
        giantsteps.build("tempo", tmp_path, ctx())


def test_giantsteps_tempo_v2_annotations(tmp_path):
    make_giantsteps(tmp_path / "giantsteps")
    res = giantsteps.build("tempo", tmp_path, ctx(giantsteps_tempo_annotations="v2"))
    assert reasons(res.dropped) == {"105": "no tempo annotation (0.0)"}
    with pytest.raises(ValueError, match="v1"):
        giantsteps.build("tempo", tmp_path, ctx(giantsteps_tempo_annotations="v3"))


def test_giantsteps_dir_override_downloads_nothing(tmp_path, no_downloads):
    make_giantsteps(tmp_path / "mine")
    c = ctx(giantsteps_dir=str(tmp_path / "mine"))
    giantsteps.fetch(tmp_path / "root", c)
    check_giantsteps(tmp_path / "root", c)
    for f in (tmp_path / "mine" / giantsteps.PARTS["tempo"].repo / "audio").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match="giantsteps-tempo-dataset/audio"):
        giantsteps.fetch(tmp_path / "root", c)
    giantsteps.fetch(tmp_path / "root", ctx(giantsteps_dir=str(tmp_path / "mine"), giantsteps_parts="key"))


@pytest.fixture
def giantsteps_server(server, monkeypatch):
    parts = {}
    for name, files in giantsteps_repos().items():
        part = giantsteps.PARTS[name]
        server.files[f"/gh/{part.repo}.tar.gz"] = tar_bytes(files, top=f"{part.repo}-0123456789ab")
        ids = [f.split("/")[1].split(".")[0] for f in files if f.startswith("md5/")]
        parts[name] = dataclasses.replace(
            part, n_tracks=len(ids), source=Source(f"{part.repo}.tar.gz", (f"{server.url}/gh/{part.repo}.tar.gz",)))
        for t in ids:
            if t != "7217":  # gone from every mirror
                server.files[f"/jku/{part.mirror_dir}{t}.LOFI.mp3"] = _payload(t)
    server.files["/jku/backup/5555.LOFI.mp3"] = b"corrupt"  # fails its MD5
    monkeypatch.setattr(giantsteps, "PARTS", parts)
    return server


def test_giantsteps_fetch_end_to_end(tmp_path, giantsteps_server):
    srv = giantsteps_server
    base = f"{srv.url}/jku/"
    with pytest.raises(DownloadError, match="7217.LOFI.mp3") as err:
        giantsteps.fetch(tmp_path, ctx(giantsteps_base_url=base))
    assert "giantsteps_allow_missing_audio" in str(err.value)
    srv.files["/jku/backup/5555.LOFI.mp3"] = _payload("5555")  # the mirror is repaired
    c = ctx(giantsteps_base_url=base, giantsteps_allow_missing_audio=True)
    giantsteps.fetch(tmp_path, c)
    folder = tmp_path / "giantsteps"
    assert (folder / "giantsteps-mtg-key-dataset" / "annotations" / "annotations.txt").read_text() == GS_MTG
    assert sorted(p.name for p in (folder / "giantsteps-key-dataset" / "audio").glob("*.mp3")) == sorted(
        f"{t}.LOFI.mp3" for t in GS_KEY)
    assert not (folder / "downloads").exists()
    check_giantsteps(tmp_path, c)
    before = Counter(srv.requests)
    giantsteps.fetch(tmp_path, c)  # only the one file no mirror has is asked for again
    assert set(Counter(srv.requests) - before) == {"/jku/mtg_key_backup/7217.LOFI.mp3"}


def test_giantsteps_fetch_only_the_parts_asked_for(tmp_path, giantsteps_server):
    # an earlier, interrupted run left audio but no annotations: they are merged, the audio kept
    repo = tmp_path / "giantsteps" / "giantsteps-tempo-dataset"
    write_tree(repo / "audio", {"100.LOFI.mp3": _payload("100")})
    giantsteps.fetch(tmp_path, ctx(giantsteps_base_url=f"{giantsteps_server.url}/jku", giantsteps_parts="tempo"))
    # the tempo split is drawn at download time (the download index covers it)
    assert sorted(p.name for p in (tmp_path / "giantsteps").iterdir()) == ["giantsteps-tempo-dataset", "splits"]
    assert (tmp_path / "giantsteps" / "splits" / "tempo_3-1-1_seed0.tsv").is_file()
    assert "/jku/backup/100.LOFI.mp3" not in giantsteps_server.requests
    assert len(list((repo / "audio").glob("*.mp3"))) == len(GS_TEMPO) and (repo / "annotations_v2").is_dir()
    with pytest.raises(ValueError, match="unknown task"):
        giantsteps.fetch(tmp_path, ctx(giantsteps_parts="genre"))


def test_giantsteps_fetches_what_data_task_needs(tmp_path, giantsteps_server):
    c = Context(seed=0, task="tempo", overrides={"giantsteps_base_url": f"{giantsteps_server.url}/jku"},
                progress=False)
    giantsteps.fetch(tmp_path, c)
    assert sorted(p.name for p in (tmp_path / "giantsteps").iterdir()) == ["giantsteps-tempo-dataset", "splits"]


# ------------------------------------------------------------------------------------- MTAT

MTAT_TAGS = ["guitar", "classical", "slow", "techno"]
MTAT_BINARY = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1], [1, 1, 0, 0], [0, 0, 1, 1]], dtype=np.int64)
MTAT_SPLITS = {"train": ["0\t0/a-one-0-29.mp3", "3\tf/d-four-30-59.mp3"], "valid": ["1\tc/b-two-0-29.mp3"],
               "test": ["2\t0/c-three-0-29.mp3", "4\ta/e-five-0-29.mp3"]}


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def mtat_split_files() -> dict[str, bytes]:
    files = {f"{s}.npy": _npy(np.array(entries)) for s, entries in MTAT_SPLITS.items()}
    files["binary.npy"] = _npy(MTAT_BINARY)
    files["tags.npy"] = _npy(np.array(MTAT_TAGS))
    return files


def mtat_audio() -> dict[str, bytes]:
    return {e.split("\t")[1]: WAV for entries in MTAT_SPLITS.values() for e in entries
            if "e-five" not in e}  # e-five: audio missing


def check_mtat(root: Path, c: Context) -> None:
    res = mtat.build("tagging", root, c)
    assert res.classes == MTAT_TAGS
    assert split_counts(res.rows) == {"train": 2, "valid": 1, "test": 1}
    labels = {r["key"]: r["label"] for r in res.rows}
    assert labels == {"0/a-one-0-29": [0, 2], "f/d-four-30-59": [0, 1], "c/b-two-0-29": [1],
                      "0/c-three-0-29": [3]}
    assert reasons(res.dropped) == {"a/e-five-0-29": "audio missing"}
    assert all(Path(r["audio_path"]).is_file() for r in res.rows)


def test_mtat_build(tmp_path):
    write_tree(tmp_path / "mtat" / "split", mtat_split_files())
    write_tree(tmp_path / "mtat" / "mp3", mtat_audio())
    check_mtat(tmp_path, ctx())
    from musicpetl.data.registry import build_items

    with pytest.raises(ValueError, match="no task 'key'"):  # checked once, for every dataset
        build_items("mtat", "key", tmp_path, ctx())


def test_mtat_dir_override_downloads_nothing(tmp_path, no_downloads):
    mine = tmp_path / "mine"  # a user's copy: the 0-9a-f folders at the top
    write_tree(mine / "split", mtat_split_files())
    write_tree(mine, mtat_audio())
    c = ctx(mtat_dir=str(mine))
    mtat.fetch(tmp_path / "root", c)
    check_mtat(tmp_path / "root", c)
    (mine / "split" / "binary.npy").unlink()
    with pytest.raises(FileNotFoundError, match="binary.npy"):
        mtat.fetch(tmp_path / "root", c)


def test_mtat_fetch_end_to_end(tmp_path, server, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for rel, data in mtat_audio().items():
            zf.writestr(rel, data)
    whole = buf.getvalue()
    cut = [0, len(whole) // 3, 2 * len(whole) // 3, len(whole)]
    audio = []
    for i in range(3):
        part = whole[cut[i]:cut[i + 1]]
        name = f"mp3.zip.00{i + 1}"
        server.files[f"/mirg/{name}"] = part
        audio.append(Source(name, ("https://mirg.example/unused/" + name,), md5=md5(part)))
    meta = []
    for name in ("annotations_final.csv", "clip_info_final.csv"):
        server.files[f"/mirg/{name}"] = b"clip_id\tmp3_path\n"
        meta.append(Source(name, ("https://mirg.example/unused/" + name,), md5=md5(b"clip_id\tmp3_path\n")))
    splits = []
    for name, data in mtat_split_files().items():
        server.files[f"/gh/{name}"] = data
        splits.append(Source(name, (f"{server.url}/gone/{name}", f"{server.url}/gh/{name}")))
    monkeypatch.setattr(mtat, "AUDIO_SOURCES", audio)
    monkeypatch.setattr(mtat, "META_SOURCES", meta)
    monkeypatch.setattr(mtat, "SPLIT_SOURCES", splits)
    c = ctx(mtat_base_url=f"{server.url}/mirg/")
    mtat.fetch(tmp_path, c)
    assert (tmp_path / "mtat" / "annotations_final.csv").is_file()
    assert not (tmp_path / "mtat" / "downloads").exists()
    check_mtat(tmp_path, c)
    n = len(server.requests)
    mtat.fetch(tmp_path, c)
    assert len(server.requests) == n


# ------------------------------------------------------------------------------------- MTG-Jamendo

MTG_TOP50 = ["genre---rock", "genre---pop", "instrument---piano", "mood/theme---happy"]
MTG_HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\r\n"
MTG_SPLITS = {
    "train": ["track_0000241\tartist_000005\talbum_000033\t41/241.mp3\t340.1\tgenre---rock",
              "track_0000300\tartist_000006\talbum_000034\t00/300.mp3\t120.0\tgenre---pop\tinstrument---piano"],
    "validation": ["track_0001441\tartist_000007\talbum_000035\t41/1441.mp3\t200.2\tmood/theme---happy\tgenre---rock"],
    "test": ["track_0000400\tartist_000008\talbum_000036\t00/400.mp3\t99.9\tinstrument---piano",
             "track_0000501\tartist_000009\talbum_000037\t01/501.mp3\t99.9\tgenre---pop"],
}


def mtg_meta() -> dict[str, str]:
    files = {f"data/splits/split-0/autotagging_top50tags-{s}.tsv": MTG_HEADER + "".join(r + "\r\n" for r in rows)
             for s, rows in MTG_SPLITS.items()}
    files["data/tags/top50.txt"] = "".join(t + "\n" for t in MTG_TOP50)
    return files


def mtg_tars(low: bool) -> dict[str, dict[str, bytes]]:
    """raw_30s_audio-NN.tar contents: folder NN/ with the tracks (01/501 absent: audio missing)."""
    out = {}
    for nn in ("00", "41"):
        tracks = [r.split("\t")[3] for rows in MTG_SPLITS.values() for r in rows if r.split("\t")[3].startswith(nn)]
        out[nn] = {(t[:-4] + ".low.mp3" if low else t): WAV for t in tracks}
    return out


def check_mtg(root: Path, c: Context) -> None:
    res = mtg_jamendo.build("tagging", root, c)
    assert res.classes == MTG_TOP50
    assert split_counts(res.rows) == {"train": 2, "valid": 1, "test": 1}
    labels = {r["key"]: r["label"] for r in res.rows}
    assert labels == {"track_0000241": [0], "track_0000300": [1, 2], "track_0001441": [0, 3], "track_0000400": [2]}
    assert reasons(res.dropped) == {"track_0000501": "audio missing"}
    assert all(Path(r["audio_path"]).is_file() for r in res.rows)


@pytest.mark.parametrize("low", [False, True])
def test_mtg_jamendo_build(tmp_path, low):
    folder = tmp_path / "mtg_jamendo"
    write_tree(folder, mtg_meta())
    for files in mtg_tars(low).values():
        write_tree(folder / ("audio-low" if low else "audio"), files)
    c = ctx(mtg_jamendo_audio="audio-low") if low else ctx()
    check_mtg(tmp_path, c)
    if low:
        assert all(r["audio_path"].endswith(".low.mp3") for r in mtg_jamendo.build("tagging", tmp_path, c).rows)


def test_mtg_jamendo_unknown_tag_raises(tmp_path):
    folder = tmp_path / "mtg_jamendo"
    meta = mtg_meta()
    meta["data/tags/top50.txt"] = "genre---rock\n"
    write_tree(folder, meta)
    with pytest.raises(ValueError, match="outside data/tags/top50.txt"):
        mtg_jamendo.build("tagging", tmp_path, ctx())


def test_mtg_jamendo_sources_cover_both_audio_sets():
    full, low = mtg_jamendo.audio_sources("audio"), mtg_jamendo.audio_sources("audio-low")
    assert len(full) == len(low) == 100 and all(len(s.sha256) == 64 for s in full + low)
    assert full[0].name == "raw_30s_audio-00.tar" and low[99].name == "raw_30s_audio-low-99.tar"
    assert full[0].urls[0].endswith("/raw_30s/audio/raw_30s_audio-00.tar")
    assert low[99].urls[0].endswith("/raw_30s/audio-low/raw_30s_audio-low-99.tar")
    with pytest.raises(ValueError, match="audio-low"):
        mtg_jamendo.fetch(Path("unused"), ctx(mtg_jamendo_audio="flac"))


@pytest.mark.parametrize("low", [False, True])
def test_mtg_jamendo_fetch_end_to_end(tmp_path, server, monkeypatch, low):
    audio_type = "audio-low" if low else "audio"
    meta = []
    for name, text in mtg_meta().items():
        server.files[f"/gh/{name}"] = text.encode()
        meta.append(Source(name, (f"{server.url}/gh/{name}",), sha256=sha256(text.encode())))
    monkeypatch.setattr(mtg_jamendo, "META_SOURCES", meta)
    shas = {}
    for nn, files in mtg_tars(low).items():
        name = f"raw_30s_{audio_type}-{nn}.tar"
        data = tar_bytes(files)
        server.files[f"/cdn/raw_30s/{audio_type}/{name}"] = data
        shas[name] = sha256(data)
    monkeypatch.setattr(mtg_jamendo, "TAR_SHA256", {**mtg_jamendo.TAR_SHA256, audio_type: shas})
    c = ctx(mtg_jamendo_base_url=f"{server.url}/cdn", mtg_jamendo_workers=1,
            **({"mtg_jamendo_audio": "audio-low"} if low else {}))
    mtg_jamendo.fetch(tmp_path, c)
    folder = tmp_path / "mtg_jamendo"
    assert not (folder / "downloads").exists()  # every tar removed once unpacked
    assert sorted(p.name for p in (folder / audio_type).glob(".extracted-*")) == sorted(f".extracted-{n}" for n in shas)
    check_mtg(tmp_path, c)
    n = len(server.requests)
    mtg_jamendo.fetch(tmp_path, c)
    assert len(server.requests) == n


def test_mtg_jamendo_dir_override_downloads_nothing(tmp_path, no_downloads):
    mine = tmp_path / "mine"
    write_tree(mine, mtg_meta())
    c = ctx(mtg_jamendo_dir=str(mine))
    with pytest.raises(FileNotFoundError, match="raw_30s tars"):
        mtg_jamendo.fetch(tmp_path / "root", c)
    for files in mtg_tars(False).values():
        write_tree(mine / "audio", files)
    mtg_jamendo.fetch(tmp_path / "root", c)
    check_mtg(tmp_path / "root", c)


def test_mtat_unzip_failure_names_the_repair(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise DownloadError("mp3.zip: corrupt or truncated archive")

    monkeypatch.setattr(dl, "extract", broken)
    monkeypatch.setattr(mtat.shutil, "which", lambda name: None)
    with pytest.raises(DownloadError, match="zip -FF"):
        mtat._unzip(tmp_path / "mp3.zip", tmp_path / "mp3", progress=False)


def test_documents_the_code_cites_are_in_the_repository():
    """Every mention of the reference documents in code, tests and README names docs/<file>, and
    the file is there (issue 8: facts a comment cites resolve inside the repo)."""
    import re

    root = Path(__file__).resolve().parents[1]
    files = [*root.glob("src/**/*.py"), *root.glob("stages/*.py"), *root.glob("tests/*.py"), *root.glob("bench/*.py"),
             root / "README.md", root / "dvc.yaml", root / "params.yaml"]
    bad, cited = [], set()
    for f in files:
        for n, line in enumerate(f.read_text().splitlines(), 1):
            for m in re.finditer(r"([\w./-]*)\b(REFERENCE|DATASETS)\.md", line):
                if m.group(1) != "docs/":
                    bad.append(f"{f.relative_to(root)}:{n}: {m.group(0)}")
                cited.add(f"docs/{m.group(2)}.md")
    assert not bad, "cite docs/REFERENCE.md or docs/DATASETS.md: " + "; ".join(bad)
    assert cited == {"docs/REFERENCE.md", "docs/DATASETS.md"}
    assert all((root / c).is_file() for c in cited)
