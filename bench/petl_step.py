"""Training step, peak memory and inference cost of each PETL method, same run, both backbones.

    PYTHONPATH=src .venv/bin/python bench/petl_step.py --json petl_step.json   # ~14 min on 2 cores
    PYTHONPATH=src .venv/bin/python bench/petl_step.py --quick                  # tiny backbones, smoke check
    PYTHONPATH=src .venv/bin/python bench/petl_step.py --report petl_step.json # tables of a saved run
    PYTHONPATH=src .venv/bin/python bench/petl_step.py --breakdown              # phases of a step, ~4 min

Set-up: random weights at full size (speed does not depend on the values), first 6 layers, batch
2 x 5 s of 24 kHz audio (2, 120000), fp32, 2 threads, the paper's MLP head (`PetlModel`), 10 classes.

Systems (each measurement runs in a fresh subprocess; systems are interleaved round by round, the
order reversed every other round, so that load from other processes hits them alike):
  train/<method>   training step = zero_grad, `PetlModel` forward in train mode, cross-entropy,
                   backward, Adam step over the trainable parameters (backbone + head); 1 warm-up
                   step (it allocates Adam's state), then `--steps` timed steps.
                   Peak memory: kernel RSS high-water mark (VmHWM, reset through /proc/self/clear_refs
                   just before the warm-up step) over all steps: weights + gradients + Adam state +
                   activations; "extra" = that peak - the RSS before the first step.
  train/probing    probing trains the head on cached features, so its step is the head's alone, on a
                   (2, d) batch of pooled features ("head only on cached features"). What it pays per
                   batch instead is computing those features once: the no-grad eval-mode backbone
                   forward, which is exactly infer/bare, reported as its "feature forward". The process
                   runs that forward once (to get the features): its peak memory covers it.
  infer/bare       no-grad eval-mode forward of the plain backbone (all 6 hidden states).
  infer/<method>   the same after `apply_method` and `prepare_for_inference` (merged for bitfit, ssf,
                   lora; adapter, prompt, prefix run as they are). finetune and probing leave the
                   architecture untouched: their inference is `bare` by construction and not re-timed.
                   1 warm-up forward, then `--forwards` timed forwards (cheap next to a step: more
                   samples for a ratio whose target is 1.00).

Reported per system: median over all timed steps / forwards of all rounds, of the wall time and of
the process CPU time (all threads; the JSON also has the fastest step); peak RSS = max over rounds.
Time ratios (step / finetune step, inference / bare inference): per round, median / median of the
reference in the same round (a change of load between rounds cancels), then the geometric mean over
rounds, with the rounds' range. Memory ratios: peak RSS / finetune's, step extra / finetune's. The
CPU-time ratios are a cross-check that waiting for a core does not inflate; they count a
single-threaded phase half as much as a 2-thread one, so they part from the wall ratios where the
two systems' parallelism differs.

`--breakdown` times the phases of a training step instead (front end, layers forward, head + loss,
backward, Adam; one process per backbone and method, no rounds): where the step ratios come from.

Workers run with OMP_WAIT_POLICY=PASSIVE (`--omp-wait-policy` to change it): on 2 cores shared with
another job, libgomp's default spin-wait lets one thread spin through its time slice waiting for its
descheduled partner, so every 2-thread op can cost a whole slice (measured on the benchmark machine
under such load: 100 in-place multiplies of a 590k-element tensor took 770 ms with the default policy,
3 ms on 1 thread, 4 ms with PASSIVE). The policy only changes how idle threads wait.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from procmem import proc_status_mib, reset_peak_rss  # bench/procmem.py (the script's folder)

ROOT = Path(__file__).resolve().parents[1]
PAPER_METHODS = ("finetune", "probing", "adapter", "prompt", "prefix", "bitfit", "ssf", "lora")
FULL = {"mert": "mert-v1-95m", "musicfm": "musicfm-msd"}
TINY = {"mert": "mert-tiny", "musicfm": "musicfm-tiny"}
N_OUT = 10
MERGED = ("bitfit", "ssf", "lora", "dora", "ia3", "loha", "lokr")


def settle() -> float:
    """Collect garbage, hand freed heap back to the kernel, return the RSS (MiB)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return proc_status_mib("VmRSS")


