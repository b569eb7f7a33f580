"""split: parse annotations, apply the published split, write the manifest and per-split counts."""
from musicpetl.stage import run_stage


def main(p):
    from musicpetl.data.splits import build_items, split_counts
    from musicpetl.io import atomic_dir, write_json, write_jsonl

    res = build_items(p.data.dataset, p.data.task, p.data.root, p.data_context())
    rows, dropped = res.rows, res.dropped
    counts = split_counts(rows)
    with atomic_dir("data/splits") as tmp:
        write_jsonl(tmp / "items.jsonl", rows)
        write_jsonl(tmp / "dropped.jsonl", dropped)
        write_json(tmp / "meta.json", {"dataset": p.data.dataset, "task": p.data.task,
                                       "classes": res.classes})
    write_json("metrics/split.json", {**counts, "dropped": len(dropped)})
    return {**counts, "dropped": len(dropped)}


if __name__ == "__main__":
    run_stage("split", main)
