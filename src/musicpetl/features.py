"""Frozen-feature cache (HDF5): the first N layers, time-pooled per segment, for every split.

Probing trains on it without the backbone in the loop; the correlation analysis compares a
trained model's features with these pre-trained ones.

Layout: /<split>/features (S, L, d) float32 or float16, chunked (rows, 1, d) so that reading one
layer touches only that layer's chunks, compressed (gzip level 1 by default, lzf, none; measured in
BENCHMARKS.md); /<split>/item (S,) int index into /<split>/keys. Written incrementally: segments
of consecutive clips are batched together, and pooled rows go to disk one chunk at a time, so
memory is bounded by one batch and one chunk row, not by the split.

Frame-level tasks (beat; `frames=True`, which the cache_features stage sets from the prepared
store's task) also keep every segment's frames: /<split>/frames (F, L, d), chunked and compressed as
the pooled features, /<split>/frame_segment (F,) the segment each frame row belongs to (in order),
/<split>/segment_start (S,) each segment's first sample in its clip and /<split>/length (N,) each
clip's samples, so probing trains its frame head on cached frames and stitches per-segment curves
into tracks as the audio path does (evaluate.predict_tracks). Why a cache and not the frozen
backbone in the loop: the loop costs 52x (MERT-95M) to 88x (MusicFM) a head step
(BENCHMARKS.md "Beat tracking: probing"); the price is disk, 0.41 GB per hour of audio per layer
in float16 at MERT's 75 Hz (GTZAN: 3.5 GB a layer).

Every cache carries a fingerprint (attribute `fingerprint`, JSON) of what made it: the backbone,
a digest of its weights (front end and each layer: the checkpoint's identity, whatever file it
came from), its options (MERT's input normalisation), the segmenting and the sample rate. Readers
give theirs (`FeatureCache(path, expect=feature_fingerprint(...))`) and a cache made for anything
else is refused with a message naming both. A cache holding L layers serves any reader of <= L.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from musicpetl.backbones.base import Backbone
from musicpetl.data.store import SPLITS, AudioStore
from musicpetl.errors import InputError, MissingFileError
from musicpetl.io import atomic_path

FORMAT = "musicpetl-features/2"
DTYPES = {"float32": np.float32, "float16": np.float16}
CHUNK_BYTES = 1 << 17  # ~128 kB per chunk (one layer, `rows` segments)


# -- fingerprints -------------------------------------------------------------------------------

def state_digest(state: dict[str, torch.Tensor]) -> str:
    """blake2b of names, dtypes, shapes and bytes of a state dict (sorted by name)."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def weights_identity(backbone: Backbone, num_layers: int) -> dict:
    """Digests of the front end, of each of the first `num_layers` layers and, when those reach the
    model's full depth, of what follows the last layer (e.g. a closing LayerNorm)."""
    state = backbone.state_dict()
    fronts = backbone.frontend_modules()
    prefixes = tuple(n + "." for n, m in backbone.named_modules() if n and any(m is f for f in fronts))
    front = {k: v for k, v in state.items() if k.startswith(prefixes)}
    layers = [{k: v for k, v in state.items() if k.startswith(f"layers.{i}.")} for i in range(num_layers)]
    rest = {k: v for k, v in state.items() if k not in front and not k.startswith("layers.")}
    out = {"frontend": state_digest(front), "layers": [state_digest(s) for s in layers]}
    if num_layers == backbone.cfg.num_layers:
        out["top"] = state_digest(rest)
    return out


def backbone_options_of(backbone: Backbone) -> dict:
    """The architecture options (`backbone.<option>` params) the built model was made with."""
    from musicpetl.backbones import BACKBONES

    spec = BACKBONES.get(backbone.name)
    return {o: getattr(backbone.cfg, o) for o in (spec.options if spec else ())}


