"""Resumable training: a checkpoint every `train.checkpoint_every` steps, outside DVC's outputs.

A checkpoint holds everything the rest of a run depends on: the trained tensors
(`run_io.trained_state`) and the optimiser's state, the step (the learning rate and the data
order are functions of it: `data.loaders.BatchStream`), every RNG (torch, CUDA, numpy, python),
the best validation score, step and state so far and the early-stopping count, and the metric
history (dvclive's curves are rebuilt from it, whatever DVC deleted). It lives in
`.musicpetl/checkpoints/<key>/checkpoint.pt`, where the key hashes the params the run depends on,
the data it reads and the code, so a checkpoint is only ever resumed by the run it belongs to;
the stage removes it once the run file and metrics are written. `.musicpetl/` is ignored by git
and DVC: a checkpoint never becomes an output.

Writes are atomic (a temporary sibling renamed into place, `musicpetl.io.atomic_path`), so a
process killed at any moment leaves either the previous checkpoint or the new one; its temporary
is removed by the next writer. `MUSICPETL_CHECKPOINT_WRITE_SLEEP=<step>:<seconds>` pauses the
write of that step's checkpoint halfway through the file (tests kill the process there).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from musicpetl.errors import InputError
from musicpetl.io import atomic_path

FORMAT = "musicpetl-checkpoint/1"
ROOT = Path(".musicpetl/checkpoints")
# train params that change neither the numbers nor the data a run sees
_NOT_RESULTS = ("checkpoint_every", "num_workers", "nproc")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_digest() -> str:
    """Every source file of the package plus the train stage script."""
    src = Path(__file__).resolve().parent
    files = sorted(src.rglob("*.py")) + [src.parents[1] / "stages" / "train.py"]
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(src.parents[1])).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def store_fingerprint(store) -> dict:
    """The prepared store's identity without reading all its audio: index and meta in full, each
    split array's size and 64 evenly spaced 64 kB blocks of it."""
    root = Path(store.root)
    out = {name: _sha((root / name).read_bytes()) for name in ("index.jsonl", "meta.json")}
    for npy in sorted(root.glob("*.npy")):
        size = npy.stat().st_size
        h = hashlib.sha256(str(size).encode())
        with open(npy, "rb") as fh:
            for k in range(64):
                fh.seek(size * k // 64)
                h.update(fh.read(1 << 16))
        out[npy.name] = h.hexdigest()
    return out


def run_key(p, store, extra: dict | None = None, world: int = 1) -> str:
    """What identifies a run: train-relevant params, the data fingerprints, the code, the world size."""
    params = dataclasses.asdict(p)
    params["train"] = {k: v for k, v in params["train"].items() if k not in _NOT_RESULTS}
    relevant = {"seed": params["seed"], "backbone": params["backbone"], "method": p.petl.method,
                "method_options": p.method_options(), "train": params["train"],
                "eval_batch": params["eval"]["batch_size"], "world": world, "data": store_fingerprint(store),
                "extra": extra or {}, "code": code_digest()}
    return _sha(json.dumps(relevant, sort_keys=True, default=str).encode())[:24]


# -- RNG ------------------------------------------------------------------------------------------

def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                       "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # this process's GPU only: a run may resume seeing fewer GPUs (a claimed one, CUDA_VISIBLE_DEVICES)
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])  # (checkpoints of older code never resume: the key has a code digest)


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


# -- the checkpoint file --------------------------------------------------------------------------

class Checkpointer:
    """One run's checkpoint: `every` steps (0: never), under `root/key/`."""

    def __init__(self, root: str | Path, key: str, every: int):
        self.dir = Path(root) / key
        self.key, self.every = key, every
        self.path = self.dir / "checkpoint.pt"

    def due(self, step: int, last: bool) -> bool:
        return self.every > 0 and (last or step % self.every == 0)

    def exists(self) -> bool:
        return self.every > 0 and self.path.is_file()

    def load(self) -> dict | None:
        if not self.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
            raise InputError(f"{self.path} is not a readable checkpoint ({type(err).__name__}: {err}); delete "
                             f"{self.dir} to start this run over") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("key") != self.key:
            raise InputError(f"{self.path} is not a checkpoint of this run (format or key differ); delete "
                             f"{self.dir} to start this run over")
        return state

    def save(self, state: dict) -> dict:
        """Write atomically, serialised straight into the file (a fine-tuning checkpoint is GBs: no
        copy in memory first); returns {"seconds", "bytes"} of the write."""
        t0 = time.perf_counter()
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as fh:
                torch.save({"format": FORMAT, "key": self.key, **state}, _PausingWriter(fh, state.get("step")))
                fh.flush()
                os.fsync(fh.fileno())
                size = fh.tell()
        return {"seconds": time.perf_counter() - t0, "bytes": size}

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            self.dir.parent.rmdir()  # the checkpoints folder, when this was the last run in it
        except OSError:
            pass

    def others(self) -> list[Path]:
        """Checkpoints of other runs (other params, data or code) left by killed runs."""
        if not self.dir.parent.is_dir():
            return []
        return [d for d in self.dir.parent.iterdir() if d.is_dir() and d != self.dir]


