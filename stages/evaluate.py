"""evaluate: whole test tracks, per-segment outputs averaged; metrics with bootstrap 95 % intervals."""
from pathlib import Path

from musicpetl.stage import run_stage


def main(p):
    from musicpetl.data.store import AudioStore
    from musicpetl.evaluate import predict_tracks, predict_tracks_from_cache, save_predictions, score
    from musicpetl.features import FeatureCache
    from musicpetl.io import write_json
    from musicpetl.petl import prepare_for_inference
    from musicpetl.run_io import load_run
    from musicpetl.tasks import make_task

    store = AudioStore("data/prepared")
    task = make_task(store.meta["task"], store.meta.get("classes"))
    model = load_run(Path("models/run.safetensors"))
    rows = store.rows("test")
    if p.petl.method == "probing":  # the head on cached features equals running the frozen backbone
        probs = predict_tracks_from_cache(model.head, FeatureCache("data/features.h5"), "test", model.num_layers, task)
    else:
        model.backbone = prepare_for_inference(model.backbone, model.method)  # BitFit/SSF/LoRA merged
        seconds = p.backbone.segment_seconds or model.backbone.default_segment_seconds
        probs = predict_tracks(model, store, "test", task, seconds, p.eval.batch_size)
    labels = [r["label"] for r in rows]
    result = score(task, labels, probs, n_boot=p.eval.bootstrap, alpha=p.eval.alpha, seed=p.seed)
    save_predictions(Path("data/predictions.npz"), [r["key"] for r in rows], labels, probs, task)
    summary = {"task": task.name, "method": p.petl.method, "items": len(rows), **result}
    write_json("metrics/test.json", summary)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}


if __name__ == "__main__":
    run_stage("evaluate", main)
