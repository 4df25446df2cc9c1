"""torch.distributed for ``torchrun ... -m imgcls train``: one process per device, rank 0 writes the files.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them everything here is a no-op, so the
single-process path is the same code.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import timedelta
from typing import NoReturn

import numpy as np
import torch
import torch.distributed as dist

from ..errors import ImgclsError

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


def leave() -> NoReturn:
    """End this torchrun worker now that its run is saved, without Python's interpreter teardown.

    ``destroy_process_group`` does not close a gloo group that DistributedDataParallel used: PyTorch keeps it
    alive in C++ (pytorch/pytorch#107298, #72366; here each rank keeps its group's threads). Python's teardown can
    then meet one of those threads still finishing the last collective, which aborts the process after the run
    was saved ("terminate called without an active exception", exit -6, pytorch/pytorch#179291): torchrun
    reports a failed run that succeeded. Everything is written and closed by now, so flush and exit.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


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


def train_sampler(dataset, seed: int, epoch: int):
    """Each rank trains on its own shuffled 1/world of the data; None when not distributed."""
    if not enabled():
        return None
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return sampler


def eval_sampler(dataset):
    """Each rank evaluates 1/world of the split (padded to equal shares; gather_eval drops the padding)."""
    if not enabled():
        return None
    from torch.utils.data import DistributedSampler

    return DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=False)


def gather_train(out):
    """One EpochOutput for the whole training epoch from every rank's share."""
    if not enabled():
        return out
    from .loop import EpochOutput

    parts = gather((out.loss, len(out.targets), out.targets, out.predictions, out.seconds, out.input_wait))
    seen = sum(p[1] for p in parts)
    loss = sum(p[0] * p[1] for p in parts) / max(seen, 1)
    slowest = max(parts, key=lambda p: p[4])  # the ranks wait for each other: the epoch is as long as its slowest
    return EpochOutput(loss=loss, targets=np.concatenate([p[2] for p in parts]),
                       predictions=np.concatenate([p[3] for p in parts]), steps=out.steps, seconds=slowest[4],
                       input_wait=slowest[5])


def gather_logits(out):
    """One Logits covering every image of the split exactly once, in dataset order."""
    if not enabled():
        return out
    from ..runtime.inference import Logits

    merged = merge_by_index(gather({"indices": out.indices, "labels": out.labels, "logits": out.logits}))
    return Logits(merged["logits"], merged["labels"], merged["indices"])


def wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` in DistributedDataParallel under torchrun (gradients averaged across processes), else itself.

    Build it after setting which parameters train: DDP only syncs the ones that require gradients then.
    """
    if not enabled():
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def sync_buffers(model: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics), which are the ones saved in the
    checkpoint, so that each rank's share of the evaluation uses the same network."""
    if not dist.is_initialized():
        return
    with torch.no_grad():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def average_buffers(buffers: list[torch.Tensor]) -> None:
    """Each of ``buffers`` replaced by its mean over the ranks (every rank passes the same list)."""
    if not dist.is_initialized():
        return
    with torch.no_grad():
        for buffer in buffers:
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer /= world_size()
