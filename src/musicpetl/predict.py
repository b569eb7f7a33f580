"""`musicpetl predict`: a trained run applied to new audio files, one CSV row per file.

    musicpetl predict song.mp3 my_folder/ [--run models/run.safetensors] [--out predictions.csv]

The run is rebuilt as the evaluate stage rebuilds it (run_io.load_run: the backbone from the
checkpoint the run records, the method, the stored tensors), and what can be merged is merged
(petl.prepare_for_inference: BitFit, SSF, LoRA ... cost what the bare backbone costs). Each file is
cut into the segments the evaluate stage uses (backbone.segment_seconds of the run's backbone,
back to back, the last one aligned to the end) and the per-segment outputs are averaged
(track-level tasks) or joined in time (frame-level tasks: beat).

Bounded memory: a file that libsndfile reads (WAV, FLAC, OGG, MP3, AIFF, ...) is decoded in blocks
(`block_seconds`, default 30 s), mixed to mono and resampled block by block with enough context at
the block edges that the result equals resampling the whole file (torchaudio's sinc resampler, as
the prepare stage uses; equal to ~1e-7), then cut into segments as they fill; an hour of audio never
sits in memory at once. Formats only the fallback decoder reads (librosa/audioread: m4a, ...) are
decoded whole. A file that cannot be read gets a row with its error; the others go on.

Rows: `file, status (ok | error), error, seconds, segments, predicted, ...` then per task:
genre/key `confidence` + `p_<class>` per class; tagging the tags whose probability reaches
`threshold` + `p_<tag>`; tempo the BPM; beat the beat times (seconds, space-separated) + `n_beats`
and `bpm` (60 / the mean inter-beat interval).
"""
from __future__ import annotations

import csv
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from musicpetl.errors import InputError

BLOCK_SECONDS = 30.0


# ------------------------------------------------------------------------------------- inputs


def collect_inputs(inputs: list[str | Path]) -> list[Path]:
    """Every audio file named or found (at any depth, symlinked folders followed) under the folders
    given, in the order given (a folder's files sorted); a path that does not exist is kept, so it
    gets its error row."""
    from musicpetl.data.datasets.folder import AUDIO_EXTENSIONS
    from musicpetl.data.walk import walk_files

    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = [f for f in walk_files(p) if f.suffix.lower() in AUDIO_EXTENSIONS]
            if not found:
                raise InputError(f"{p}: no audio files in this folder ({', '.join(AUDIO_EXTENSIONS[:6])}, ...)")
            out += found
        else:
            out.append(p)
    if not out:
        raise InputError("no audio files or folders given")
    return out


# ------------------------------------------------------------------------------------- decoding


