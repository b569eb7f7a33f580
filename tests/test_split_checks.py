"""Splits are checked before training (issue 9, item 5): counts per split and class are printed and
written; too few listed items on disk, or a class absent from training, stop the split stage with
the numbers and the param that accepts it; audio on disk that no list names is reported; a task
needs only the annotations it reads; symlinked folders are followed.

The stages run in-process (stages/download.py and stages/split.py `main`) on generated GTZAN
folders in its real layout (tests/test_datasets.py builds the same layout from smaller lists)."""
from __future__ import annotations

import importlib.util
import io
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from musicpetl.config import parse_params
from musicpetl.data.dataset import UNLISTED, Context
from musicpetl.data.datasets import gtzan
from musicpetl.data.splits import check_splits, split_report
from musicpetl.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def _wav() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(400, dtype=np.float32), 8000, format="WAV")
    return buf.getvalue()


WAV = _wav()


def load_stage(name: str):
    """stages/<name>.py as a module (its `import _src` needs stages/ on sys.path)."""
    if str(ROOT / "stages") not in sys.path:
        sys.path.insert(0, str(ROOT / "stages"))
    spec = importlib.util.spec_from_file_location(f"_stage_{name}", ROOT / "stages" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def params(**data):
    """The committed default params (tests/fixtures/params.yaml) with `data.*` replaced."""
    raw = yaml.safe_load((ROOT / "tests" / "fixtures" / "params.yaml").read_text())
    raw["data"].update(data)
    return parse_params(raw)


def gtzan_lists(no_train: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """1,000 clips, 100 per genre: numbers 0-43 train, 44-63 valid, 64-92 test, 93-99 in no list
    (440 / 200 / 290 / 70, near the real 443 / 197 / 290 / 70). Genres in `no_train` list no
    training clips (those are then in no list either)."""
    lists = {"train": [], "valid": [], "test": []}
    for g in gtzan.GENRES:
        for i in range(93):
            split = "train" if i < 44 else "valid" if i < 64 else "test"
            if not (split == "train" and g in no_train):
                lists[split].append(f"{g}.{i:05d}")
    return lists


def make_gtzan(folder: Path, present: list[str], lists: dict[str, list[str]], *, key: bool = True,
               tempo: bool = True, audio_dir: Path | None = None) -> None:
    """A GTZAN folder in its real layout with the clips `present` under <audio_dir>/<genre>/."""
    for split, stems in lists.items():
        path = folder / "splits" / f"{split}_filtered.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{s.split('.')[0]}/{s}.wav\n" for s in stems))
    for stem in present:
        g = stem.split(".")[0]
        p = (audio_dir or folder / "genres") / g / f"{stem}.wav"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(WAV)
    every = [s for stems in lists.values() for s in stems]
    if key:
        for stem in every:
            p = folder / "gtzan_key" / "gtzan_key" / "genres" / stem.split(".")[0] / f"{stem}.lerch.txt"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(str(sum(map(ord, stem)) % 24))
    if tempo:
        (folder / "gtzan_tempo_beat" / "tempo").mkdir(parents=True, exist_ok=True)
        for stem in every:
            (folder / "gtzan_tempo_beat" / "tempo" / gtzan_tempo_name(stem)).write_text("1.2e+02\n")


def gtzan_tempo_name(stem: str) -> str:
    return "gtzan_" + stem.replace(".", "_") + ".bpm"


def all_clips() -> list[str]:
    return [f"{g}.{i:05d}" for g in gtzan.GENRES for i in range(100)]


def run_stages(tmp_path: Path, monkeypatch, **data) -> dict:
    monkeypatch.chdir(tmp_path)
    p = params(dataset="gtzan", **data)
    load_stage("download").main(p)
    return load_stage("split").main(p)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------- partial dataset


def hundred_of_a_thousand() -> list[str]:
    return sorted(np.random.default_rng(0).choice(all_clips(), 100, replace=False).tolist())


