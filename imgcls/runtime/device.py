"""Which device runs a network, and in which precision: chosen by name, or measured where it matters."""

from __future__ import annotations

import contextlib
import copy
import time

import torch
from torch import nn

from ..errors import ImgclsError


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
    """float16 autocast on CUDA when ``amp``; bf16 autocast on CPU when ``amp == "bf16"`` (chosen only
    after measuring that it is faster on this CPU); otherwise nothing."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if amp == "bf16" and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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

    try:
        step(False), step(True)  # warm-up
        fp32 = min(step(False) for _ in range(3))
        bf16 = min(step(True) for _ in range(3))
    except RuntimeError:
        return False
    return bf16 < 0.85 * fp32
