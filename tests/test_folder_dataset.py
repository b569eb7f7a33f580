"""`data.dataset: folder`: your own audio with a labels file or class-per-sub-folder, from a fixture
generated here (mixed sample rates, stereo, MP3 written by libsndfile's LAME encoder, FLAC, OGG, a
broken file, nested folders, odd key spellings), through the registry, the split checks and the
prepare stage's decoder; every kind of bad input named with its row or listed with its reason."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicpetl.data import parsers
from musicpetl.data.dataset import AUDIO_MISSING, Context
from musicpetl.data.datasets import folder as F
from musicpetl.data.registry import DATASETS, build_items, dataset_index, download
from musicpetl.data.splits import check_splits, split_report
from musicpetl.errors import InputError, MissingFileError
from musicpetl.tasks.key import KEY_NAMES

SECONDS = 1.3


def tone(sr: int, channels: int = 1, seconds: float = SECONDS, f0: float = 220.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    wave = 0.3 * np.sin(2 * np.pi * f0 * t).astype(np.float32)
    return wave if channels == 1 else np.stack([wave * (1 + 0.1 * c) for c in range(channels)], axis=1)


def write_audio(path: Path, sr: int, channels: int = 1, seconds: float = SECONDS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS"),
           ".mp3": ("MP3", "MPEG_LAYER_III")}[path.suffix]
    sf.write(path, tone(sr, channels, seconds), sr, format=fmt[0], subtype=fmt[1])
    return path


def ctx(folder: Path, labels: str = "", seed: int = 0, valid: float = 0.15, test: float = 0.15, **more) -> Context:
    over = {"folder_dir": str(folder), **({"folder_labels": labels} if labels else {}), **more}
    return Context(seed=seed, overrides=over, split={"valid_share": valid, "test_share": test}, progress=False)


def write_csv(folder: Path, text: str, name: str = "labels.csv") -> str:
    (folder / name).write_text(text)
    return name


def reasons(dropped: list[dict]) -> dict[str, str]:
    return {d["key"]: d["reason"] for d in dropped}


@pytest.fixture
def corpus(tmp_path) -> Path:
    """Class-per-sub-folder layout: three genres, every format and rate, a nested folder, a broken
    file, an empty class folder, a stray file at the top and a non-audio file."""
    root = tmp_path / "corpus"
    write_audio(root / "rock" / "r1.wav", 44100, channels=2)
    write_audio(root / "rock" / "live" / "2019" / "r2.flac", 22050)
    write_audio(root / "rock" / "r3.ogg", 16000)
    write_audio(root / "jazz" / "j1.mp3", 48000, channels=2)
    write_audio(root / "jazz" / "j2.wav", 24000)
    write_audio(root / "jazz" / "j3.wav", 8000)
    (root / "jazz" / "j4_broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio")
    write_audio(root / "pop" / "p1.flac", 32000, channels=2)
    write_audio(root / "pop" / "p2.wav", 11025)
    write_audio(root / "pop" / "p3.mp3", 44100)
    (root / "empty_class").mkdir()
    (root / "empty_class" / "notes.txt").write_text("no audio here")
    write_audio(root / "loose.wav", 24000)
    (root / "README.txt").write_text("my corpus")
    return root


# ------------------------------------------------------------------------------------- key spellings

@pytest.mark.parametrize("text,name", [
    ("C major", "C major"), ("c minor", "C minor"), ("Db", "C# major"), ("C#:min", "C# minor"),
    ("A min", "A minor"), ("Bbm", "A# minor"), ("F# Major", "F# major"), ("Ebmaj", "D# major"),
    ("C:maj", "C major"), ("F sharp minor", "F# minor"), ("E flat major", "D# major"), ("a-moll", "A minor"),
    ("G", "G major"), ("em", "E minor"), ("BbM", "A# major"), ("  g   Minor ", "G minor"), ("C#/Db major", "C# major"),
    ("F♯m", "F# minor"), ("Cb", "B major"),
])
def test_key_spellings(text, name):
    label, reason = parsers.parse_key_spelling(text)
    assert reason is None and KEY_NAMES[label] == name


@pytest.mark.parametrize("text,why", [
    ("", "empty"), ("-", "no key"), ("a", "ambiguous"), ("bb", "ambiguous"), ("C dorian", "unknown mode"),
    ("H major", "cannot read"), ("12", "cannot read"), ("F minor / G# major", "several keys"),
    ("C major!", "cannot read"),
])
def test_unreadable_keys_come_back_with_a_reason(text, why):
    label, reason = parsers.parse_key_spelling(text)
    assert label is None and why in reason


def test_every_key_name_reads_back():
    for label, name in enumerate(KEY_NAMES):
        assert parsers.parse_key_spelling(name) == (label, None)
        assert parsers.parse_key_spelling(name.lower()) == (label, None)


# ------------------------------------------------------------------------------------- class folders

def test_class_per_subfolder_genre_end_to_end(corpus, tmp_path):
    """Registry download (nothing fetched) + index, build, split checks, then the prepare stage's
    decoder: every format and rate decodes to 24 kHz mono, the broken file is rejected and listed."""
    from musicpetl.data.store import AudioStore, prepare_store

    c = ctx(corpus, valid=0.25, test=0.25)
    assert download("folder", tmp_path / "raw", c) == corpus
    index = dataset_index("folder", tmp_path / "raw", c)
    assert index["origin"] == "user folder" and any(r[0] == "jazz/j1.mp3" for r in index["files"])
    res = build_items("folder", "genre", tmp_path / "raw", c)
    assert res.classes == ["jazz", "pop", "rock"]
    keys = {r["key"]: r for r in res.rows}
    assert set(keys) == {"rock/r1.wav", "rock/live/2019/r2.flac", "rock/r3.ogg", "jazz/j1.mp3", "jazz/j2.wav",
                         "jazz/j3.wav", "jazz/j4_broken.wav", "pop/p1.flac", "pop/p2.wav", "pop/p3.mp3"}
    assert keys["rock/live/2019/r2.flac"]["label"] == res.classes.index("rock")
    why = reasons(res.dropped)
    assert "not in a class sub-folder" in why["loose.wav"]
    assert "empty class folder" in why["empty_class/"]
    # stratified: with 3 items per class and shares 0.25/0.25, every class reaches every split
    per_class = Counter((res.classes[r["label"]], r["split"]) for r in res.rows if "broken" not in r["key"])
    assert all(per_class[(c_, "train")] >= 1 for c_ in res.classes)
    report = split_report(res.rows, res.dropped, res.classes)
    check_splits(report, min_present=0.95, allow_missing_classes=False)

    summary = prepare_store([{**r, "audio_path": str(Path(tmp_path / "raw") / r["audio_path"])} for r in res.rows],
                            Path("."), tmp_path / "prepared", 24000,
                            {"dataset": "folder", "task": "genre", "classes": res.classes}, progress=False)
    assert summary["rejected"] == 1
    rejected = [json.loads(x) for x in (tmp_path / "prepared" / "rejected.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rejected] == ["jazz/j4_broken.wav"] and "cannot decode" in rejected[0]["reason"]
    store = AudioStore(tmp_path / "prepared")
    assert len(store.index) == 9
    for row in store.index:  # every rate and channel count -> 24 kHz mono of the same duration
        assert abs(row["length"] - SECONDS * 24000) <= 2, row  # libsndfile's MP3 decoding is gapless


def test_class_folders_need_genre_and_audio(corpus, tmp_path):
    with pytest.raises(InputError, match="needs a labels file"):
        F.build("key", tmp_path, ctx(corpus))
    empty = tmp_path / "nothing"
    (empty / "a").mkdir(parents=True)
    with pytest.raises(MissingFileError, match="no audio files"):
        F.fetch(tmp_path, ctx(empty))
    with pytest.raises(InputError, match="folder_dir"):
        F.fetch(tmp_path, Context(overrides={}))
    with pytest.raises(MissingFileError, match="not a folder"):
        F.fetch(tmp_path, ctx(tmp_path / "absent"))


# ------------------------------------------------------------------------------------- labels file

KEY_CSV = """path,key,split
rock/r1.wav,C major,train
rock/live/2019/r2.flac,c minor,train
rock/r3.ogg,Db,train
jazz/j1.mp3,C#:min,valid
jazz/j2.wav,A min,train
jazz/j3.wav,Bbm,test
pop/p1.flac,F# Major,test
pop/p2.wav,H major,train
pop/p3.mp3,a,train
jazz/j4_broken.wav,,train
jazz/gone.wav,G major,test
"""


def test_labels_file_key_with_odd_spellings_and_split_column(corpus, tmp_path):
    labels = write_csv(corpus, KEY_CSV)
    res = build_items("folder", "key", tmp_path, ctx(corpus, labels))
    assert res.classes == list(KEY_NAMES)
    got = {r["key"]: (KEY_NAMES[r["label"]], r["split"]) for r in res.rows}
    assert got == {"rock/r1.wav": ("C major", "train"), "rock/live/2019/r2.flac": ("C minor", "train"),
                   "rock/r3.ogg": ("C# major", "train"), "jazz/j1.mp3": ("C# minor", "valid"),
                   "jazz/j2.wav": ("A minor", "train"), "jazz/j3.wav": ("A# minor", "test"),
                   "pop/p1.flac": ("F# major", "test")}
    dropped = {d["key"]: d for d in res.dropped}
    assert dropped["pop/p2.wav"]["line"] == 9 and "cannot read 'H major'" in dropped["pop/p2.wav"]["reason"]
    assert dropped["pop/p3.mp3"]["line"] == 10 and "ambiguous" in dropped["pop/p3.mp3"]["reason"]
    assert dropped["jazz/j4_broken.wav"]["reason"] == "no key given (empty cell)"
    assert dropped["jazz/gone.wav"] == {"key": "jazz/gone.wav", "split": "test", "line": 12, "reason": AUDIO_MISSING}
    assert "not in any annotation list" in dropped["loose.wav"]["reason"]  # on disk, named by no row
    report = split_report(res.rows, res.dropped, res.classes)
    assert report["audio_missing"]["test"] == 1 and report["listed"]["test"] == 3
    with pytest.raises(InputError, match="min_present"):  # 2 of 3 listed test items on disk
        check_splits(report, min_present=0.95, allow_missing_classes=True)


def test_labels_file_tempo_tags_and_genre(corpus, tmp_path):
    labels = write_csv(corpus, "Path,BPM,Tags,Genre\n"
                               "rock/r1.wav,120,rock;guitar,rock\n"
                               "rock/r3.ogg,0,rock,rock\n"
                               "jazz/j1.mp3,fast,jazz ; sax;;,jazz\n"
                               "jazz/j2.wav,97.5,,jazz\n"
                               "pop/p1.flac,-3,pop;guitar,\n"
                               "pop/p2.wav,inf,pop,pop\n"
                               "pop/p3.mp3,320,pop,pop\n", name="meta.csv")
    res = F.build("tempo", tmp_path, ctx(corpus, labels))
    assert {r["key"]: r["label"] for r in res.rows} == {"rock/r1.wav": 120.0, "jazz/j2.wav": 97.5}
    why = reasons(res.dropped)
    assert "tempo 0 BPM is not a tempo" in why["rock/r3.ogg"] and "'fast' is not a number" in why["jazz/j1.mp3"]
    assert "not a tempo" in why["pop/p1.flac"] and "not a tempo" in why["pop/p2.wav"]
    assert "above the tempo head's range" in why["pop/p3.mp3"]

    res = F.build("tagging", tmp_path, ctx(corpus, labels))
    assert res.classes == ["guitar", "jazz", "pop", "rock", "sax"]
    tags = {r["key"]: [res.classes[i] for i in r["label"]] for r in res.rows}
    assert tags["jazz/j1.mp3"] == ["jazz", "sax"] and tags["rock/r1.wav"] == ["guitar", "rock"]
    assert reasons(res.dropped)["jazz/j2.wav"] == "no tags (empty cell)"

    res = F.build("genre", tmp_path, ctx(corpus, labels))
    assert res.classes == ["jazz", "pop", "rock"]
    assert reasons(res.dropped)["pop/p1.flac"] == "no class (empty cell)"

    (corpus / "tab.tsv").write_text("path\ttags\nrock/r1.wav\trock|live\n")
    res = F.build("tagging", tmp_path, ctx(corpus, "tab.tsv", folder_tag_sep="|"))
    assert res.classes == ["live", "rock"]


def test_labels_file_beats(corpus, tmp_path):
    ann = corpus / "beats"
    ann.mkdir()
    (ann / "r1.beats").write_text("0.5\t1\n1.0\t2\n")
    (ann / "r3.txt").write_text("# my annotation\n0.25, 1.1\n0.75, 1.2\n")
    (ann / "unsorted.beats").write_text("0.5\n0.4\n")
    (ann / "empty.beats").write_text("\n")
    (ann / "text.beats").write_text("0.5\nbeat\n")
    labels = write_csv(corpus, "path,beats\nrock/r1.wav,beats/r1.beats\nrock/r3.ogg,beats/r3.txt\n"
                               "jazz/j1.mp3,beats/unsorted.beats\njazz/j2.wav,beats/empty.beats\n"
                               "jazz/j3.wav,beats/text.beats\npop/p1.flac,beats/none.beats\npop/p2.wav,\n")
    res = F.build("beat", tmp_path, ctx(corpus, labels))
    assert {r["key"]: r["label"] for r in res.rows} == {"rock/r1.wav": [0.5, 1.0], "rock/r3.ogg": [0.25, 0.75]}
    assert res.classes == []
    why = reasons(res.dropped)
    assert "line 2: beat times must strictly increase" in why["jazz/j1.mp3"]
    assert "no beats" in why["jazz/j2.wav"] and "line 2: 'beat' is not a beat time" in why["jazz/j3.wav"]
    assert "beats/none.beats not found" in why["pop/p1.flac"] and "empty cell" in why["pop/p2.wav"]
    bad = write_csv(corpus, "path,beats\nrock/r1.wav,../elsewhere.beats\n", name="bad.csv")
    with pytest.raises(InputError, match="bad.csv line 2: beat file '../elsewhere.beats' is outside"):
        F.build("beat", tmp_path, ctx(corpus, bad))


@pytest.mark.parametrize("text,message", [
    ("file,genre\nrock/r1.wav,rock\n", "no 'path' column"),
    ("path,style\nrock/r1.wav,rock\n", "no 'genre' or 'class' column for data.task genre"),
    ("path,genre,class\nrock/r1.wav,rock,rock\n", "both 'genre' and 'class'"),
    ("path,genre\nrock/r1.wav,rock\njazz/j1.mp3,jazz\nrock/./r1.wav,pop\n",
     "line 4: path 'rock/r1.wav' again \\(first on line 2\\)"),
    ("path,genre\n../outside.wav,rock\n", "line 2: path '../outside.wav' is outside folder_dir"),
    ("path,genre\n/etc/passwd,rock\n", "line 2: path '/etc/passwd' is outside folder_dir"),
    ("path,genre\nrock/r1.wav,rock,extra\n", "line 2: 3 cells, the header has 2 columns"),
    ("path,genre\n,rock\n", "line 2: empty path"),
    ("path,genre,split\nrock/r1.wav,rock,train\njazz/j1.mp3,jazz,holdout\n", "line 3: split 'holdout' is not one of"),
    ("path,genre,split\nrock/r1.wav,rock,\n", "line 2: split '' is not one of"),
    ("", "empty labels file"),
])
def test_bad_labels_files_fail_with_one_line_naming_the_row(corpus, tmp_path, text, message):
    labels = write_csv(corpus, text)
    with pytest.raises(InputError, match=message) as err:
        F.build("genre", tmp_path, ctx(corpus, labels))
    assert "\n" not in str(err.value)


def test_labels_file_must_be_inside_the_folder(corpus, tmp_path):
    (tmp_path / "outside.csv").write_text("path,genre\nrock/r1.wav,rock\n")
    with pytest.raises(InputError, match="folder_labels '../outside.csv' is outside"):
        F.fetch(tmp_path, ctx(corpus, "../outside.csv"))
    with pytest.raises(MissingFileError, match="not found"):
        F.fetch(tmp_path, ctx(corpus, "absent.csv"))
    # absolute inside the folder is fine
    write_csv(corpus, "path,genre\nrock/r1.wav,rock\n")
    F.fetch(tmp_path, ctx(corpus, str(corpus / "labels.csv")))


def test_symlinked_folders_and_absolute_paths_inside(tmp_path):
    real = tmp_path / "disk2" / "blues"
    write_audio(real / "b1.wav", 22050)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "blues").symlink_to(real, target_is_directory=True)
    write_audio(corpus / "metal" / "m1.wav", 44100)
    res = F.build("genre", tmp_path, ctx(corpus))
    assert sorted(r["key"] for r in res.rows) == ["blues/b1.wav", "metal/m1.wav"]
    labels = write_csv(corpus, f"path,genre\n{corpus / 'blues' / 'b1.wav'},blues\nmetal/m1.wav,metal\n")
    res = F.build("genre", tmp_path, ctx(corpus, labels))
    assert sorted(r["key"] for r in res.rows) == ["blues/b1.wav", "metal/m1.wav"]


# ------------------------------------------------------------------------------------- seeded split

def test_stratified_split_is_seeded_stratified_and_says_where_it_cannot_be():
    keys = [f"{c}/{i:02d}.wav" for c, n in (("a", 20), ("b", 20), ("c", 20), ("tiny", 2)) for i in range(n)]
    classes = [k.split("/")[0] for k in keys]
    split, notes = F.stratified_split(keys, classes, seed=3, valid=0.2, test=0.2)
    again, _ = F.stratified_split(list(reversed(keys)), list(reversed(classes)), seed=3, valid=0.2, test=0.2)
    other, _ = F.stratified_split(keys, classes, seed=4, valid=0.2, test=0.2)
    assert split == again and split != other
    counts = Counter((k.split("/")[0], s) for k, s in split.items())
    for c in "abc":
        assert (counts[(c, "train")], counts[(c, "valid")], counts[(c, "test")]) == (12, 4, 4)
    assert counts[("tiny", "train")] == 2
    assert [n["key"] for n in notes] == ["class tiny"] and "all in train" in notes[0]["reason"]
    # more classes than held-out items: scikit-learn cannot stratify, the split is random and says so
    keys = [f"{c}/{i}" for c in "abcdefgh" for i in range(3)]
    split, notes = F.stratified_split(keys, [k[0] for k in keys], seed=0, valid=0.15, test=0.15)
    assert Counter(split.values()) == {"train": 16, "valid": 4, "test": 4}  # round(0.15 * 24) each
    assert {n["key"] for n in notes} == {"split test", "split valid"} and "not stratified" in notes[0]["reason"]


def test_seeded_split_notes_reach_the_dropped_file_and_counts(corpus, tmp_path):
    write_audio(corpus / "pop" / "p4.wav", 24000)
    (corpus / "jazz" / "j4_broken.wav").unlink()
    c = ctx(corpus, valid=0.1, test=0.1)
    res = build_items("folder", "genre", tmp_path, c)
    report = split_report(res.rows, res.dropped, res.classes)
    assert any(r.startswith("split note") for r in report["dropped_by_reason"])
    assert report["splits"]["train"] >= 8 and report["listed"] == report["splits"]  # notes are not items


def test_folder_is_registered_with_its_tasks():
    from conftest import fixture_params
    from musicpetl.checks import check_params

    assert DATASETS["folder"].tasks == F.TASKS
    for task in F.TASKS:
        check_params(fixture_params({"data.dataset": "folder", "data.task": task,
                                     "data.overrides": {"folder_dir": "/data/mine"}}))
