"""Process memory read from /proc (Linux): what the benchmarks report as peak RSS.

tracemalloc does not see torch's allocations; the kernel's counters do.
"""
from __future__ import annotations


def proc_status_mib(field: str) -> float:
    """A /proc/self/status field (VmRSS, VmHWM, ...) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> None:
    """VmHWM := VmRSS (Linux >= 4.0), so the next VmHWM is the peak of what follows."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
