"""`musicpetl report` on a real git + DVC repository: experiments saved with `dvc exp save` (their
predictions and run files DVC-tracked, in the DVC cache), read back through `dvc exp show` and
`dvc.api`; selection by name and params; an experiment whose predictions are gone from the cache;
refusals and empty repositories as one line, never a traceback."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from musicpetl.cli import main
from musicpetl.evaluate import save_predictions
from musicpetl.tasks import make_task

N = 120
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env={**os.environ, **GIT_ENV})


def new_repo(path: Path, commit: bool = True) -> Path:
    from dvc.repo import Repo

    path.mkdir(parents=True)
    git("init", "-q", cwd=path)
    Repo.init(str(path))
    (path / "dvc.yaml").write_text(yaml.safe_dump({"metrics": ["metrics/test.json", "metrics/train.json"]}))
    (path / "params.yaml").write_text(yaml.safe_dump(params("probing")))
    if commit:
        git("add", "-A", cwd=path)
        git("commit", "-qm", "init", cwd=path)
    return path


def params(method, backbone="mert-tiny", task="genre"):
    return {"seed": 0, "data": {"dataset": "synth", "task": task}, "backbone": {"name": backbone, "num_layers": 6},
            "petl": {"method": method}}


def save_exp(repo: Path, name: str, method: str, correct: int, keys=None, size=1000, trainable=0):
    """One experiment: params, DVC-tracked predictions and run file, metrics; `dvc exp save`."""
    from dvc.repo import Repo

    (repo / "params.yaml").write_text(yaml.safe_dump(params(method)))
    keys = keys or [f"clip{i:03d}" for i in range(N)]
    labels = [i % 10 for i in range(len(keys))]
    task = make_task("genre", [f"s{i}" for i in range(10)])
    probs = np.full((len(keys), 10), 0.01, dtype=np.float32)
    for i, lab in enumerate(labels):
        probs[i, lab if i < correct else (lab + 1) % 10] = 0.9
    (repo / "models").mkdir(exist_ok=True)
    (repo / "metrics").mkdir(exist_ok=True)
    save_predictions(repo / "data/predictions.npz", keys, labels, probs, task)
    (repo / "models/run.safetensors").write_bytes(b"\0" * size)
    (repo / "metrics/test.json").write_text(json.dumps({"task": "genre", "method": method, "accuracy": correct / N}))
    (repo / "metrics/train.json").write_text(json.dumps({"method": method, "trainable_backbone_params": trainable}))
    with contextlib.chdir(repo), Repo(str(repo)) as r:  # dvc's git calls resolve some paths from the cwd
        r.add(["data/predictions.npz", "models/run.safetensors"])
        r.experiments.save(name=name, force=True, include_untracked=[
            "data/predictions.npz.dvc", "data/.gitignore", "models/run.safetensors.dvc", "models/.gitignore",
            "metrics/test.json", "metrics/train.json"])  # the .dvc files, not the data (that is in the DVC cache)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = new_repo(tmp_path_factory.mktemp("report") / "repo")
    save_exp(repo, "ft", "finetune", 50, size=1_500_000, trainable=335_440)
    save_exp(repo, "probe", "probing", 55, size=20_000)
    save_exp(repo, "lora", "lora", 100, size=40_000, trainable=4_000)
    save_exp(repo, "gone", "bitfit", 60, size=30_000)  # its predictions are then removed from the cache
    md5 = yaml.safe_load((repo / "data/predictions.npz.dvc").read_text())["outs"][0]["md5"]
    (repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).unlink()
    (repo / "data/predictions.npz").unlink()  # the workspace copy too (it is the last experiment's)
    return repo


def test_report_reads_experiments_through_dvc(repo, capsys):
    assert main(["report", "--repo", str(repo), "--bootstrap", "300"]) == 0
    assert "report written" in capsys.readouterr().out
    md = (repo / "reports/report.md").read_text()
    rows = {ln.split("|")[2].strip(): ln for ln in md.splitlines() if ln.startswith("| mert-tiny")}
    assert set(rows) == {"finetune", "probing", "lora", "bitfit"}
    assert "**0.833**" in rows["lora"] and "†" in rows["lora"] and "4.0k" in rows["lora"] and "40.0 kB" in rows["lora"]
    assert "0.417 (" in rows["finetune"] and "1.5 MB" in rows["finetune"] and "335.4k" in rows["finetune"]
    assert "— [1]" in rows["bitfit"] and "0.500" not in rows["bitfit"]
    note = next(ln for ln in md.splitlines() if ln.startswith("- [1]"))
    assert "gone" in note and "data/predictions.npz (md5 " in note and "is not in the local DVC cache and no default DVC remote is configured" in note and "dvc exp pull" in note
    cells = json.loads((repo / "reports/report.json").read_text())["cells"]
    assert {c["experiment"] for c in cells} == {"ft", "probe", "lora", "gone"}
    assert all(len(c["rev"]) == 40 for c in cells)  # each cell names the experiment commit it came from


def test_selection_by_params_and_by_name(repo, tmp_path):
    out = tmp_path / "sel"
    assert main(["report", "--repo", str(repo), "--out", str(out), "--bootstrap", "100",
                 "--where", "petl.method=lora,probing", "--where", "backbone.num_layers=6"]) == 0
    systems = {c["system"] for c in json.loads((out / "report.json").read_text())["cells"]}
    assert systems == {"lora", "probing"}
    assert main(["report", "ft", "lora", "--repo", str(repo), "--out", str(out), "--bootstrap", "100"]) == 0
    cells = json.loads((out / "report.json").read_text())["cells"]
    assert {c["experiment"] for c in cells} == {"ft", "lora"}
    assert all(not c["better"] for c in cells)  # no probing run selected: nothing can be marked


def test_bad_selection_is_one_line(repo, tmp_path, capsys):
    assert main(["report", "nosuch", "--repo", str(repo), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no experiment named nosuch" in err and "lora" in err
    assert main(["report", "--repo", str(repo), "--out", str(tmp_path), "--where", "backbone.name=musicfm-msd"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no experiments with results matching the selection" in err
    assert main(["report", "--repo", str(repo), "--where", "backbone.name"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_mixed_test_sets_refused_naming_them(tmp_path, capsys):
    repo = new_repo(tmp_path / "mixed")
    save_exp(repo, "a-ft", "finetune", 50)
    save_exp(repo, "b-lora", "lora", 50, keys=[f"other{i:03d}" for i in range(N)])
    assert main(["report", "--repo", str(repo), "--bootstrap", "50"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "a-ft" in err and "b-lora" in err and "different test sets" in err
    assert not (repo / "reports/report.md").exists()


@pytest.mark.parametrize("kind", ["not a repository", "no commits", "nothing run"])
def test_empty_repository_is_one_line(tmp_path, capsys, kind):
    if kind == "not a repository":
        repo = tmp_path / "plain"
        repo.mkdir()
    else:
        repo = new_repo(tmp_path / "r", commit=kind != "no commits")
    assert main(["report", "--repo", str(repo)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("musicpetl report: ") and "Traceback" not in err
    assert ("not a DVC repository" if kind == "not a repository" else "no experiments with results") in err


def test_failed_queued_run_reason_is_its_error_line(tmp_path):
    """What `dvc queue logs` shows for a failed run: the stage's one-line error, else the exception."""
    from dvc.repo.experiments.serialize import ExpExecutor, LocalExpExecutor

    from musicpetl.analysis.experiments import _failure_reason

    log = tmp_path / "log"
    log.write_text("Running stage 'check':\n> python stages/check.py\n[check] error: backbone.num_layers = 40 but "
                   "mert-tiny has 6 layers; allowed: 1 to 6\nERROR: failed to reproduce 'check': exited with 1\n")
    ex = ExpExecutor("failed", local=LocalExpExecutor(log=str(log)))
    assert _failure_reason(ex) == "[check] error: backbone.num_layers = 40 but mert-tiny has 6 layers; allowed: 1 to 6"
    log.write_text("Traceback (most recent call last):\n  File x\ntorch.OutOfMemoryError: CUDA out of memory.\n"
                   "ERROR: failed to reproduce 'train'\n")
    assert _failure_reason(ex) == "torch.OutOfMemoryError: CUDA out of memory."
    assert "dvc queue logs" in _failure_reason(ExpExecutor("failed", local=None))
