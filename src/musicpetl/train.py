"""The training loop: Adam, cosine decay (optional linear warm-up), gradient clipping and
accumulation, model selection on validation (optional early stopping), resumable checkpoints, DDP.

Probing trains the head on the HDF5 feature cache (no backbone in the loop); every other method
trains on random crops from the audio store with the backbone in the loop, or, with
`train.cache_frontend`, on cached front-end windows with only the layers in the loop.

What a step sees is a function of (seed, step) alone: the batch and its crops come from
`data.loaders.BatchStream`, the learning rate from the step, and the RNG that dropout draws from is
seeded per micro-batch from (seed, step, micro-batch index). That makes a resumed run bit-identical
to an uninterrupted one, DataLoader workers deterministic, and a DDP run (each rank its slice of
the global batch) the same computation as one process accumulating the same micro-batches.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from musicpetl.backbones import backbone_options, load_from_params
from musicpetl.checkpointing import Checkpointer, MetricLog, rng_state, set_rng_state, store_fingerprint
from musicpetl.config import Params
from musicpetl.data.loaders import (BatchStream, CropDataset, CropTargets, FeatureDataset, SegmentFramesDataset,
                                    StepBatches, micro_slices, mix_seed)
from musicpetl.data.store import AudioStore
from musicpetl.distributed import DistContext
from musicpetl.errors import InputError
from musicpetl.evaluate import predict_tracks, predict_tracks_from_cache
from musicpetl.features import FeatureCache, feature_fingerprint
from musicpetl.model import PetlModel, set_activation_checkpointing
from musicpetl.petl import apply_method, get_method
from musicpetl.run_io import save_run, trained_state
from musicpetl.tasks import is_frame_level
from musicpetl.tasks.base import Task

FLUSH_EVERY = 500  # steps between metric resolutions when no validation or checkpoint comes sooner
_NO_CONTEXT = contextlib.nullcontext()
SEND_SECONDS = 15.0  # dvclive's files are rewritten at most this often (and at checkpoints and the end)


def build_model(p: Params, task: Task) -> PetlModel:
    """Backbone (official weights or seeded init) + PETL method + head."""
    b = p.backbone
    backbone = load_from_params(b, p.seed)
    apply_method(backbone, p.petl.method, p.method_options())
    with torch.random.fork_rng(devices=[]):  # the head is built on the CPU: its generator only
        torch.default_generator.manual_seed(p.seed + 1)
        return PetlModel(backbone, task.n_outputs, b.num_layers, method=p.petl.method,
                         layer_input=p.train.layer_input, frame_level=is_frame_level(task))


def cosine_lr(step: int, max_steps: int, lr: float, min_lr: float) -> float:
    """Cosine decay from lr to min_lr over max_steps, no warm-up (the reference recipe)."""
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(step, max_steps) / max_steps))


def lr_at(step: int, t) -> float:
    """Learning rate of 1-based `step`: linear warm-up over `warmup_steps` (if any), then cosine
    decay over the remaining steps; with no warm-up exactly `cosine_lr(step - 1, max_steps, ...)`."""
    w = t.warmup_steps
    if w and step <= w:
        return t.lr * step / w
    return cosine_lr(step - 1 - w, t.max_steps - w, t.lr, t.min_lr)


class _Embedded(nn.Module):
    """The model from front-end frames (what DDP wraps when the front end is cached)."""

    def __init__(self, model: PetlModel):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_embedded(x)


def _probing_data(p: Params, task: Task, store: AudioStore, cache: FeatureCache, model: PetlModel,
                  segment_seconds: float):
    n = p.backbone.num_layers
    cache.check(feature_fingerprint(model.backbone, n, segment_seconds, p.backbone.checkpoint))
    rows = store.rows("train")
    last = p.train.layer_input == "last"
    if is_frame_level(task):  # whole cached segments' frames, targets at each segment's start
        frames = cache.frames("train", n) if last else cache.frames("train", layers=n)
        keys = frames.keys
        n_frames = model.backbone.n_frames(model.backbone.segment_length(segment_seconds))
        data = SegmentFramesDataset(frames, CropTargets(task, rows, model.backbone.sample_rate, n_frames), n_frames)
    else:
        feats, item, keys = cache.split("train", n) if last else cache.split("train", layers=n)
        data = FeatureDataset(feats, item, [task.encode(r["label"]) for r in rows])
    if keys != [r["key"] for r in rows]:
        raise InputError(f"{cache.path}: its training items are not the prepared store's; rerun cache_features")
    return data


def validation_subset(n_valid: int, items: int, seed: int) -> np.ndarray:
    """Indices (sorted) of the validation items validated during training: all of them when `items`
    is 0 or covers the split, else a fixed subset of `items` drawn with `seed` (the same at every
    validation and on resume)."""
    if items <= 0 or items >= n_valid:
        return np.arange(n_valid)
    # a generator of its own (seed, tag): independent of every other draw made from the run's seed
    return np.sort(np.random.default_rng([seed, 0x7A1D]).permutation(n_valid)[:items])


def _shard_validate(model, store, task, segment_seconds, batch_size, dist: DistContext, rows: list[dict]):
    """Validation over the audio path of `rows`, items split over the ranks, gathered in order:
    (N, n_out), or for a frame-level task a list of N per-track curves."""
    mine = rows[dist.rank::dist.world]
    probs = predict_tracks(model, store, "valid", task, segment_seconds, batch_size, progress=False, rows=mine)
    parts = dist.gather(probs)
    if is_frame_level(task):
        out = [None] * len(rows)
        for r, part in enumerate(parts):
            out[r::dist.world] = list(part)
        return out
    out = np.zeros((len(rows), task.n_outputs), np.float32)
    for r, part in enumerate(parts):
        out[r::dist.world] = part
    return out


def train(p: Params, task: Task, store: AudioStore, cache: FeatureCache | None, out_path: Path,
          live=None, progress: bool = True, on_validate=None, *, checkpoints: Checkpointer | None = None,
          dist: DistContext | None = None, frontend_root: str | Path | None = None) -> dict:
    """Train, select the best validation step, save that step's run. `on_validate(step, score,
    probs)` sees every validation (tests use it to check the saved run is the selected model).

    `checkpoints`: resume from its checkpoint if there is one, and write one every
    `train.checkpoint_every` steps and at the end (the caller removes it once the outputs are
    written). `dist`: the DDP context (rank 0 writes the run file). `frontend_root`: where the
    cached front end lives (`train.cache_frontend`; default `.musicpetl/frontend`)."""
    t0 = time.time()
    dist = dist or DistContext(device=_device(p.train.device))
    t = p.train
    device = dist.device
    torch.manual_seed(p.seed)
    np.random.seed(p.seed)
    method = get_method(p.petl.method)
    on_cache = method.uses_feature_cache
    model = build_model(p, task).to(device)
    if not method.trains:  # `none`: an off-the-shelf estimator, recorded and scored, nothing trained
        return _record_untrained(p, task, store, model, out_path, live, dist, t0)
    if t.activation_checkpointing and not on_cache:
        set_activation_checkpointing(model)
    segment_seconds = p.backbone.segment_seconds or model.backbone.default_segment_seconds
    valid_rows = store.rows("valid")
    chosen = validation_subset(len(valid_rows), t.valid_items, p.seed)  # train.valid_items: 0 = all
    valid_rows = [valid_rows[i] for i in chosen]
    valid_labels = [r["label"] for r in valid_rows]

    # -- what a step trains on --------------------------------------------------------------
    if on_cache:
        if cache is None:
            raise InputError("probing trains on the feature cache: pass the cache_features output")
        data = _probing_data(p, task, store, cache, model, segment_seconds)
        module: nn.Module = model.head  # the backbone never enters the loop
    elif t.cache_frontend:
        from musicpetl import frontend_cache

        frontend_cache.check_usable(model.backbone, p.petl.method, method.stores_full_backbone)
        sr = model.backbone.sample_rate
        crop_len = int(t.crop_seconds * sr)
        hop_len = int((t.frontend_hop_seconds or t.crop_seconds) * sr)
        fcache = frontend_cache.ensure(frontend_root or frontend_cache.ROOT, store, "train", model.backbone,
                                       crop_len, hop_len, t.frontend_dtype, store_fingerprint(store),
                                       batch_size=p.eval.batch_size, progress=progress and dist.is_main,
                                       is_main=dist.is_main, barrier=dist.barrier)
        data = frontend_cache.FrameDataset(fcache, CropTargets(task, store.rows("train"), sr, _frames(model, crop_len)))
        module = _Embedded(model)
    else:
        crop_len = int(t.crop_seconds * model.backbone.sample_rate)
        data = CropDataset(store, "train", task, crop_len, _frames(model, crop_len))
        module = model
    if len(data) == 0:
        raise InputError("the training split is empty: check the split stage's counts")
    stream = BatchStream(len(data), t.batch_size, p.seed)
    slices_all = micro_slices(stream.size, dist.world, t.grad_accum)
    if any(a == b for a, b in slices_all):
        raise InputError(f"{len(data)} training items cannot fill {dist.world} processes x {t.grad_accum} "
                         f"micro-batches: lower train.grad_accum or the number of processes")
    mine = slices_all[dist.rank * t.grad_accum:(dist.rank + 1) * t.grad_accum]

    params = [q for q in module.parameters() if q.requires_grad]
    opt = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    step_module = module
    if dist.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        step_module = DDP(module, device_ids=[device.index] if device.type == "cuda" else None)
    amp = t.precision == "bf16"

    def validate():
        if on_cache:  # rank 0 scores, every rank takes its probabilities: one score, one early-stopping decision
            probs = dist.broadcast(predict_tracks_from_cache(model.head, cache, "valid", p.backbone.num_layers, task)
                                   if dist.is_main else None)
            probs = [probs[i] for i in chosen] if is_frame_level(task) else probs[chosen]
        else:  # in the training's precision: a bf16 run validates in bf16 (fp32 validation on a GPU runs
            # without tensor cores and can cost more than the steps between validations)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16) if amp else _NO_CONTEXT:
                probs = _shard_validate(model, store, task, segment_seconds, p.eval.batch_size, dist, valid_rows)
        return task.metrics(valid_labels, probs)[task.primary_metric], probs

    # -- state, possibly resumed ------------------------------------------------------------
    metrics = MetricLog(live if dist.is_main else None)
    best, best_step, best_state, bad, start = -math.inf, 0, None, 0, 0
    stopped = False
    resumed = checkpoints.load() if checkpoints is not None else None
    if resumed is not None:
        expected = trained_state(model, p.petl.method)
        if set(resumed["model"]) != set(expected):
            raise InputError(f"{checkpoints.path} does not fit this model (its tensors differ); delete "
                             f"{checkpoints.dir} to start this run over")
        model.load_state_dict(resumed["model"], strict=False)
        opt.load_state_dict(resumed["optimizer"])
        b = resumed["best"]
        best, best_step, best_state, bad = b["score"], b["step"], b["state"], b["bad"]
        start, stopped = resumed["step"], resumed["stopped"]
        metrics.restore(resumed["history"])
        set_rng_state(resumed["rng"])
        if dist.is_main:
            print(f"[train] resumed from the checkpoint at step {start} ({checkpoints.path})", file=sys.stderr,
                  flush=True)
    elif checkpoints is not None and dist.is_main and checkpoints.others():
        print(f"[train] note: {len(checkpoints.others())} checkpoint(s) of other runs in {checkpoints.dir.parent} "
              f"(left by killed runs with other params, data or code; delete them if not needed)", file=sys.stderr)

    def batches():
        """This rank's micro-batches, step after step, from start + 1."""
        if t.num_workers > 0:
            from torch.utils.data import DataLoader

            loader = DataLoader(data, batch_sampler=StepBatches(stream, mine, start + 1, t.max_steps),
                                num_workers=t.num_workers, persistent_workers=False,
                                pin_memory=device.type == "cuda")  # pinned: the non_blocking copies below overlap
            it = iter(loader)
            for _ in range(start + 1, t.max_steps + 1):
                yield [next(it) for _ in mine]
        else:
            for step in range(start + 1, t.max_steps + 1):
                idx, r = stream.batch(step)
                yield [data.batch(idx[a:b], r[a:b]) for a, b in mine]

    def checkpoint(step: int) -> None:
        metrics.flush(dist.mean)
        if dist.is_main:
            info = checkpoints.save({
                "step": step, "stopped": stopped, "world": dist.world, "model": trained_state(model, p.petl.method),
                "optimizer": opt.state_dict(), "best": {"score": best, "step": best_step, "state": best_state,
                                                        "bad": bad},
                "history": metrics.state(), "rng": rng_state()})
            if progress:
                tqdm.write(f"[train] checkpoint at step {step}: {info['bytes'] / 2**20:.1f} MiB in "
                           f"{info['seconds']:.2f} s", file=sys.stderr)
        dist.barrier()

    # -- the loop -------------------------------------------------------------------------------
    module.train()
    bar = tqdm(total=t.max_steps, initial=start, desc=f"train {p.petl.method}", disable=not (progress and dist.is_main),
               unit="step")
    step, sent_at = start, time.time()
    for step, micro in zip(range(start + 1, t.max_steps + 1), batches() if not stopped else ()):
        lr = lr_at(step, t)
        for g in opt.param_groups:
            g["lr"] = lr
        loss_sum = None
        for k, (x, y) in enumerate(micro):
            _seed_dropout(mix_seed(p.seed, step, dist.rank * t.grad_accum + k), device)  # (seed, step, slice)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            sync = step_module.no_sync() if dist.active and k < len(micro) - 1 else _NO_CONTEXT  # one all-reduce
            with sync:
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16) if amp else _NO_CONTEXT:
                    loss = task.loss(step_module(x).float(), y)
                if len(micro) > 1:
                    loss = loss / len(micro)
                loss.backward()
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        metrics.log(step, "train/loss", loss_sum)
        metrics.log(step, "train/lr", lr)
        bar.update(1)
        last = step == t.max_steps
        if step % t.eval_every == 0 or last:
            score, probs = validate()
            if on_validate is not None:
                on_validate(step, score, probs)
            metrics.log(step, f"valid/{task.primary_metric}", score)
            if best_state is None or score > best:  # model selection on the validation metric
                best, best_step, bad = score, step, 0
                best_state = trained_state(model, p.petl.method)  # exactly what the run file will hold
            else:
                bad += 1
            stopped = t.patience > 0 and bad >= t.patience
            module.train()
            sending = time.time() - sent_at > SEND_SECONDS
            metrics.flush(dist.mean, send=sending)
            sent_at = time.time() if sending else sent_at
            if progress and dist.is_main:
                bar.set_postfix(loss=f"{metrics.latest('train/loss'):.4f}", **{task.primary_metric: f"{score:.4f}"})
        elif step % FLUSH_EVERY == 0:
            metrics.flush(dist.mean, send=False)
        if checkpoints is not None and checkpoints.due(step, last or stopped):
            checkpoint(step)
        if stopped:
            break
    bar.close()
    metrics.flush(dist.mean)
    model.load_state_dict(best_state, strict=False)
    if dist.is_main:
        task_info = {"task": task.name, "classes": list(task.classes), "seed": p.seed,
                     "checkpoint": p.backbone.checkpoint,
                     "backbone_options": backbone_options(p.backbone.name, p.backbone)}
        if t.layer_input != "last":
            task_info["layer_input"] = t.layer_input
        if model.frame_level:
            task_info["frame_level"] = True
        save_run(out_path, model, p.petl.method, p.method_options(), p.backbone.name, p.backbone.num_layers,
                 task_info=task_info)
    dist.barrier()
    n_train = sum(q.numel() for q in model.backbone.parameters() if q.requires_grad)
    summary = {"best_valid": float(best), "best_step": best_step, "steps": step,
               "trainable_backbone_params": int(n_train), "seconds": round(time.time() - t0, 1),
               "resumed_from_step": start}
    if t.patience:
        summary["stopped_early"] = bool(stopped)
    return summary


def _record_untrained(p: Params, task: Task, store: AudioStore, model: PetlModel, out_path: Path, live,
                      dist: DistContext, t0: float) -> dict:
    """Method `none` (README "Baselines"): the run file records the estimator and its task (no
    tensors); its validation score is the run's `best_valid` (dvclive's one point, at step 0)."""
    score = float("nan")
    if dist.is_main:
        if store.rows("valid"):
            probs = predict_tracks(model, store, "valid", task, model.backbone.default_segment_seconds, progress=False)
            score = float(task.metrics([r["label"] for r in store.rows("valid")], probs)[task.primary_metric])
        metrics = MetricLog(live)
        metrics.log(0, f"valid/{task.primary_metric}", score)
        metrics.flush()
        save_run(out_path, model, p.petl.method, p.method_options(), p.backbone.name, p.backbone.num_layers,
                 task_info={"task": task.name, "classes": list(task.classes), "seed": p.seed})
    dist.barrier()
    return {"best_valid": score, "best_step": 0, "steps": 0, "trainable_backbone_params": 0,
            "seconds": round(time.time() - t0, 1), "resumed_from_step": 0}


def _frames(model: PetlModel, crop_len: int) -> int | None:
    """Frames the backbone gives for a crop (frame-level targets); None for track-level tasks."""
    return model.backbone.n_frames(crop_len) if model.frame_level else None


def _seed_dropout(seed: int, device: torch.device) -> None:
    """Seed the generator dropout draws from on `device` (torch.manual_seed would also seed every
    lazily-initialised accelerator backend, ~1 ms a call)."""
    if device.type == "cuda":
        torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()
                                      ].manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


def _device(name: str) -> torch.device:
    from musicpetl.device import pick_device

    return pick_device(name)