def worker(args) -> dict:
    import torch
    import torch.nn.functional as F

    from musicpetl.backbones import build_backbone
    from musicpetl.model import PetlModel
    from musicpetl.petl import apply_method, prepare_for_inference

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    kind, method = args.worker.split("/")
    backbone = build_backbone(args.backbone, num_layers=args.layers, seed=0)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(args.batch, int(args.seconds * backbone.sample_rate), generator=g) - 0.5) * 0.6
    y = torch.randint(0, N_OUT, (args.batch,), generator=g)
    res = {"system": args.worker, "backbone": args.backbone, "threads": torch.get_num_threads(),
           "loadavg_start": os.getloadavg()[0]}

    def timed_forwards(model, n: int) -> tuple[list[float], list[float], float]:
        model.eval()
        before = settle()
        reset_peak_rss()
        times, cpu = [], []
        with torch.no_grad():
            for _ in range(n + 1):
                t0, c0 = time.perf_counter(), time.process_time()
                out = model(x, args.layers)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                del out
        return times[1:], cpu[1:], proc_status_mib("VmHWM") - before

    if kind == "infer":
        if method != "bare":
            apply_method(backbone, method)
            backbone = prepare_for_inference(backbone, method)
        res["times"], res["cpu_times"], res["forward_extra_mib"] = timed_forwards(backbone, args.forwards)
        res["peak_rss_mib"] = proc_status_mib("VmHWM")
        res["loadavg_end"] = os.getloadavg()[0]
        return res

    apply_method(backbone, method)
    model = PetlModel(backbone, N_OUT, args.layers, method=method)
    if kind == "breakdown":
        return {**res, "phases": breakdown_steps(model, x, y, args)}
    res["trainable_backbone"] = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    res["trainable_head"] = sum(p.numel() for p in model.head.parameters())
    if method == "probing":
        # probing's per-batch backbone cost is computing the features once (no grad, eval mode, as
        # cache_features): exactly what infer/bare times, so here it runs once, for the features and
        # for the peak memory; the training step is the head's alone on those cached features
        backbone.eval()
        before = settle()
        reset_peak_rss()
        t0 = time.perf_counter()
        with torch.no_grad():
            feats = backbone(x, args.layers)[-1].mean(dim=1)  # what the cache stores for the head's layer
        res["feature_forward_once_s"] = time.perf_counter() - t0
        module, inputs = model.head, feats
    else:
        module, inputs = model, x
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)
    module.train()
    if method != "probing":  # probing: the peak stays the feature forward's, its real peak
        before = settle()
        reset_peak_rss()
    times, cpu = [], []
    for _ in range(args.steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(module(inputs), y)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        del loss
    res["times"], res["cpu_times"] = times[1:], cpu[1:]
    res["peak_rss_mib"] = proc_status_mib("VmHWM")
    res["rss_before_mib"] = before
    res["step_extra_mib"] = res["peak_rss_mib"] - before
    res["loadavg_end"] = os.getloadavg()[0]
    return res


def breakdown_steps(model, x, y, args) -> dict[str, list[float]]:
    """Training steps as `Backbone.forward` runs them, each phase timed on its own."""
    import torch
    import torch.nn.functional as F

    bb, n = model.backbone, args.layers
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)
    model.train()
    phases = {k: [] for k in ("front end", "layers forward", "head + loss", "backward", "Adam")}
    for it in range(args.steps + 1):
        opt.zero_grad(set_to_none=True)
        t = [time.perf_counter()]
        with torch.set_grad_enabled(bb.frontend_trainable()):
            h = bb.embed(x)
        t.append(time.perf_counter())
        h = bb.encode(h, n)[-1]  # prompt tokens already removed
        t.append(time.perf_counter())
        loss = F.cross_entropy(model.head(h.mean(dim=1)), y)
        t.append(time.perf_counter())
        loss.backward()
        t.append(time.perf_counter())
        opt.step()
        t.append(time.perf_counter())
        if it:  # the first step is the warm-up
            for k, a, b in zip(phases, t, t[1:]):
                phases[k].append(b - a)
    return phases


def run_breakdown(args, methods: list[str], names: dict, env: dict) -> None:
    """One process per backbone and training method: where a step's time goes (no rounds)."""
    print(f"Phases of a training step, ms (median of {args.steps} steps after 1 warm-up, one process each; "
          f"front end: no autograd unless it trains, i.e. for finetune only):\n")
    for bb in args.backbones:
        print(f"{bb} ({names[bb]}):\n")
        rows = []
        for method in (m for m in methods if m != "probing"):
            cmd = [sys.executable, __file__, "--worker", f"breakdown/{method}", "--backbone", names[bb],
                   "--seconds", str(args.seconds), "--layers", str(args.layers), "--batch", str(args.batch),
                   "--threads", str(args.threads), "--steps", str(args.steps), "--forwards", "0"]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if res.returncode:
                sys.exit(f"{bb} breakdown/{method} failed:\n{res.stderr[-3000:]}")
            phases = json.loads(res.stdout.strip().splitlines()[-1])["phases"]
            rows.append((method, {k: 1000 * statistics.median(v) for k, v in phases.items()}))
        keys = list(rows[0][1])
        print("| method | " + " | ".join(keys) + " | total |")
        print("|---|" + "---|" * (len(keys) + 1))
        for method, ms in rows:
            print(f"| {method} | " + " | ".join(f"{ms[k]:.0f}" for k in keys) + f" | {sum(ms.values()):.0f} |")
        print()


