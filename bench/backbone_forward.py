"""Forward time and peak memory of our backbones vs their oracles, same run.

    PYTHONPATH=src .venv/bin/python bench/backbone_forward.py            # 30 s, 6 layers, batch 1, fp32, 2 threads

Systems (random weights at full size: speed does not depend on the values):
  mert-ours      our Mert (MERT-v1-95M config), truncated to 6 layers
  mert-hf        transformers HubertModel with the same config and num_hidden_layers=6
  mert330-ours   our Mert (MERT-v1-330M config: 1024 wide, pre-LN), truncated to 6 layers
  mert330-hf     transformers HubertModel, do_stable_layer_norm, num_hidden_layers=6
  musicfm-ours   our MusicFM (MSD config), truncated to 6 layers
  musicfm-hf     tests/test_backbones.py's RefMusicFM25Hz at 6 layers: the reference code's mel and
                 2-D conv front end (written from minzwon/musicfm), then transformers'
                 Wav2Vec2ConformerEncoder (rotary config), the encoder the reference code runs
  muq-ours       our MuQ (MuQ-large-msd-iter config), truncated to 6 layers
  muq-pkg        the `muq` package's MuQ built from the release-shaped config with encoder_depth=6,
                 its whole forward (mel, conv, conformer, prediction head) as `MuQ(x)` runs it
All oracles use attn_implementation="sdpa" (what from_pretrained picks), we use SDPA too.

--paired: time only, every listed system built in one process, one forward of each in turn (order
reversed every round, after 1 warm-up each), --repeats rounds; prints each system's median and, per
pair, the median of the per-round time ratios ours/oracle (load drifts hit both sides of a round
alike; on a shared machine this is the ratio to quote), OMP_WAIT_POLICY=PASSIVE as in bench/petl_step.py.
Memory needs the subprocess mode below.

Each measurement runs in a fresh subprocess (tracemalloc does not see torch's allocations; RSS does).
Reported: forward time (median over all timed forwards of all rounds; systems are interleaved
round by round so that load from other processes hits them alike), the process's peak RSS
(ru_maxrss: model build and imports included, e.g. our loaders build 12 or 24 layers then drop the
rest), and the forward's own extra = kernel high-water mark during the forwards (VmHWM, reset
through /proc/self/clear_refs just before them) - RSS just before them.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from procmem import proc_status_mib, reset_peak_rss  # bench/procmem.py (the script's folder)

PAIRS = {"mert": "mert-v1-95m", "mert330": "mert-v1-330m", "musicfm": "musicfm-msd", "muq": "muq-large-msd-iter"}
ORACLE = {"mert": "hf", "mert330": "hf", "musicfm": "hf", "muq": "pkg"}
SYSTEMS = tuple(f"{pair}-{side}" for pair in PAIRS for side in ("ours", ORACLE[pair]))
ROOT = Path(__file__).resolve().parents[1]


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def build(system: str, num_layers: int):
    """A callable wave -> list of hidden states, in eval mode."""
    from musicpetl.backbones import build_backbone

    pair, side = system.rsplit("-", 1)
    if side == "ours":
        model = build_backbone(PAIRS[pair], num_layers=num_layers).eval()
        return lambda x: model(x, num_layers)
    import transformers

    sys.path.insert(0, str(ROOT / "tests"))
    from test_backbones import MERT_CONFIGS, hubert_config  # the oracle configs of the tests

    if pair in ("mert", "mert330"):
        config = hubert_config(MERT_CONFIGS[PAIRS[pair]], num_layers=num_layers)
        config._attn_implementation = "sdpa"
        hf = transformers.HubertModel(config).eval()
        return lambda x: hf(x, output_hidden_states=True).hidden_states[1:]
    if pair == "muq":
        from dataclasses import replace

        from test_backbones import MUQ_LARGE, muq_forward_compat, muq_release_config
        import muq

        ref = muq.MuQ(muq_release_config(replace(MUQ_LARGE, num_layers=num_layers))).eval()
        muq_forward_compat(ref)
        ref.model.conformer.config._attn_implementation = "sdpa"
        return lambda x: ref(x, output_hidden_states=True).hidden_states[1:]
    from test_backbones import MUSICFM_MSD, RefMusicFM25Hz

    ref = RefMusicFM25Hz(MUSICFM_MSD, num_layers=num_layers).eval()
    ref.conformer.config._attn_implementation = "sdpa"
    return lambda x: ref.hidden_states(x, MUSICFM_MSD.mel_mean, MUSICFM_MSD.mel_std)


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fn = build(args.worker, args.layers)
    x = (torch.rand(args.batch, int(args.seconds * 24000)) - 0.5) * 0.6
    import gc

    gc.collect()
    before = proc_status_mib("VmRSS")
    reset_peak_rss()
    times = []
    with torch.inference_mode():
        for _ in range(args.repeats + 1):
            t0 = time.perf_counter()
            out = fn(x)
            times.append(time.perf_counter() - t0)
            del out
    return {"system": args.worker, "times": times[1:], "peak_rss_mib": maxrss_mib(),
            "rss_before_forward_mib": before, "forward_extra_mib": proc_status_mib("VmHWM") - before,
            "threads": torch.get_num_threads()}


def paired(args) -> None:
    """All systems in this process, a forward of each in turn; per pair the median of per-round ratios."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp (see bench/petl_step.py)
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fns = {system: build(system, args.layers) for system in args.systems}
    x = (torch.rand(args.batch, int(args.seconds * 24000)) - 0.5) * 0.6
    times = {system: [] for system in fns}
    load = [os.getloadavg()[0]]
    with torch.inference_mode():
        for r in range(args.repeats + 1):
            for system in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                t0 = time.perf_counter()
                out = fns[system](x)
                dt = time.perf_counter() - t0
                del out
                if r:  # round 0 is the warm-up
                    times[system].append(dt)
            if r:
                print(f"round {r} " + "  ".join(f"{s} {times[s][-1]:.2f}" for s in fns) + " s", file=sys.stderr)
    load.append(os.getloadavg()[0])
    print(f"\n{args.seconds:g} s of audio, {args.layers} layers, batch {args.batch}, fp32, {args.threads} threads, "
          f"one process, {args.repeats} interleaved rounds after 1 warm-up; 1-min load average {load[0]:.1f} at the "
          f"start, {load[1]:.1f} at the end; torch {torch.__version__}\n")
    print("| backbone | ours median (s) | oracle median (s) | ours/oracle, median of rounds | min, max of rounds |")
    print("|---|---|---|---|---|")
    rows = {}
    for name in PAIRS:
        o, h = times.get(f"{name}-ours"), times.get(f"{name}-{ORACLE[name]}")
        if not (o and h):
            continue
        ratios = [a / b for a, b in zip(o, h)]
        rows[PAIRS[name]] = {"ours_s": o, "oracle_s": h, "ratio_median": statistics.median(ratios)}
        print(f"| {PAIRS[name]} | {statistics.median(o):.2f} | {statistics.median(h):.2f} "
              f"| {statistics.median(ratios):.3f} | {min(ratios):.3f}, {max(ratios):.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"load": load, "pairs": rows}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed forwards per process (after 1 warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="fresh processes per system, interleaved")
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    ap.add_argument("--paired", action="store_true", help="time only: all systems in one process, interleaved")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.paired:
        paired(args)
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads)}
    runs = {system: [] for system in args.systems}
    for r in range(args.rounds):
        for system in args.systems:
            cmd = [sys.executable, __file__, "--worker", system, "--seconds", str(args.seconds), "--layers",
                   str(args.layers), "--batch", str(args.batch), "--threads", str(args.threads), "--repeats",
                   str(args.repeats)]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if res.returncode:
                sys.exit(f"{system} failed:\n{res.stderr[-3000:]}")
            run = json.loads(res.stdout.strip().splitlines()[-1])
            runs[system].append(run)
            print(f"round {r + 1} {system:13s} {' '.join(f'{t:.2f}' for t in run['times'])} s  peak RSS "
                  f"{run['peak_rss_mib']:.0f} MiB  forward extra {run['forward_extra_mib']:.0f} MiB", file=sys.stderr)
    rows = {system: {"seconds": statistics.median(t for run in rs for t in run["times"]),
                     "min_seconds": min(t for run in rs for t in run["times"]),
                     "peak_rss_mib": max(run["peak_rss_mib"] for run in rs),
                     "forward_extra_mib": max(run["forward_extra_mib"] for run in rs), "runs": rs}
            for system, rs in runs.items()}
    import torch

    print(f"\n{args.seconds:g} s of audio, {args.layers} layers, batch {args.batch}, fp32, {args.threads} threads; "
          f"time: median of {args.rounds} processes x {args.repeats} forwards (after 1 warm-up each); "
          f"torch {torch.__version__}\n")
    print("| backbone | ours (s) | oracle (s) | time ours/oracle | ours forward extra (MiB) "
          "| oracle forward extra (MiB) | memory ours/oracle | ours peak RSS (MiB) | oracle peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in PAIRS:
        o, h = rows.get(f"{name}-ours"), rows.get(f"{name}-{ORACLE[name]}")
        if not (o and h):
            continue
        print(f"| {PAIRS[name]} | {o['seconds']:.2f} | {h['seconds']:.2f} | {o['seconds'] / h['seconds']:.2f} "
              f"| {o['forward_extra_mib']:.0f} | {h['forward_extra_mib']:.0f} "
              f"| {o['forward_extra_mib'] / h['forward_extra_mib']:.2f} "
              f"| {o['peak_rss_mib']:.0f} | {h['peak_rss_mib']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