def feature_fingerprint(backbone: Backbone, num_layers: int, segment_seconds: float, checkpoint: str = "") -> dict:
    """What a feature cache is made of (and what a reader needs it to be made of)."""
    return {"format": FORMAT, "backbone": backbone.name, "checkpoint": checkpoint or "(default)",
            "options": backbone_options_of(backbone), "segment_seconds": float(segment_seconds),
            "sample_rate": int(backbone.sample_rate), "weights": weights_identity(backbone, num_layers)}


def describe(fp: dict) -> str:
    w = fp.get("weights", {})
    opts = ", ".join(f"{k}={v}" for k, v in sorted(fp.get("options", {}).items()))
    return (f"{fp.get('backbone')} (checkpoint {fp.get('checkpoint')}, weights {w.get('frontend', '?')[:8]}"
            f"/{len(w.get('layers', []))} layers{', ' + opts if opts else ''}), segments "
            f"{fp.get('segment_seconds')} s at {fp.get('sample_rate')} Hz")


def mismatch(have: dict, want: dict) -> str | None:
    """Why a cache fingerprinted `have` cannot serve a reader that wants `want` (None: it can).
    `have` may hold more layers than `want` asks for."""
    for key in sorted((set(have) | set(want)) - {"weights", "checkpoint"}):
        if have.get(key) != want.get(key):
            return f"{key} differs: {have.get(key)!r} vs {want.get(key)!r}"
    hw, ww = have.get("weights", {}), want.get("weights", {})
    if len(hw.get("layers", [])) < len(ww.get("layers", [])):
        return f"it holds {len(hw.get('layers', []))} layers, {len(ww.get('layers', []))} are needed"
    if hw.get("frontend") != ww.get("frontend"):
        return "the front end's weights differ (another checkpoint or seed)"
    for i, (a, b) in enumerate(zip(hw.get("layers", []), ww.get("layers", []))):
        if a != b:
            return f"layer {i + 1}'s weights differ (another checkpoint or seed)"
    if "top" in ww and hw.get("top") != ww["top"]:
        return "the weights after the last layer differ (another checkpoint, or not the full depth)"
    return None


def check_fingerprint(path: Path, attrs: dict, want: dict, what: str = "feature cache",
                      remedy: str = "rerun the cache_features stage (dvc repro)") -> None:
    raw = attrs.get("fingerprint")
    if raw is None:
        raise InputError(f"{path} is a {what} without a fingerprint (made by an older musicpetl), this run needs "
                         f"{describe(want)}; {remedy}")
    try:
        have = json.loads(raw)
    except (TypeError, json.JSONDecodeError):
        raise InputError(f"{path}: the {what}'s fingerprint is not valid JSON; {remedy}") from None
    why = mismatch(have, want)
    if why:
        raise InputError(f"{path} is a {what} made for {describe(have)}; this run needs {describe(want)} ({why}); "
                         f"{remedy}")


# -- writing ------------------------------------------------------------------------------------

def segment_batches(store: AudioStore, rows: list[dict], seg_len: int, batch_size: int, bar=None):
    """(item ids, segment starts, (B, seg) waves) of consecutive segments, several clips per batch;
    a clip shorter than a segment is one segment of its own length and goes alone. `bar.update(1)`
    after each clip (a tqdm bar), if given."""
    from musicpetl.audio import segment_starts

    if bar is None:
        from contextlib import nullcontext

        bar = nullcontext()
        bar.update = lambda n: None

    items, starts, waves = [], [], []
    for i, row in enumerate(rows):
        wave = torch.from_numpy(store.audio(row))
        seg = min(seg_len, wave.numel())
        if seg != seg_len:
            if items:
                yield items, starts, torch.stack(waves)
                items, starts, waves = [], [], []
            yield [i], [0], wave[:seg][None]
            bar.update(1)
            continue
        for s in segment_starts(wave.numel(), seg):
            items.append(i)
            starts.append(s)
            waves.append(wave[s:s + seg])
            if len(items) == batch_size:
                yield items, starts, torch.stack(waves)
                items, starts, waves = [], [], []
        bar.update(1)
    if items:
        yield items, starts, torch.stack(waves)


