"""train: the PETL method (or probing on the cache / full fine-tuning); dvclive curves."""
from pathlib import Path

from musicpetl.stage import run_stage


def main(p):
    from dvclive import Live

    from musicpetl.data.store import AudioStore
    from musicpetl.features import FeatureCache
    from musicpetl.io import write_json
    from musicpetl.tasks import make_task
    from musicpetl.train import train

    store = AudioStore("data/prepared")
    task = make_task(store.meta["task"], store.meta.get("classes"))
    cache = FeatureCache("data/features.h5")
    with Live("dvclive/train", dvcyaml=False, save_dvc_exp=False, report=None) as live:
        summary = train(p, task, store, cache, Path("models/run.safetensors"), live=live)
    summary = {"method": p.petl.method, "backbone": p.backbone.name, **summary}
    write_json("metrics/train.json", summary)
    return summary


if __name__ == "__main__":
    run_stage("train", main)
