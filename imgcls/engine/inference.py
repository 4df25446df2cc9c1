"""The one inference path. Train's validation and final test, ``imgcls val``, ``Predictor``, ``imgcls predict``,
``imgcls serve`` and ``imgcls benchmark`` all turn batches into logits here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from ..console import progress_bar
from .runners import Runner


@dataclass
class Logits:
    """Logits of every input that could be read, with its label (-1 when unknown) and its dataset index."""

    logits: np.ndarray    # (N, classes) float32
    labels: np.ndarray    # (N,) int64
    indices: np.ndarray   # (N,) int64, positions in the dataset the batches came from

    def __len__(self) -> int:
        return len(self.indices)


def logits_of(runner: Runner, inputs: torch.Tensor, tta: bool = False) -> np.ndarray:
    """One batch. With ``tta`` the logits of each image and its mirror image are averaged: averaging logits
    rather than probabilities keeps one temperature valid for the result."""
    logits = runner(inputs)
    if tta:
        logits = (logits + runner(torch.flip(inputs, dims=[3]))) / 2
    return np.asarray(logits, dtype=np.float32)


def predict_logits(runner: Runner, batches: Iterable, *, tta: bool = False, progress: bool = False,
                   desc: str = "predict") -> Logits:
    """Run ``runner`` over ``batches`` of (inputs, labels, indices), as imgcls's loaders make them.

    A batch that is None (every file in it was unreadable) is skipped.
    """
    logits, labels, indices = [], [], []
    for batch in progress_bar(batches, desc, progress, unit="batch"):
        if batch is None:
            continue
        inputs, batch_labels, batch_indices = batch
        logits.append(logits_of(runner, inputs, tta))
        labels.append(np.asarray(batch_labels, dtype=np.int64))
        indices.append(np.asarray(batch_indices, dtype=np.int64))
    if not logits:
        empty = np.zeros(0, dtype=np.int64)
        return Logits(np.zeros((0, 0), dtype=np.float32), empty, empty)
    return Logits(np.concatenate(logits), np.concatenate(labels), np.concatenate(indices))
