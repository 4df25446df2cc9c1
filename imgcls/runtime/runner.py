"""The ``Runner`` (a batch in, the network's outputs as numpy arrays out) and ONNX Runtime, without PyTorch.

Everything that runs a network goes through a Runner; runtime/pytorch.py builds them from PyTorch modules and
checkpoints. This module imports no torch, so ``imgcls predict`` on a checkpoint with a checked export
(runtime/cards.py) starts on ONNX Runtime alone.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ImgclsError

RUNTIMES = ("auto", "torch", "onnxruntime")
PARITY_RTOL = 1e-3   # largest output difference from eager PyTorch, relative to the output's scale
TORCH = "torch channels_last"
ORT = "onnxruntime"


@dataclass
class Runner:
    """A forward pass: float32 batch (torch or numpy) in, the network's outputs as float32 numpy arrays out
    (``run`` gives one array, or a tuple of them). Calling it gives the first output; ``outputs`` gives them all.

    ``fixed_batch``: a file exported for one batch size is fed exactly that many rows at a time.
    """

    name: str
    run: Callable = field(repr=False)
    fixed_batch: int | None = None
    images_per_second: float | None = None
    metadata: dict = field(default_factory=dict)   # what the file says about itself (ONNX metadata_props)

    def __call__(self, inputs) -> np.ndarray:
        return self.outputs(inputs)[0]

    def outputs(self, inputs) -> tuple[np.ndarray, ...]:
        step = self.fixed_batch
        if not step or len(inputs) == step:
            return self._run(inputs)
        parts = [self._run(inputs[i:i + step]) for i in range(0, len(inputs), step)]
        return tuple(np.concatenate(column) for column in zip(*parts))

    def _run(self, inputs) -> tuple[np.ndarray, ...]:
        out = self.run(inputs)
        return out if isinstance(out, tuple) else (out,)


def runtime_threads() -> int:
    """Threads a runtime runs on: PyTorch's own count where it is loaded (its default counts physical cores, and
    ``torch.set_num_threads`` changes it), else ``OMP_NUM_THREADS`` as PyTorch would read it (a Ray worker's
    share of the CPUs, so that one worker per CPU does not start one thread per core each), else the cores this
    process may use."""
    import os
    import sys

    from ..data.cores import available_cpus

    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    asked = os.environ.get("OMP_NUM_THREADS", "")
    return int(asked) if asked.isdigit() and int(asked) > 0 else available_cpus()


def onnx_runner(model: str | Path | bytes, *, threads: int, name: str = ORT) -> Runner:
    """A CPU ONNX Runtime session (full graph optimisation) over a file or bytes, on ``threads`` cores
    (``runtime_threads()``; a warm predict, the count its card recorded).

    Each core runs its own share of a batch on one thread: the session is thread-safe and releases the GIL,
    and on small CPUs this beats one call spread over the cores, whose threads wait for each other at every
    layer (docs/benchmarks.md).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImgclsError("running ONNX needs onnxruntime: pip install 'imgcls[fast]'") from None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    fixed = first.shape[0] if isinstance(first.shape[0], int) and first.shape[0] > 0 else None
    split = _Split(threads)

    def run(inputs):
        array = np.ascontiguousarray(inputs, dtype=np.float32)  # a CPU torch tensor converts without a copy
        return split(lambda part: tuple(session.run(None, {first.name: part})), array)

    return Runner(name, run, fixed_batch=fixed, metadata=dict(session.get_modelmeta().custom_metadata_map)
                  | {"outputs": [o.name for o in session.get_outputs()]})


class _Split:
    """Runs ``fn`` on up to ``ways`` slices of a batch at once, one thread each, and joins the results."""

    def __init__(self, ways: int):
        from concurrent.futures import ThreadPoolExecutor

        self.ways = max(1, ways)
        self._pool = ThreadPoolExecutor(self.ways, thread_name_prefix="imgcls-runner")  # threads start on use

    def __call__(self, fn: Callable[[np.ndarray], tuple], batch: np.ndarray) -> tuple[np.ndarray, ...]:
        ways = min(self.ways, len(batch))
        if ways < 2:
            return fn(batch)
        parts = list(self._pool.map(fn, np.array_split(batch, ways)))
        return tuple(np.concatenate(column) for column in zip(*parts))


def outputs_error(got: tuple, expected: tuple) -> float:
    """relative_error of each output; inf when the outputs differ in number."""
    if len(got) != len(expected):
        return float("inf")
    return max(relative_error(g, e) for g, e in zip(got, expected))


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    """Largest difference of ``got`` from ``expected``, relative to the output's scale (inf for another shape)."""
    if got.shape != expected.shape:
        return float("inf")
    return float(np.abs(got - expected).max() / max(1.0, float(np.abs(expected).max())))


def measure(fn: Callable, batch, *, seconds: float = 3.0, warmup: int = 2, min_runs: int = 5,
            max_runs: int = 10_000) -> dict:
    """Time ``fn(batch)`` repeatedly for about ``seconds``: throughput and per-call latency percentiles."""
    for _ in range(warmup):
        fn(batch)
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - t0)
    times_arr = np.asarray(times)
    return {"img_per_s": float(len(batch) * len(times_arr) / times_arr.sum()),
            "p50_ms": float(np.percentile(times_arr, 50) * 1000),
            "p95_ms": float(np.percentile(times_arr, 95) * 1000), "runs": len(times_arr)}


def accelerator_visible() -> bool:
    """Whether ``--device auto`` could find a GPU here (CUDA, ROCm or Apple MPS), told without importing torch:
    where it could, predict asks PyTorch instead of taking a card."""
    import platform
    import shutil
    import sys

    if sys.platform == "darwin":
        return platform.machine() == "arm64"
    devices = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")  # NVIDIA, ROCm, WSL's GPU
    return any(os.path.exists(p) for p in devices) or bool(shutil.which("nvidia-smi"))