def systems_for(methods: list[str]) -> list[str]:
    out = [f"train/{m}" for m in methods]
    out.append("infer/bare")
    out += [f"infer/{m}" for m in methods if m not in ("finetune", "probing")]
    return out


def fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k" if n >= 1e3 else str(n)


def round_ratios(r: dict, ref: dict, key: str = "times") -> list[float]:
    """Per round: median of this system's samples / median of the reference's, same round."""
    return [statistics.median(a[key]) / statistics.median(b[key]) for a, b in zip(r["runs"], ref["runs"])]


def ratio_cell(r: dict, ref: dict, key: str = "times", spread: bool = True) -> str:
    """Geometric mean over rounds of the within-round ratio, and the rounds' range."""
    rs = round_ratios(r, ref, key)
    g = statistics.geometric_mean(rs)
    f = (lambda v: f"{v:.2f}") if g >= 0.005 else (lambda v: f"{v:.0e}")
    return f"{f(g)} ({f(min(rs))}-{f(max(rs))})" if spread and len(rs) > 1 else f(g)


def report(rows: dict, meta: dict) -> str:
    lines = [f"{meta['batch']} x {meta['seconds']:g} s, {meta['layers']} layers, fp32, {meta['threads']} threads "
             f"(OMP_WAIT_POLICY {meta['omp_wait_policy']}); "
             f"ms: median of {meta['rounds']} processes x {meta['steps']} timed steps / "
             f"{meta.get('forwards', meta['steps'])} forwards (after 1 warm-up each); torch {meta['torch']}; {meta['wall_s']:.0f} s in all; 1-min load average during the run "
             f"{meta['load_min']:.1f}-{meta['load_max']:.1f}. Time ratios: geometric mean over rounds of the "
             f"ratio within the round (in brackets: the rounds' range); memory ratios: of the peaks.", ""]
    for bb, sys_rows in rows.items():
        ft, bare = sys_rows["train/finetune"], sys_rows["infer/bare"]
        head = ft["trainable_head"]
        lines += [f"{bb} ({meta['names'][bb]}); every method also trains the head ({fmt_params(head)} parameters):", "",
                  "| method | trainable backbone params | step (ms) | step / FT | step / FT (CPU time) | peak RSS (MiB) "
                  "| peak / FT | step extra / FT | inference (ms) | inference / bare | inference / bare (CPU time) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        lines.append(f"| bare backbone (no grad) | | | | | | | | {bare['ms']:.0f} | 1.00 | 1.00 |")
        for name, r in sys_rows.items():
            kind, method = name.split("/")
            if kind != "train":
                continue
            step = f"{r['ms']:.0f}" if r["ms"] >= 10 else f"{r['ms']:.2f}"
            train_cells = (f"{fmt_params(r['trainable_backbone'])} | {step} | {ratio_cell(r, ft)} | "
                           f"{ratio_cell(r, ft, 'cpu_times', False)} | {r['peak_rss_mib']:.0f} | "
                           f"{r['peak_rss_mib'] / ft['peak_rss_mib']:.2f} | {r['step_extra_mib'] / ft['step_extra_mib']:.2f}")
            if method in ("finetune", "probing"):
                infer_cells = "= bare | 1.00 | 1.00"
            else:
                inf = sys_rows[f"infer/{method}"]
                tag = " (merged)" if method in MERGED else ""
                infer_cells = f"{inf['ms']:.0f}{tag} | {ratio_cell(inf, bare)} | {ratio_cell(inf, bare, 'cpu_times', False)}"
            if method == "probing":
                lines.append(f"| probing: head-only step on cached features | {train_cells} | {infer_cells} |")
                lines.append(f"| probing: feature forward (no grad, computed once and cached; = bare inference) | | {bare['ms']:.0f} | "
                             f"{ratio_cell(bare, ft)} | {ratio_cell(bare, ft, 'cpu_times', False)} | | | | | | |")
            else:
                lines.append(f"| {method} | {train_cells} | {infer_cells} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=list(FULL), choices=list(FULL))
    ap.add_argument("--methods", nargs="+", default=list(PAPER_METHODS),
                    help="PETL methods (finetune is always added: the ratios need it)")
    ap.add_argument("--steps", type=int, default=2, help="timed training steps per process (after 1 warm-up)")
    ap.add_argument("--forwards", type=int, default=4, help="timed inference forwards per process (after 1 warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="fresh processes per system, interleaved")
    ap.add_argument("--quick", action="store_true", help="tiny backbones, 1 round: a smoke check")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--omp-wait-policy", default="PASSIVE", choices=["PASSIVE", "ACTIVE", "default"],
                    help="OMP_WAIT_POLICY of the workers (default PASSIVE: see the docstring)")
    ap.add_argument("--report", type=Path, help="print the tables of a saved --json and exit")
    ap.add_argument("--breakdown", action="store_true",
                    help="instead: time the phases of a training step (front end, layers, backward, Adam)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--backbone", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.report:
        saved = json.loads(args.report.read_text())
        print(report(saved["rows"], saved["meta"]))
        return
    from musicpetl.petl import METHODS

    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        ap.error(f"unknown method(s) {unknown}; valid: {', '.join(METHODS)}")
    methods = ["finetune"] + [m for m in dict.fromkeys(args.methods) if m != "finetune"]
    if args.quick:
        args.rounds = 1
    names = TINY if args.quick else FULL
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads)}
    env.pop("OMP_WAIT_POLICY", None)
    if args.omp_wait_policy != "default":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    if args.breakdown:
        run_breakdown(args, methods, names, env)
        return
    order = [(bb, s) for bb in args.backbones for s in systems_for(methods)]
    runs = {bb: {s: [] for s in systems_for(methods)} for bb in args.backbones}
    t_start = time.time()
    for r in range(args.rounds):
        for bb, system in (order if r % 2 == 0 else order[::-1]):
            cmd = [sys.executable, __file__, "--worker", system, "--backbone", names[bb], "--seconds", str(args.seconds),
                   "--layers", str(args.layers), "--batch", str(args.batch), "--threads", str(args.threads),
                   "--steps", str(args.steps), "--forwards", str(args.forwards)]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if res.returncode:
                sys.exit(f"{bb} {system} failed:\n{res.stderr[-3000:]}")
            run = json.loads(res.stdout.strip().splitlines()[-1])
            runs[bb][system].append(run)
            if args.json:  # progress so far, in case the run is cut short; replaced by the results at the end
                args.json.write_text(json.dumps({"partial": True, "runs": runs}))
            times = run["times"]
            feat = f"  feature forward {run['feature_forward_once_s']:.2f} s" if "feature_forward_once_s" in run else ""
            print(f"round {r + 1} {bb:8s} {system:16s} {' '.join(f'{t:.3f}' for t in times)} s (CPU "
                  f"{' '.join(f'{t:.2f}' for t in run['cpu_times'])} s){feat}  "
                  f"peak RSS {run['peak_rss_mib']:.0f} MiB  [{time.time() - t_start:.0f} s]", file=sys.stderr)
    rows = {}
    for bb, per in runs.items():
        rows[bb] = {}
        for system, rs in per.items():
            row = {"ms": 1000 * statistics.median(t for run in rs for t in run["times"]),
                   "min_ms": 1000 * min(t for run in rs for t in run["times"]),
                   "cpu_ms": 1000 * statistics.median(t for run in rs for t in run["cpu_times"]),
                   "peak_rss_mib": max(run["peak_rss_mib"] for run in rs), "runs": rs}
            if system.startswith("train"):
                row["step_extra_mib"] = max(run["step_extra_mib"] for run in rs)
                row["trainable_backbone"] = rs[0]["trainable_backbone"]
                row["trainable_head"] = rs[0]["trainable_head"]
            rows[bb][system] = row
    import torch

    loads = [run[k] for per in runs.values() for rs in per.values() for run in rs for k in ("loadavg_start", "loadavg_end")]
    meta = {"omp_wait_policy": args.omp_wait_policy, "load_min": min(loads), "load_max": max(loads), "batch": args.batch, "seconds": args.seconds, "layers": args.layers, "threads": args.threads,
            "rounds": args.rounds, "steps": args.steps, "forwards": args.forwards, "torch": torch.__version__, "wall_s": time.time() - t_start,
            "names": names}
    print("\n" + report(rows, meta))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
