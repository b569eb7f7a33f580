"""Benchmarks of issue 11 ("training at scale"), full-size architectures with random weights, CPU.

    PYTHONPATH=src .venv/bin/python bench/scale.py frontend   --json /tmp/frontend.json    # cached front end vs not
    PYTHONPATH=src .venv/bin/python bench/scale.py probing    --json /tmp/probing.json     # probing epoch: cache vs backbone
    PYTHONPATH=src .venv/bin/python bench/scale.py cache      --json /tmp/cache.json       # feature cache writing, memory
    PYTHONPATH=src .venv/bin/python bench/scale.py checkpoint --json /tmp/checkpoint.json  # checkpoint write time and size
    PYTHONPATH=src .venv/bin/python bench/scale.py actckpt    --json /tmp/actckpt.json     # FT memory, activation checkpointing
    PYTHONPATH=src .venv/bin/python bench/scale.py cachedstep --json /tmp/cachedstep.json  # what the cached step spends on dropout
    PYTHONPATH=src .venv/bin/python bench/scale.py store      --json /tmp/store.json       # prepare_store memory vs split size

(`--quick`: tiny backbones, a smoke check of the script.) Every measurement runs in a fresh
subprocess (its peak RSS is its own), 2 torch threads, OMP_WAIT_POLICY=PASSIVE (see petl_step.py);
random weights at full size (speed does not depend on the values), first 6 layers.

frontend    PETL training step (zero_grad, forward in train mode, cross-entropy, backward, Adam),
            batch 2 x 5 s, as in petl_step.py: `audio` = the backbone from audio (the front end runs
            without autograd every step), `cached` = the same model from cached front-end frames,
            read from a real front-end cache (HDF5, through FrameDataset) every step. Both in one
            process, one step of each in turn (order alternating), 1 warm-up pair, then --steps
            pairs; medians, and the median of the pairs' time ratios. --methods picks the methods.
probing     one epoch of probing over --items training items (batch 8): `cache` = head steps on
            pooled features from the feature cache in memory; `backbone` = the same with each batch's
            5 s crops through the frozen backbone (no grad) first, timed over 2 steps and scaled to
            the epoch's steps.
cache       `cache_features` over N clips of 10 s (5 s segments, batch 8) vs the bare no-grad forward
            over the same batches of segments (results discarded: the difference is what caching
            adds), each in its own process, at two N; peak RSS of each; then the written features re-written with each
            compression (none / lzf / gzip 1) and dtype, timing the HDF5 write alone, and the sizes.
actckpt     MusicFM full fine-tuning, all 12 layers, batch 2 x --seconds: one step (after a warm-up
            step) with and without activation checkpointing; its time and the RSS it adds on top of
            weights, gradients and Adam's state (the activations).
cachedstep  where the cached PETL step (frontend's `cached`) could still get shorter, three models in one
            process, steps in rotation: `paper` = as trained (the paper's dropouts); `no-dropout` = the
            same with every backbone dropout at p = 0 (NOT a training configuration: it prices the
            dropout masks, which torch draws serially on this CPU); `compiled` = `paper` through
            torch.compile (default inductor; its compile time reported apart). --methods picks them.
store       prepare_store over N clips of 2 s decoded from memory (no files), at two N: traced peak
            memory (tracemalloc: numpy's buffers included) against the split's int16 size, and time.
checkpoint  one checkpoint as train() writes it (trained tensors, Adam state after one step, best
            state, RNG, history) per paper method and backbone: write time (fsync included) and size.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procmem import proc_status_mib, reset_peak_rss  # bench/procmem.py

ROOT = Path(__file__).resolve().parents[1]
FULL = {"mert": "mert-v1-95m", "musicfm": "musicfm-msd"}
TINY = {"mert": "mert-tiny", "musicfm": "musicfm-tiny"}
N_OUT = 10


def _backbone(name: str, layers: int = 6):
    from musicpetl.backbones import build_backbone

    return build_backbone(name, num_layers=layers, seed=0)


def _audio(batch: int, seconds: float, sr: int = 24000, seed: int = 1):
    import torch

    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, int(seconds * sr), generator=g) - 0.5) * 0.6


# -- workers --------------------------------------------------------------------------------------

def w_frontend(a) -> dict:
    """Both paths in one process, a step of each in turn (load drifts hit them alike)."""
    import torch
    import torch.nn.functional as F

    from musicpetl.frontend_cache import FrameDataset, FrontendCache, build, frontend_fingerprint
    from musicpetl.model import PetlModel
    from musicpetl.petl import apply_method

    backbone = _backbone(a.backbone)
    apply_method(backbone, a.method)
    model = PetlModel(backbone, N_OUT, 6, method=a.method)
    x = _audio(2, 5.0)
    y = torch.randint(0, N_OUT, (2,), generator=torch.Generator().manual_seed(2))

    class Store:  # the two 5 s clips as the prepared store serves them
        def rows(self, split):
            return [{"key": f"c{i}", "length": x.shape[1]} for i in range(2)]

        def audio(self, row):
            return x[int(row["key"][1:])].numpy()

    tmp = Path(tempfile.mkdtemp()) / "frontend.h5"
    n = x.shape[1]
    fp = frontend_fingerprint(backbone, {}, n, n, "float32")
    t0 = time.perf_counter()
    build(tmp, Store(), "train", backbone, n, n, "float32", fp, batch_size=2, progress=False)
    build_s = time.perf_counter() - t0
    data = FrameDataset(FrontendCache(tmp, expect=fp), lambda i, start: y[i].numpy())
    paths = {"audio": (lambda: (x, y), model),
             "cached": (lambda: data.batch(torch.arange(2), torch.zeros(2, dtype=torch.long)), model.forward_embedded)}
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)
    model.train()
    times = {k: [] for k in paths}
    for it in range(a.steps + 1):
        for name in (("audio", "cached") if it % 2 == 0 else ("cached", "audio")):
            batch, forward = paths[name]
            t0 = time.perf_counter()
            xb, yb = batch()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(forward(xb), yb).backward()
            opt.step()
            if it:  # the first pair is the warm-up
                times[name].append(time.perf_counter() - t0)
    ratios = [u / c for u, c in zip(times["audio"], times["cached"])]
    return {"backbone": a.backbone, "method": a.method, "audio_step_s": statistics.median(times["audio"]),
            "cached_step_s": statistics.median(times["cached"]), "speedup_median_of_pairs": statistics.median(ratios),
            "times": times, "cache_build_s": build_s, "loadavg": os.getloadavg()[0]}


def w_cachedstep(a) -> dict:
    """The cached step as trained, with its dropout masks priced, and through torch.compile."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from musicpetl.model import PetlModel
    from musicpetl.petl import apply_method

    def make(no_dropout: bool):
        backbone = _backbone(a.backbone)
        apply_method(backbone, a.method)
        model = PetlModel(backbone, N_OUT, 6, method=a.method)
        if no_dropout:  # every dropout the backbone applies: modules and functional rates
            for m in backbone.modules():
                if isinstance(m, nn.Dropout):
                    m.p = 0.0
                elif isinstance(getattr(m, "dropout", None), float):
                    m.dropout = 0.0
        model.train()
        return model, torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=1e-4)

    x = _audio(2, 5.0)
    y = torch.randint(0, N_OUT, (2,), generator=torch.Generator().manual_seed(2))
    models = {"paper": make(False), "no-dropout": make(True), "compiled": make(False)}
    with torch.no_grad():
        frames = models["paper"][0].backbone.eval().embed(x)  # what the front-end cache holds
    steps = {}
    for name, (model, opt) in models.items():
        model.train()
        fwd = torch.compile(model.forward_embedded) if name == "compiled" else model.forward_embedded

        def step(fwd=fwd, opt=opt):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(fwd(frames), y).backward()
            opt.step()

        steps[name] = step
    t0 = time.perf_counter()
    steps["compiled"]()
    compile_s = time.perf_counter() - t0
    order = list(steps)
    times = {k: [] for k in steps}
    for r in range(a.steps + 1):
        for name in order[r % 3:] + order[:r % 3]:
            t0 = time.perf_counter()
            steps[name]()
            if r:  # round 0 warms every model up
                times[name].append(time.perf_counter() - t0)
    ratio = {k: statistics.median(u / v for u, v in zip(times[k], times["paper"])) for k in times}
    return {"backbone": a.backbone, "method": a.method, "median_s": {k: statistics.median(v) for k, v in times.items()},
            "over_paper_median_of_rounds": ratio, "compile_and_first_step_s": compile_s, "times": times,
            "loadavg": os.getloadavg()[0]}


