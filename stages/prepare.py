"""prepare: decode and resample every clip once into the random-access store; list rejected clips."""
import json
from pathlib import Path

import _src  # noqa: F401  (this checkout's src/ before any installed musicpetl)
from musicpetl.stage import run_stage


def main(p):
    from musicpetl.data.rawindex import verify_index
    from musicpetl.data.store import prepare_store
    from musicpetl.io import read_jsonl, write_json

    verify_index("data/download.json")  # the raw audio read below is still what was indexed
    rows = read_jsonl("data/augmented/items.jsonl")
    for r in rows:  # one audio root for the store: resolve both origins to paths from the repo root
        base = Path("data/augmented") if "augmented_from" in r else Path(p.data.root)
        r["audio_path"] = str(base / r["audio_path"])
    meta = json.loads(Path("data/augmented/meta.json").read_text())
    summary = prepare_store(rows, Path("."), Path("data/prepared"), p.data.sample_rate, meta)
    write_json("metrics/prepare.json", summary)
    if summary["rejected"]:
        print(f"[prepare] {summary['rejected']} clips rejected, listed in data/prepared/rejected.jsonl: "
              f"{json.dumps(summary['rejected_reasons'])}")
    return summary


if __name__ == "__main__":
    run_stage("prepare", main)
