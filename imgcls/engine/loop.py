"""The training loop as plain functions: the lr schedule (a pure function of the step), one epoch, and batch-norm
statistics recomputed over the training images."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..console import progress_bar
from ..runtime.device import autocast


def lr_factor(step: int, total_steps: int, warmup_steps: int, lrf: float) -> float:
    """Multiplier of the base lr at optimizer step ``step``: linear warmup, then cosine to ``lrf``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / decay_steps))
    return lrf + (1.0 - lrf) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Optimization:
    """How one optimizer step is taken: what to minimise, the lr schedule over the phase's steps, and
    the precision and gradient settings."""

    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    total_steps: int
    warmup_steps: int
    lrf: float
    scaler: torch.amp.GradScaler | None = None
    amp: bool | str = False
    clip_grad: float | None = None
    distiller: object | None = None   # models.distill.Distiller: mixes a teacher's soft targets into the loss
    mix: torch.Generator | None = None   # mixup/CutMix of each batch (data/device_batches.mix) from this generator
    classes: int = 0                     # the number of classes, for mixed targets
    frozen_norm: bool = False            # batch-norm layers keep their running statistics (eval mode) as they train

    def set_lr(self, step: int) -> float:
        factor = lr_factor(step, self.total_steps, self.warmup_steps, self.lrf)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        return self.optimizer.param_groups[0]["lr"]

    def backward_and_step(self, loss: torch.Tensor, params) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.clip_grad:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, self.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return
        loss.backward()
        if self.clip_grad:
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad)
        self.optimizer.step()


@dataclass
class EpochOutput:
    """What one training epoch produced: mean loss, true labels and predictions (multi-label: multi-hot targets and
    logits), optimizer steps taken."""

    loss: float
    targets: np.ndarray
    predictions: np.ndarray
    steps: int = 0
    seconds: float = 0.0      # the epoch's wall time
    input_wait: float = 0.0   # of which waiting for the next batch: the device idles while the input pipeline works


def norm_layers(module: nn.Module) -> list[nn.Module]:
    """The batch-norm layers of ``module`` that keep running statistics."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def train_one_epoch(upper: nn.Module, loader, opt: Optimization, *, device: torch.device, step: int,
                    lower: Callable | None = None, channels_last: bool = False, desc: str = "train",
                    progress: bool = True, after_step: Callable[[int], None] | None = None) -> EpochOutput:
    """One epoch over ``loader``'s (inputs, labels, indices) batches; the lr is set before every step.

    ``lower`` is the frozen part of the network below the trained ``upper`` part (None when the
    inputs already are its output, e.g. cached features): it runs without autograd, in eval mode,
    so the pretrained batch-norm statistics stay intact. ``after_step(step)`` runs after each optimizer step (an EMA
    of the weights follows them there).
    """
    upper.train()
    if opt.frozen_norm:
        for m in norm_layers(upper):
            m.eval()
    total_loss, seen, steps, waited = 0.0, 0, 0, 0.0
    targets, predictions = [], []
    start = ready = time.perf_counter()
    for batch in progress_bar(loader, desc, progress, unit="batch"):
        waited += time.perf_counter() - ready
        if batch is None:
            ready = time.perf_counter()
            continue
        images, labels, _ = batch
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        opt.set_lr(step + steps)
        with autocast(device, opt.amp):
            images, wanted = _mixed(images, labels, opt)
            inputs = images
            if lower is not None:
                with torch.no_grad():
                    inputs = lower(images).float()
            logits = upper(inputs)
            loss = opt.criterion(logits.float(), wanted)
            if opt.distiller is not None:
                loss = opt.distiller.loss(images, logits, loss)
        opt.backward_and_step(loss, upper.parameters())
        steps += 1
        if after_step is not None:
            after_step(step + steps)
        total_loss += loss.item() * len(labels)  # .item() waits for the device: what follows is the input's time
        seen += len(labels)
        targets.append(labels.cpu())
        # multi-label (float multi-hot targets): the logits themselves, each label judged on its own
        predictions.append((logits.detach().float() if labels.is_floating_point() else logits.detach().argmax(1)).cpu())
        ready = time.perf_counter()
    empty = np.zeros(0, dtype=np.int64)
    return EpochOutput(loss=total_loss / max(seen, 1),
                       targets=torch.cat(targets).numpy() if targets else empty,
                       predictions=torch.cat(predictions).numpy() if predictions else empty, steps=steps,
                       seconds=time.perf_counter() - start, input_wait=waited)


def _mixed(images: torch.Tensor, labels: torch.Tensor, opt: Optimization) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, the loss's targets): with ``opt.mix``, the images mixed in pairs and the targets with them (class
    probabilities); else as they are."""
    if opt.mix is None:
        return images, labels
    from ..data.device_batches import mix

    return mix(images, _probabilities(labels, opt), opt.mix)


def _probabilities(labels: torch.Tensor, opt: Optimization) -> torch.Tensor:
    """Class indices as one-hot probabilities (multi-hot targets are probabilities already)."""
    return labels if labels.is_floating_point() else nn.functional.one_hot(labels, opt.classes).float()


def recompute_batch_norm(upper: nn.Module, loader, *, device: torch.device, lower: Callable | None = None,
                         channels_last: bool = False, amp: bool | str = False, desc: str = "batch-norm statistics",
                         progress: bool = True) -> list[nn.Module]:
    """Set the running statistics of ``upper``'s batch-norm layers to the mean and variance of their inputs over
    ``loader``'s images under the current weights ("precise BN", Wu and Johnson, 2021), in one forward pass in
    training mode without gradients; ``lower`` is the frozen part below, as in ``train_one_epoch``.

    Each batch counts by its size (its momentum is its share of the images seen so far), so a short last batch
    weighs what its images do. Returns the layers it recomputed.
    """
    norms = norm_layers(upper)
    if not norms:
        return norms
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
    upper.train()
    seen = 0
    with torch.no_grad():
        for batch in progress_bar(loader, desc, progress, unit="batch"):
            if batch is None:
                continue
            images = batch[0].to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            seen += len(images)
            for m in norms:
                m.momentum = len(images) / seen
            with autocast(device, amp):
                upper(lower(images).float() if lower is not None else images)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return norms
