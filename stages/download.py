"""download: fetch (or, for synth, generate) the dataset into data.root; index what is there."""
from musicpetl.stage import run_stage


def main(p):
    from musicpetl.data.registry import dataset_index, download
    from musicpetl.io import write_json

    ctx = p.data_context()
    root = download(p.data.dataset, p.data.root, ctx)
    index = dataset_index(p.data.dataset, p.data.root, ctx)
    write_json("data/download.json", index)
    return {"dataset": p.data.dataset, "root": str(root), "files": len(index["files"])}


if __name__ == "__main__":
    run_stage("download", main)
