"""Multi-process training (issue 11, item 2): 2 DDP processes (gloo, CPU) match one process that
accumulates the same two micro-batches per step (the same global batch).

Each rank takes its half of every global batch (`micro_slices`), with the crops and dropout masks
the single process uses for that half, so the two runs compute the same numbers in a different
order: DDP all-reduces the two halves' gradients (sum, then / 2), one process accumulates
half-scaled losses' gradients. With two halves that is the same arithmetic (scaling by 1/2 is
exact, a sum of two is order-free): observed bitwise equal run files, losses and validation
probabilities. The test allows atol 1e-5 (trained tensors after 6 Adam steps, logged losses,
validation probabilities), since with more ranks the all-reduce sums in another order. Rank 0 alone
writes the run file; validation is computed on both ranks' halves of the items and gathered in order.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import SEGMENT_SECONDS, Recorder, fixture_params

OVERRIDES = {"backbone.num_layers": 2, "backbone.segment_seconds": SEGMENT_SECONDS, "petl.method": "adapter",
             "train.max_steps": 6, "train.eval_every": 3, "train.batch_size": 4, "train.crop_seconds": 1.0,
             "train.lr": 0.01}
ATOL = 1e-5


def _worker(rank: int, world: int, init: str, store_root: str, out: str, overrides: dict = OVERRIDES,
            cache_paths: list[str] | None = None) -> None:
    from musicpetl.data.store import AudioStore
    from musicpetl.distributed import DistContext
    from musicpetl.features import FeatureCache
    from musicpetl.tasks import make_task
    from musicpetl.train import train

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        store = AudioStore(store_root)
        task = make_task(store.meta["task"], store.meta["classes"])
        live, probs = Recorder(), {}
        cache = FeatureCache(cache_paths[rank]) if cache_paths else None
        summary = train(fixture_params(overrides), task, store, cache, Path(out) / "run.safetensors",
                        live=live if rank == 0 else None, progress=False,
                        dist=DistContext(rank=rank, world=world, device=torch.device("cpu")),
                        on_validate=lambda step, score, p: probs.setdefault(step, p.tolist()))
        (Path(out) / f"rank{rank}.json").write_text(json.dumps({"summary": summary, "losses": live.losses,
                                                                 "probs": probs}))
    finally:
        torch.distributed.destroy_process_group()


def test_two_ddp_processes_match_one_process_accumulating(tiny_store, genre_task, tmp_path, torch_threads):
    import torch.multiprocessing as mp

    from musicpetl.train import train

    ddp = tmp_path / "ddp"
    ddp.mkdir()
    ctx = mp.get_context("fork")  # the children inherit the imported modules: no 2 x 10 s of imports
    procs = [ctx.Process(target=_worker, args=(r, 2, f"file://{tmp_path / 'rendezvous'}", str(tiny_store.root),
                                               str(ddp))) for r in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=600)
        assert proc.exitcode == 0, f"a rank failed (exit {proc.exitcode})"

    single, probs = Recorder(), {}
    p = fixture_params({**OVERRIDES, "train.grad_accum": 2})
    summary = train(p, genre_task, tiny_store, None, tmp_path / "single.safetensors", live=single, progress=False,
                    on_validate=lambda step, score, pr: probs.setdefault(step, pr.tolist()))

    ranks = [json.loads((ddp / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[1]["losses"] == [] and len(ranks[0]["losses"]) == 6  # rank 0 logs (the mean over ranks)
    np.testing.assert_allclose(ranks[0]["losses"], single.losses, rtol=0, atol=ATOL)
    for r in ranks:  # both ranks see the gathered validation of all items
        assert r["probs"].keys() == {"3", "6"}
        for step in (3, 6):
            np.testing.assert_allclose(r["probs"][str(step)], probs[step], rtol=0, atol=ATOL)
    assert ranks[0]["summary"]["best_step"] == summary["best_step"]
    got, want = load_file(str(ddp / "run.safetensors")), load_file(str(tmp_path / "single.safetensors"))
    assert got.keys() == want.keys()
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=0, atol=ATOL, msg=n)
    initial = {n for n, t in want.items() if "adapter.up" in n}
    assert initial and all(want[n].abs().max() > 0 for n in initial)  # it trained: up-projections left zero


def test_ddp_probing_takes_rank_0s_validation(tiny_store, genre_task, tmp_path, torch_threads):
    """Probing validates on the feature cache: rank 0 scores and every rank takes its probabilities,
    so the ranks can never disagree on the best step or on early stopping (a rank that stopped alone
    would leave the others waiting in the next all-reduce)."""
    import shutil

    import h5py
    import torch.multiprocessing as mp

    from musicpetl.backbones import load_from_params
    from musicpetl.features import FeatureCache, cache_features

    over = {**OVERRIDES, "petl.method": "probing", "train.patience": 1}
    p = fixture_params(over)
    cache = tmp_path / "features.h5"
    cache_features(tiny_store, load_from_params(p.backbone, p.seed), cache, 2, SEGMENT_SECONDS, progress=False)
    # rank 1 reads a copy whose validation features are off: if it scored on its own, it would disagree
    other = tmp_path / "features-rank1.h5"
    shutil.copy(cache, other)
    with h5py.File(other, "r+") as h5:
        h5["valid/features"][...] = h5["valid/features"][...] * 3.0 + 1.0
    ddp = tmp_path / "ddp"
    ddp.mkdir()
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(r, 2, f"file://{tmp_path / 'rendezvous'}", str(tiny_store.root),
                                               str(ddp), over, [str(cache), str(other)])) for r in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=600)
        assert proc.exitcode == 0, f"a rank failed (exit {proc.exitcode})"
    ranks = [json.loads((ddp / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["probs"] == ranks[1]["probs"] and ranks[0]["probs"]
    assert ranks[0]["summary"]["best_step"] == ranks[1]["summary"]["best_step"]
    single = {}
    from musicpetl.train import train

    train(fixture_params({**over, "train.grad_accum": 2}), genre_task, tiny_store, FeatureCache(cache),
          tmp_path / "single.safetensors", progress=False, on_validate=lambda step, score, pr: single.setdefault(
              str(step), pr.tolist()))
    assert single.keys() == ranks[0]["probs"].keys()
    for step in single:
        np.testing.assert_allclose(ranks[0]["probs"][step], single[step], rtol=0, atol=ATOL)


def test_gpu_claims_give_each_process_its_own_gpu(tmp_path):
    """`dvc queue start -j N` on N GPUs: each train process claims a different one (lock files held
    for the process's life); with all taken, the next gets none. CPU machine: the GPU ids are given."""
    import subprocess

    code = ("import sys, time; sys.path.insert(0, %r); from musicpetl.distributed import claim_gpu; "
            "print(claim_gpu(['0', '1']), flush=True); time.sleep(30)") % str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "MUSICPETL_GPU_LOCKS": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    try:
        claimed = sorted(p.stdout.readline().strip() for p in procs)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert claimed == ["0", "1", "None"]
    # a killed holder's GPU is free again (the kernel drops the lock with the process)
    out = subprocess.run([sys.executable, "-c", code.replace("time.sleep(30)", "pass")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "0"


def test_gpus_are_counted_without_initialising_cuda(tmp_path, monkeypatch):
    """With CUDA_VISIBLE_DEVICES unset, the GPUs are counted through NVML (torch.cuda.device_count),
    never through torch.cuda.is_available(), whose cuInit would make the driver ignore the
    CUDA_VISIBLE_DEVICES the claim then sets (every experiment on GPU 0)."""
    import torch

    from musicpetl import distributed

    def initialises_cuda():
        raise AssertionError("claim_gpu called torch.cuda.is_available(): CUDA would start before the claim")

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("MUSICPETL_GPU_LOCKS", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", initialises_cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(distributed, "_HELD", [])
    try:
        assert distributed.claim_gpu() == "0" and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
        assert distributed.claim_gpu() == "1"  # GPU 0's lock is held (by the first claim's file)
    finally:
        for fh in distributed._HELD:
            fh.close()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # a CPU machine: nothing to claim
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert distributed.claim_gpu() is None and "CUDA_VISIBLE_DEVICES" not in os.environ


@pytest.mark.slow  # three stage processes under torchrun (imports dominate)
def test_the_train_stage_runs_under_torchrun_from_params(tiny_store, tmp_path):
    """train.nproc: 2 in params.yaml: `python stages/train.py` re-runs itself under torchrun (gloo on
    CPU) and ends with the outputs of a one-process run accumulating the same micro-batches."""
    from test_resume import outputs, run_stage, workspace

    from musicpetl.backbones import load_from_params
    from musicpetl.features import cache_features

    feats = tmp_path / "features.h5"
    p = fixture_params({"backbone.num_layers": 2})
    cache_features(tiny_store, load_from_params(p.backbone, 0), feats, 2, SEGMENT_SECONDS, progress=False)
    common = {**OVERRIDES, "features.layers": 2, "train.device": "cpu"}
    two = workspace(tmp_path / "two", tiny_store, feats, {**common, "train.nproc": 2})
    one = workspace(tmp_path / "one", tiny_store, feats, {**common, "train.grad_accum": 2})
    res = run_stage(two)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_stage(one)
    assert res.returncode == 0, res.stderr[-3000:]
    assert outputs(two) == outputs(one)
