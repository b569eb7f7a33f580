"""cache_features: frozen pre-trained features of the first `features.layers` layers (0: all),
time-pooled per segment (and, for a frame-level task such as beat, every segment's frames),
written incrementally to HDF5 with a fingerprint every reader checks."""
from pathlib import Path

import _src  # noqa: F401  (this checkout's src/ before any installed musicpetl)
from musicpetl.stage import run_stage


def main(p):
    from musicpetl import distributed

    distributed.claim_gpu()  # N queued experiments on N GPUs: one each (README "Training at scale")
    from musicpetl.backbones import BACKBONES, backbone_options, load_backbone
    from musicpetl.data.store import AudioStore
    from musicpetl.device import pick_device
    from musicpetl.features import cache_features
    from musicpetl.tasks import TASKS, is_frame_level

    b, f = p.backbone, p.features
    if BACKBONES[b.name].baseline:  # nothing frozen to cache: a marker file, in no time
        return no_features(BACKBONES[b.name], b.name, Path("data/features.h5"))
    layers = f.layers or BACKBONES[b.name].depth  # not backbone.num_layers: probing at any depth <= it reuses the file
    backbone = load_backbone(b.name, b.checkpoint or None, layers, seed=p.seed,
                             **backbone_options(b.name, b)).to(pick_device("auto"))
    seconds = b.segment_seconds or backbone.default_segment_seconds
    store = AudioStore("data/prepared")
    counts = cache_features(store, backbone, Path("data/features.h5"), layers, seconds, batch_size=p.eval.batch_size,
                            dtype=f.dtype, compression=f.compression, checkpoint=b.checkpoint,
                            frames=is_frame_level(TASKS[store.meta["task"]]))  # beat: per-frame features too
    return {"backbone": b.name, "layers": layers, "segment_seconds": seconds, "dtype": f.dtype, **counts}


def no_features(spec, name: str, path: Path) -> dict:
    """A baseline (README "Baselines") has no frozen pre-trained features: the stage's output is a
    small HDF5 file whose attributes say so, with no splits. The train stage opens it and reads
    nothing (only probing reads features, and checks refuse probing for a baseline); any reader
    that asks for a split is told the split is missing."""
    import h5py

    from musicpetl.io import atomic_path

    why = (f"{name} is a {spec.kind} baseline ({spec.description}): it has no frozen features; "
           f"nothing is cached")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs.update({"backbone": name, "kind": spec.kind, "frozen_features": why, "num_layers": 0,
                         "hidden_size": spec.hidden_size, "segment_seconds": spec.default_segment_seconds,
                         "sample_rate": spec.sample_rate})
    print(f"[cache_features] {why}")
    return {"backbone": name, "kind": spec.kind, "layers": 0}


if __name__ == "__main__":
    run_stage("cache_features", main)
