"""Every file a user can hand in is validated on read: truncated, empty, wrong-type and wrong-schema
versions of run files and feature caches end in an InputError that names the file, never in a
KeyError/AttributeError/SafetensorError traceback (issue 9, "untrusted run files")."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from musicpetl.backbones import build_backbone
from musicpetl.cli import main as cli
from musicpetl.errors import InputError, MusicPetlError
from musicpetl.features import FeatureCache
from musicpetl.model import PetlModel
from musicpetl.petl import apply_method
from musicpetl.run_io import FORMAT, load_run, read_config, save_run


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    backbone = build_backbone("mert-tiny", num_layers=2)
    apply_method(backbone, "lora", {"rank": 2, "alpha": 2})
    model = PetlModel(backbone, 3, 2, method="lora")
    path = tmp_path_factory.mktemp("run") / "run.safetensors"
    save_run(path, model, "lora", {"rank": 2, "alpha": 2}, "mert-tiny", 2,
             {"task": "genre", "classes": ["a", "b", "c"], "seed": 0, "checkpoint": "", "backbone_options": {}})
    load_run(path)  # the unmodified file loads
    return path


def _with_meta(src: Path, dst: Path, meta) -> Path:
    tensors = load_file(str(src))
    save_file(tensors, str(dst), metadata={"musicpetl": meta if isinstance(meta, str) else json.dumps(meta)})
    return dst


def _write(dst: Path, data: bytes) -> Path:
    dst.write_bytes(data)
    return dst


def _config(src: Path) -> dict:
    return read_config(src)


RUN_CASES = {
    "empty file": lambda src, dst: _write(dst, b""),
    "truncated": lambda src, dst: _write(dst, src.read_bytes()[: len(src.read_bytes()) // 2]),
    "random bytes": lambda src, dst: _write(dst, np.random.default_rng(0).bytes(4096)),
    "a json file": lambda src, dst: _write(dst, b'{"format": "musicpetl-run/1"}'),
    "metadata not json": lambda src, dst: _with_meta(src, dst, "{not json"),
    "metadata is a list": lambda src, dst: _with_meta(src, dst, [1, 2, 3]),
    "missing method": lambda src, dst: _with_meta(src, dst, {k: v for k, v in _config(src).items() if k != "method"}),
    "missing n_outputs": lambda src, dst: _with_meta(src, dst, {k: v for k, v in _config(src).items() if k != "n_outputs"}),
    "negative n_outputs": lambda src, dst: _with_meta(src, dst, {**_config(src), "n_outputs": -3}),
    "num_layers a string": lambda src, dst: _with_meta(src, dst, {**_config(src), "num_layers": "two"}),
    "method_cfg a list": lambda src, dst: _with_meta(src, dst, {**_config(src), "method_cfg": [2]}),
    "unknown backbone": lambda src, dst: _with_meta(src, dst, {**_config(src), "backbone": "mert-v9"}),
    "unknown method": lambda src, dst: _with_meta(src, dst, {**_config(src), "method": "lorax"}),
    "other format": lambda src, dst: _with_meta(src, dst, {**_config(src), "format": "musicpetl-run/0"}),
    "wrong n_outputs for head": lambda src, dst: _with_meta(src, dst, {**_config(src), "n_outputs": 7}),
    "no musicpetl metadata": lambda src, dst: save_file(load_file(str(src)), str(dst)) or dst,
    "a tensor missing": lambda src, dst: save_file(dict(list(load_file(str(src)).items())[1:]), str(dst),
                                                    metadata={"musicpetl": json.dumps(_config(src))}) or dst,
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_bad_run_file_is_an_input_error_naming_the_file(good_run, tmp_path, case):
    bad = RUN_CASES[case](good_run, tmp_path / f"bad-{case.replace(' ', '_')}.safetensors")
    with pytest.raises(InputError) as err:
        load_run(bad)
    assert str(bad) in str(err.value), err.value


def test_missing_run_file_names_it(tmp_path):
    with pytest.raises(MusicPetlError, match="nope.safetensors not found"):
        load_run(tmp_path / "nope.safetensors")


def test_cli_reports_a_bad_run_in_one_line(good_run, tmp_path, capsys):
    bad = RUN_CASES["truncated"](good_run, tmp_path / "cut.safetensors")
    assert cli(["export-peft", str(bad), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "Traceback" not in err


def test_read_config_accepts_the_format(good_run):
    assert read_config(good_run)["format"] == FORMAT


@pytest.fixture(scope="module")
def good_cache(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cache") / "features.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs.update({"backbone": "mert-tiny", "num_layers": 2, "hidden_size": 4, "segment_seconds": 3.0})
        for split in ("train", "valid", "test"):
            g = h5.create_group(split)
            g.create_dataset("features", data=np.ones((3, 2, 4), np.float32))
            g.create_dataset("item", data=np.array([0, 0, 1]))
            g.create_dataset("keys", data=np.array(["a", "b"], dtype=h5py.string_dtype()))
    FeatureCache(path).split("train", 1)
    return path


def _edit_cache(src: Path, dst: Path, fn) -> Path:
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "a") as h5:
        fn(h5)
    return dst


CACHE_CASES = {
    "empty file": lambda src, dst: _write(dst, b""),
    "truncated": lambda src, dst: _write(dst, src.read_bytes()[:800]),
    "no attributes": lambda src, dst: _edit_cache(src, dst, lambda h5: h5.attrs.clear()),
    "split missing": lambda src, dst: _edit_cache(src, dst, lambda h5: h5.__delitem__("train")),
    "item missing": lambda src, dst: _edit_cache(src, dst, lambda h5: h5["train"].__delitem__("item")),
    "item out of range": lambda src, dst: _edit_cache(src, dst, lambda h5: h5["train"]["item"].write_direct(
        np.array([0, 5, 1]))),
    "wrong feature shape": lambda src, dst: _edit_cache(src, dst, lambda h5: (
        h5["train"].__delitem__("features"), h5["train"].create_dataset("features", data=np.ones((3, 4))))),
}


@pytest.mark.parametrize("case", list(CACHE_CASES))
def test_bad_feature_cache_is_an_input_error_naming_the_file(good_cache, tmp_path, case):
    bad = CACHE_CASES[case](good_cache, tmp_path / f"bad-{case.replace(' ', '_')}.h5")
    with pytest.raises(InputError) as err:
        FeatureCache(bad).split("train", 1)
    assert str(bad) in str(err.value), err.value


def test_feature_cache_layer_out_of_range(good_cache):
    with pytest.raises(InputError, match="holds layers 1..2; layer 3"):
        FeatureCache(good_cache).split("train", 3)


def _npz(path: Path, **arrays) -> Path:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


GOOD_PREDICTIONS = {"keys": np.array(["a", "b"]), "labels": np.array(["0", "1"]),
                    "probs": np.array([[0.9, 0.1], [0.2, 0.8]], np.float32), "task": np.array("genre")}

PREDICTION_CASES = {
    "empty file": lambda dst: _write(dst, b""),
    "random bytes": lambda dst: _write(dst, np.random.default_rng(1).bytes(512)),
    "truncated": lambda dst: _write(dst, _npz(dst, **GOOD_PREDICTIONS).read_bytes()[:100]),
    "without keys": lambda dst: _npz(dst, **{k: v for k, v in GOOD_PREDICTIONS.items() if k != "keys"}),
    "without task": lambda dst: _npz(dst, **{k: v for k, v in GOOD_PREDICTIONS.items() if k != "task"}),
    "probs are text": lambda dst: _npz(dst, **{**GOOD_PREDICTIONS, "probs": np.array([["x", "y"], ["z", "w"]])}),
    "probs 1-d": lambda dst: _npz(dst, **{**GOOD_PREDICTIONS, "probs": np.array([0.5, 0.5])}),
    "labels not json": lambda dst: _npz(dst, **{**GOOD_PREDICTIONS, "labels": np.array(["{", "1"])}),
    "counts differ": lambda dst: _npz(dst, **{**GOOD_PREDICTIONS, "keys": np.array(["a", "b", "c"])}),
    "pickled objects": lambda dst: _npz(dst, **{**GOOD_PREDICTIONS, "keys": np.array([{"a": 1}, None], dtype=object)}),
}


@pytest.mark.parametrize("case", list(PREDICTION_CASES))
def test_bad_predictions_are_an_input_error_naming_the_file(tmp_path, case):
    from musicpetl.analysis.compare import read_predictions

    assert read_predictions(str(_npz(tmp_path / "good.npz", **GOOD_PREDICTIONS))).keys == ["a", "b"]
    bad = PREDICTION_CASES[case](tmp_path / f"bad-{case.replace(' ', '_')}.npz")
    with pytest.raises(InputError) as err:
        read_predictions(str(bad))
    assert str(bad) in str(err.value), err.value


def test_mistyped_experiment_name_is_one_line(tmp_path, monkeypatch, capsys):
    import subprocess
    import sys

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "-q"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    assert cli(["compare", "exp-does-not-exist", "exp-nor-this"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "'exp-does-not-exist': no predictions found" in err
