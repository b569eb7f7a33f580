"""The download index identifies raw data by content, and `verify_index` notices any change before a
stage uses the files (issue 9, item 2: a synth corpus regenerated with another seed, same sizes)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from musicpetl.data import download as dl
from musicpetl.data.dataset import Context
from musicpetl.data.datasets.common import remove_download
from musicpetl.data.rawindex import build_index, load_index, verify_index, write_index
from musicpetl.data.registry import dataset_index, download
from musicpetl.data.walk import walk_files
from musicpetl.errors import InputError, MissingFileError

SYNTH = {"n_clips": 10, "duration": 1.0}


def synth_ctx(seed: int, **overrides) -> Context:
    return Context(seed=seed, synth=dict(SYNTH), overrides=overrides, progress=False)


def index_to(path: Path, name: str, root: Path, ctx: Context) -> dict:
    index = dataset_index(name, root, ctx)
    write_index(path, index)
    return index


def write_tree(base: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = base / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


# ------------------------------------------------------------------------------------- synth


def test_synth_reseeded_with_the_same_sizes_is_caught(tmp_path):
    root, idx = tmp_path / "raw", tmp_path / "download.json"
    download("synth", root, synth_ctx(0))
    first = index_to(idx, "synth", root, synth_ctx(0))
    assert verify_index(idx, dataset="synth", folder=root / "synth")["files"] == SYNTH["n_clips"] + 2
    assert first["origin"] == "generated" and first["generator"]["seed"] == 0
    assert all(r[2] is None and r[3].startswith("sha256:") for r in first["files"])  # content, not mtimes

    download("synth", root, synth_ctx(1))  # what a failed `seed: 1.5` run did
    second = dataset_index("synth", root, synth_ctx(1))
    wavs = lambda ix: {r[0]: r[1] for r in ix["files"] if r[0].endswith(".wav")}  # noqa: E731
    assert wavs(first) == wavs(second)  # the same sizes: a names-and-sizes index saw nothing
    assert second["generator"]["seed"] == 1
    assert second["content_sha256"] != first["content_sha256"] and second["files"] != first["files"]

    with pytest.raises(InputError) as err:
        verify_index(idx)
    msg = str(err.value)
    assert "changed after the download stage indexed it" in msg and str(idx) in msg
    assert "audio/synth_00000.wav (content)" in msg and "annotations.jsonl" in msg
    assert "dvc repro -f -s download" in msg


def test_synth_index_is_the_same_for_the_same_params(tmp_path):
    download("synth", tmp_path / "a", synth_ctx(0))
    download("synth", tmp_path / "b", synth_ctx(0))
    a = dataset_index("synth", tmp_path / "a", synth_ctx(0))
    b = dataset_index("synth", tmp_path / "b", synth_ctx(0))
    assert {k: v for k, v in a.items() if k != "folder"} == {k: v for k, v in b.items() if k != "folder"}


def test_synth_fetch_rewrites_a_corpus_changed_on_disk(tmp_path):
    root, idx = tmp_path / "raw", tmp_path / "download.json"
    download("synth", root, synth_ctx(0))
    index_to(idx, "synth", root, synth_ctx(0))
    wav = root / "synth" / "audio" / "synth_00003.wav"
    data = bytearray(wav.read_bytes())
    data[-1] ^= 0xFF  # same size, other content
    wav.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"1 changed \(audio/synth_00003.wav \(content\)\)"):
        verify_index(idx)
    download("synth", root, synth_ctx(0))  # same params: the stamp no longer matches the files
    assert verify_index(idx)["files"] == SYNTH["n_clips"] + 2


# ------------------------------------------------------------------------------------- user folders


def test_user_folder_is_indexed_by_size_and_mtime(tmp_path):
    mine = tmp_path / "mine"
    write_tree(mine, {"a/x.wav": b"1234", "a/y.wav": b"5678", "notes.txt": b"n"})
    c = Context(overrides={"gtzan_dir": str(mine)}, progress=False)
    idx = tmp_path / "download.json"
    index = index_to(idx, "gtzan", tmp_path / "root", c)
    assert index["origin"] == "user folder" and "content_sha256" not in index
    assert {r[0]: (r[1], r[3]) for r in index["files"]} == {"a/x.wav": (4, None), "a/y.wav": (4, None),
                                                             "notes.txt": (1, None)}
    assert all(isinstance(r[2], int) for r in index["files"])
    verify_index(idx, dataset="gtzan", folder=mine)

    (mine / "a" / "x.wav").write_bytes(b"abcd")  # same size, new content (and mtime)
    os.utime(mine / "a" / "x.wav", ns=(1, 1))
    (mine / "notes.txt").unlink()
    (mine / "a" / "z.wav").write_bytes(b"new")
    with pytest.raises(InputError) as err:
        verify_index(idx)
    msg = str(err.value)
    assert "1 changed (a/x.wav (modified))" in msg and "1 missing (notes.txt)" in msg and "1 added (a/z.wav)" in msg


def test_hash_raw_hashes_every_file_and_forgives_a_touch(tmp_path):
    mine = tmp_path / "mine"
    write_tree(mine, {"a/x.wav": b"1234", "b.wav": b"56"})
    c = Context(overrides={"gtzan_dir": str(mine), "hash_raw": True}, progress=False)
    idx = tmp_path / "download.json"
    index = index_to(idx, "gtzan", tmp_path / "root", c)
    assert index["files"][0] == ["a/x.wav", 4, (mine / "a" / "x.wav").stat().st_mtime_ns,
                                 "sha256:" + hashlib.sha256(b"1234").hexdigest()]
    assert index["content_sha256"]
    os.utime(mine / "a" / "x.wav", ns=(5, 5))  # touched, same bytes: re-hashed, accepted
    assert verify_index(idx) == {"files": 2, "rehashed": 1}
    (mine / "b.wav").write_bytes(b"65")
    os.utime(mine / "b.wav", ns=(7, 7))
    with pytest.raises(InputError, match=r"1 changed \(b.wav \(content\)\)"):
        verify_index(idx)
    with pytest.raises(InputError, match="hash_raw must be true or false"):
        dataset_index("gtzan", tmp_path, Context(overrides={"gtzan_dir": str(mine), "hash_raw": "yes"}))


def test_verify_index_checks_what_the_stage_reads(tmp_path):
    idx = tmp_path / "download.json"
    with pytest.raises(MissingFileError, match="run the download stage"):
        verify_index(idx)
    mine = tmp_path / "mine"
    write_tree(mine, {"x.wav": b"1"})
    index_to(idx, "gtzan", tmp_path, Context(overrides={"gtzan_dir": str(mine)}))
    with pytest.raises(InputError, match="indexes dataset 'gtzan', but data.dataset is 'mtat'"):
        verify_index(idx, dataset="mtat")
    with pytest.raises(InputError, match="but this stage reads"):
        verify_index(idx, dataset="gtzan", folder=tmp_path / "elsewhere")
    # an index from before content identification, or a damaged one
    idx.write_text(json.dumps({"dataset": "gtzan", "folder": str(mine), "files": [["x.wav", 1]]}))
    with pytest.raises(InputError, match=r"download.json: not a download index of format 2.*dvc repro -f -s download"):
        load_index(idx)
    idx.write_text(json.dumps({"format": 2, "dataset": "gtzan", "folder": str(mine), "files": [["x.wav", "1", 0, None]]}))
    with pytest.raises(InputError, match="bad file row"):
        load_index(idx)
    idx.write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        load_index(idx)


# ------------------------------------------------------------------------------------- verified downloads


def test_index_records_the_checksums_verified_on_download(tmp_path):
    """A file fetched against its published sha256 is indexed with it; an archive fetched against
    its md5 and unpacked is listed with it; a file changed later loses its digest."""
    src = tmp_path / "src"
    write_tree(src, {"meta.tsv": b"a\tb\n"})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in {"genres/blues/blues.00000.wav": b"RIFF0", "genres/jazz/jazz.00001.wav": b"RIFF1"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (src / "genres.tar.gz").write_bytes(buf.getvalue())
    meta_sha = hashlib.sha256(b"a\tb\n").hexdigest()
    tar_md5 = hashlib.md5(buf.getvalue()).hexdigest()

    folder = tmp_path / "root" / "gtzan"
    dl.fetch(dl.Source("meta.tsv", (str(src / "meta.tsv"),), sha256=meta_sha), folder, progress=False)
    archive = dl.fetch(dl.Source("genres.tar.gz", (str(src / "genres.tar.gz"),), md5=tar_md5), folder / "downloads",
                       progress=False)
    dl.extract(archive, folder / "audio", progress=False)
    remove_download(archive)
    assert not (folder / "downloads").exists()  # the ledger went with the archive

    index = dataset_index("gtzan", tmp_path / "root", Context(progress=False))
    assert index["origin"] == "downloaded"
    rows = {r[0]: r for r in index["files"]}
    assert rows["meta.tsv"][3] == f"sha256:{meta_sha}" and isinstance(rows["meta.tsv"][2], int)
    assert rows["audio/genres/blues/blues.00000.wav"][3] is None  # unpacked: size + mtime ...
    assert index["archives"] == {"audio/genres.tar.gz": {"md5": tar_md5, "size": len(buf.getvalue()),
                                                         "files": 2}}  # ... and the archive's own md5
    idx = tmp_path / "download.json"
    write_index(idx, index)
    assert load_index(idx) == json.loads(json.dumps(index))
    verify_index(idx)

    (folder / "meta.tsv").write_bytes(b"a\tc\n")
    again = dataset_index("gtzan", tmp_path / "root", Context(progress=False))
    assert {r[0]: r[3] for r in again["files"]}["meta.tsv"] is None  # no longer what was verified
    with pytest.raises(InputError, match=r"meta.tsv \(content\)"):
        verify_index(idx)


# ------------------------------------------------------------------------------------- symlinks


def test_walk_follows_directory_symlinks_once(tmp_path):
    real = tmp_path / "disk2" / "blues"
    write_tree(real, {"blues.00000.wav": b"x", "deeper/blues.00001.wav": b"y"})
    top = tmp_path / "data"
    (top / "genres").mkdir(parents=True)
    (top / "genres" / "blues").symlink_to(real, target_is_directory=True)
    (top / "genres" / "again").symlink_to(real, target_is_directory=True)   # a second way in: listed once
    (real / "deeper" / "loop").symlink_to(top, target_is_directory=True)   # a cycle back to the top
    (top / "broken.wav").symlink_to(tmp_path / "nowhere.wav")
    (top / ".hidden.wav").write_bytes(b"h")
    files = [p.relative_to(top).as_posix() for p in walk_files(top)]
    assert sorted(files) in (["genres/again/blues.00000.wav", "genres/again/deeper/blues.00001.wav"],
                             ["genres/blues/blues.00000.wav", "genres/blues/deeper/blues.00001.wav"])
    assert sorted(f.split("/")[-1] for f in files) == ["blues.00000.wav", "blues.00001.wav"]
    index = build_index("gtzan", top, origin="user folder")
    assert len(index["files"]) == 2  # Path.rglob saw none of them


def test_split_stage_refuses_a_changed_raw_folder(tmp_path, monkeypatch):
    from test_split_checks import load_stage, params

    monkeypatch.chdir(tmp_path)
    p = params(dataset="synth", task="genre", synth={"n_clips": 10, "duration": 3.0})
    load_stage("download").main(p)
    (tmp_path / "data" / "raw" / "synth" / "audio" / "synth_00002.wav").unlink()
    with pytest.raises(InputError, match=r"1 missing \(audio/synth_00002.wav\)"):
        load_stage("split").main(p)
    assert not (tmp_path / "data" / "splits").exists()
