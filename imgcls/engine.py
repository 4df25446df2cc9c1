"""The training loop as a few plain functions: the lr schedule, one training epoch, one evaluation."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


def lr_factor(step: int, total_steps: int, warmup_steps: int, lrf: float) -> float:
    """Multiplier of the base lr at optimizer step ``step``: linear warmup, then cosine to ``lrf``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / decay_steps))
    return lrf + (1.0 - lrf) * 0.5 * (1.0 + math.cos(math.pi * progress))


def pre_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Pooled backbone features, i.e. the input of the classifier layer."""
    return model.forward_head(model.forward_features(images), pre_logits=True)


def autocast(device: torch.device, enabled: bool | str):
    """float16 autocast on CUDA when ``enabled``; bf16 autocast on CPU when ``enabled == "bf16"``
    (the trainer only asks for it after measuring that it is faster on this CPU)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if enabled == "bf16" and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class EpochOutput:
    """What one pass over a loader produced: mean loss, true labels, predictions or probabilities."""

    loss: float
    targets: np.ndarray
    predictions: np.ndarray
    probs: np.ndarray | None = None
    indices: np.ndarray | None = None
    steps: int = 0


def _progress(loader, desc: str, enabled: bool):
    if not enabled:
        return loader
    from tqdm import tqdm

    return tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=None, unit="batch")


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    *,
    device: torch.device,
    frozen_backbone: bool,
    step: int,
    total_steps: int,
    warmup_steps: int,
    lrf: float,
    clip_grad: float | None = None,
    scaler: torch.amp.GradScaler | None = None,
    amp: bool = False,
    desc: str = "train",
    progress: bool = True,
    distiller=None,
    channels_last: bool = False,
    head: nn.Module | None = None,
    network: nn.Module | None = None,
) -> EpochOutput:
    """One epoch over ``loader``; the lr is set from the schedule before every optimizer step.

    With a frozen backbone, the backbone runs in eval mode without autograd and only the
    classifier layer learns, so batch-norm statistics of the pretrained body stay intact.
    A ``distiller`` (imgcls.distill) mixes a teacher's soft targets on the same batch into the loss.
    ``head`` and ``network`` replace model.get_classifier() and model for the forward pass, e.g. by
    their DistributedDataParallel wrappers, which average the gradients across processes.
    """
    head = head if head is not None else model.get_classifier()
    network = network if network is not None else model
    if frozen_backbone:
        model.eval()
        head.train()
    else:
        model.train()
    total_loss, seen, steps = 0.0, 0, 0
    targets, predictions = [], []
    for batch in _progress(loader, desc, progress):
        if batch is None:
            continue
        images, labels, _ = batch
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        factor = lr_factor(step + steps, total_steps, warmup_steps, lrf)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        with autocast(device, amp):
            if frozen_backbone:
                with torch.no_grad():
                    features = pre_logits(model, images)
                logits = head(features.float() if amp else features)
            else:
                logits = network(images)
            loss = criterion(logits.float(), labels)
            if distiller is not None:
                loss = distiller.loss(images, logits, loss)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if clip_grad:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
        steps += 1
        total_loss += loss.item() * len(labels)
        seen += len(labels)
        targets.append(labels.cpu())
        predictions.append(logits.detach().argmax(1).cpu())
    return EpochOutput(
        loss=total_loss / max(seen, 1),
        targets=torch.cat(targets).numpy() if targets else np.zeros(0, dtype=np.int64),
        predictions=torch.cat(predictions).numpy() if predictions else np.zeros(0, dtype=np.int64),
        steps=steps,
    )


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader,
    criterion: nn.Module | None = None,
    *,
    device: torch.device,
    amp: bool = False,
    desc: str = "val",
    progress: bool = True,
    temperature: float = 1.0,
    channels_last: bool = False,
) -> EpochOutput:
    """Predict every batch of ``loader``; returns loss, labels, predictions and probabilities."""
    model.eval()
    total_loss, seen = 0.0, 0
    targets, probs, indices = [], [], []
    for batch in _progress(loader, desc, progress):
        if batch is None:
            continue
        images, labels, index = batch
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(images).float()
        if criterion is not None:
            total_loss += criterion(logits, labels).item() * len(labels)
        seen += len(labels)
        targets.append(labels.cpu())
        probs.append(torch.softmax(logits / temperature, dim=1).cpu())
        indices.append(index)
    if not targets:
        empty = np.zeros(0, dtype=np.int64)
        return EpochOutput(0.0, empty, empty, np.zeros((0, 0)), empty)
    probs_np = torch.cat(probs).numpy()
    return EpochOutput(
        loss=total_loss / max(seen, 1),
        targets=torch.cat(targets).numpy(),
        predictions=probs_np.argmax(1),
        probs=probs_np,
        indices=torch.cat(indices).numpy(),
    )