def test_100_of_1000_gtzan_clips_is_refused_with_the_numbers(tmp_path, monkeypatch, capsys):
    present = hundred_of_a_thousand()
    make_gtzan(tmp_path / "mine", present, gtzan_lists())
    lists = gtzan_lists()
    on_disk = {s: len(set(lists[s]) & set(present)) for s in lists}
    with pytest.raises(InputError) as err:
        run_stages(tmp_path, monkeypatch, task="genre", overrides={"gtzan_dir": str(tmp_path / "mine")})
    msg = str(err.value)
    for s, n in (("train", 440), ("valid", 200), ("test", 290)):
        assert f"{s} {on_disk[s]} of {n} ({100 * on_disk[s] / n:.1f} %)" in msg
    accept = math.floor(min(on_disk[s] / n for s, n in (("train", 440), ("valid", 200), ("test", 290))) * 100) / 100
    assert "below data.min_present 0.95" in msg and f"data.min_present: {accept} (dvc exp run" in msg
    out = capsys.readouterr().out
    assert re.search(rf"train\s+440\s+{on_disk['train']}\s+{on_disk['train']}", out) and "blues" in out
    # what the message points at is written; no manifest a later stage could use
    dropped = read_jsonl(tmp_path / "data" / "splits" / "dropped.jsonl")
    assert sum(d["reason"] == "audio missing" for d in dropped) == 930 - sum(on_disk.values())
    assert not (tmp_path / "data" / "splits" / "items.jsonl").exists()
    assert not (tmp_path / "metrics" / "split.json").exists()


def test_100_of_1000_gtzan_clips_runs_when_accepted(tmp_path, monkeypatch):
    present = hundred_of_a_thousand()
    make_gtzan(tmp_path / "mine", present, gtzan_lists())
    summary = run_stages(tmp_path, monkeypatch, task="genre", overrides={"gtzan_dir": str(tmp_path / "mine")},
                         min_present=0.0, allow_missing_classes=True)
    listed = {s for stems in gtzan_lists().values() for s in stems}
    kept = [s for s in present if s in listed]
    assert summary["train"] + summary["valid"] + summary["test"] == len(kept)
    items = read_jsonl(tmp_path / "data" / "splits" / "items.jsonl")
    assert sorted(r["key"] for r in items) == kept
    counts = json.loads((tmp_path / "data" / "splits" / "counts.json").read_text())
    assert counts["listed"] == {"train": 440, "valid": 200, "test": 290}
    assert sum(counts["audio_missing"].values()) == 930 - len(kept)
    assert sum(n["train"] for n in counts["classes"].values()) == summary["train"]
    assert counts["unlisted_audio"] == len(present) - len(kept)
    metrics = json.loads((tmp_path / "metrics" / "split.json").read_text())
    assert set(metrics) == {"train", "valid", "test", "dropped"}  # the DVC metrics file stays small


def test_min_present_is_a_threshold_on_each_split():
    rows = [{"key": f"k{i}", "split": "train", "label": 0} for i in range(19)]
    rows += [{"key": "v", "split": "valid", "label": 0}, {"key": "t", "split": "test", "label": 0}]
    dropped = [{"key": "gone", "split": "train", "reason": "audio missing"}]
    report = split_report(rows, dropped, ["a"])
    assert report["present_share"] == {"train": 0.95, "valid": 1.0, "test": 1.0}
    check_splits(report, min_present=0.95, allow_missing_classes=False)  # 19 of 20: exactly at the bar
    with pytest.raises(InputError, match=r"train 19 of 20 \(95.0 %\), below data.min_present 0.96"):
        check_splits(report, min_present=0.96, allow_missing_classes=False)
    empty = split_report([r for r in rows if r["split"] != "train"], dropped, ["a"])
    with pytest.raises(InputError, match="the train split is empty"):  # no param accepts that
        check_splits(empty, min_present=0.0, allow_missing_classes=True)


# ------------------------------------------------------------------------------------- classes


def test_class_absent_from_train_is_refused(tmp_path, monkeypatch):
    make_gtzan(tmp_path / "mine", all_clips(), gtzan_lists(no_train=("jazz", "metal")))
    with pytest.raises(InputError) as err:
        run_stages(tmp_path, monkeypatch, task="genre", overrides={"gtzan_dir": str(tmp_path / "mine")})
    msg = str(err.value)
    assert "2 classes have validation or test items but none in train: jazz (valid 20, test 29), " \
           "metal (valid 20, test 29)" in msg
    assert "their 98 items cannot be predicted right" in msg and "data.allow_missing_classes: true" in msg
    assert "min_present" not in msg  # every listed clip is there

    summary = run_stages(tmp_path, monkeypatch, task="genre", overrides={"gtzan_dir": str(tmp_path / "mine")},
                         allow_missing_classes=True)
    assert summary["train"] == 8 * 44
    counts = json.loads((tmp_path / "data" / "splits" / "counts.json").read_text())
    assert counts["classes"]["jazz"] == {"train": 0, "valid": 20, "test": 29}


