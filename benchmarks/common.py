"""Shared pieces of the benchmarks: the plain torchvision baseline and a one-line result printer."""

from __future__ import annotations

import json
import platform
import time

import torch


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import os

    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def report(name: str, **numbers) -> None:
    print(json.dumps({"benchmark": name, "machine": machine(), **numbers}), flush=True)


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
