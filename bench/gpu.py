"""Issue 11's GPU figures in one run: bf16 against fp32, samples/s and peak memory per method, and
MusicFM full fine-tuning with and without activation checkpointing.

    PYTHONPATH=src python3 bench/gpu.py --json $OUT/gpu.json       # on a CUDA machine, a few minutes
    PYTHONPATH=src .venv/bin/python bench/gpu.py --quick             # tiny backbones on CPU: a smoke check

Random weights at full size (speed and memory do not depend on the values), the paper's recipe
where it fixes something (docs/REFERENCE.md "Training recipe"): first 6 layers, batch 16, Adam, gradient
clipping 1.0, bf16 autocast (fp32 weights), MERT 5 s crops, MusicFM whole clips (30 s); 10 classes,
cross-entropy. The training step is train.py's: autocast forward, `.float()` logits, loss,
backward, clip, Adam, zero_grad. Timings: CUDA-synchronised wall time, median of --steps steps after
2 warm-up steps; memory: `torch.cuda.max_memory_allocated` over the warm-up and timed steps, reset
before the model is built (weights, gradients, Adam state and activations all count).

Parts (each can be picked with --parts; pipeline runs first: if it fails, the figures are suspect):
  bf16      per foundation backbone (all its layers): no-grad eval forward of 2 x 10 s, fp32 vs bf16
            autocast; per layer the relative error ||h_bf16 - h_fp32|| / ||h_fp32||, and the cosine
            of the time-pooled last layer. Then one LoRA backward both ways from the same weights and
            batch, dropout off: relative error of the trainable gradients (all of them, flattened).
  methods   per backbone (mert-v1-95m, musicfm-msd) and trained method (finetune, probing, the paper's
            six PETL methods, the LoRA relatives; --methods picks): the bf16 training step from
            audio and, for every method but finetune, from cached front-end frames
            (`forward_embedded`, what `train.cache_frontend` trains on); samples/s and peak memory.
            probing: the head step on pooled features, and the no-grad feature forward it pays once
            per item (its samples/s).
  pipeline  the train and evaluate code on this device, end to end, tiny backbones: a small genre
            store of synthetic clips (written through prepare_store from memory), then per backbone
            probing (features cached by cache_features on the device, the head trained and tested
            from the cache), LoRA from audio and LoRA with the cached front end, each in fp32 and
            bf16; the run file reloaded on the device, LoRA merged, the test split scored. Catches
            what CPU tests cannot: a tensor left on the wrong device. Per row: ok or the error.
  actckpt   musicfm-msd full fine-tuning, all 12 layers, 30 s clips: batch 16 plain, batch 16 with
            `train.activation_checkpointing`, and 4 micro-batches of 4 (`train.grad_accum: 4`) with
            checkpointing; peak allocated and peak reserved memory, samples/s, and whether the
            reserved peak + 0.5 GiB of CUDA context fits a 24 GiB card.

On CPU (--device cpu) memory is not measured (reported as null) and --quick shrinks everything.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import musicpetl  # noqa: F401  (sets the OpenMP wait policy before torch loads)
import torch
import torch.nn.functional as F

from musicpetl.backbones import BACKBONES, build_backbone
from musicpetl.model import PetlModel, set_activation_checkpointing
from musicpetl.petl import METHODS, apply_method

N_OUT = 10
# every method a foundation backbone trains with: finetune, probing, the paper's six, the LoRA relatives
TRAINED_METHODS = tuple(n for n, m in METHODS.items() if m.trains and "foundation" in m.kinds)
GB = 2 ** 30
CONTEXT_GIB = 0.5  # CUDA context + cuBLAS workspace outside the caching allocator (approximate)


class Bench:
    def __init__(self, device: torch.device, steps: int):
        self.device, self.steps = device, steps
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def reset_memory(self):
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self):
        return torch.cuda.max_memory_allocated() / GB if self.cuda else None

    def reserved_gib(self):
        """What the caching allocator held at its peak: what the card must have free."""
        return torch.cuda.max_memory_reserved() / GB if self.cuda else None

    def audio(self, batch: int, seconds: float, sr: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return ((torch.rand(batch, int(seconds * sr), generator=g) - 0.5) * 0.6).to(self.device)

    def time(self, step, warmup: int = 2) -> list[float]:
        for _ in range(warmup):
            step()
        times = []
        for _ in range(self.steps):
            self.sync()
            t0 = time.perf_counter()
            step()
            self.sync()
            times.append(time.perf_counter() - t0)
        return times


def train_step(model: PetlModel, forward, x, y, accum: int = 1):
    """train.py's step: bf16 autocast forward per micro-batch, loss / accum, backward; clip, Adam."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)
    dev = x.device.type

    def step():
        for xb, yb in zip(x.chunk(accum), y.chunk(accum)):
            with torch.autocast(device_type=dev, dtype=torch.bfloat16):
                loss = F.cross_entropy(forward(xb).float(), yb)
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _model(name: str, method: str, layers: int | None, device) -> PetlModel:
    backbone = build_backbone(name, num_layers=layers, seed=0)
    apply_method(backbone, method)
    return PetlModel(backbone, N_OUT, len(backbone.layers), method=method).to(device)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


