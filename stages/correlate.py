"""correlate: per-layer similarity of the trained model's test features to the pre-trained ones."""
from pathlib import Path

import _src  # noqa: F401  (this checkout's src/ before any installed musicpetl)
from musicpetl.stage import run_stage


def main(p):
    from musicpetl.analysis.correlate import compare, plot, track_means, trained_features
    from musicpetl.data.store import AudioStore
    from musicpetl.features import FeatureCache
    from musicpetl.io import write_json
    from musicpetl.petl import prepare_for_inference
    from musicpetl.run_io import load_run

    store = AudioStore("data/prepared")
    model = load_run(Path("models/run.safetensors"))
    model.backbone = prepare_for_inference(model.backbone, model.method)
    cache = FeatureCache("data/features.h5")
    feats, item, keys = cache.split("test", layers=model.num_layers)  # the cache may hold deeper layers
    n = min(len(keys), p.analysis.max_items)
    pre = track_means(feats, item, len(keys))[:n]
    seconds = cache.attrs["segment_seconds"]  # the cache's segmentation, so both sides see the same crops
    post, _ = trained_features(model, store, "test", seconds, p.eval.batch_size, n)
    result = compare(pre, post)
    summary = {"method": p.petl.method, "items": n, "cka_last": result["cka"][-1],
               "cosine_last": result["cosine"][-1], "cka_per_layer": result["cka"]}
    write_json("metrics/correlate.json", summary)
    plot(result, f"{p.petl.method}: trained vs pre-trained features (test)", Path("plots/correlate.png"))
    return {k: v for k, v in summary.items() if k != "cka_per_layer"}


if __name__ == "__main__":
    run_stage("correlate", main)
