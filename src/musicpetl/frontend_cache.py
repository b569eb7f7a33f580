"""Cached front end for PETL training (`train.cache_frontend`).

Every PETL method keeps the front end frozen (MERT's CNN feature extractor + projection +
positional conv; MusicFM's mel + conv subsampling), so its output for a given crop never changes
during training. With the cache, that output is computed once per training *window* and stored in
HDF5; each step then reads a batch of windows and runs only the transformer layers
(`PetlModel.forward_embedded`). Validation and evaluation keep the audio path.

Windows: for each training clip, crops of `train.crop_seconds` starting every
`train.frontend_hop_seconds` (0: back to back), the last one aligned to the clip's end so that no
audio is left out; a clip shorter than a crop is one window, zero-padded at the end as the audio
path pads it. Each window's frames are the front end of exactly that audio crop (eval mode), so a
window gives the same layer outputs as the audio crop it stands for (tests/test_frontend_cache.py).
Why windows, not frames cut from a whole-clip front end: MERT's front end is not local (per-crop
input normalisation, and a GroupNorm over time after its first conv), so frames cut out of a longer
context differ from the crop's own; windows are exact for every backbone. Training picks one window
per item per epoch (random, as crops are), i.e. crop positions on a grid of the hop.

Differences from the audio path, by construction: the crop positions (grid vs any sample), and the
front end's inner dropout (MERT: after the feature projection) which cannot be replayed on stored
frames; the dropout that closes `embed` is applied to the cached frames in training.

The file lives in `.musicpetl/frontend/` (not a DVC output: a cache, reused by every run on the same
backbone, front-end weights, crops and training data, e.g. a grid of methods), named by its
fingerprint, which is also stored in it and checked by every reader.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from musicpetl.errors import EnvironmentProblem, InputError
from musicpetl.features import backbone_options_of, check_fingerprint, state_digest
from musicpetl.io import atomic_path

FORMAT = "musicpetl-frontend/1"
ROOT = Path(".musicpetl/frontend")
DTYPES = {"float32": np.float32, "float16": np.float16}


def window_starts(length: int, crop_len: int, hop_len: int) -> list[int]:
    if length <= crop_len:
        return [0]
    starts = list(range(0, length - crop_len + 1, hop_len))
    if starts[-1] + crop_len < length:
        starts.append(length - crop_len)
    return starts


def check_usable(backbone, method: str, stores_full_backbone: bool) -> None:
    """Refuse the cached front end when the front end trains (full fine-tuning) or a method put
    anything trainable into it: its output would change with every step."""
    if stores_full_backbone or backbone.frontend_trainable():
        raise InputError(f"train.cache_frontend: true needs a frozen front end, but petl.method {method!r} trains "
                         f"{backbone.name}'s front end; set train.cache_frontend: false for this method")


def frontend_fingerprint(backbone, data: dict, crop_len: int, hop_len: int, dtype: str) -> dict:
    state = backbone.state_dict()
    fronts = backbone.frontend_modules()
    prefixes = tuple(n + "." for n, m in backbone.named_modules() if n and any(m is f for f in fronts))
    front = {k: v for k, v in state.items() if k.startswith(prefixes)}
    return {"format": FORMAT, "backbone": backbone.name, "options": backbone_options_of(backbone),
            "sample_rate": int(backbone.sample_rate), "checkpoint": "(front end weights)",
            "weights": {"frontend": state_digest(front), "layers": []}, "crop": int(crop_len), "hop": int(hop_len),
            "dtype": dtype, "segment_seconds": crop_len / backbone.sample_rate, "data": data}


def _path_for(root: Path, fp: dict) -> Path:
    digest = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:20]
    return Path(root) / f"{fp['backbone']}-{digest}.h5"


def estimate(rows: list[dict], backbone, crop_len: int, hop_len: int, dtype: str) -> tuple[int, int, int]:
    """(windows, frames per window, bytes of frames) the cache will hold."""
    n = sum(len(window_starts(r["length"], crop_len, hop_len)) for r in rows)
    t = backbone.n_frames(crop_len)
    return n, t, n * t * backbone.hidden_size * np.dtype(DTYPES[dtype]).itemsize


@torch.no_grad()
def build(path: Path, store, split: str, backbone, crop_len: int, hop_len: int, dtype: str, fp: dict,
          batch_size: int = 8, progress: bool = True) -> dict:
    """Compute and write the front end of every window of `split` (eval mode, fp32 compute)."""
    from tqdm import tqdm

    rows = store.rows(split)
    n, t, nbytes = estimate(rows, backbone, crop_len, hop_len, dtype)
    d = backbone.hidden_size
    was_training = backbone.training
    backbone.eval()
    dev = next(backbone.parameters()).device
    first = np.zeros(len(rows), np.int64)
    count = np.zeros(len(rows), np.int64)
    try:
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
            frames = h5.create_dataset("frames", shape=(n, t, d), dtype=DTYPES[dtype], chunks=(1, t, d))
            starts_ds = h5.create_dataset("window_start", shape=(n,), dtype=np.int64)
            w, pending = 0, []

            def run(batch):
                nonlocal w
                x = torch.stack([b for b in batch]).to(dev)
                with torch.autocast(device_type=dev.type, enabled=False):
                    out = backbone.embed(x.float())
                if out.shape[1] != t:
                    raise InputError(f"{backbone.name}: the front end gave {out.shape[1]} frames for {crop_len} samples, "
                                     f"expected {t}")
                frames[w:w + len(batch)] = out.float().cpu().numpy().astype(DTYPES[dtype], copy=False)
                w += len(batch)

            for i, row in enumerate(tqdm(rows, desc="front end cache", disable=not progress, unit="clip")):
                wave = store.audio(row)
                starts = window_starts(row["length"], crop_len, hop_len)
                first[i], count[i] = w + len(pending), len(starts)
                for s in starts:
                    crop = wave[s:s + crop_len]
                    if crop.size < crop_len:
                        crop = np.pad(crop, (0, crop_len - crop.size))
                    pending.append(torch.from_numpy(np.ascontiguousarray(crop)))
                    if len(pending) == batch_size:
                        run(pending)
                        pending = []
            if pending:
                run(pending)
            starts_ds[:] = np.concatenate([window_starts(r["length"], crop_len, hop_len) for r in rows]) if rows \
                else np.zeros(0, np.int64)
            h5.create_dataset("item_first", data=first)
            h5.create_dataset("item_count", data=count)
            h5.create_dataset("keys", data=np.asarray([r["key"] for r in rows], dtype=h5py.string_dtype()))
            h5.attrs.update({"fingerprint": json.dumps(fp, sort_keys=True), "frames": t, "hidden_size": d})
    finally:
        backbone.train(was_training)
    return {"windows": n, "frames": t, "bytes": nbytes}


class FrontendCache:
    """Read side: `frames(w)` -> (T, d) of window w; `first[i]`, `count[i]`: item i's windows.
    The HDF5 file is opened lazily once per process (DataLoader workers open their own)."""

    def __init__(self, path: str | Path, expect: dict | None = None):
        self.path = Path(path)
        try:
            with h5py.File(self.path, "r") as h5:
                self.attrs = dict(h5.attrs)
                self.first, self.count = h5["item_first"][:], h5["item_count"][:]
                self.window_start = h5["window_start"][:]
                self.keys = [k.decode() if isinstance(k, bytes) else k for k in h5["keys"][:]]
                self.shape = h5["frames"].shape
        except (OSError, KeyError) as err:
            raise InputError(f"{self.path} is not a readable front-end cache ({err}); delete it (it is rebuilt)") from None
        if expect is not None:
            check_fingerprint(self.path, self.attrs, expect, what="front-end cache",
                              remedy="delete it (it is rebuilt) or check train.cache_frontend's settings")
        if len(self.first) and (self.first + self.count).max() > self.shape[0]:
            raise InputError(f"{self.path}: item windows point past its {self.shape[0]} frames; delete it (it is rebuilt)")
        self._h5, self._pid = None, None

    def frames(self, w: int) -> np.ndarray:
        import os

        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._h5["frames"][w]

    def __getstate__(self):  # DataLoader workers: reopen the file in the worker
        return {**self.__dict__, "_h5": None, "_pid": None}


class FrameDataset(Dataset):
    """One cached window per (item, r): window first[i] + r mod count[i]; frames as float32.
    `targets(i, start)`: the target of item i's window starting at sample `start`
    (data.loaders.CropTargets, the audio path's targets for the same crop)."""

    def __init__(self, cache: FrontendCache, targets):
        self.cache, self.targets = cache, targets

    def __len__(self) -> int:
        return len(self.cache.first)

    def window(self, i: int, r: int) -> int:
        return int(self.cache.first[i] + int(r) % int(self.cache.count[i]))

    def __getitem__(self, key):
        i, r = key
        x = torch.from_numpy(np.asarray(self.cache.frames(self.window(i, r)), dtype=np.float32))
        return x, torch.from_numpy(self.targets(i, int(self.cache.window_start[self.window(i, r)])))

    def batch(self, idx: torch.Tensor, r: torch.Tensor):
        pairs = [self[(i, j)] for i, j in zip(idx.tolist(), r.tolist())]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


SPACE_MARGIN = 1 << 30  # left free beyond the cache itself (other writers, the filesystem's reserve)


def check_space(folder: Path, nbytes: int, dtype: str) -> None:
    """Refuse to start a cache the disk cannot hold (a full disk hours into the build loses it all)."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if nbytes + SPACE_MARGIN > free:
        half = " or train.frontend_dtype: float16 (half the size)" if dtype != "float16" else ""
        raise EnvironmentProblem(
            f"the cached front end needs {nbytes / 2**30:.1f} GiB (+1 GiB margin) but {folder.resolve()} has "
            f"{free / 2**30:.1f} GiB free: free space, point MUSICPETL_FRONTEND_DIR at a larger disk{half}, "
            f"delete caches of settings no longer used from {folder}, or set train.cache_frontend: false")


def ensure(root: str | Path, store, split: str, backbone, crop_len: int, hop_len: int, dtype: str, data: dict,
           batch_size: int = 8, progress: bool = True, is_main: bool = True, barrier=lambda: None) -> FrontendCache:
    """The cache for these settings: reused when its file exists (and checks out), else built (by
    the main process; the others wait at `barrier`), with the disk estimate printed first."""
    fp = frontend_fingerprint(backbone, data, crop_len, hop_len, dtype)
    path = _path_for(Path(root), fp)
    if is_main and not path.is_file():
        n, t, nbytes = estimate(store.rows(split), backbone, crop_len, hop_len, dtype)
        print(f"[train] caching the front end of {n} training windows ({t} frames x {backbone.hidden_size}, {dtype}): "
              f"{nbytes / 2**30:.2f} GiB in {path}", file=sys.stderr, flush=True)
        check_space(path.parent, nbytes, dtype)
        build(path, store, split, backbone, crop_len, hop_len, dtype, fp, batch_size, progress)
    barrier()
    cache = FrontendCache(path, expect=fp)
    if cache.keys != [r["key"] for r in store.rows(split)]:
        raise InputError(f"{path}: its items are not the {split} split's; delete it (it is rebuilt)")
    return cache
