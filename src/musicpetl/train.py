"""The training loop: Adam, cosine decay, gradient clipping, model selection on validation.

Probing trains the head on the HDF5 feature cache (no backbone in the loop); every other method
trains on random crops from the audio store with the backbone in the loop.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from musicpetl.backbones import load_backbone
from musicpetl.config import Params
from musicpetl.data.loaders import CropDataset, FeatureDataset
from musicpetl.data.store import AudioStore
from musicpetl.evaluate import predict_tracks, predict_tracks_from_cache
from musicpetl.features import FeatureCache
from musicpetl.model import PetlModel
from musicpetl.petl import apply_method
from musicpetl.tasks.base import Task


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is visible; use auto or cpu")
    return torch.device(name)


def backbone_overrides(name: str, p: Params) -> dict:
    return {"normalize_input": p.backbone.normalize_input} if name.startswith("mert") else {}


def build_model(p: Params, task: Task) -> PetlModel:
    """Backbone (official weights or seeded init) + PETL method + head."""
    b = p.backbone
    backbone = load_backbone(b.name, b.checkpoint or None, b.num_layers, seed=p.seed, **backbone_overrides(b.name, p))
    apply_method(backbone, p.petl.method, p.method_options())
    with torch.random.fork_rng():
        torch.manual_seed(p.seed + 1)
        return PetlModel(backbone, task.n_outputs, b.num_layers, method=p.petl.method)


def cosine_lr(step: int, max_steps: int, lr: float, min_lr: float) -> float:
    """Cosine decay from lr to min_lr over max_steps, no warm-up (the reference recipe)."""
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(step, max_steps) / max_steps))


def infinite(loader):
    while True:
        yield from loader


def train(p: Params, task: Task, store: AudioStore, cache: FeatureCache | None, out_path: Path,
          live=None, progress: bool = True) -> dict:
    torch.manual_seed(p.seed)
    np.random.seed(p.seed)
    t = p.train
    device = pick_device(t.device)
    model = build_model(p, task).to(device)
    probing = p.petl.method == "probing"
    segment_seconds = p.backbone.segment_seconds or model.backbone.default_segment_seconds
    valid_rows = store.rows("valid")
    valid_labels = [r["label"] for r in valid_rows]
    if probing:
        if cache is None:
            raise ValueError("probing trains on the feature cache: pass the cache_features output")
        feats, item, _ = cache.split("train", p.backbone.num_layers)
        data = FeatureDataset(feats, item, [task.encode(r["label"]) for r in store.rows("train")])
        module = model.head  # the backbone never enters the loop
    else:
        data = CropDataset(store, "train", task, int(t.crop_seconds * model.backbone.sample_rate))
        module = model
    if len(data) == 0:
        raise ValueError("the training split is empty: check the split stage's counts")
    loader = DataLoader(data, batch_size=t.batch_size, shuffle=True, drop_last=len(data) > t.batch_size,
                        num_workers=t.num_workers, generator=torch.Generator().manual_seed(p.seed))
    params = [q for q in module.parameters() if q.requires_grad]
    opt = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    amp = t.precision == "bf16"

    def validate() -> float:
        if probing:
            probs = predict_tracks_from_cache(model.head, cache, "valid", p.backbone.num_layers, task)
        else:
            probs = predict_tracks(model, store, "valid", task, segment_seconds, p.eval.batch_size, progress=False)
        return task.metrics(valid_labels, probs)[task.primary_metric]

    keep = {n for n, q in model.named_parameters() if q.requires_grad or n.startswith("head.")}
    best, best_step, best_state = -math.inf, 0, None
    module.train()
    batches = infinite(loader)
    t0 = time.time()
    bar = tqdm(range(1, t.max_steps + 1), desc=f"train {p.petl.method}", disable=not progress, unit="step")
    for step in bar:
        x, y = next(batches)
        x, y = x.to(device), y.to(device)
        lr = cosine_lr(step - 1, t.max_steps, t.lr, t.min_lr)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            loss = task.loss(module(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if live is not None:
            live.log_metric("train/loss", float(loss.item()))
            live.log_metric("train/lr", lr)
        if step % t.eval_every == 0 or step == t.max_steps:
            score = validate()
            if live is not None:
                live.log_metric(f"valid/{task.primary_metric}", score)
            if score > best:  # model selection on the validation metric
                best, best_step = score, step
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items() if k in keep}
            module.train()
        if live is not None:
            live.next_step()
    model.load_state_dict({**model.state_dict(), **best_state})
    from musicpetl.run_io import save_run

    save_run(out_path, model, p.petl.method, p.method_options(), p.backbone.name, p.backbone.num_layers,
             task_info={"task": task.name, "classes": list(task.classes), "seed": p.seed,
                        "checkpoint": p.backbone.checkpoint, **backbone_overrides(p.backbone.name, p)})
    n_train = sum(q.numel() for q in model.backbone.parameters() if q.requires_grad)
    return {"best_valid": float(best), "best_step": best_step, "steps": t.max_steps,
            "trainable_backbone_params": int(n_train), "seconds": round(time.time() - t0, 1)}

