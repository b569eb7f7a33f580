"""evaluate: whole test tracks, per-segment outputs averaged; metrics with 95 % intervals (Wilson for
proportions, BCa bootstrap otherwise, none below stats.MIN_ITEMS items) and the training-prior
baseline beside them; per-item predictions as CSV; the confusion data of single-label tasks."""
from pathlib import Path

import _src  # noqa: F401  (this checkout's src/ before any installed musicpetl)
from musicpetl.stage import run_stage


def main(p):
    from musicpetl import distributed

    distributed.claim_gpu()  # N queued experiments on N GPUs: one each (README "Training at scale")
    from musicpetl.data.store import AudioStore
    from musicpetl.device import pick_device
    from musicpetl.evaluate import (predict_tracks, predict_tracks_from_cache, save_confusion, save_predictions,
                                    save_predictions_csv, score)
    from musicpetl.features import FeatureCache, feature_fingerprint
    from musicpetl.io import write_json
    from musicpetl.petl import get_method, prepare_for_inference
    from musicpetl.run_io import load_run
    from musicpetl.tasks import make_task

    store = AudioStore("data/prepared")
    model = load_run(Path("models/run.safetensors"), device=pick_device("auto"))  # a GPU when one is visible
    task = make_task(store.meta["task"], store.meta.get("classes"), frame_rate=model.backbone.frame_rate)
    rows = store.rows("test")
    seconds = p.backbone.segment_seconds or model.backbone.default_segment_seconds
    if get_method(model.method).uses_feature_cache:  # the head on cached features equals running the frozen backbone
        expect = feature_fingerprint(model.backbone, model.num_layers, seconds, model.config.get("checkpoint", ""))
        probs = predict_tracks_from_cache(model.head, FeatureCache("data/features.h5"), "test", model.num_layers, task,
                                          expect=expect)
    else:
        model.backbone = prepare_for_inference(model.backbone, model.method)  # BitFit/SSF/LoRA merged
        probs = predict_tracks(model, store, "test", task, seconds, p.eval.batch_size)
    labels = [r["label"] for r in rows]
    keys = [r["key"] for r in rows]
    # the baseline's prior comes from the training items as listed, not their augmented copies
    train_labels = [r["label"] for r in store.rows("train") if "augmented_from" not in r]
    result = score(task, labels, probs, n_boot=p.eval.bootstrap, alpha=p.eval.alpha, seed=p.seed,
                   train_labels=train_labels)
    save_predictions(Path("data/predictions.npz"), keys, labels, probs, task)
    save_predictions_csv(Path("data/predictions.csv"), keys, labels, probs, task)
    save_confusion(Path("plots/confusion.csv"), task, labels, probs)
    summary = {"task": task.name, "dataset": store.meta.get("dataset", "?"), "method": p.petl.method, **result}
    write_json("metrics/test.json", summary)
    if result["constant_prediction"]:
        print(f"[evaluate] WARNING: the model gives the same prediction for all {len(rows)} test items")
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}


if __name__ == "__main__":
    run_stage("evaluate", main)
