"""The prepared audio store: every clip decoded and resampled once, one int16 array per split.

A training loader crops at random with a memory map (no decoding); few large files keep DVC
hashing fast. Clips that cannot be used are listed with their reason, never dropped silently.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from musicpetl.audio import AudioError, load
from musicpetl.io import atomic_dir, read_jsonl, write_json, write_jsonl

SPLITS = ("train", "valid", "test")


def check_clip(wave: np.ndarray, sr: int, min_seconds: float) -> str | None:
    """The reason a decoded clip is unusable, or None."""
    if not np.all(np.isfinite(wave)):
        return "non-finite samples"
    if wave.size < min_seconds * sr:
        return f"too short ({wave.size / sr:.2f} s < {min_seconds} s)"
    if np.max(np.abs(wave)) < 1e-4:
        return "silent"
    return None


def prepare_store(items: list[dict], audio_root: Path, out_dir: Path, sample_rate: int, meta: dict,
                  min_seconds: float = 1.0, progress: bool = True, decode=None) -> dict:
    """Decode `items` (manifest rows) into `out_dir/{split}.npy` + `index.jsonl` + `rejected.jsonl`.

    `meta` (dataset, task, class list) is stored beside them as meta.json. `decode(path, sample_rate)`
    gives an item's mono float waveform (default: audio.load, the files on disk; raising AudioError
    rejects the item); a caller with audio already in memory passes its own.
    """
    decode = decode or load
    audio_root = Path(audio_root)
    index, rejected = [], []
    with atomic_dir(out_dir) as tmp:
        for split in SPLITS:
            rows = [r for r in items if r["split"] == split]
            offset = 0
            raw = tmp / f"{split}.pcm"  # clips appended as decoded: memory is one clip, not the split
            with open(raw, "wb") as fh:
                for row in tqdm(rows, desc=f"prepare {split}", disable=not progress, unit="clip"):
                    path = audio_root / row["audio_path"]
                    try:
                        wave = decode(path, sample_rate)
                        reason = check_clip(wave, sample_rate, min_seconds)
                    except AudioError as err:
                        reason = str(err)
                    if reason:
                        rejected.append({"key": row["key"], "split": split, "audio_path": row["audio_path"],
                                         "reason": reason})
                        continue
                    pcm = (np.clip(wave, -1.0, 1.0) * 32767.0).round().astype(np.int16)
                    fh.write(pcm.tobytes())
                    index.append({**{k: v for k, v in row.items() if k != "audio_path"},
                                  "offset": offset, "length": int(pcm.size)})
                    offset += pcm.size
            _pcm_to_npy(raw, tmp / f"{split}.npy", offset)
            raw.unlink()
        write_jsonl(tmp / "index.jsonl", index)
        write_jsonl(tmp / "rejected.jsonl", rejected)
        write_json(tmp / "meta.json", {**meta, "sample_rate": sample_rate})
    counts = Counter(r["split"] for r in index)
    return {"sample_rate": sample_rate, "kept": {s: counts.get(s, 0) for s in SPLITS},
            "rejected": len(rejected), "rejected_reasons": dict(Counter(r["reason"].split(" (")[0] for r in rejected)),
            "hours": {s: round(sum(r["length"] for r in index if r["split"] == s) / sample_rate / 3600, 4) for s in SPLITS}}


def _pcm_to_npy(raw: Path, out: Path, n: int, chunk: int = 1 << 20) -> None:
    """The `n` int16 samples of `raw` as the .npy AudioStore memory-maps, copied `chunk` samples at a
    time (the split never in memory; the .npy header needs the length, known only at the end)."""
    if n == 0:
        np.save(out, np.zeros(0, np.int16))
        return
    dst = np.lib.format.open_memmap(out, mode="w+", dtype=np.int16, shape=(n,))
    with open(raw, "rb") as fh:
        for start in range(0, n, chunk):
            part = np.fromfile(fh, dtype=np.int16, count=min(chunk, n - start))
            dst[start:start + part.size] = part
    dst.flush()
    del dst


class AudioStore:
    """Read side: memory-mapped split arrays plus the index rows."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.index = read_jsonl(self.root / "index.jsonl")
        self.meta = json.loads((self.root / "meta.json").read_text())
        self._arrays: dict[str, np.ndarray] = {}

    def rows(self, split: str) -> list[dict]:
        return [r for r in self.index if r["split"] == split]

    def array(self, split: str) -> np.ndarray:
        if split not in self._arrays:
            self._arrays[split] = np.load(self.root / f"{split}.npy", mmap_mode="r")
        return self._arrays[split]

    def audio(self, row: dict, start: int = 0, length: int | None = None) -> np.ndarray:
        """float32 samples of one clip (or a crop of it)."""
        length = row["length"] - start if length is None else min(length, row["length"] - start)
        a = self.array(row["split"])
        seg = a[row["offset"] + start: row["offset"] + start + length]
        return seg.astype(np.float32) / 32767.0
