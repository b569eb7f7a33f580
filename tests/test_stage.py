"""The stage wrapper: the project's own errors become one line on stderr and exit code 1; anything
else is a bug and keeps its traceback; params come from MUSICPETL_PARAMS (here the fixture)."""
from __future__ import annotations

import json

import pytest

from conftest import FIXTURE_PARAMS
from musicpetl.config import ConfigError
from musicpetl.errors import EnvironmentProblem, InputError, MissingFileError, MusicPetlError
from musicpetl.stage import run_stage


@pytest.fixture(autouse=True)
def fixture_params_env(monkeypatch):
    monkeypatch.setenv("MUSICPETL_PARAMS", str(FIXTURE_PARAMS))
    monkeypatch.delenv("MUSICPETL_DEBUG", raising=False)
    # in-process: no watchdog thread on pytest's parent (musicpetl.lifeline, not under test here)
    monkeypatch.setenv("MUSICPETL_NO_LIFELINE", "1")


def raising(err: BaseException):
    def fn(params):
        raise err
    return fn


def test_success_prints_one_summary_line(capsys):
    seen = []
    run_stage("demo", lambda p: seen.append(p) or {"n": 3, "method": p.petl.method})
    (p,) = seen
    assert p.seed == 0 and p.backbone.name == "mert-tiny"  # the fixture's params, parsed
    out, err = capsys.readouterr()
    assert err == ""
    line, = out.splitlines()
    assert line.startswith("[demo] done in ") and line.endswith(json.dumps({"method": "probing", "n": 3}))


@pytest.mark.parametrize("error", [
    InputError("data.task 'key' needs key labels"),
    MissingFileError("data/features.h5 not found: run the cache_features stage"),
    EnvironmentProblem("train.device is cuda but no CUDA device is visible"),
    ConfigError("unknown petl.method 'lorax'; valid: finetune, probing"),
    MusicPetlError("the base class"),
])
def test_project_errors_become_one_line_and_exit_1(error, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_stage("train", raising(error))
    assert exit_info.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"[train] error: {error}\n"
    assert "Traceback" not in err


@pytest.mark.parametrize("error", [KeyError("head.net.0.weight"), ZeroDivisionError("division by zero"),
                                   ValueError("a plain ValueError is a bug, not a user error"),
                                   FileNotFoundError("neither is a plain FileNotFoundError"),
                                   RuntimeError("shape mismatch")])
def test_other_exceptions_keep_their_traceback(error, capsys):
    with pytest.raises(type(error)) as info:
        run_stage("train", raising(error))
    assert info.value is error  # propagated unchanged, not turned into SystemExit
    assert info.traceback[-1].name == "fn"  # the traceback reaches where it was raised
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_a_real_bug_from_library_code_propagates(capsys):
    with pytest.raises(ZeroDivisionError):
        run_stage("evaluate", lambda p: {"ratio": p.seed / 0})
    with pytest.raises(KeyError):
        run_stage("evaluate", lambda p: {}["missing"])
    assert capsys.readouterr() == ("", "")


def test_bad_params_file_is_one_line(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "params.yaml"
    text = FIXTURE_PARAMS.read_text()
    assert "  max_steps: 1000\n" in text
    bad.write_text(text.replace("  max_steps: 1000\n", "  max_steps: 0\n", 1))
    monkeypatch.setenv("MUSICPETL_PARAMS", str(bad))
    called = []
    with pytest.raises(SystemExit) as exit_info:
        run_stage("train", lambda p: called.append(p) or {})
    assert exit_info.value.code == 1 and not called  # refused before the stage's work
    assert capsys.readouterr() == ("", "[train] error: train.max_steps = 0 is out of range; allowed: [1, inf)\n")


def test_missing_params_file_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MUSICPETL_PARAMS", str(tmp_path / "nope.yaml"))
    with pytest.raises(SystemExit) as exit_info:
        run_stage("check", lambda p: {})
    assert exit_info.value.code == 1
    missing = tmp_path / "nope.yaml"
    assert capsys.readouterr().err == f"[check] error: {missing} not found: run from the repository root\n"


def test_debug_keeps_the_traceback_of_project_errors(monkeypatch):
    monkeypatch.setenv("MUSICPETL_DEBUG", "1")
    error = InputError("shown with its traceback under MUSICPETL_DEBUG")
    with pytest.raises(InputError) as info:
        run_stage("train", raising(error))
    assert info.value is error


def test_interrupt_is_one_line_and_exit_130(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_stage("train", raising(KeyboardInterrupt()))
    assert exit_info.value.code == 130
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("[train] stopped: interrupted") and err.count("\n") == 1
