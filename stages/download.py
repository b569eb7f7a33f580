"""download: fetch (or, for synth, generate) the dataset into data.root; index what is there by
content (data/rawindex.py), so that DVC and every later stage notice when it changes."""
import _src  # noqa: F401  (this checkout's src/ before any installed musicpetl)
from musicpetl.stage import run_stage


def main(p):
    from musicpetl.data.dataset import Context
    from musicpetl.data.rawindex import write_index
    from musicpetl.data.registry import dataset_index, download

    ctx = Context.from_params(p)
    root = download(p.data.dataset, p.data.root, ctx)
    index = dataset_index(p.data.dataset, p.data.root, ctx)
    write_index("data/download.json", index)
    return {"dataset": p.data.dataset, "root": str(root), "files": len(index["files"]), "origin": index["origin"],
            "hashed": sum(r[3] is not None for r in index["files"])}


if __name__ == "__main__":
    run_stage("download", main)