def _mono(block: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(block.mean(axis=1) if block.ndim == 2 else block, dtype=np.float32)


def _resample(wave: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    from musicpetl.audio import resample

    return resample(wave, sr_in, sr_out)


def _context(sr_in: int, sr_out: int) -> tuple[int, int, int]:
    """(a, b, context): the reduced rates (a input samples give b output samples) and the input
    samples of context either side of a block, a multiple of a that covers torchaudio's sinc kernel
    (lowpass_filter_width 6, rolloff 0.99) with room to spare."""
    g = math.gcd(int(sr_in), int(sr_out))
    a, b = sr_in // g, sr_out // g
    width = math.ceil(6 * a / (min(a, b) * 0.99))
    return a, b, a * math.ceil(max(512, 4 * width) / a)


def resampled_blocks(path: Path, sr_out: int, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """The file as mono float32 at `sr_out`, in consecutive blocks; the concatenation equals
    `audio.load(path, sr_out)` (the same decoder, mixdown and resampler) up to float rounding.
    Files libsndfile cannot open are decoded whole by audio.decode (one block)."""
    import soundfile as sf

    from musicpetl.audio import AudioError, decode

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"missing file: {path}" if not path.exists() else f"not a file: {path}")
    try:
        f = sf.SoundFile(str(path))
    except Exception:  # not for libsndfile: the fallback decoder, whole
        wave, sr = decode(path)
        yield _resample(wave, sr, sr_out)
        return
    with f:
        sr_in = int(f.samplerate)
        if sr_in == sr_out:
            while True:
                block = f.read(max(1, int(block_seconds * sr_in)), dtype="float32", always_2d=True)
                if not len(block):
                    return
                yield _mono(block)
        a, b, ctx = _context(sr_in, sr_out)
        size = max(ctx, a * max(1, round(block_seconds * sr_in / a)))  # a multiple of a, at least the context

        def read() -> np.ndarray:
            return _mono(f.read(size, dtype="float32", always_2d=True))

        left = np.zeros(0, np.float32)  # up to ctx samples before the current block
        cur = read()
        while cur.size:
            nxt = read()
            chunk = np.concatenate([left, cur, nxt[:ctx]])
            out = _resample(chunk, sr_in, sr_out)
            j0 = left.size * b // a  # left.size is 0 or ctx, a multiple of a
            j1 = out.size if not nxt.size else (left.size + cur.size) * b // a
            yield out[j0:j1]
            left = np.concatenate([left, cur])[-ctx:]
            cur = nxt


def segments(blocks: Iterator[np.ndarray], seg_len: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start sample, segment) of the stream, as audio.segment_starts cuts a whole signal: full
    segments back to back, then, if samples remain, one more aligned to the end (overlapping its
    neighbour); a signal shorter than a segment is one segment of its own length."""
    pending = np.zeros(0, np.float32)
    prev: np.ndarray | None = None
    start = 0
    for block in blocks:
        pending = np.concatenate([pending, block]) if pending.size else block
        while pending.size >= seg_len:
            prev, pending = pending[:seg_len], pending[seg_len:]
            yield start, prev
            start += seg_len
    if pending.size:
        if prev is None:
            yield 0, pending
        else:
            total = start + pending.size
            yield total - seg_len, np.concatenate([prev, pending])[-seg_len:]


# ------------------------------------------------------------------------------------- prediction


@dataclass
class Predictor:
    """A loaded run, ready for files."""
    model: torch.nn.Module
    task: object
    sample_rate: int
    seg_len: int
    batch_size: int = 8
    block_seconds: float = BLOCK_SECONDS
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @torch.no_grad()
    def file(self, path: Path) -> tuple[np.ndarray, float, int]:
        """(track-level probabilities (n_out,) or the frame-level curve (T,), seconds, segments)."""
        from musicpetl.tasks import is_frame_level

        frame_level = is_frame_level(self.task)
        if hasattr(self.model.backbone, "estimate"):  # an off-the-shelf estimator (README "Baselines") reads
            wave = np.concatenate(list(resampled_blocks(path, self.sample_rate, self.block_seconds)) or [np.zeros(0)])
            if wave.size == 0:  # whole tracks, as the evaluate stage gives it them
                from musicpetl.audio import AudioError

                raise AudioError(f"{path}: no audio samples")
            out = self.model.backbone.estimate(self.task.name, wave.astype(np.float32), self.task.classes)
            return np.asarray(out, dtype=np.float64), wave.size / self.sample_rate, 1
        total = None
        count = 0
        pieces: list[tuple[int, np.ndarray]] = []
        n_samples = 0
        batch: list[tuple[int, np.ndarray]] = []

        def flush():
            nonlocal total, count
            x = torch.from_numpy(np.stack([s for _, s in batch])).to(self.device)
            probs = self.task.probabilities(self.model(x).float()).cpu().numpy()
            if frame_level:
                pieces.extend((start, p) for (start, _), p in zip(batch, probs))
            else:
                total = probs.sum(0) if total is None else total + probs.sum(0)
                count += len(probs)
            batch.clear()

        for start, seg in segments(resampled_blocks(path, self.sample_rate, self.block_seconds), self.seg_len):
            n_samples = max(n_samples, start + seg.size)
            if batch and seg.size != batch[0][1].size:  # only a short whole track differs: never mixed
                flush()
            batch.append((start, seg))
            if len(batch) == self.batch_size:
                flush()
        if batch:
            flush()
        if n_samples == 0:
            from musicpetl.audio import AudioError

            raise AudioError(f"{path}: no audio samples")
        n_segments = count if not frame_level else len(pieces)
        if frame_level:
            from musicpetl.frame_head import stitch_frames

            fps = float(self.task.frame_rate)
            out = stitch_frames(pieces, self.sample_rate, fps, n_frames=int(round(n_samples / self.sample_rate * fps)))
        else:
            out = total / count
        return out, n_samples / self.sample_rate, n_segments


def load_predictor(run: Path, device: str = "auto", batch_size: int = 8, segment_seconds: float = 0.0,
                   block_seconds: float = BLOCK_SECONDS) -> Predictor:
    from musicpetl.backbones import BACKBONES
    from musicpetl.device import pick_device
    from musicpetl.petl import prepare_for_inference
    from musicpetl.run_io import load_run
    from musicpetl.tasks import make_task

    dev = pick_device(device)
    model = load_run(Path(run), device=dev)
    cfg = model.config
    if not cfg.get("task"):
        raise InputError(f"{run}: the run does not record its task (written by an older version): retrain it")
    spec = BACKBONES[cfg["backbone"]]
    task = make_task(cfg["task"], cfg.get("classes"), frame_rate=spec.frame_rate)
    model.backbone = prepare_for_inference(model.backbone, model.method)
    model.eval()
    if segment_seconds < 0:
        raise InputError(f"--segment-seconds must be >= 0 (0: the backbone's default), got {segment_seconds}")
    if block_seconds <= 0:
        raise InputError(f"block seconds must be positive, got {block_seconds}")
    seg_len = model.backbone.segment_length(segment_seconds or None)
    return Predictor(model, task, spec.sample_rate, seg_len, batch_size, block_seconds, dev)


def header(task, threshold: float) -> list[str]:
    from musicpetl.tasks.beat import BeatTask
    from musicpetl.tasks.tempo import TempoTask

    base = ["file", "status", "error", "seconds", "segments", "predicted"]
    if isinstance(task, BeatTask):
        return base + ["n_beats", "bpm"]
    if isinstance(task, TempoTask):
        return base
    from musicpetl.tasks.tagging import TaggingTask

    extra = [] if isinstance(task, TaggingTask) else ["confidence"]
    return base + extra + [f"p_{c}" for c in task.classes]


def row(task, path: Path, out: np.ndarray, seconds: float, n_segments: int, threshold: float) -> list:
    """The CSV cells of one file's prediction (see `header`)."""
    from musicpetl.tasks.beat import BeatTask
    from musicpetl.tasks.tagging import TaggingTask
    from musicpetl.tasks.tempo import TempoTask

    base = [str(path), "ok", "", f"{seconds:.3f}", n_segments]
    if isinstance(task, BeatTask):
        beats = task.decode([out])[0]
        bpm = f"{60.0 * (len(beats) - 1) / (beats[-1] - beats[0]):.2f}" if len(beats) > 1 else ""
        return base + [" ".join(f"{b:.3f}" for b in beats), len(beats), bpm]
    if isinstance(task, TempoTask):
        return base + [f"{float(task.decode(out[None])[0]):.2f}"]
    probs = [f"{v:.6g}" for v in out]
    if isinstance(task, TaggingTask):
        return base + [";".join(c for c, v in zip(task.classes, out) if v >= threshold)] + probs
    k = int(np.argmax(out))
    return base + [task.classes[k], f"{out[k]:.6g}"] + probs


def error_row(task, path: Path, err: Exception, threshold: float) -> list:
    cells = [str(path), "error", " ".join(str(err).split())]
    return cells + [""] * (len(header(task, threshold)) - len(cells))


# errors of the device, not of a file: out of memory, a CUDA error (a device-side assert stays sticky)
DEVICE_FAILURES = (torch.OutOfMemoryError, torch.AcceleratorError)


def predict_files(predictor: Predictor, files: list[Path], out, threshold: float = 0.5,
                  progress: bool = True) -> dict:
    """Write one CSV row per file to the text stream `out` (flushed after each, so a long batch
    keeps what it did); returns counts and timings."""
    from tqdm import tqdm

    from musicpetl.audio import AudioError

    if not 0 < threshold <= 1:
        raise InputError(f"--threshold must be in (0, 1], got {threshold}")
    writer = csv.writer(out)
    writer.writerow(header(predictor.task, threshold))
    out.flush()
    stats = {"files": len(files), "ok": 0, "errors": 0, "audio_seconds": 0.0, "wall_seconds": 0.0}
    t_start = time.perf_counter()
    bar = tqdm(files, desc="predict", unit="file", disable=not progress, file=sys.stderr)
    for path in bar:
        bar.set_postfix_str(Path(path).name[-40:], refresh=False)
        try:
            result, seconds, n_seg = predictor.file(path)
            cells = row(predictor.task, path, result, seconds, n_seg, threshold)
            stats["ok"] += 1
            stats["audio_seconds"] += seconds
        except (AudioError, OSError, RuntimeError, ValueError) as err:  # an unreadable file: its row says why
            if isinstance(err, DEVICE_FAILURES):  # not the file's fault: every later file would fail too
                raise
            cells = error_row(predictor.task, path, err, threshold)
            stats["errors"] += 1
        writer.writerow(cells)
        out.flush()
    stats["wall_seconds"] = time.perf_counter() - t_start
    minutes = stats["audio_seconds"] / 60
    stats["seconds_per_audio_minute"] = stats["wall_seconds"] / minutes if minutes else float("nan")
    return stats


def run_predict(inputs: list[str], run: str = "models/run.safetensors", out: str = "-", device: str = "auto",
                batch_size: int = 8, threshold: float = 0.5, segment_seconds: float = 0.0,
                progress: bool = True) -> dict:
    """The `musicpetl predict` command: returns the counts and timings it also prints."""
    files = collect_inputs(inputs)
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    predictor = load_predictor(Path(run), device, batch_size, segment_seconds)
    if out == "-":
        return predict_files(predictor, files, sys.stdout, threshold, progress)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", newline="") as fh:
        return predict_files(predictor, files, fh, threshold, progress)