def w_store(a) -> dict:
    """prepare_store's peak memory for a split of `clips` 2-s clips (made on demand by `decode`)."""
    import tracemalloc

    import numpy as np

    from musicpetl.data.store import prepare_store

    sr = 24000
    rows = [{"key": f"c{i}", "split": "train", "audio_path": f"c{i}.wav", "label": 0} for i in range(a.clips)]
    work = Path(tempfile.mkdtemp(dir=a.work))
    tracemalloc.start()
    t0 = time.perf_counter()
    prepare_store(rows, work, work / "store", sr, {"task": "genre"}, progress=False,
                  decode=lambda path, rate: np.full(2 * sr, 0.1, np.float32))
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"clips": a.clips, "split_mib": a.clips * 2 * sr * 2 / 2**20, "peak_traced_mib": peak / 2**20,
            "seconds": seconds}


def w_probing(a) -> dict:
    import torch
    import torch.nn.functional as F

    from musicpetl.model import PetlModel
    from musicpetl.petl import apply_method

    backbone = _backbone(a.backbone)
    apply_method(backbone, "probing")
    model = PetlModel(backbone, N_OUT, 6, method="probing")
    head, batch = model.head, 8
    steps = a.items // batch
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(a.items, backbone.hidden_size, generator=g)
    y = torch.randint(0, N_OUT, (a.items,), generator=g)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    head.train()
    if a.path == "cache":
        t0 = time.perf_counter()
        perm = torch.randperm(a.items, generator=g)
        for s in range(steps):
            idx = perm[s * batch:(s + 1) * batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(head(feats[idx]), y[idx]).backward()
            opt.step()
        return {"backbone": a.backbone, "path": "cache", "epoch_s": time.perf_counter() - t0, "steps": steps}
    x = _audio(batch, 5.0)
    backbone.eval()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        with torch.no_grad():
            pooled = backbone(x, 6)[-1].mean(dim=1)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(head(pooled), y[:batch]).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    per_step = statistics.median(times[1:])
    return {"backbone": a.backbone, "path": "backbone", "step_s": per_step, "epoch_s": per_step * steps,
            "steps": steps, "measured_steps": 2}


def _clip_store(n: int, seconds: float, root: Path):
    """A prepared store of n random clips (prepare_store's layout), built once per size."""
    import numpy as np

    from musicpetl.data.store import AudioStore
    from musicpetl.io import write_json, write_jsonl

    if not (root / "meta.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        length = int(seconds * 24000)
        rng = np.random.default_rng(0)
        pcm = (rng.uniform(-0.3, 0.3, n * length) * 32767).astype(np.int16)
        np.save(root / "train.npy", pcm)
        for split in ("valid", "test"):
            np.save(root / f"{split}.npy", np.zeros(0, np.int16))
        write_jsonl(root / "index.jsonl", [{"key": f"c{i}", "split": "train", "label": 0, "offset": i * length,
                                            "length": length} for i in range(n)])
        write_json(root / "meta.json", {"task": "genre", "classes": ["a"], "sample_rate": 24000})
    return AudioStore(root)


def w_cache(a) -> dict:
    import torch

    from musicpetl.features import cache_features

    torch.set_grad_enabled(False)
    store = _clip_store(a.clips, 10.0, Path(a.work) / f"store{a.clips}")
    backbone = _backbone(a.backbone)
    backbone.eval()
    before = proc_status_mib("VmRSS")
    reset_peak_rss()
    t0 = time.perf_counter()
    if a.path == "cache":
        out = Path(a.work) / f"features{a.clips}.h5"
        cache_features(store, backbone, out, 6, 5.0, batch_size=8, progress=False)
    else:  # the same batches of segments through the same forward, nothing kept or written
        from musicpetl.features import segment_batches

        for ids, starts, waves in segment_batches(store, store.rows("train"), backbone.segment_length(5.0), 8):
            torch.stack(backbone(waves, 6), dim=1).mean(dim=2)
    seconds = time.perf_counter() - t0
    return {"backbone": a.backbone, "path": a.path, "clips": a.clips, "seconds": seconds,
            "peak_rss_mib": proc_status_mib("VmHWM"), "rss_before_mib": before,
            "extra_mib": proc_status_mib("VmHWM") - before}


def w_compress(a) -> dict:
    import h5py
    import numpy as np

    from musicpetl.features import CHUNK_BYTES, _compression

    with h5py.File(Path(a.work) / f"features{a.clips}.h5") as h5:
        feats = h5["train/features"][:]
    out = {}
    for dtype in ("float32", "float16"):
        data = feats.astype(dtype)
        rows = min(len(data), max(1, CHUNK_BYTES // (data.shape[2] * data.itemsize)))
        for comp in ("none", "lzf", "gzip"):
            path = Path(a.work) / f"c-{dtype}-{comp}.h5"
            t0 = time.perf_counter()
            with h5py.File(path, "w") as h5:
                h5.create_dataset("f", data=data, chunks=(rows, 1, data.shape[2]), **_compression(comp))
            out[f"{dtype}/{comp}"] = {"write_s": time.perf_counter() - t0, "bytes": path.stat().st_size}
            t0 = time.perf_counter()
            with h5py.File(path) as h5:
                h5["f"][:, 5]
            out[f"{dtype}/{comp}"]["read_one_layer_s"] = time.perf_counter() - t0
            path.unlink()
    return {"backbone": a.backbone, "segments": int(feats.shape[0]), "raw_bytes_f32": int(feats.nbytes),
            "compression": out}


def w_checkpoint(a) -> dict:
    import torch
    import torch.nn.functional as F

    from musicpetl.checkpointing import Checkpointer, MetricLog, rng_state
    from musicpetl.model import PetlModel
    from musicpetl.petl import apply_method, get_method
    from musicpetl.run_io import trained_state

    backbone = _backbone(a.backbone)
    apply_method(backbone, a.method)
    model = PetlModel(backbone, N_OUT, 6, method=a.method)
    module = model.head if get_method(a.method).uses_feature_cache else model
    params = [q for q in module.parameters() if q.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)
    if a.method == "probing":
        xin = torch.randn(2, backbone.hidden_size)
    else:
        xin = _audio(2, 1.0)
    F.cross_entropy(module(xin), torch.tensor([0, 1])).backward()
    opt.step()
    log = MetricLog()
    for s in range(1, 1001):  # a 1000-step history
        log.log(s, "train/loss", 1.0)
        log.log(s, "train/lr", 1e-4)
    ck = Checkpointer(Path(a.work) / "ckpt", a.method, 1)
    t0 = time.perf_counter()
    state = {"step": 1000, "stopped": False, "world": 1, "model": trained_state(model, a.method),
             "optimizer": opt.state_dict(), "best": {"score": 0.5, "step": 900,
                                                     "state": trained_state(model, a.method), "bad": 0},
             "history": log.state(), "rng": rng_state()}
    gather_s = time.perf_counter() - t0
    info = ck.save(state)
    ck.clear()
    return {"backbone": a.backbone, "method": a.method, "write_s": info["seconds"], "gather_s": gather_s,
            "bytes": info["bytes"]}


def w_actckpt(a) -> dict:
    import gc

    import torch
    import torch.nn.functional as F

    from musicpetl.model import PetlModel, set_activation_checkpointing
    from musicpetl.petl import apply_method

    backbone = _backbone(a.backbone, a.layers)
    apply_method(backbone, "finetune")
    model = PetlModel(backbone, N_OUT, a.layers, method="finetune")
    if a.path == "checkpointed":
        set_activation_checkpointing(model)
    x = _audio(2, a.seconds)
    y = torch.tensor([0, 1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    model.train()
    opt.zero_grad(set_to_none=True)  # warm-up step: allocates Adam's state and the gradients
    F.cross_entropy(model(x), y).backward()
    opt.step()
    gc.collect()
    before = proc_status_mib("VmRSS")
    reset_peak_rss()
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=False)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    return {"backbone": a.backbone, "path": a.path, "layers": a.layers, "seconds_audio": a.seconds,
            "step_s": time.perf_counter() - t0, "step_extra_mib": proc_status_mib("VmHWM") - before,
            "rss_before_mib": before}


WORKERS = {"actckpt": w_actckpt, "cachedstep": w_cachedstep, "store": w_store, "frontend": w_frontend, "probing": w_probing, "cache": w_cache, "compress": w_compress,
           "checkpoint": w_checkpoint}


# -- driver ---------------------------------------------------------------------------------------

def spawn(kind: str, **kw) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, __file__, "--worker", kind] + [f"--{k}={v}" for k, v in kw.items()]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps(out), file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="?", choices=["frontend", "probing", "cache", "checkpoint", "actckpt", "cachedstep", "store"])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--worker")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--backbone")
    ap.add_argument("--method", default="lora")
    ap.add_argument("--methods", default="finetune,probing,adapter,prompt,prefix,bitfit,ssf,lora")
    ap.add_argument("--path")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--sizes", default="8,32")
    ap.add_argument("--store-sizes", default="400,1600")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "musicpetl-bench" / "scale"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.worker:
        import torch

        torch.set_num_threads(a.threads)
        print(json.dumps(WORKERS[a.worker](a)))
        return
    names = TINY if a.quick else FULL
    Path(a.work).mkdir(parents=True, exist_ok=True)
    out: list[dict] = []
    if a.what == "frontend":
        for fam, name in names.items():
            for m in a.methods.split(","):
                out.append(spawn("frontend", backbone=name, method=m, steps=a.steps))
    elif a.what == "store":
        for n in (int(v) for v in a.store_sizes.split(",")):
            out.append(spawn("store", clips=n, work=a.work))
    elif a.what == "cachedstep":
        for fam, name in names.items():
            for m in a.methods.split(","):
                out.append(spawn("cachedstep", backbone=name, method=m, steps=a.steps))
    elif a.what == "probing":
        for fam, name in names.items():
            for path in ("cache", "backbone"):
                out.append(spawn("probing", backbone=name, path=path, items=a.items))
    elif a.what == "cache":
        name = names["mert"]
        for n in (int(s) for s in a.sizes.split(",")):
            for path in ("bare", "cache"):
                out.append(spawn("cache", backbone=name, path=path, clips=n, work=a.work))
        out.append(spawn("compress", backbone=name, clips=max(int(s) for s in a.sizes.split(",")), work=a.work))
    elif a.what == "checkpoint":
        for fam, name in names.items():
            for m in a.methods.split(","):
                out.append(spawn("checkpoint", backbone=name, method=m, work=a.work))
    elif a.what == "actckpt":
        for path in ("plain", "checkpointed"):
            out.append(spawn("actckpt", backbone=names["musicfm"], path=path, layers=a.layers, seconds=a.seconds))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