class _ChunkWriter:
    """Appends rows to a resizable (S, L, d) dataset one whole chunk row at a time."""

    def __init__(self, features: h5py.Dataset, item: h5py.Dataset, rows: int):
        self.features, self.item, self.rows = features, item, rows
        self.buf: list[np.ndarray] = []
        self.ids: list[int] = []
        self.n = 0

    def append(self, feats: np.ndarray, ids: list[int]) -> None:
        self.buf.append(feats)
        self.ids.extend(ids)
        if sum(len(b) for b in self.buf) >= self.rows:
            self.flush(whole_chunks_only=True)

    def flush(self, whole_chunks_only: bool = False) -> None:
        if not self.buf:
            return
        data = np.concatenate(self.buf)
        take = (len(data) // self.rows) * self.rows if whole_chunks_only else len(data)
        if take:
            self.features.resize(self.n + take, axis=0)
            self.features[self.n:self.n + take] = data[:take]
            self.item.resize(self.n + take, axis=0)
            self.item[self.n:self.n + take] = np.asarray(self.ids[:take], np.int64)
            self.n += take
        self.buf = [data[take:]] if take < len(data) else []
        self.ids = self.ids[take:]


def _compression(name: str) -> dict:
    return {"none": {}, "lzf": {"compression": "lzf"}, "gzip": {"compression": "gzip", "compression_opts": 1}}[name]


@torch.no_grad()
def cache_features(store: AudioStore, backbone: Backbone, out_path: Path, num_layers: int,
                   segment_seconds: float, batch_size: int = 8, progress: bool = True, *,
                   dtype: str = "float32", compression: str = "gzip", checkpoint: str = "",
                   frames: bool = False) -> dict:
    """Write the cache of the first `num_layers` layers of `backbone` for every split; `frames`:
    every segment's frames too (frame-level tasks)."""
    backbone.eval()
    n = backbone.check_num_layers(num_layers)
    dev = next(backbone.parameters()).device
    d, np_dtype = backbone.hidden_size, DTYPES[dtype]
    rows_per_chunk = max(1, CHUNK_BYTES // (d * np.dtype(np_dtype).itemsize))
    seg_len = backbone.segment_length(segment_seconds)
    fp = feature_fingerprint(backbone, n, segment_seconds, checkpoint)
    counts = {}
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs.update({"backbone": backbone.name, "num_layers": n, "hidden_size": d,
                         "segment_seconds": segment_seconds, "sample_rate": backbone.sample_rate,
                         "dtype": dtype, "compression": compression, "fingerprint": json.dumps(fp, sort_keys=True),
                         "frames": bool(frames)})
        for split in SPLITS:
            rows = store.rows(split)
            g = h5.create_group(split)
            feats = g.create_dataset("features", shape=(0, n, d), maxshape=(None, n, d), dtype=np_dtype,
                                     chunks=(rows_per_chunk, 1, d), **_compression(compression))
            item = g.create_dataset("item", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1 << 14,))
            g.create_dataset("keys", data=np.asarray([r["key"] for r in rows], dtype=h5py.string_dtype()))
            writer = _ChunkWriter(feats, item, rows_per_chunk)
            frame_writer, seg_starts = None, []
            if frames:
                g.create_dataset("length", data=np.asarray([r["length"] for r in rows], dtype=np.int64))
                frame_writer = _ChunkWriter(
                    g.create_dataset("frames", shape=(0, n, d), maxshape=(None, n, d), dtype=np_dtype,
                                     chunks=(rows_per_chunk, 1, d), **_compression(compression)),
                    g.create_dataset("frame_segment", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1 << 14,)),
                    rows_per_chunk)
            with tqdm(total=len(rows), desc=f"features {split}", disable=not progress, unit="clip") as bar:
                for ids, starts, waves in segment_batches(store, rows, seg_len, batch_size, bar):
                    hs = torch.stack(backbone(waves.to(dev), n), dim=1)  # (B, L, T, d), as Backbone.features
                    if frame_writer is not None:
                        first = len(seg_starts)
                        for k, h in enumerate(hs.transpose(1, 2).float().cpu().numpy().astype(np_dtype, copy=False)):
                            frame_writer.append(h, [first + k] * len(h))  # (T, L, d) of segment first + k
                        seg_starts.extend(starts)
                    writer.append(hs.mean(dim=2).float().cpu().numpy().astype(np_dtype, copy=False), ids)
            writer.flush()
            counts[split] = {"items": len(rows), "segments": writer.n}
            if frame_writer is not None:
                frame_writer.flush()
                g.create_dataset("segment_start", data=np.asarray(seg_starts, dtype=np.int64))
                counts[split]["frames"] = frame_writer.n
    return counts


