"""augment: pitch-shift (key) or time-stretch (tempo) the training split; other tasks pass through."""
import shutil
from pathlib import Path

import _src  # noqa: F401  (this checkout's src/ before any installed musicpetl)
from musicpetl.stage import run_stage


def main(p):
    from musicpetl.data.rawindex import verify_index
    from musicpetl.data.augment import augment_items
    from musicpetl.io import atomic_dir, read_jsonl, write_jsonl

    verify_index("data/download.json")  # the raw audio read below is still what was indexed
    rows = read_jsonl("data/splits/items.jsonl")
    a = p.data.augment
    with atomic_dir("data/augmented") as tmp:
        # augmented rows carry `augmented_from`; their audio_path is relative to data/augmented
        out = augment_items(rows, p.data.task, audio_root=Path(p.data.root), out_dir=tmp / "audio",
                            shifts=a.pitch_shifts, rates=a.time_stretches, per_item=a.per_item, seed=p.seed)
        write_jsonl(tmp / "items.jsonl", out)
        shutil.copy("data/splits/meta.json", tmp / "meta.json")
    return {"items": len(out), "augmented": sum(1 for r in out if "augmented_from" in r)}


if __name__ == "__main__":
    run_stage("augment", main)
