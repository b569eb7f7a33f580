"""split: parse annotations, apply the published split, write the manifest and per-split counts."""
from musicpetl.stage import run_stage


def main(p):
    from musicpetl.data.registry import DATASETS
    from musicpetl.data.splits import build_items, split_counts
    from musicpetl.io import atomic_dir, write_json, write_jsonl

    rows, dropped = build_items(p.data.dataset, p.data.task, p.data.root, seed=p.seed,
                                split_params=vars(p.data.split), overrides=p.data.overrides)
    counts = split_counts(rows)
    with atomic_dir("data/splits") as tmp:
        write_jsonl(tmp / "items.jsonl", rows)
        write_jsonl(tmp / "dropped.jsonl", dropped)
        write_json(tmp / "meta.json", {"dataset": p.data.dataset, "task": p.data.task,
                                       "classes": DATASETS[p.data.dataset].classes(p.data.task)})
    write_json("metrics/split.json", {**counts, "dropped": len(dropped)})
    return {**counts, "dropped": len(dropped)}


if __name__ == "__main__":
    run_stage("split", main)
