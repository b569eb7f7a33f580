"""correlate: per-layer similarity of the trained model's test features to the pre-trained ones."""
from pathlib import Path

import _src  # noqa: F401  (this checkout's src/ before any installed musicpetl)
from musicpetl.stage import run_stage


def main(p):
    from musicpetl import distributed

    distributed.claim_gpu()  # N queued experiments on N GPUs: one each (README "Training at scale")
    from musicpetl.analysis.correlate import compare, plot, track_means, trained_features
    from musicpetl.device import pick_device
    from musicpetl.data.store import AudioStore
    from musicpetl.features import FeatureCache
    from musicpetl.io import write_json
    from musicpetl.petl import prepare_for_inference
    from musicpetl.run_io import load_run

    from musicpetl.backbones import BACKBONES
    from musicpetl.run_io import read_config

    name = read_config(Path("models/run.safetensors"))["backbone"]
    if BACKBONES[name].baseline:  # no pre-trained features to compare with (README "Baselines")
        return not_applicable(p, f"{name} is a {BACKBONES[name].kind} baseline: no pre-trained features")
    store = AudioStore("data/prepared")
    model = load_run(Path("models/run.safetensors"), device=pick_device("auto"))  # a GPU when one is visible
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


def not_applicable(p, why: str) -> dict:
    """The stage's outputs for a system without pre-trained features: the reason, and a figure saying it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from musicpetl.io import atomic_path, write_json

    summary = {"method": p.petl.method, "items": 0, "not_applicable": why}
    write_json("metrics/correlate.json", summary)
    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True)
    Path("plots").mkdir(exist_ok=True)
    with atomic_path(Path("plots/correlate.png")) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return summary


if __name__ == "__main__":
    run_stage("correlate", main)
