"""A training step under each OpenMP wait policy, on a CPU shared with other jobs.

    PYTHONPATH=src .venv/bin/python bench/omp_wait_policy.py            # mert-tiny LoRA, batch 8 x 3 s

libgomp reads OMP_WAIT_POLICY when torch's OpenMP runtime loads, so each policy runs in its own
process (alternating, `--rounds` each); each process times `--steps` LoRA training steps of
mert-tiny (batch 8 x 3 s, 2 threads) after one warm-up and prints their median. What it shows
depends on the load: on an idle machine both policies are close; with other jobs on the cores the
default spin-wait loses whole time slices (musicpetl/__init__.py sets PASSIVE unless the user
chose a policy).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER = """
import statistics, time, torch
from musicpetl.backbones import build_backbone
from musicpetl.model import PetlModel
from musicpetl.petl import apply_method
torch.set_num_threads(2)
bb = build_backbone("mert-tiny", 6, seed=0)
apply_method(bb, "lora", {"rank": 2, "alpha": 2})
m = PetlModel(bb, 10, 6, method="lora").train()
x, y = 0.1 * torch.randn(8, 72000), torch.arange(8) % 10
opt = torch.optim.Adam(m.trainable_parameters(), 1e-3)
ts = []
for i in range(STEPS + 1):
    t0 = time.perf_counter()
    opt.zero_grad(); torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()
    ts.append(time.perf_counter() - t0)
print(statistics.median(ts[1:]))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    out: dict[str, list[float]] = {"ACTIVE (libgomp default)": [], "PASSIVE": []}
    load = os.getloadavg()[0]
    for r in range(args.rounds):
        for policy in (list(out) if r % 2 == 0 else list(out)[::-1]):
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
            env.pop("OMP_WAIT_POLICY", None)
            env["OMP_WAIT_POLICY"] = policy.split()[0]
            res = subprocess.run([sys.executable, "-c", WORKER.replace("STEPS", str(args.steps))], env=env,
                                 capture_output=True, text=True, check=True)
            out[policy].append(float(res.stdout.strip().splitlines()[-1]))
    print(f"1-min load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    print("| OMP_WAIT_POLICY | step (median of processes' medians) | per process |")
    print("|---|---|---|")
    for policy, ts in out.items():
        print(f"| {policy} | {statistics.median(ts):.2f} s | {', '.join(f'{t:.2f}' for t in ts)} |")


if __name__ == "__main__":
    main()
