"""torch.distributed for ``torchrun ... -m imgcls train``: one process per device, rank 0 writes the files.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them everything here is a no-op, so the
single-process path is the same code.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from .errors import ImgclsError

log = logging.getLogger("imgcls")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def enabled() -> bool:
    return world_size() > 1


def is_main() -> bool:
    return rank() == 0


def setup(device_name: str) -> torch.device:
    """Join the process group (NCCL on GPUs, gloo on CPU) and return this rank's own device."""
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise ImgclsError(f"--device {device_name}: no CUDA GPU is available on this node; use --device cpu")
    if use_cuda:
        if local_rank() >= torch.cuda.device_count():
            raise ImgclsError(f"rank {rank()}: LOCAL_RANK {local_rank()} but only {torch.cuda.device_count()} GPU(s) "
                              "on this node; lower --nproc_per_node")
        torch.cuda.set_device(local_rank())
        device = torch.device("cuda", local_rank())
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timedelta(minutes=30),
                                device_id=device if use_cuda else None)
    if not is_main():
        logging.getLogger("imgcls").setLevel(logging.ERROR)  # one console: rank 0 speaks for the run
    else:
        log.info(f"Distributed: {world_size()} processes ({'NCCL' if use_cuda else 'gloo'}), this is rank 0")
    return device


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast(obj):
    """Rank 0's ``obj`` on every rank (e.g. the run folder it created)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def merge_by_index(parts: list[dict]) -> dict:
    """Join per-rank arrays keyed by dataset index, dropping the duplicates a DistributedSampler pads with,
    so every image of the split counts exactly once, in dataset order."""
    indices = np.concatenate([p["indices"] for p in parts])
    _, first = np.unique(indices, return_index=True)
    return {key: np.concatenate([p[key] for p in parts])[first] for key in parts[0]}
