"""`musicpetl predict`: seconds of compute per minute of audio, per backbone and task.

    PYTHONPATH=src .venv/bin/python bench/predict_speed.py              # MERT-95M and MusicFM at full size, ~4 min
    PYTHONPATH=src .venv/bin/python bench/predict_speed.py --tiny       # the embedded default's backbones

Each case: a random-weight model at full size (LoRA, first 6 layers, merged as `load_predictor`
merges it) in a `predict.Predictor` (what `load_predictor` builds from a run file; loading the
official weights is a one-off, not per minute), then `predict.predict_files`, the command's own
loop (decode in 30-s blocks, mono, resample to 24 kHz, segment, predict, CSV row) on one 3-minute
44.1 kHz stereo WAV, twice; the second (warm) time is reported, divided by the audio's minutes.
The frame-level task (beat) adds the stitching and madmom's DBN.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from musicpetl.backbones import BACKBONES, build_backbone
from musicpetl.model import PetlModel
from musicpetl.petl import apply_method, prepare_for_inference
from musicpetl.predict import Predictor, predict_files
from musicpetl.tasks import make_task

MINUTES = 3.0


def make_predictor(name: str, task_name: str) -> Predictor:
    spec = BACKBONES[name]
    task = make_task(task_name, [f"c{i}" for i in range(10)], frame_rate=spec.frame_rate)
    bb = build_backbone(name, 6, seed=0)
    apply_method(bb, "lora", {"rank": 2, "alpha": 2})
    model = PetlModel(bb, task.n_outputs, 6, method="lora", frame_level=task_name == "beat")
    model.backbone = prepare_for_inference(model.backbone, "lora")
    return Predictor(model.eval(), task, spec.sample_rate, model.backbone.segment_length(None), 8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    names = ["mert-tiny", "musicfm-tiny"] if args.tiny else ["mert-v1-95m", "musicfm-msd"]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rng = np.random.default_rng(0)
        audio = tmp / "three_minutes.wav"
        sf.write(audio, 0.1 * rng.standard_normal((int(MINUTES * 60 * 44100), 2)).astype(np.float32), 44100)
        print("| backbone | task | seconds per minute of audio (warm) | first call |")
        print("|---|---|---|---|")
        for name in names:
            for task_name in ("genre", "beat"):
                predictor = make_predictor(name, task_name)
                times = []
                for _ in range(2):
                    t0 = time.perf_counter()
                    with open(tmp / "out.csv", "w", newline="") as fh:
                        predict_files(predictor, [audio], fh, progress=False)
                    times.append(time.perf_counter() - t0)
                print(f"| {name} | {task_name} | {times[1] / MINUTES:.2f} s | {times[0] / MINUTES:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
