"""Training options of issue 11, item 5/6: activation checkpointing (equal gradients), gradient
accumulation (the mean of the micro-batches' gradients), LR warm-up, early stopping, DataLoader
workers (same batches as the main process), bf16 autocast on every new path."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import SEGMENT_SECONDS, Recorder, fixture_params
from musicpetl.data.loaders import BatchStream, CropDataset, micro_slices, mix_seed
from musicpetl.model import set_activation_checkpointing
from musicpetl.train import build_model, cosine_lr, lr_at, train

BASE = {"backbone.num_layers": 2, "backbone.segment_seconds": SEGMENT_SECONDS, "train.crop_seconds": 1.0,
        "train.batch_size": 4, "train.lr": 0.01}


def _model(p, task):
    torch.manual_seed(p.seed)  # as train() does: methods draw their init from the global generator
    return build_model(p, task)


def _grads(model, x, y, task, seed):
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    task.loss(model(x), y).backward()
    return {n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None}


@pytest.mark.parametrize("name,method", [("mert-tiny", "adapter"), ("musicfm-tiny", "finetune")])
def test_activation_checkpointing_gives_equal_gradients(name, method, tiny_store, genre_task, torch_threads):
    # dropout active (train mode) and, for MusicFM fine-tuning, BatchNorm updating its statistics in the
    # front end and every conv module: the recomputation replays the RNG and must not count a batch twice
    p = fixture_params({**BASE, "backbone.name": name, "petl.method": method})
    data = CropDataset(tiny_store, "train", genre_task, 24000)
    x, y = data.batch(torch.arange(4), torch.arange(4) * 997)
    plain, ckpt = _model(p, genre_task), _model(p, genre_task)
    set_activation_checkpointing(ckpt)
    g_plain, g_ckpt = _grads(plain, x, y, genre_task, 5), _grads(ckpt, x, y, genre_task, 5)
    assert g_plain.keys() == g_ckpt.keys() and len(g_plain) > 4
    for n in g_plain:
        torch.testing.assert_close(g_ckpt[n], g_plain[n], rtol=0, atol=0, msg=n)  # the same ops, replayed
    buffers = plain.trained_buffer_names()
    assert bool(buffers) == (method == "finetune")
    sp, sc = plain.state_dict(), ckpt.state_dict()
    for n in buffers:
        assert torch.equal(sp[n], sc[n]), n
    # and it did checkpoint: no layer activations kept for backward beyond the layers' inputs
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        genre_task.loss(ckpt(x), y)
    kept = sum(saved)
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        genre_task.loss(plain(x), y)
    assert kept < sum(saved) / 2


def test_gradient_accumulation_is_the_mean_of_micro_batch_gradients(tiny_store, genre_task, tmp_path, torch_threads):
    p = fixture_params({**BASE, "petl.method": "adapter", "train.grad_accum": 2, "train.max_steps": 1,
                        "train.grad_clip": 0.0})
    train(p, genre_task, tiny_store, None, tmp_path / "run.safetensors", progress=False)
    stored = load_file(str(tmp_path / "run.safetensors"))

    # the definition, step 1: micro-batches = halves of the global batch, dropout seeded per micro-batch
    model = _model(p, genre_task)
    data = CropDataset(tiny_store, "train", genre_task, 24000)
    idx, r = BatchStream(len(data), 4, p.seed).batch(1)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.Adam(params, lr=lr_at(1, p.train))
    model.train()
    for k, (a, b) in enumerate(micro_slices(4, 1, 2)):
        x, y = data.batch(idx[a:b], r[a:b])
        torch.manual_seed(mix_seed(p.seed, 1, k))
        (genre_task.loss(model(x), y) / 2).backward()
    opt.step()
    state = model.state_dict()
    for n, t in stored.items():
        torch.testing.assert_close(t, state[n], rtol=0, atol=0, msg=n)
    assert any(not torch.equal(t, _model(p, genre_task).state_dict()[n]) for n, t in stored.items())


def test_warmup_then_cosine():
    t = fixture_params({"train.lr": 0.01, "train.min_lr": 0.0, "train.max_steps": 10, "train.warmup_steps": 4}).train
    assert [lr_at(s, t) for s in range(1, 5)] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])
    assert lr_at(5, t) == pytest.approx(0.01) and lr_at(10, t) == pytest.approx(cosine_lr(5, 6, 0.01, 0.0))
    assert all(lr_at(s, t) > lr_at(s + 1, t) for s in range(5, 10))
    t0 = fixture_params({"train.max_steps": 10}).train
    assert [lr_at(s, t0) for s in range(1, 11)] == [cosine_lr(s - 1, 10, t0.lr, t0.min_lr) for s in range(1, 11)]


def test_early_stopping_after_patience_validations(tiny_store, genre_task, tmp_path, torch_threads):
    from musicpetl.features import FeatureCache, cache_features
    from musicpetl.backbones import load_from_params

    # a learning rate too small to change any prediction: validation never improves after the first
    p = fixture_params({**BASE, "train.lr": 1e-9, "train.min_lr": 1e-10, "train.max_steps": 50,
                        "train.eval_every": 5, "train.patience": 2})
    cache_features(tiny_store, load_from_params(p.backbone, 0), tmp_path / "f.h5", 2, SEGMENT_SECONDS, progress=False)
    seen = []
    summary = train(p, genre_task, tiny_store, FeatureCache(tmp_path / "f.h5"), tmp_path / "run.safetensors",
                    progress=False, on_validate=lambda step, score, probs: seen.append(step))
    assert seen == [5, 10, 15] and summary["steps"] == 15 and summary["stopped_early"]
    assert summary["best_step"] == 5


def test_dataloader_workers_give_the_main_process_batches(tiny_store, genre_task, tmp_path, torch_threads):
    runs = []
    for workers in (0, 2):
        p = fixture_params({**BASE, "petl.method": "bitfit", "train.max_steps": 3, "train.eval_every": 3,
                            "train.num_workers": workers})
        train(p, genre_task, tiny_store, None, tmp_path / f"run{workers}.safetensors", progress=False)
        runs.append((tmp_path / f"run{workers}.safetensors").read_bytes())
    assert runs[0] == runs[1]


def test_bf16_autocast_on_every_new_path(tiny_store, genre_task, tmp_path, torch_threads):
    # CPU autocast here; the same code runs on CUDA (BENCHMARKS.md, GPU section)
    live = Recorder()

    p = fixture_params({**BASE, "petl.method": "prefix", "train.precision": "bf16", "train.grad_accum": 2,
                        "train.activation_checkpointing": True, "train.cache_frontend": True,
                        "train.layer_input": "weighted", "train.warmup_steps": 1, "train.max_steps": 3,
                        "train.eval_every": 3})
    seen = {}
    train(p, genre_task, tiny_store, None, tmp_path / "run.safetensors", live=live, progress=False,
          frontend_root=tmp_path / "fe", on_validate=lambda step, score, probs: seen.setdefault(step, probs))
    assert len(live.losses) == 3 and all(math.isfinite(v) for v in live.losses)
    assert np.all(np.isfinite(load_file(str(tmp_path / "run.safetensors"))["head.layer_weights"].numpy()))
    # validation ran in the training's precision: bf16, near the same run's fp32 probabilities, not equal
    from musicpetl.evaluate import predict_tracks
    from musicpetl.run_io import load_run

    fp32 = predict_tracks(load_run(tmp_path / "run.safetensors"), tiny_store, "valid", genre_task,
                          SEGMENT_SECONDS, p.eval.batch_size, progress=False)
    gap = np.abs(seen[3] - fp32).max()
    assert 0 < gap < 0.05, gap
