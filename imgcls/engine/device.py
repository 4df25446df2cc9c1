"""Devices, seeds, random states and autocast: the few facts about the hardware a run needs."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every random generator training draws from, as tensors and plain values (safe to torch.save)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    np_state = np.random.get_state()
    state["numpy"] = [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))


def autocast(device: torch.device, amp: bool | str):
    """float16 autocast on CUDA when ``amp``; bf16 autocast on CPU when ``amp == "bf16"`` (chosen only
    after measuring that it is faster on this CPU); otherwise nothing."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if amp == "bf16" and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
