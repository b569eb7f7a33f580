"""Where a training process runs: its rank among DDP processes (torchrun) and its device.

- `context(device_name)`: the process's `DistContext`. Under torchrun (WORLD_SIZE > 1 in the
  environment) it joins the process group: NCCL with one GPU per process (LOCAL_RANK) on CUDA,
  gloo on CPU. Otherwise a single-process context; all collective helpers are then no-ops.
- `launch(script, nproc)`: re-runs a stage script under `torchrun --standalone --nproc_per_node N`
  (what `train.nproc: N` in params.yaml does); multi-node runs call torchrun themselves with its
  rendezvous options (README "Training at scale").
- `claim_gpu()`: for N experiments at once on one N-GPU machine (`dvc queue start -j N`): each
  train process takes the first free GPU of those visible, by an exclusive lock file held for the
  process's life, and sees only that one (CUDA_VISIBLE_DEVICES), so the experiments never share.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from musicpetl.errors import EnvironmentProblem


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: Any = None  # torch.device; torch is imported lazily (claim_gpu runs before CUDA starts)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            import torch

            torch.distributed.barrier()

    def mean(self, t):
        """The mean over ranks of a tensor (every rank gets it)."""
        if not self.active:
            return t
        import torch

        t = t.clone()
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t / self.world

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.active:
            return [obj]
        import torch

        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank."""
        if not self.active:
            return obj
        import torch

        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        import torch

        if self.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def context(device_name: str = "auto", timeout_minutes: float = 120.0) -> DistContext:
    """This process's place: a joined process group under torchrun, else a single process on the
    device `train.device` names. The long timeout covers rank 0 building a cache alone."""
    import torch

    from musicpetl.device import pick_device

    if not under_torchrun():
        return DistContext(device=pick_device(device_name))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name == "cuda" and not use_cuda:
        raise EnvironmentProblem("train.device is cuda but no CUDA device is visible; use auto or cpu")
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise EnvironmentProblem(f"local rank {local} but only {torch.cuda.device_count()} GPUs are visible: "
                                     f"use at most that many processes per node (train.nproc)")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                                             timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistContext(rank=rank, world=world, local_rank=local, device=device)


def launch(script: str | Path, nproc: int, extra_args: list[str] | None = None) -> None:
    """Run `script` under torchrun on this machine with `nproc` processes; raises if any fails."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(script), *(extra_args or [])]
    res = subprocess.run(cmd)
    if res.returncode:
        raise EnvironmentProblem(f"torchrun with {nproc} processes failed (exit {res.returncode}); see the ranks' "
                                 f"messages above")


# -- one GPU per experiment -----------------------------------------------------------------------

_HELD: list = []  # lock files held for this process's life


def _lock_dir() -> Path:
    return Path(os.environ.get("MUSICPETL_GPU_LOCKS", Path(tempfile.gettempdir()) / f"musicpetl-gpus-{os.getuid()}"))


def claim_gpu(visible: list[str] | None = None) -> str | None:
    """Take the first free GPU among `visible` (default: CUDA_VISIBLE_DEVICES, else every GPU
    torch sees), hold its lock until this process exits, and restrict CUDA to it. Returns the
    GPU's id, or None when there is no GPU to claim (CPU) or all are taken (then nothing changes:
    the caller shares). Call before CUDA is initialised."""
    if visible is None:
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        if env is not None:
            visible = [v.strip() for v in env.split(",") if v.strip()]
        else:
            import torch

            # device_count() asks NVML and leaves CUDA uninitialised; is_available() would call cuInit,
            # after which the driver ignores the CUDA_VISIBLE_DEVICES set below (every claimant on GPU 0).
            # Without NVML it falls back to the runtime, and the restriction may not take (then: shared).
            visible = [str(i) for i in range(torch.cuda.device_count())]
    if len(visible) < 2:
        return visible[0] if visible else None
    locks = _lock_dir()
    locks.mkdir(parents=True, exist_ok=True)
    for gpu in visible:
        fh = open(locks / f"gpu-{gpu}.lock", "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            continue
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid()}))
        fh.flush()
        _HELD.append(fh)  # released by the kernel when the process ends, killed or not
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        return gpu
    return None