# -- reading ------------------------------------------------------------------------------------

class FrameFeatures:
    """One split's cached frames (frame-level tasks): segment s's frames are rows
    `offsets[s]:offsets[s + 1]` of `frames` ((F, d) of one layer or (F, L, d)), it belongs to item
    `seg_item[s]` and starts at sample `seg_start[s]` of it; `lengths[i]`: item i's samples."""

    def __init__(self, frames: np.ndarray, frame_segment: np.ndarray, seg_item: np.ndarray, seg_start: np.ndarray,
                 lengths: np.ndarray, keys: list[str], sample_rate: int):
        self.frames = torch.from_numpy(np.ascontiguousarray(frames))
        self.offsets = np.concatenate([[0], np.cumsum(np.bincount(frame_segment, minlength=len(seg_item)))])
        self.seg_item, self.seg_start, self.lengths = seg_item, seg_start, lengths
        self.keys, self.sample_rate = keys, int(sample_rate)

    def __len__(self) -> int:
        return len(self.seg_item)

    def n_frames(self, s: int) -> int:
        return int(self.offsets[s + 1] - self.offsets[s])

    def padded(self, segments, n_frames: int) -> torch.Tensor:
        """float32 frames of `segments`, zero-padded (or cut) to `n_frames`, as the frame head reads
        them: (B, n_frames, d) of one layer, (B, L, n_frames, d) of several."""
        segments = [int(s) for s in segments]
        out = torch.zeros((len(segments), n_frames, *self.frames.shape[1:]), dtype=torch.float32)
        for k, s in enumerate(segments):
            f = self.frames[self.offsets[s]:self.offsets[s + 1]][:n_frames]
            out[k, :len(f)] = f.float()
        return out if out.dim() == 3 else out.transpose(1, 2)


