"""cache_features: frozen pre-trained features of the first `features.layers` layers (0: all),
time-pooled per segment, written incrementally to HDF5 with a fingerprint every reader checks."""
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

    b, f = p.backbone, p.features
    layers = f.layers or BACKBONES[b.name].depth  # not backbone.num_layers: probing at any depth <= it reuses the file
    backbone = load_backbone(b.name, b.checkpoint or None, layers, seed=p.seed,
                             **backbone_options(b.name, b)).to(pick_device("auto"))
    seconds = b.segment_seconds or backbone.default_segment_seconds
    counts = cache_features(AudioStore("data/prepared"), backbone, Path("data/features.h5"), layers, seconds,
                            batch_size=p.eval.batch_size, dtype=f.dtype, compression=f.compression,
                            checkpoint=b.checkpoint)
    return {"backbone": b.name, "layers": layers, "segment_seconds": seconds, "dtype": f.dtype, **counts}


if __name__ == "__main__":
    run_stage("cache_features", main)
