"""Probing a frame-level task (beat): the frozen backbone in the loop vs a per-frame feature cache.

    PYTHONPATH=src .venv/bin/python bench/beat_probing.py            # full-size MERT-95M and MusicFM, ~3 min
    PYTHONPATH=src .venv/bin/python bench/beat_probing.py --tiny     # the embedded default's backbones

What probing pays per training step either way, measured in one process, interleaved round by
round (random weights at full size, first 6 layers, batch 2 x 5 s of 24 kHz audio, fp32, CPU):
  loop   the no-grad eval-mode backbone forward of the batch + the frame head's forward, BCE and
         backward + Adam on the head (what `train` does for probing a frame-level task today)
  cache  the frame head's step alone on (2, T, d) frames (what a per-frame feature cache would leave)
and what a per-frame cache would hold: bytes per hour of audio per stored layer (float16 and float32)
at the backbone's frame rate and width, and for GTZAN (8.3 h) at 1 and 12 layers.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from musicpetl.backbones import BACKBONES, build_backbone
from musicpetl.model import PetlModel
from musicpetl.tasks import make_task

GTZAN_HOURS = 1000 * 30 / 3600  # 1,000 clips of 30 s


def step_times(name: str, rounds: int, steps: int, num_layers: int = 6) -> dict:
    spec = BACKBONES[name]
    torch.manual_seed(0)
    model = PetlModel(build_backbone(name, num_layers, seed=0), 1, num_layers, method="probing", frame_level=True)
    for q in model.backbone.parameters():
        q.requires_grad_(False)
    model.head.train()
    model.backbone.eval()  # frozen: the features the cache would hold
    task = make_task("beat", frame_rate=spec.frame_rate)
    wave = 0.1 * torch.randn(2, int(5 * spec.sample_rate))
    n = model.backbone.n_frames(wave.shape[1])
    y = torch.stack([torch.from_numpy(task.frame_targets([0.5 * k for k in range(1, 10)], n))] * 2)
    opt = torch.optim.Adam(model.head.parameters(), lr=1e-4)
    with torch.no_grad():
        frames = model.pool(model.backbone(wave, num_layers))

    def loop():
        opt.zero_grad()
        task.loss(model(wave), y).backward()
        opt.step()

    def cache():
        opt.zero_grad()
        task.loss(model.head(frames), y).backward()
        opt.step()

    out = {"loop": [], "cache": []}
    for fn in (loop, cache):
        fn()  # warm-up
    for r in range(rounds):
        for key, fn in ((("loop", loop), ("cache", cache)) if r % 2 == 0 else (("cache", cache), ("loop", loop))):
            for _ in range(steps if key == "loop" else steps * 10):
                t0 = time.perf_counter()
                fn()
                out[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in out.items()}
    per_layer_h = spec.frame_rate * spec.hidden_size * 3600  # values per hour per layer
    return {"backbone": name, "frames": n, "loop_ms": 1e3 * med["loop"], "cache_ms": 1e3 * med["cache"],
            "ratio": med["loop"] / med["cache"], "fp16_gb_per_hour_layer": per_layer_h * 2 / 1e9,
            "gtzan_fp16_gb_1_layer": per_layer_h * 2 * GTZAN_HOURS / 1e9,
            "gtzan_fp16_gb_12_layers": per_layer_h * 2 * 12 * GTZAN_HOURS / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the tiny backbones of the embedded default")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    names = ["mert-tiny", "musicfm-tiny"] if args.tiny else ["mert-v1-95m", "musicfm-msd"]
    print("| backbone | frames / 5 s | step, backbone in the loop | step, head on cached frames | ratio | "
          "frame cache, fp16, per hour per layer | GTZAN, 1 layer | GTZAN, 12 layers |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        r = step_times(name, args.rounds, args.steps)
        print(f"| {name} | {r['frames']} | {r['loop_ms']:.0f} ms | {r['cache_ms']:.1f} ms | {r['ratio']:.0f}x | "
              f"{r['fp16_gb_per_hour_layer']:.2f} GB | {r['gtzan_fp16_gb_1_layer']:.1f} GB | "
              f"{r['gtzan_fp16_gb_12_layers']:.0f} GB |", flush=True)


if __name__ == "__main__":
    main()
