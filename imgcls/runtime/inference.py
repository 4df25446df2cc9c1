"""The one inference path. Train's validation and final test, ``imgcls val``, ``Predictor``, ``imgcls predict``,
``imgcls serve`` and ``imgcls benchmark`` all turn batches into logits here."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from ..console import progress_bar
from .runner import Runner


@dataclass
class Logits:
    """Logits of every input that could be read, with its label (-1 when unknown) and its dataset index; and the
    familiarity score of each (models/familiarity) when the network gives one."""

    logits: np.ndarray    # (N, classes) float32
    labels: np.ndarray    # (N,) int64
    indices: np.ndarray   # (N,) int64, positions in the dataset the batches came from
    familiarity: np.ndarray | None = None   # (N,) float32

    def __len__(self) -> int:
        return len(self.indices)


def outputs_of(runner: Runner, inputs, tta: bool = False) -> tuple[np.ndarray, ...]:
    """Every output of one batch (a torch tensor or a numpy array, N x C x H x W; logits first). With ``tta`` the
    outputs of each image and its mirror image are averaged: averaging logits rather than probabilities keeps
    one temperature valid for the result."""
    outputs = runner.outputs(inputs)
    if tta:
        outputs = tuple((a + b) / 2 for a, b in zip(outputs, runner.outputs(mirrored(inputs))))
    return tuple(np.asarray(o, dtype=np.float32) for o in outputs)


def mirrored(inputs):
    """A batch flipped left to right (numpy, or torch without importing it here)."""
    return np.ascontiguousarray(inputs[..., ::-1]) if isinstance(inputs, np.ndarray) else inputs.flip(3)


def predict_logits(runner: Runner, batches: Iterable, *, tta: bool = False, progress: bool = False,
                   desc: str = "predict") -> Logits:
    """Run ``runner`` over ``batches`` of (inputs, labels, indices), as imgcls's loaders make them.

    A batch that is None (every file in it was unreadable) is skipped.
    """
    outputs, labels, indices = [], [], []
    for batch in progress_bar(batches, desc, progress, unit="batch"):
        if batch is None:
            continue
        inputs, batch_labels, batch_indices = batch
        outputs.append(outputs_of(runner, inputs, tta))
        labels.append(np.asarray(batch_labels, dtype=np.int64))
        indices.append(np.asarray(batch_indices, dtype=np.int64))
    if not outputs:
        empty = np.zeros(0, dtype=np.int64)
        return Logits(np.zeros((0, 0), dtype=np.float32), empty, empty)
    columns = [np.concatenate(column) for column in zip(*outputs)]
    return Logits(columns[0], np.concatenate(labels), np.concatenate(indices),
                  columns[1].reshape(-1) if len(columns) > 1 else None)


@dataclass
class _Call:
    inputs: np.ndarray
    result: object = None
    error: BaseException | None = None
    done: bool = False


@dataclass
class Batcher:
    """Thread-safe ``fn(inputs) -> rows`` (an array, or a tuple of arrays of the same length) that runs one call at a time and merges the inputs of callers that
    arrive while a call is running into the next one (up to ``max_batch`` rows).

    A lone caller runs at once, with no waiting for company; under concurrent load (``imgcls serve`` with
    several requests in flight) the model sees batches instead of single images, which is faster per image
    and never runs two models at once on the same cores.
    """

    fn: Callable[[np.ndarray], np.ndarray]
    max_batch: int = 32
    on_batch: Callable[[int], None] | None = None   # told the rows of each call (imgcls serve's /metrics)
    _queue: list = field(default_factory=list)
    _running: bool = False
    _cv: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        call = _Call(inputs)
        with self._cv:
            self._queue.append(call)
        while True:
            with self._cv:
                while self._running and not call.done:
                    self._cv.wait()
                if call.done:
                    break
                self._running, taken = True, self._take()
            self._run(taken)
        if call.error is not None:
            raise call.error
        return call.result

    def _take(self) -> list[_Call]:
        taken = [self._queue.pop(0)]
        rows = len(taken[0].inputs)
        while self._queue and rows + len(self._queue[0].inputs) <= self.max_batch:
            rows += len(self._queue[0].inputs)
            taken.append(self._queue.pop(0))
        return taken

    def _run(self, taken: list[_Call]) -> None:
        try:
            inputs = np.concatenate([c.inputs for c in taken]) if len(taken) > 1 else taken[0].inputs
            if self.on_batch is not None:
                self.on_batch(len(inputs))
            out = self.fn(inputs)
            ends = np.cumsum([len(c.inputs) for c in taken])
            for call, end in zip(taken, ends):
                rows = slice(end - len(call.inputs), end)
                call.result = tuple(o[rows] for o in out) if isinstance(out, tuple) else out[rows]
        except BaseException as e:  # every caller of this batch gets the error, none waits for ever
            for call in taken:
                call.error = e
        with self._cv:
            for call in taken:
                call.done = True
            self._running = False
            self._cv.notify_all()
