"""musicpetl: parameter-efficient transfer learning of music foundation models, as a DVC pipeline."""
import os

# Idle OpenMP threads sleep instead of spinning (only where the user has not chosen): on a CPU shared
# with other jobs, libgomp's default spin-wait lets a thread burn its time slice waiting for a
# descheduled partner; a mert-tiny LoRA step measured 9.0 s with it and 0.22 s without under load 4
# (BENCHMARKS.md "OpenMP wait policy"). Read when torch's OpenMP runtime loads, so this must run first:
# every entry point (stages, the CLI, tests' conftest) imports musicpetl before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
