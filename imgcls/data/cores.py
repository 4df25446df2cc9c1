"""How many cores this process may use, and the worker counts that follow from it (no torch import: predict's
warm start uses them)."""

from __future__ import annotations

import os


def available_cpus() -> int:
    """Cores this process may run on (a container or taskset may allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """DataLoader worker processes: leave the main process a core on small machines."""
    return max(0, min(8, available_cpus() - 1))


def default_threads() -> int:
    """Reading threads for file-bound work (hashing, header checks): one more than the cores hides IO waits."""
    return min(16, available_cpus() + 1)