class FeatureCache:
    """Read side of the cache: one split's (segments, layers, d) features and their item ids.
    Validated on open and on read: a damaged or foreign file is an InputError naming it; with
    `expect` (a `feature_fingerprint`), a cache made for another backbone, checkpoint, layer count,
    segmenting or input normalisation is refused, naming both. Reads are kept in memory (validation
    reads the same split again and again)."""

    def __init__(self, path: str | Path, expect: dict | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise MissingFileError(f"{self.path} not found: run the cache_features stage")
        with self._open() as h5:
            self.attrs = dict(h5.attrs)
        for key in ("num_layers", "hidden_size", "segment_seconds"):
            if key not in self.attrs:
                raise InputError(f"{self.path} is not a musicpetl feature cache (attribute {key!r} missing)")
        self._memo: dict = {}
        if expect is not None:
            self.check(expect)

    @property
    def num_layers(self) -> int:
        return int(self.attrs["num_layers"])

    def check(self, expect: dict) -> None:
        """Refuse the cache unless it was made for what `expect` describes (InputError naming both)."""
        check_fingerprint(self.path, self.attrs, expect)

    def _open(self):
        try:
            return h5py.File(self.path, "r")
        except OSError as err:
            raise InputError(f"{self.path} is not a readable HDF5 feature cache ({err}); "
                             f"delete it and rerun the cache_features stage") from None

    def split(self, split: str, layer: int | None = None, layers: int | None = None
              ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(features, item ids, keys): `layer` (1-based) selects one layer -> (S, d); `layers` the
        first N -> (S, N, d); neither: every stored layer. Features in the stored dtype."""
        key = (split, layer, layers)
        if key not in self._memo:
            self._memo[key] = self._read(split, layer, layers)
        return self._memo[key]

    def frames(self, split: str, layer: int | None = None, layers: int | None = None) -> FrameFeatures:
        """A split's per-frame features (the cache of a frame-level task): `layer` (1-based) one
        layer, `layers` the first N, neither every stored layer. InputError for a cache without them."""
        key = ("frames", split, layer, layers)
        if key not in self._memo:
            if not self.attrs.get("frames", False):
                raise InputError(f"{self.path} holds time-pooled features only, this run needs per-frame ones (a "
                                 f"frame-level task): rerun the cache_features stage on the prepared store (dvc repro)")
            frames, seg_item, keys, index = self._read(split, layer, layers, dataset="frames")
            frame_segment, seg_start, lengths = index["frame_segment"], index["segment_start"], index["length"]
            if (len(seg_start) != len(seg_item) or len(lengths) != len(keys) or len(frame_segment) != len(frames)
                    or np.any(np.diff(frame_segment) < 0)
                    or (len(frame_segment) and (frame_segment.min() < 0 or frame_segment.max() >= len(seg_item)))):
                raise InputError(f"{self.path}: {split}'s frames do not match its segments; rerun cache_features")
            self._memo[key] = FrameFeatures(frames, frame_segment, seg_item, seg_start, lengths, keys,
                                            int(self.attrs["sample_rate"]))
        return self._memo[key]

    def _read(self, split: str, layer: int | None, layers: int | None, dataset: str = "features"):
        """(features, item, keys) of a split, the chosen layers of `dataset` ("features": pooled per
        segment; "frames": every frame, then also its index arrays as a 4th element)."""
        with self._open() as h5:
            if split not in h5 or not all(k in h5[split] for k in ("features", "item", "keys")):
                raise InputError(f"{self.path}: split {split!r} is missing or lacks features/item/keys")
            g = h5[split]
            shape, n_layers = g["features"].shape, int(self.attrs["num_layers"])
            if len(shape) != 3 or shape[1] != n_layers or shape[2] != int(self.attrs["hidden_size"]):
                raise InputError(f"{self.path}: {split}/features has shape {shape}, expected (segments, "
                                 f"{n_layers}, {int(self.attrs['hidden_size'])})")
            if layer is not None and not 1 <= layer <= n_layers:
                raise InputError(f"{self.path} holds layers 1..{n_layers}; layer {layer} was asked for")
            if layers is not None and not 1 <= layers <= n_layers:
                raise InputError(f"{self.path} holds layers 1..{n_layers}; {layers} layers were asked for")
            try:
                ds = g[dataset]
                if ds.shape[1:] != shape[1:]:
                    raise InputError(f"{self.path}: {split}/{dataset} has shape {ds.shape}, expected (rows, "
                                     f"{n_layers}, {shape[2]})")
                if layer:
                    feats = ds[:, layer - 1]
                elif layers and layers < n_layers:
                    feats = ds[:, :layers]
                else:
                    feats = ds[:]
                item = g["item"][:]
                keys = [k.decode() if isinstance(k, bytes) else k for k in g["keys"][:]]
                index = {k: g[k][:] for k in ("frame_segment", "segment_start", "length")} if dataset == "frames" \
                    else None
            except (KeyError, OSError) as err:
                raise InputError(f"{self.path}: {split}/{dataset} cannot be read ({err}); rerun cache_features") \
                    from None
        if item.shape != (shape[0],) or (len(item) and (item.min() < 0 or item.max() >= len(keys))):
            raise InputError(f"{self.path}: {split}/item does not index its {len(keys)} keys")
        return (feats, item, keys) if index is None else (feats, item, keys, index)