# -- parts ------------------------------------------------------------------------------------------

def _measure(row: dict, fn) -> dict:
    """One measurement into its row; an error goes into the row and the run goes on (one call on a
    lent device must bring back everything that worked). Out of memory is an answer, not a crash."""
    try:
        row.update(fn())
    except torch.OutOfMemoryError as e:
        row["error"] = f"out of memory: {str(e).splitlines()[0]}"
    except Exception as e:  # noqa: BLE001  (recorded, printed, and the next measurement runs)
        row["error"] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def part_bf16(b: Bench, names: list[str], seconds: float) -> list[dict]:
    def one(name):
        model = _model(name, "lora", None, b.device)
        x = b.audio(2, seconds, BACKBONES[name].sample_rate)
        model.eval()  # no dropout: the fused CUDA dropout may lay its random numbers out per dtype
        with torch.no_grad():
            ref = model.backbone(x, model.num_layers)
            with torch.autocast(device_type=b.device.type, dtype=torch.bfloat16):
                low = model.backbone(x, model.num_layers)
        per_layer = [_rel(h, r) for h, r in zip(low, ref)]
        cos = float(F.cosine_similarity(low[-1].float().mean(1), ref[-1].mean(1), dim=-1).min())
        y = torch.tensor([1, 3], device=b.device)  # one LoRA backward both ways, same weights and batch
        grads = {}
        for precision in ("fp32", "bf16"):
            model.zero_grad(set_to_none=True)
            with torch.autocast(device_type=b.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = F.cross_entropy(model(x).float(), y)
            loss.backward()
            grads[precision] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return {"layers": model.num_layers, "hidden_rel_err_per_layer": per_layer,
                "hidden_rel_err_max": max(per_layer), "pooled_cosine_min": cos,
                "lora_grad_rel_err": _rel(grads["bf16"], grads["fp32"])}

    # the fp32 reference is fp32 (no TF32) in matrix products and convolutions alike; the other parts
    # run with torch's defaults, as the train stage does
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        return [_measure({"backbone": name, "seconds": seconds}, lambda: one(name)) for name in names]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def part_methods(b: Bench, names: dict[str, float], methods: list[str], batch: int, layers: int) -> list[dict]:
    y = torch.arange(batch, device=b.device) % N_OUT

    def one(name, method, x):
        b.reset_memory()
        model = _model(name, method, layers, b.device)
        model.train()
        if method == "probing":  # the head on pooled features; the features once, no grad
            model.eval()
            with torch.no_grad():
                fwd = b.time(lambda: model.pooled(x))
                pooled = model.pooled(x)
            model.train()
            head = b.time(train_step(model, model.head, pooled, y))
            return {"feature_forward_samples_s": batch / statistics.median(fwd),
                    "head_step_ms": 1e3 * statistics.median(head), "peak_gib": b.peak_gib()}
        audio = b.time(train_step(model, model, x, y))
        row = {"audio_step_s": statistics.median(audio), "audio_samples_s": batch / statistics.median(audio),
               "audio_peak_gib": b.peak_gib()}
        if method != "finetune":  # every PETL method keeps the front end frozen
            model.backbone.eval()
            with torch.no_grad():
                frames = model.backbone.embed(x)
            model.train()
            b.reset_memory()
            cached = b.time(train_step(model, model.forward_embedded, frames, y))
            row.update(cached_step_s=statistics.median(cached), cached_samples_s=batch / statistics.median(cached),
                       cached_peak_gib=b.peak_gib(), cached_speedup=statistics.median(audio) / statistics.median(cached))
        return row

    out = []
    for name, seconds in names.items():
        x = b.audio(batch, seconds, 24000)
        for method in methods:
            meta = {"backbone": name, "method": method, "batch": batch, "seconds": seconds, "layers": layers}
            out.append(_measure(meta, lambda: one(name, method, x)))
    return out


def _genre_store(root: Path, sr: int = 24000, seconds: float = 3.0) -> "AudioStore":
    """4 classes of click trains (60, 90, 120, 150 BPM) in noise, 12 / 4 / 4 clips per class for
    train / valid / test, written through prepare_store from memory (no audio files, no decoder)."""
    import numpy as np

    from musicpetl.data.store import AudioStore, prepare_store

    rng = np.random.default_rng(0)
    n = int(seconds * sr)
    waves, items = {}, []
    for c, bpm in enumerate((60, 90, 120, 150)):
        for k in range(20):
            wave = 0.05 * rng.standard_normal(n).astype(np.float32)
            period, phase = int(sr * 60 / bpm), int(rng.integers(0, sr // 2))
            for start in range(phase, n - 240, period):
                wave[start:start + 240] += np.hanning(240).astype(np.float32) * 0.8
            key = f"c{c}_{k:02d}"
            waves[f"{key}.wav"] = wave
            items.append({"key": key, "split": "train" if k < 12 else "valid" if k < 16 else "test",
                          "audio_path": f"{key}.wav", "label": c})
    prepare_store(items, root, root / "store", sr, {"dataset": "clicks", "task": "genre",
                                                     "classes": ["60", "90", "120", "150"]},
                  progress=False, decode=lambda path, rate: waves[path.name])
    return AudioStore(root / "store")


def part_pipeline(b: Bench, names: list[str], steps: int) -> list[dict]:
    import tempfile

    from musicpetl.backbones import load_from_params
    from musicpetl.config import parse_params
    from musicpetl.evaluate import predict_tracks, predict_tracks_from_cache, score
    from musicpetl.features import FeatureCache, cache_features
    from musicpetl.petl import prepare_for_inference
    from musicpetl.run_io import load_run
    from musicpetl.tasks import make_task
    from musicpetl.train import train

    tmp = Path(tempfile.mkdtemp(prefix="musicpetl-gpu-"))
    store = _genre_store(tmp)
    task = make_task("genre", store.meta["classes"])
    labels = [r["label"] for r in store.rows("test")]

    def one(name, method, precision, cached):
        p = parse_params({"backbone": {"name": name, "num_layers": 4, "segment_seconds": 1.5}, "petl": {"method": method},
                          "train": {"max_steps": steps, "eval_every": max(1, steps // 2), "batch_size": 8, "lr": 1e-3,
                                    "crop_seconds": 2.0, "device": b.device.type, "precision": precision,
                                    "cache_frontend": cached, "checkpoint_every": 0},
                          "eval": {"batch_size": 4, "bootstrap": 200}})
        run = tmp / f"{name}-{method}-{precision}-{int(cached)}.safetensors"
        seconds = 1.5
        cache = None
        if method == "probing":  # the features once per backbone, computed on the device
            path = tmp / f"{name}-features.h5"
            if not path.exists():
                backbone = load_from_params(p.backbone, p.seed).to(b.device)
                cache_features(store, backbone, path, 4, seconds, batch_size=4, progress=False)
            cache = FeatureCache(path)
        t0 = time.perf_counter()
        summary = train(p, task, store, cache, run, progress=False, frontend_root=tmp / "frontend")
        train_s = time.perf_counter() - t0
        model = load_run(run, device=b.device)
        on_device = all(q.device.type == b.device.type for q in model.parameters())
        if method == "probing":
            probs = predict_tracks_from_cache(model.head, cache, "test", model.num_layers, task)
        else:
            model.backbone = prepare_for_inference(model.backbone, method)
            probs = predict_tracks(model, store, "test", task, seconds, 4, progress=False)
        result = score(task, labels, probs, n_boot=200)
        return {"ok": on_device, "train_s": train_s, "best_valid": summary["best_valid"],
                "test_accuracy": result["accuracy"], "n_test": result["n"]}

    out = []
    for name in names:
        for method, cached in (("probing", False), ("lora", False), ("lora", True)):
            for precision in ("fp32", "bf16"):
                meta = {"backbone": name, "method": method, "cache_frontend": cached, "precision": precision}
                out.append(_measure(meta, lambda: one(name, method, precision, cached)))
    return out


def part_actckpt(b: Bench, name: str, batch: int, seconds: float, accum: int) -> list[dict]:
    y = torch.arange(batch, device=b.device) % N_OUT
    x = b.audio(batch, seconds, 24000)

    def one(ckpt, k):
        b.reset_memory()
        model = _model(name, "finetune", None, b.device)
        set_activation_checkpointing(model, ckpt)
        model.train()
        times = b.time(train_step(model, model, x, y, accum=k), warmup=1)
        reserved = b.reserved_gib()
        return {"layers": model.num_layers, "step_s": statistics.median(times),
                "samples_s": batch / statistics.median(times), "peak_gib": b.peak_gib(), "reserved_gib": reserved,
                # a "24 GB" card has 24 GiB, of which the CUDA context takes ~0.5 GiB
                "fits_24gb": None if reserved is None else reserved + CONTEXT_GIB <= 24.0}

    out = []
    for label, ckpt, k in (("plain", False, 1), ("activation checkpointing", True, 1),
                           (f"activation checkpointing + grad_accum {accum}", True, accum)):
        row = _measure({"config": label, "backbone": name, "batch": batch, "seconds": seconds},
                       lambda: one(ckpt, k))
        if "error" in row and row["error"].startswith("out of memory"):
            row["fits_24gb"] = False
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--parts", default="pipeline,bf16,methods,actckpt")
    ap.add_argument("--methods", default=",".join(TRAINED_METHODS))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="tiny backbones, small batches (a smoke check)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    b = Bench(torch.device(a.device), 2 if a.quick else a.steps)
    parts = set(a.parts.split(","))
    if a.quick:
        bf16_names = ["mert-tiny", "musicfm-tiny"]
        method_names = {"mert-tiny": 2.0, "musicfm-tiny": 3.0}
        batch, ft = 2, ("musicfm-tiny", 2, 3.0, 2)
    else:
        bf16_names = [n for n, s in BACKBONES.items() if s.pretrained and not s.baseline]
        method_names = {"mert-v1-95m": 5.0, "musicfm-msd": 30.0}
        batch, ft = 16, ("musicfm-msd", 16, 30.0, 4)
    result = {"device": torch.cuda.get_device_name() if b.cuda else "cpu", "torch": torch.__version__}
    runs = {"pipeline": lambda: part_pipeline(b, ["mert-tiny", "musicfm-tiny"], 10 if a.quick else 40),
            "bf16": lambda: part_bf16(b, bf16_names, 10.0 if not a.quick else 3.0),
            "methods": lambda: part_methods(b, method_names, a.methods.split(","), batch, 6),
            "actckpt": lambda: part_actckpt(b, *ft)}
    for part, run in runs.items():
        if part in parts:
            result[part] = run()
            if a.json:  # after every part: a run cut short still brings back what it measured
                a.json.write_text(json.dumps(result, indent=1) + "\n")
    print(tables(result))


def tables(r: dict) -> str:
    """The result as BENCHMARKS.md tables."""
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = [f"{r['device']}, torch {r['torch']}"]
    if "pipeline" in r:
        lines += ["", "| backbone | method | cached front end | precision | result | train (s) | valid | test accuracy (n) |",
                  "|---|---|---|---|---|---|---|---|"]
        for x in r["pipeline"]:
            head = f"| {x['backbone']} | {x['method']} | {x['cache_frontend']} | {x['precision']} "
            lines.append(head + (f"| {x['error']} | | | |" if "error" in x else
                                 f"| {'ok' if x['ok'] else 'run not on the device'} | {x['train_s']:.1f} "
                                 f"| {x['best_valid']:.3f} | {x['test_accuracy']:.3f} ({x['n_test']}) |"))
    if "bf16" in r:
        lines += ["", "| backbone | layers | hidden states, max rel. error | pooled cosine (min) | LoRA gradients, rel. error |",
                  "|---|---|---|---|---|"]
        lines += [f"| {x['backbone']} | {x['error']} | | | |" if "error" in x else
                  f"| {x['backbone']} | {x['layers']} | {x['hidden_rel_err_max']:.4f} | {x['pooled_cosine_min']:.5f} "
                  f"| {x['lora_grad_rel_err']:.4f} |" for x in r["bf16"]]
    if "methods" in r:
        lines += ["", "| backbone | method | batch x s | audio: samples/s | audio: peak GiB | cached: samples/s "
                  "| cached: peak GiB | cached speed-up |", "|---|---|---|---|---|---|---|---|"]
        for x in r["methods"]:
            if "error" in x:
                lines.append(f"| {x['backbone']} | {x['method']} | {x['batch']} x {x['seconds']:g} | {x['error']} "
                             f"| | | | |")
            elif x["method"] == "probing":
                lines.append(f"| {x['backbone']} | probing | {x['batch']} x {x['seconds']:g} | feature forward "
                             f"{x['feature_forward_samples_s']:.1f}; head step {x['head_step_ms']:.2f} ms "
                             f"| {f(x['peak_gib'], '.2f')} | | | |")
            else:
                lines.append(f"| {x['backbone']} | {x['method']} | {x['batch']} x {x['seconds']:g} "
                             f"| {x['audio_samples_s']:.1f} | {f(x['audio_peak_gib'], '.2f')} "
                             f"| {f(x.get('cached_samples_s'), '.1f')} | {f(x.get('cached_peak_gib'), '.2f')} "
                             f"| {f(x.get('cached_speedup'), '.2f')} |")
    if "actckpt" in r:
        lines += ["", "| full fine-tuning, all layers | samples/s | peak allocated GiB | peak reserved GiB | fits 24 GiB |",
                  "|---|---|---|---|---|"]
        for x in r["actckpt"]:
            if "error" in x:
                lines.append(f"| {x['backbone']}, {x['config']} | {x['error']} | | | {x.get('fits_24gb', '-')} |")
            else:
                lines.append(f"| {x['backbone']}, {x['layers']} layers, {x['config']} ({x['batch']} x {x['seconds']:g} s) "
                             f"| {x['samples_s']:.1f} "
                             f"| {f(x['peak_gib'], '.2f')} | {f(x['reserved_gib'], '.2f')} | {x['fits_24gb']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
