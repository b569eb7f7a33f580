"""train: the PETL method (or probing on the cache / full fine-tuning); dvclive curves.

Resumable: with `train.checkpoint_every`, a run killed at any moment and started again (dvc repro,
dvc exp run, or this script) goes on from its last checkpoint (.musicpetl/checkpoints) and ends
with the same run file and metrics as an uninterrupted run; the checkpoint is removed once both
are written. With `train.nproc > 1` the stage re-runs itself under torchrun (DDP, one process per
GPU; rank 0 writes the outputs). Wall-clock figures go to metrics/train_time.json, so that
metrics/train.json depends on the computation only.
"""
import os
from pathlib import Path

import _src  # noqa: F401  (this checkout's src/ before any installed musicpetl)
from musicpetl.stage import run_stage

TIMING = ("seconds", "resumed_from_step")


def main(p):
    from musicpetl import distributed

    if p.train.nproc > 1 and not distributed.under_torchrun():
        distributed.launch(Path(__file__).resolve(), p.train.nproc)  # every rank runs this main()
        import json

        return json.loads(Path("metrics/train.json").read_text())
    if not distributed.under_torchrun() and p.train.device != "cpu":
        distributed.claim_gpu()  # N queued experiments on N GPUs: one each (dvc queue start -j N)

    from dvclive import Live

    from musicpetl.backbones import BACKBONES
    from musicpetl.checkpointing import ROOT, Checkpointer, run_key
    from musicpetl.data.store import AudioStore
    from musicpetl.features import FeatureCache
    from musicpetl.io import write_json
    from musicpetl.petl import get_method
    from musicpetl.tasks import make_task
    from musicpetl.train import train

    dist = distributed.context(p.train.device)
    try:
        store = AudioStore("data/prepared")
        task = make_task(store.meta["task"], store.meta.get("classes"),
                         frame_rate=BACKBONES[p.backbone.name].frame_rate)  # frame-level tasks (beat)
        cache = FeatureCache("data/features.h5")
        probing = get_method(p.petl.method).uses_feature_cache
        extra = {"features": {k: str(v) for k, v in cache.attrs.items()},
                 "features_bytes": Path("data/features.h5").stat().st_size} if probing else {}
        ck = Checkpointer(os.environ.get("MUSICPETL_CHECKPOINT_DIR", ROOT), run_key(p, store, extra, dist.world),
                          p.train.checkpoint_every)
        resume = ck.exists()
        live = Live("dvclive/train", dvcyaml=False, save_dvc_exp=False, report=None, resume=resume) \
            if dist.is_main else None
        try:
            summary = train(p, task, store, cache, Path("models/run.safetensors"), live=live, checkpoints=ck,
                            dist=dist, frontend_root=os.environ.get("MUSICPETL_FRONTEND_DIR"))
        finally:
            if live is not None:
                live.end()
        summary = {"method": p.petl.method, "backbone": p.backbone.name, **summary}
        if dist.is_main:
            write_json("metrics/train.json", {k: v for k, v in summary.items() if k not in TIMING})
            write_json("metrics/train_time.json", {k: summary[k] for k in TIMING if k in summary})
            ck.clear()  # the run file and metrics are in place: nothing left to resume
        dist.barrier()
        return summary
    finally:
        dist.close()


if __name__ == "__main__":
    run_stage("train", main)
