"""Exact resume (issue 11, item 1): the train stage (stages/train.py, run as DVC runs it) is killed
with SIGKILL at several points, during a checkpoint write included, and started again; it goes on
from its last checkpoint and ends with a run file, metrics/train.json and dvclive curves
byte-identical to an uninterrupted run's (CPU, one thread, fixed seed). Wall-clock figures live in
metrics/train_time.json, which is not compared.

Kill points, in one sequence of four processes on the same workspace:
1. halfway through writing the step-6 checkpoint (the file half on disk under its temporary name):
   the next process resumes from step 3;
2. right after the step-9 checkpoint, in steps 10-12 or in the (paused) final checkpoint write:
   resumes from step 9;
3. just before the run file lands (musicpetl.io's MUSICPETL_KILL_BEFORE), after the final
   checkpoint: resumes from step 12 and only writes the outputs;
4. runs to the end; the checkpoint folder is then gone and no temporary is left behind.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import FIXTURE_PARAMS, SEGMENT_SECONDS

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "stages" / "train.py"
OVERRIDES = {"backbone.num_layers": 2, "backbone.segment_seconds": SEGMENT_SECONDS, "features.layers": 2,
             "petl.method": "adapter", "train.max_steps": 12, "train.eval_every": 4, "train.checkpoint_every": 3,
             "train.batch_size": 4, "train.crop_seconds": 1.0, "train.lr": 0.01}


def _params(overrides: dict) -> dict:
    raw = yaml.safe_load(FIXTURE_PARAMS.read_text())
    for dotted, value in overrides.items():
        node, *path = raw, *dotted.split(".")
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return raw


@pytest.fixture(scope="module")
def features(tiny_store, tmp_path_factory) -> Path:
    from conftest import fixture_params
    from musicpetl.backbones import load_from_params
    from musicpetl.features import cache_features

    p = fixture_params(OVERRIDES)
    path = tmp_path_factory.mktemp("features") / "features.h5"
    cache_features(tiny_store, load_from_params(p.backbone, p.seed), path, 2, SEGMENT_SECONDS, progress=False)
    return path


def workspace(dst: Path, store, features: Path, overrides: dict) -> Path:
    shutil.copytree(store.root, dst / "data" / "prepared")
    shutil.copy(features, dst / "data" / "features.h5")
    (dst / "params.yaml").write_text(yaml.safe_dump(_params(overrides), sort_keys=False))
    return dst


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSICPETL_", "DVCLIVE_"))}
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def run_stage(cwd: Path, **env) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, str(STAGE)], cwd=cwd, env=_env(**env), capture_output=True, text=True,
                         timeout=600)
    return res


def run_until(cwd: Path, marker: str, **env) -> str:
    """Start the stage, SIGKILL it as soon as `marker` appears on its stderr; its stderr so far."""
    proc = subprocess.Popen([sys.executable, str(STAGE)], cwd=cwd, env=_env(**env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, bufsize=1)
    seen, deadline = "", time.time() + 600
    try:
        while marker not in seen:
            if time.time() > deadline or proc.poll() is not None:
                raise AssertionError(f"the stage ended or stalled before {marker!r}:\n{seen[-3000:]}"
                                     f"{proc.stderr.read()[-3000:] if proc.poll() is not None else ''}")
            ready, _, _ = select.select([proc.stderr], [], [], 1.0)
            if ready:
                line = proc.stderr.readline()
                seen += line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return seen


def outputs(ws: Path) -> dict[str, bytes]:
    files = {"models/run.safetensors", "metrics/train.json"}
    files |= {str(f.relative_to(ws)) for f in (ws / "dvclive" / "train" / "plots" / "metrics").rglob("*.tsv")}
    return {f: (ws / f).read_bytes() for f in sorted(files)}


def _temporaries(ws: Path) -> list[str]:
    return [str(p.relative_to(ws)) for p in ws.rglob(".*.tmp-*")]


@pytest.mark.slow  # five stage processes (imports dominate: ~15 s each on a loaded 2-core machine)
def test_sigkilled_training_resumes_to_identical_outputs(tiny_store, features, tmp_path):
    reference = workspace(tmp_path / "reference", tiny_store, features, OVERRIDES)
    res = run_stage(reference)
    assert res.returncode == 0, res.stderr[-3000:]
    want = outputs(reference)
    assert len(want) == 5  # run file, train.json, loss / lr / valid curves
    assert not (reference / ".musicpetl" / "checkpoints").exists(), "a finished run must remove its checkpoint"

    ws = workspace(tmp_path / "killed", tiny_store, features, OVERRIDES)
    ckpts = ws / ".musicpetl" / "checkpoints"
    # 1. halfway through the step-6 checkpoint write
    run_until(ws, "writing step 6: paused", MUSICPETL_CHECKPOINT_WRITE_SLEEP="6:120")
    (run_dir,) = ckpts.iterdir()
    partial = list(run_dir.glob(".checkpoint.pt.tmp-*"))
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < (run_dir / "checkpoint.pt").stat().st_size * 1.5
    assert not (ws / "models" / "run.safetensors").exists()
    # 2. after the step-9 checkpoint (kill lands in steps 10-12 or in the paused final write)
    seen = run_until(ws, "checkpoint at step 9", MUSICPETL_CHECKPOINT_WRITE_SLEEP="12:120")
    assert "resumed from the checkpoint at step 3" in seen, seen[-2000:]
    # 3. just before the run file lands
    res = run_stage(ws, MUSICPETL_KILL_BEFORE="run.safetensors")
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert "resumed from the checkpoint at step 9" in res.stderr, res.stderr[-2000:]
    # 4. to the end
    res = run_stage(ws)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed from the checkpoint at step 12" in res.stderr, res.stderr[-2000:]

    got = outputs(ws)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == want[name], f"{name} differs from the uninterrupted run's"
    assert not ckpts.exists() or not any(ckpts.iterdir()), "the finished run left its checkpoint"
    assert _temporaries(ws) == [], "temporaries of killed writers were left behind"


def test_run_key_follows_what_the_run_depends_on(tiny_store):
    from conftest import fixture_params
    from musicpetl.checkpointing import run_key

    base = run_key(fixture_params(OVERRIDES), tiny_store)
    assert run_key(fixture_params(OVERRIDES), tiny_store) == base
    # what changes the numbers changes the key ...
    for key, value in {"train.lr": 0.02, "seed": 1, "train.grad_accum": 2, "backbone.num_layers": 1}.items():
        assert run_key(fixture_params({**OVERRIDES, key: value}), tiny_store) != base, key
    assert run_key(fixture_params(OVERRIDES), tiny_store, world=2) != base
    # ... how often checkpoints are written, the workers and the process count do not
    for key, value in {"train.checkpoint_every": 5, "train.num_workers": 2}.items():
        assert run_key(fixture_params({**OVERRIDES, key: value}), tiny_store) == base, key


def test_batched_dvclive_rows_equal_dvclives_own(tmp_path):
    """MetricLog writes dvclive's curves in batches: the files equal per-step log_metric/next_step."""
    from dvclive import Live

    from musicpetl.checkpointing import MetricLog

    events = [(s, "train/loss", 1.0 / s) for s in range(1, 8)] + [(4, "valid/acc", 0.5), (7, "valid/acc", float("nan"))]
    events.sort(key=lambda e: (e[0], e[1] != "train/loss"))
    with Live(str(tmp_path / "own"), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        for s in range(1, 8):
            for step, name, value in events:
                if step == s:
                    live.log_metric(name, value)
            live.next_step()
    with Live(str(tmp_path / "batched"), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        log = MetricLog(live)
        for i, (step, name, value) in enumerate(events):
            log.log(step, name, value)
            if i == 3:
                log.flush()
        log.flush()
    for name in ("train/loss", "valid/acc"):
        own = (tmp_path / "own" / "plots" / "metrics" / f"{name}.tsv").read_text()
        assert (tmp_path / "batched" / "plots" / "metrics" / f"{name}.tsv").read_text() == own
        assert own.count("\n") == (8 if name == "train/loss" else 3)
    own = json.loads((tmp_path / "own" / "metrics.json").read_text())
    assert json.loads((tmp_path / "batched" / "metrics.json").read_text()) == own


def test_resume_in_process_equals_uninterrupted(tiny_store, genre_task, tmp_path, torch_threads):
    """The fast check of the same property (no processes): a run interrupted by an exception after
    its step-6 checkpoint and run again with the same checkpointer ends as an uninterrupted run
    (run file bytes, every logged metric), having resumed from step 6."""
    from conftest import fixture_params
    from musicpetl.checkpointing import Checkpointer, run_key
    from musicpetl.train import train

    p = fixture_params({k: v for k, v in OVERRIDES.items() if k != "petl.method"} | {"petl.method": "bitfit"})

    class Recorder:
        def __init__(self):
            self.rows = []

        def log_metric(self, name, value):
            self.rows.append((name, value))

        def next_step(self):
            self.rows.append(("next", None))

    want = Recorder()
    train(p, genre_task, tiny_store, None, tmp_path / "want.safetensors", live=want, progress=False)

    class Killed(Exception):
        pass

    def die_at_8(step, score, probs):
        if step == 8:
            raise Killed

    ck = Checkpointer(tmp_path / "ckpt", run_key(p, tiny_store), 3)
    with pytest.raises(Killed):
        train(p, genre_task, tiny_store, None, tmp_path / "got.safetensors", live=Recorder(), progress=False,
              checkpoints=ck, on_validate=die_at_8)
    assert ck.load()["step"] == 6
    got = Recorder()
    summary = train(p, genre_task, tiny_store, None, tmp_path / "got.safetensors", live=got, progress=False,
                    checkpoints=ck)
    assert summary["resumed_from_step"] == 6 and ck.load()["step"] == 12
    assert (tmp_path / "got.safetensors").read_bytes() == (tmp_path / "want.safetensors").read_bytes()
    assert got.rows == want.rows  # the history up to step 6 replayed from the checkpoint, the rest computed
    ck.clear()
    assert not ck.dir.exists()