class _PausingWriter:
    """The checkpoint file as torch.save writes it. Under the tests' hook (MUSICPETL_CHECKPOINT_WRITE_SLEEP
    = "<step>:<seconds>") the write of that step's checkpoint pauses once, after its first bytes are
    on disk, so that a test can kill the process in the middle of a checkpoint write."""

    def __init__(self, fh, step):
        self.fh, self.step, self.pause = fh, step, _write_pause(step)

    def write(self, data) -> int:
        n = self.fh.write(data)
        if self.pause:
            self.fh.flush()
            print(f"[checkpoint] writing step {self.step}: paused", file=sys.stderr, flush=True)
            time.sleep(self.pause)
            self.pause = 0.0
        return n

    def flush(self) -> None:
        self.fh.flush()


def _write_pause(step) -> float:
    hook = os.environ.get("MUSICPETL_CHECKPOINT_WRITE_SLEEP", "")
    if ":" in hook:
        at, _, seconds = hook.partition(":")
        if at.isdigit() and int(at) == step:
            return float(seconds)
    return 0.0


# -- metric history (dvclive curves) ------------------------------------------------------------

class MetricLog:
    """Every metric a run logs, in order, kept for checkpoints and written to `live` in batches.

    Values may be tensors (a step's loss): they are turned into numbers at `flush`, once for all
    pending steps (no per-step device sync). A dvclive `Live` gets the rows with their steps set
    directly and one `next_step()` per flush (its per-step sync rewrites metrics.json and re-reads
    every curve); any other logger (tests' recorders) gets `log_metric` and `next_step` per step,
    in the order of an unbatched loop."""

    def __init__(self, live=None):
        self.live = live
        self.steps: list[int] = []
        self.names: list[str] = []
        self.values: list = []
        self.resolved = 0  # values[:resolved] are numbers
        self.sent = 0  # values[:sent] are in `live`

    def log(self, step: int, name: str, value) -> None:
        self.steps.append(step)
        self.names.append(name)
        self.values.append(value)

    def latest(self, name: str) -> float:
        i = len(self.names) - 1 - self.names[::-1].index(name)
        return float(self.values[i])

    def flush(self, reduce=None, send: bool = True) -> None:
        """Resolve pending tensor values (`reduce`: e.g. the mean over DDP ranks, applied to the
        stacked pending tensors; every rank must call this at the same steps) and, with `send`,
        write everything resolved so far to `live`."""
        pending = range(self.resolved, len(self.values))
        tensors = [i for i in pending if isinstance(self.values[i], torch.Tensor)]
        if tensors:
            stacked = torch.stack([self.values[i].detach().float().reshape(()) for i in tensors])
            if reduce is not None:
                stacked = reduce(stacked)
            for i, v in zip(tensors, stacked.cpu().tolist()):
                self.values[i] = float(v)
        self.resolved = len(self.values)
        if send:
            self._send(self.sent, len(self.values))
            self.sent = len(self.values)

    def _send(self, start: int, stop: int) -> None:
        live = self.live
        if live is None or start == stop:
            return
        if _is_dvclive(live):
            _write_rows(live, self.steps[start:stop], self.names[start:stop], self.values[start:stop])
            live.step = self.steps[stop - 1] - 1
            live.next_step()
            return
        for i in range(start, stop):
            live.log_metric(self.names[i], self.values[i])
            if i + 1 == stop or self.steps[i + 1] != self.steps[i]:
                live.next_step()

    def state(self) -> dict:
        self.flush()
        names = sorted(set(self.names))
        return {"names": names, "steps": torch.tensor(self.steps, dtype=torch.int64),
                "which": torch.tensor([names.index(n) for n in self.names], dtype=torch.int64),
                "values": torch.tensor(self.values, dtype=torch.float64)}

    def restore(self, state: dict) -> None:
        """Take over a checkpoint's history and rebuild `live`'s curves from it: rows logged after
        the checkpoint by the killed process are dropped, what DVC deleted is written again."""
        names = state["names"]
        self.steps = state["steps"].tolist()
        self.names = [names[i] for i in state["which"].tolist()]
        self.values = state["values"].tolist()
        self.resolved = len(self.values)
        live = self.live
        if live is not None and hasattr(live, "plots_dir"):
            metrics = Path(live.plots_dir) / "metrics"
            for name in names:
                (metrics / f"{name}.tsv").unlink(missing_ok=True)
            if hasattr(live, "summary"):
                live.summary = {}
        self.sent = 0
        self._send(0, len(self.values))
        self.sent = len(self.values)


def _is_dvclive(live) -> bool:
    try:
        from dvclive import Live
    except ImportError:
        return False
    return isinstance(live, Live)


def _write_rows(live, steps: list[int], names: list[str], values: list) -> None:
    """What `live.log_metric(name, value)` at dvclive step `step - 1` writes, for many rows at once:
    each metric's .tsv opened once (dvclive opens it for every row), same columns and format
    (tests/test_resume.py compares the two), and the summary's latest values."""
    import csv
    import math

    from dvclive.plots import Metric

    rows: dict[str, list] = {}
    for step, name, value in zip(steps, names, values):
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            value = str(value)
        rows.setdefault(name, []).append({"step": step - 1, os.path.basename(name): value})
    for name, batch in rows.items():
        metric = live._metrics.get(name)
        if metric is None:
            metric = live._metrics[name] = Metric(name, live.plots_dir)
        path = metric.output_path
        existed = path.exists()
        with open(path, "a", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, ["step", os.path.basename(name)], delimiter="\t", lineterminator=os.linesep)
            if not existed:
                writer.writeheader()
            writer.writerows(batch)
        metric.step = batch[-1]["step"]
        live.log_metric(name, batch[-1][os.path.basename(name)], plot=False)  # the summary's latest value