def test_class_counts_of_multi_label_and_regression_tasks():
    rows = [{"key": "a", "split": "train", "label": [0, 2]}, {"key": "b", "split": "test", "label": [1]}]
    report = split_report(rows, [], ["rock", "pop", "piano"])
    assert report["classes"] == {"rock": {"train": 1, "valid": 0, "test": 0}, "pop": {"train": 0, "valid": 0, "test": 1},
                                 "piano": {"train": 1, "valid": 0, "test": 0}}
    with pytest.raises(InputError, match="1 classes .* pop"):
        check_splits(report, min_present=0.95, allow_missing_classes=False)
    tempo = split_report([{"key": "a", "split": "train", "label": 120.0}, {"key": "b", "split": "test", "label": 90.0}],
                         [], [])
    assert tempo["classes"] == {}
    check_splits(tempo, min_present=0.95, allow_missing_classes=False)


# ------------------------------------------------------------------------------------- unlisted audio


def test_audio_in_no_list_is_reported(tmp_path, monkeypatch):
    make_gtzan(tmp_path / "mine", all_clips(), gtzan_lists())
    stray = tmp_path / "mine" / "genres" / "stray.wav"  # not a GTZAN clip name
    stray.write_bytes(WAV)
    run_stages(tmp_path, monkeypatch, task="genre", overrides={"gtzan_dir": str(tmp_path / "mine")})
    dropped = read_jsonl(tmp_path / "data" / "splits" / "dropped.jsonl")
    unlisted = {d["key"]: d for d in dropped if d["reason"].startswith(UNLISTED)}
    assert len(unlisted) == 71  # numbers 93-99 of each genre, and the stray file
    assert unlisted["blues.00093"]["audio_path"].endswith("genres/blues/blues.00093.wav")
    assert "not in the fault-filtered split" in unlisted["blues.00093"]["reason"]
    assert "not laid out as <genre>/<genre>.<nnnnn>.<ext>" in unlisted["genres/stray.wav"]["reason"]
    counts = json.loads((tmp_path / "data" / "splits" / "counts.json").read_text())
    assert counts["unlisted_audio"] == 71


# ------------------------------------------------------------------------------------- annotations


def test_genre_needs_no_key_or_tempo_annotations(tmp_path, monkeypatch):
    make_gtzan(tmp_path / "mine", all_clips(), gtzan_lists(), key=False, tempo=False)
    summary = run_stages(tmp_path, monkeypatch, task="genre", overrides={"gtzan_dir": str(tmp_path / "mine")})
    assert summary == {"train": 440, "valid": 200, "test": 290, "dropped": 70}
    with pytest.raises(FileNotFoundError, match="gtzan_key") as err:  # key does read them
        run_stages(tmp_path, monkeypatch, task="key", overrides={"gtzan_dir": str(tmp_path / "mine")})
    assert "gtzan_tempo_beat" not in str(err.value)


def test_download_fetches_only_the_annotations_of_the_task(tmp_path, monkeypatch):
    from musicpetl.data import download as dl

    make_gtzan(tmp_path / "gtzan", all_clips(), gtzan_lists(), key=False, tempo=False)
    fetched = []
    monkeypatch.setattr(dl, "fetch_all", lambda sources, dest, **kw: [dest / s.name for s in sources])
    monkeypatch.setattr(gtzan, "fetch_repo", lambda source, folder, name, progress: fetched.append(name))
    gtzan.fetch(tmp_path, Context(task="genre", progress=False))
    assert fetched == []
    gtzan.fetch(tmp_path, Context(task="tempo", progress=False))
    assert fetched == ["gtzan_tempo_beat"]


# ------------------------------------------------------------------------------------- symlinks


def test_symlinked_audio_folders_are_found(tmp_path, monkeypatch):
    elsewhere = tmp_path / "disk2"
    make_gtzan(tmp_path / "mine", all_clips(), gtzan_lists(), audio_dir=elsewhere)
    (tmp_path / "mine" / "genres").mkdir()
    for g in gtzan.GENRES:  # a folder of directory symlinks, as users lay out big datasets
        (tmp_path / "mine" / "genres" / g).symlink_to(elsewhere / g, target_is_directory=True)
    (elsewhere / "blues" / "up").symlink_to(tmp_path / "mine", target_is_directory=True)  # a cycle
    assert len(gtzan.audio_index(tmp_path / "mine")) == 1000
    summary = run_stages(tmp_path, monkeypatch, task="genre", overrides={"gtzan_dir": str(tmp_path / "mine")})
    assert summary["train"] == 440
    index = json.loads((tmp_path / "data" / "download.json").read_text())
    assert sum(r[0].startswith("genres/") for r in index["files"]) == 1000
