"""Which device runs a network, and in which precision: chosen by name, or measured where it matters."""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
import time

import torch
from torch import nn

from ..errors import ImgclsError

log = logging.getLogger("imgcls")


def select_device(name: str) -> torch.device:
    """auto (CUDA, then Apple MPS, then CPU), or the device named, with a clear error when it is absent."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ImgclsError(f"--device {name}: no CUDA GPU is available here; use --device cpu or auto")
    if name == "mps" and not mps:
        raise ImgclsError("--device mps: Apple MPS is not available here; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ImgclsError(f"--device {name!r}: choose auto, cpu, cuda, cuda:N or mps") from None


def autocast(device: torch.device, amp: bool | str):
    """On CUDA, bf16 autocast when ``amp == "bf16"`` and float16 autocast (with a gradient scaler) when ``amp`` is
    True; bf16 autocast on CPU when ``amp == "bf16"`` (chosen only after measuring that it is faster on this CPU);
    otherwise nothing."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
    if amp == "bf16" and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def accelerator_amp(device: torch.device, wanted: bool | None) -> bool | str:
    """The autocast a CUDA GPU trains under unless --no-amp: bf16 where the GPU computes in it natively (Ampere
    and later: the range of float32, no loss scaling, tensor-core speed), else float16 with a gradient scaler."""
    if device.type != "cuda" or wanted is False:
        return False
    return "bf16" if torch.cuda.is_bf16_supported() else True


def cpu_bf16_is_faster(model: nn.Module, input_size, batch: int = 4) -> bool:
    """Time one training step in float32 and in bf16 autocast on CPU; True only when bf16 wins clearly.

    CPUs without native bf16 (AVX512-BF16/AMX) emulate it and are slower, so this is measured, not assumed.
    """
    probe = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(0))
    trial = copy.deepcopy(model).train()

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = trial(probe).float().mean()
        loss.backward()
        return time.perf_counter() - start

    key = f"{type(model).__name__}|{sum(p.numel() for p in model.parameters())}|{list(input_size)}"
    if not survives("bf16 autocast", key, lambda: step(True)):
        warn_once("bf16 autocast", type(model).__name__)
        return False
    try:
        step(False), step(True)  # warm-up
        fp32 = min(step(False) for _ in range(3))
        bf16 = min(step(True) for _ in range(3))
    except RuntimeError:
        return False
    return bf16 < 0.85 * fp32


# ---------------------------------------------------------------------------------------------------------
# Native fast paths that can crash the process (a segmentation fault in PyTorch's kernels for one architecture on
# one CPU) are tried once in a forked child; the outcome is remembered, and a crash costs only that path.

PROBES_FILE = "native-probes.json"
PROBE_SECONDS = 300.0
_warned: set[str] = set()


def survives(path: str, key: str, trial, *, timeout: float = PROBE_SECONDS) -> bool:
    """Whether ``trial()`` (the native fast path named ``path``) runs without the process crashing, measured once
    in a forked child and remembered under ``key`` for this machine and these libraries. Where processes cannot
    fork (Windows, macOS), True: the path is taken without a trial."""
    import os

    from ..record.cache import recalled, remember

    key = _probe_key(path, key)
    known = recalled(PROBES_FILE, key)
    if known is not None:
        return known == "ok"
    if not hasattr(os, "fork") or sys.platform == "darwin":
        return True
    outcome = _in_child(trial, timeout)
    if outcome is not None:  # a child that ran out of time proves nothing: tried again next time
        remember(PROBES_FILE, key, outcome)
    return outcome in ("ok", None)


def warn_once(path: str, subject: str) -> None:
    """One warning per process and path (the training network and the one predict runs are probed apart, and
    share the verdict as a rule): the run goes on without the fast path."""
    if path not in _warned:
        _warned.add(path)
        log.warning(f"WARNING: {path} crashes the process for {subject} on this machine (tried in a child process); "
                    f"going on without it")


def _in_child(trial, timeout: float) -> str | None:
    """"ok", "crash" (a signal, or any failure), or None when the child ran out of time."""
    import os
    import signal

    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: one thread (OpenMP's pool does not survive fork), no cleanup of the parent's state
        code = 3
        try:
            import faulthandler

            faulthandler.disable()  # a crash here is the answer sought, not a report for the user (nor for pytest)
            quiet = os.open(os.devnull, os.O_WRONLY)  # nor what the C library says as it crashes
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            torch.set_num_threads(1)
            trial()
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "ok" if os.waitstatus_to_exitcode(status) == 0 else "crash"
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _probe_key(path: str, key: str) -> str:
    import hashlib
    import platform

    spec = f"{path}|{key}|{torch.__version__}|{platform.machine()}|{platform.processor()}|{_cpu_model()}"
    return f"{path}:{hashlib.sha256(spec.encode()).hexdigest()[:20]}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return ""


def channels_last_survives(model: nn.Module, input_size, *, train: bool, subject: str = "this model") -> bool:
    """Whether ``model`` runs in channels_last on the CPU here (a forward, and with ``train`` a backward too, on a
    batch of two at ``input_size``), with one warning when it does not."""
    shapes = ",".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    key = f"{type(model).__name__}|{shapes}|{list(input_size)}|{'train' if train else 'eval'}"

    def trial():
        module = model.to(memory_format=torch.channels_last).train(train)
        x = torch.randn(2, *input_size).contiguous(memory_format=torch.channels_last)
        with torch.set_grad_enabled(train):
            out = module(x)
            if train:
                (out if isinstance(out, torch.Tensor) else out[0]).float().sum().backward()

    fine = survives("channels_last", key, trial)
    if not fine:
        warn_once("channels_last", subject)
    return fine


def compile_survives(model: nn.Module, input_size, *, subject: str = "this model") -> bool:
    """Whether ``torch.compile`` of ``model`` trains here (one forward and backward of a batch of two at
    ``input_size``, compiled), with one warning when it does not: its generated kernels are native code, and a
    compiler that fails (no C++ compiler, an unsupported op) counts as a crash too."""
    shapes = ",".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    key = f"{type(model).__name__}|{shapes}|{list(input_size)}"

    def trial():
        out = torch.compile(model.train())(torch.randn(2, *input_size))
        (out if isinstance(out, torch.Tensor) else out[0]).float().sum().backward()

    fine = survives("torch.compile", key, trial)
    if not fine:
        warn_once("torch.compile", subject)
    return fine
