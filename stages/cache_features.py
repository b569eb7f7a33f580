"""cache_features: frozen pre-trained features of every used layer, time-pooled per segment (HDF5)."""
from pathlib import Path

from musicpetl.stage import run_stage


def main(p):
    from musicpetl.backbones import load_backbone
    from musicpetl.data.store import AudioStore
    from musicpetl.features import cache_features
    from musicpetl.train import backbone_overrides, pick_device

    b = p.backbone
    backbone = load_backbone(b.name, b.checkpoint or None, b.num_layers, seed=p.seed,
                             **backbone_overrides(b.name, p)).to(pick_device("auto"))
    seconds = b.segment_seconds or backbone.default_segment_seconds
    counts = cache_features(AudioStore("data/prepared"), backbone, Path("data/features.h5"), b.num_layers,
                            seconds, batch_size=p.eval.batch_size)
    return {"backbone": b.name, "layers": b.num_layers, "segment_seconds": seconds, **counts}


if __name__ == "__main__":
    run_stage("cache_features", main)
