"""split: check the raw data is what download indexed, parse annotations, apply the published
split, check the splits (counts per split and class, audio on disk, classes seen in training) and
write the manifest with every left-out item and its reason."""
from pathlib import Path

import _src  # noqa: F401  (this checkout's src/ before any installed musicpetl)
from musicpetl.stage import run_stage


def main(p):
    from musicpetl.data.dataset import Context
    from musicpetl.data.registry import build_items, get_dataset, verify_index
    from musicpetl.data.splits import check_splits, format_report, split_report
    from musicpetl.errors import InputError
    from musicpetl.io import atomic_dir, write_json, write_jsonl

    ctx = Context.from_params(p)
    verify_index("data/download.json", dataset=p.data.dataset,
                 folder=get_dataset(p.data.dataset).folder(Path(p.data.root), ctx))
    res = build_items(p.data.dataset, p.data.task, p.data.root, ctx)
    report = split_report(res.rows, res.dropped, res.classes)
    print(format_report(report), flush=True)
    try:
        check_splits(report, min_present=p.data.min_present, allow_missing_classes=p.data.allow_missing_classes,
                     where=f"{p.data.dataset}/{p.data.task}")
    except InputError:
        # what the message points at, and no manifest (items.jsonl) that a later stage could use
        with atomic_dir("data/splits") as tmp:
            write_jsonl(tmp / "dropped.jsonl", res.dropped)
            write_json(tmp / "counts.json", report)
        raise
    with atomic_dir("data/splits") as tmp:
        write_jsonl(tmp / "items.jsonl", res.rows)
        write_jsonl(tmp / "dropped.jsonl", res.dropped)
        write_json(tmp / "counts.json", report)  # per split and class, listed / on disk, dropped by reason
        write_json(tmp / "meta.json", {"dataset": p.data.dataset, "task": p.data.task,
                                       "classes": res.classes})
    summary = {**report["splits"], "dropped": len(res.dropped)}
    write_json("metrics/split.json", summary)
    return summary


if __name__ == "__main__":
    run_stage("split", main)
