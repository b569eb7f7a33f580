"""The training loop's own overhead on the default probing run (issue 11, item 7).

    PYTHONPATH=src .venv/bin/python bench/train_loop.py [--steps 1000] [--work /tmp/musicpetl-bench]

Set-up: the default params.yaml run (synth corpus of 240 clips x 6 s, genre, mert-tiny, 6 layers,
probing, batch 8, eval every 100, 1000 steps), its store and feature cache built once under
--work. One process, 1 torch thread (the stage's default on this 2-core machine is 2; one thread
keeps the comparison out of the other jobs' way).

Measured, each in the same process, one after the other:
- `loop`: `train()` as the stage calls it, with a real dvclive `Live` (curves written), no progress bar;
- `previous`: the loop as it was before issue 11 (DataLoader over the in-memory features, a
  `.item()` and dvclive `log_metric` + `next_step` every step), same head, same validations;
- `compute`: the same number of head steps (forward, loss, backward, clip, Adam) on batches
  gathered beforehand, nothing else;
- `validation`: the loop's 10 validations alone (head on the cached validation features + metric).
- `setup`: `train()` with max_steps 1 (model build, cache read and check, one step, one validation,
  run file), the fastest of 3.
Loop overhead = loop - setup - compute - validation (logging, data, scheduling), as a share of compute.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def default_params(steps: int):
    import yaml

    from musicpetl.config import parse_params

    raw = yaml.safe_load((ROOT / "tests" / "fixtures" / "params.yaml").read_text())
    raw["train"]["max_steps"] = steps
    raw["train"]["checkpoint_every"] = 0
    return parse_params(raw)


def build_data(p, work: Path):
    """Store + feature cache of the default run (built once, then reused)."""
    from musicpetl.backbones import load_from_params
    from musicpetl.data.registry import DATASETS  # noqa: F401  (registry import check)
    from musicpetl.data.store import AudioStore, prepare_store
    from musicpetl.data.synth import SAMPLE_RATE, STYLES, generate_corpus
    from musicpetl.features import FeatureCache, cache_features

    store_dir, cache_path = work / "store", work / "features.h5"
    if not cache_path.exists():
        rows = generate_corpus(work / "raw", p.data.synth.n_clips, p.data.synth.duration, seed=p.seed, progress=False)
        rng = np.random.default_rng(p.seed)
        split = rng.choice(["train", "valid", "test"], size=len(rows), p=[0.7, 0.15, 0.15])
        items = [{"key": r["key"], "split": s, "audio_path": r["audio_path"], "label": STYLES.index(r["style"])}
                 for r, s in zip(rows, split)]
        prepare_store(items, work / "raw", store_dir, SAMPLE_RATE,
                      {"dataset": "synth", "task": "genre", "classes": list(STYLES)}, progress=False)
        store = AudioStore(store_dir)
        cache_features(store, load_from_params(p.backbone, p.seed), cache_path, p.backbone.num_layers,
                       p.backbone.segment_seconds or 5.0, progress=False)
    return AudioStore(store_dir), FeatureCache(cache_path)


def run_loop(p, task, store, cache, tmp: Path) -> float:
    from dvclive import Live

    from musicpetl.train import train

    t0 = time.perf_counter()
    with Live(str(tmp / "dvclive"), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        train(p, task, store, cache, tmp / "run.safetensors", live=live, progress=False)
    return time.perf_counter() - t0


def run_previous(p, task, store, cache, tmp: Path) -> float:
    """The pre-issue-11 loop, step for step (DataLoader, per-step .item() and dvclive writes)."""
    from dvclive import Live
    from torch.utils.data import DataLoader, TensorDataset

    from musicpetl.evaluate import predict_tracks_from_cache
    from musicpetl.run_io import trained_state
    from musicpetl.train import build_model, cosine_lr

    t = p.train
    t0 = time.perf_counter()
    torch.manual_seed(p.seed)
    model = build_model(p, task)
    feats, item, _ = cache.split("train", p.backbone.num_layers)
    targets = [task.encode(r["label"]) for r in store.rows("train")]
    data = TensorDataset(torch.from_numpy(np.ascontiguousarray(feats, np.float32)),
                         torch.from_numpy(np.stack([targets[i] for i in item])))
    loader = DataLoader(data, batch_size=t.batch_size, shuffle=True, drop_last=len(data) > t.batch_size,
                        generator=torch.Generator().manual_seed(p.seed))
    module = model.head
    params = [q for q in module.parameters() if q.requires_grad]
    opt = torch.optim.Adam(params, lr=t.lr)
    labels = [r["label"] for r in store.rows("valid")]
    best, best_state = -math.inf, None

    def batches():
        while True:
            yield from loader

    it = batches()
    module.train()
    with Live(str(tmp / "dvclive-prev"), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        for step in range(1, t.max_steps + 1):
            x, y = next(it)
            lr = cosine_lr(step - 1, t.max_steps, t.lr, t.min_lr)
            for g in opt.param_groups:
                g["lr"] = lr
            loss = task.loss(module(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
            opt.step()
            live.log_metric("train/loss", float(loss.item()))
            live.log_metric("train/lr", lr)
            if step % t.eval_every == 0 or step == t.max_steps:
                probs = predict_tracks_from_cache(model.head, cache, "valid", p.backbone.num_layers, task)
                score = task.metrics(labels, probs)[task.primary_metric]
                live.log_metric(f"valid/{task.primary_metric}", score)
                if score > best:
                    best, best_state = score, trained_state(model, p.petl.method)
                module.train()
            live.next_step()
    return time.perf_counter() - t0


def run_compute(p, task, store, cache) -> tuple[float, float]:
    """(head steps alone, validations alone), seconds."""
    from musicpetl.data.loaders import BatchStream
    from musicpetl.evaluate import predict_tracks_from_cache
    from musicpetl.train import build_model

    t = p.train
    torch.manual_seed(p.seed)
    model = build_model(p, task)
    feats, item, _ = cache.split("train", p.backbone.num_layers)
    targets = [task.encode(r["label"]) for r in store.rows("train")]
    x_all = torch.from_numpy(np.ascontiguousarray(feats, np.float32))
    y_all = torch.from_numpy(np.stack([targets[i] for i in item]))
    stream = BatchStream(len(x_all), t.batch_size, p.seed)
    batches = [(x_all[i], y_all[i]) for i in (stream.batch(s)[0] for s in range(1, t.max_steps + 1))]
    head = model.head
    params = list(head.parameters())
    opt = torch.optim.Adam(params, lr=t.lr)
    head.train()
    t0 = time.perf_counter()
    for x, y in batches:
        loss = task.loss(head(x).float(), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    compute = time.perf_counter() - t0
    labels = [r["label"] for r in store.rows("valid")]
    n_valid = len(range(t.eval_every, t.max_steps + 1, t.eval_every)) + (t.max_steps % t.eval_every != 0)
    t0 = time.perf_counter()
    for _ in range(n_valid):
        probs = predict_tracks_from_cache(head, cache, "valid", p.backbone.num_layers, task)
        task.metrics(labels, probs)
        head.train()
    return compute, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "musicpetl-bench" / "default")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from musicpetl.tasks import make_task

    p = default_params(args.steps)
    args.work.mkdir(parents=True, exist_ok=True)
    store, cache = build_data(p, args.work)
    task = make_task(store.meta["task"], store.meta["classes"])
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        one = default_params(1)
        run_loop(p, task, store, cache, tmp)  # warm-up: imports, first allocations
        setup = min(run_loop(one, task, store, cache, tmp) for _ in range(3))  # build, cache read, 1 step, 1 validation
        loop = run_loop(p, task, store, cache, tmp)
        previous = run_previous(p, task, store, cache, tmp)
        compute, validation = run_compute(p, task, store, cache)
    overhead = loop - setup - compute - validation
    previous_overhead = previous - setup - compute - validation
    result = {"steps": args.steps, "loop_s": round(loop, 3), "previous_loop_s": round(previous, 3),
              "setup_s": round(setup, 3), "step_compute_s": round(compute, 3), "validation_s": round(validation, 3),
              "overhead_s": round(overhead, 3), "overhead_share_of_compute": round(overhead / compute, 3),
              "previous_overhead_s": round(previous_overhead, 3),
              "previous_overhead_share": round(previous_overhead / compute, 3),
              "train_items": len(cache.split("train", 1)[1])}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
