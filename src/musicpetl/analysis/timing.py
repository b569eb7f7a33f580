"""Figure 2's measurements: training-step time, inference time and peak training memory of every
method, relative to full fine-tuning, measured side by side in one process on the current device.

For each round, every method in turn (the order reversed every other round, so that a change of
machine load hits them alike) gets a fresh copy of the same seeded backbone, `apply_method`, the
paper's head (`PetlModel`) and Adam over what trains; then 1 warm-up and `steps` timed training
steps (zero_grad, forward in train mode, loss, backward, optimizer step), then the model is
prepared for inference (BitFit/SSF/LoRA merged) and 1 warm-up and `forwards` timed no-grad forwards.
Probing's step is the frozen backbone's forward plus the head's step: what probing costs per batch
without the feature cache (the paper's comparison). Reported: medians over all rounds, their ratios
to finetune's, and the peak memory above what was allocated before the model was built (CUDA:
`torch.cuda.max_memory_allocated`; CPU: the process's resident-set high-water mark, VmHWM, reset
through /proc/self/clear_refs on Linux).
"""
from __future__ import annotations

import copy
import ctypes
import gc
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from musicpetl.errors import InputError

PAPER_METHODS = ("finetune", "probing", "adapter", "prompt", "prefix", "bitfit", "ssf", "lora")


def _proc_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory above the level at `start()`: CUDA allocator statistics, or on CPU the kernel's
    RSS high-water mark (tracemalloc does not see torch's allocations; the kernel's counters do)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.base = 0.0
        self.cpu_ok = _proc_mib("VmHWM") is not None

    @property
    def what(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated above the allocation before the model was built"
        return "process RSS high-water mark (VmHWM) above the RSS before the model was built"

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 2**20
            return
        try:  # hand freed heap back to the kernel, so that the previous method's memory is not counted
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        if self.cpu_ok:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
            except OSError:
                self.cpu_ok = False
            self.base = _proc_mib("VmRSS") or 0.0

    def peak_mib(self) -> float | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20 - self.base
        hwm = _proc_mib("VmHWM") if self.cpu_ok else None
        return None if hwm is None else hwm - self.base


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _one_method(base, method: str, cfg: dict | None, x, y, num_layers: int, n_out: int, steps: int,
                forwards: int, device: torch.device, mem: PeakMemory) -> dict:
    from musicpetl.model import PetlModel
    from musicpetl.petl import apply_method, prepare_for_inference

    mem.start()
    backbone = copy.deepcopy(base).to(device)
    apply_method(backbone, method, cfg)
    trainable = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    model = PetlModel(backbone, n_out, num_layers, method=method).to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    step_times = []
    for i in range(steps + 1):  # the first step is the warm-up (it allocates Adam's state)
        _sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        _sync(device)
        if i:
            step_times.append(time.perf_counter() - t0)
        del loss
    peak = mem.peak_mib()
    del opt
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.backbone = prepare_for_inference(model.backbone, method)
    infer_times = []
    with torch.no_grad():
        for i in range(forwards + 1):
            _sync(device)
            t0 = time.perf_counter()
            model(x)
            _sync(device)
            if i:
                infer_times.append(time.perf_counter() - t0)
    del model, backbone
    return {"trainable": trainable, "step_times": step_times, "infer_times": infer_times, "peak_mib": peak}


def measure(backbone_name: str, num_layers: int, methods=PAPER_METHODS, options: dict | None = None, *,
            batch: int = 2, seconds: float = 3.0, steps: int = 3, forwards: int = 3, rounds: int = 2,
            device: str = "auto", seed: int = 0, n_out: int = 10, progress=None) -> dict:
    """{"meta": ..., "methods": {method: {trainable, step_s, infer_s, peak_mib, *_ratio, samples}}}."""
    from musicpetl.backbones import build_backbone
    from musicpetl.device import pick_device
    from musicpetl.petl import METHODS

    methods = ["finetune"] + [m for m in dict.fromkeys(methods) if m != "finetune"]  # the ratios need FT
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"unknown petl method(s) {unknown}; valid: {', '.join(METHODS)}")
    if min(steps, forwards, rounds, batch) < 1 or seconds <= 0:
        raise InputError("steps, forwards, rounds and batch must be >= 1 and seconds > 0")
    dev = pick_device(device)
    torch.manual_seed(seed)
    base = build_backbone(backbone_name, num_layers=num_layers, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = ((torch.rand(batch, int(seconds * base.sample_rate), generator=g) - 0.5) * 0.6).to(dev)
    y = torch.randint(0, n_out, (batch,), generator=g).to(dev)
    mem = PeakMemory(dev)
    samples: dict[str, dict] = {m: {"step_times": [], "infer_times": [], "peaks": []} for m in methods}
    errors: dict[str, str] = {}
    t_start = time.time()
    for r in range(rounds):
        for m in (methods if r % 2 == 0 else methods[::-1]):
            if m in errors:
                continue
            torch.manual_seed(seed)  # the same method init in every round
            try:
                res = _one_method(base, m, (options or {}).get(m), x, y, num_layers, n_out, steps, forwards, dev, mem)
            except (torch.OutOfMemoryError, MemoryError) as err:
                errors[m] = f"out of memory: {str(err).splitlines()[0][:160]}"
                gc.collect()
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            s = samples[m]
            s["trainable"] = res["trainable"]
            s["step_times"] += res["step_times"]
            s["infer_times"] += res["infer_times"]
            if res["peak_mib"] is not None:
                s["peaks"].append(res["peak_mib"])
            if progress:
                progress(f"round {r + 1}/{rounds} {m:<9} step {1000 * statistics.median(res['step_times']):8.1f} ms"
                         f"  inference {1000 * statistics.median(res['infer_times']):8.1f} ms")
    out: dict[str, dict] = {}
    for m in methods:
        s = samples[m]
        if m in errors:
            out[m] = {"error": errors[m]}
            continue
        out[m] = {"trainable": s["trainable"], "step_s": statistics.median(s["step_times"]),
                  "infer_s": statistics.median(s["infer_times"]),
                  "peak_mib": max(s["peaks"]) if s["peaks"] else None,
                  "step_times": s["step_times"], "infer_times": s["infer_times"]}
    ft = out["finetune"]
    for m, r in out.items():
        if "error" in r:
            continue
        ok = "error" not in ft
        r["step_ratio"] = r["step_s"] / ft["step_s"] if ok else None
        r["infer_ratio"] = r["infer_s"] / ft["infer_s"] if ok else None
        r["peak_ratio"] = r["peak_mib"] / ft["peak_mib"] if ok and r["peak_mib"] and ft["peak_mib"] else None
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    meta = {"device": name, "torch": torch.__version__, "backbone": backbone_name, "num_layers": num_layers,
            "batch": batch, "seconds": seconds, "steps": steps, "forwards": forwards, "rounds": rounds,
            "memory": mem.what, "wall_s": round(time.time() - t_start, 1), "options": options or {}}
    return {"meta": meta, "methods": out}


def save(result: dict, path: str | Path) -> dict:
    """Merge one backbone's measurements into `path` (other backbones' kept); returns the whole file."""
    from musicpetl.io import write_json

    path = Path(path)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[result["meta"]["backbone"]] = result
    write_json(path, data)
    return data
