"""Does an exported file compute what PyTorch computes? Checked on the run's own images before it lands."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ImgclsError
from ..metrics import labels_present, sigmoid
from ..record.card import PROBABILITIES
from ..runtime.runner import Runner

log = logging.getLogger("imgcls")

# FP32 exports must match PyTorch this closely and agree on every top-1: the largest logit difference, relative
# to the logits' scale (their largest magnitude, at least 1). float32 rounding grows with the numbers rounded: a
# network from scratch can give logits in the hundreds, where an absolute bound would refuse a faithful file.
MAX_LOGIT_DIFF = 1e-3
# A multi-label file's probabilities output must be the sigmoid of its own logits, to float32 rounding: a graph
# that applies it twice, or not at all, is off by far more.
MAX_SIGMOID_DIFF = 1e-5
PARITY_IMAGES = 32


@dataclass
class Parity:
    """How closely an exported file reproduces PyTorch's logits."""

    images: int
    max_abs_diff: float
    top1_agreement: float   # fraction of images with the same top-1 class (multi-label: the same set of labels)
    source: str = ""
    scale: float = 1.0      # the reference logits' largest magnitude (at least 1)
    score_diff: float | None = None   # the familiarity score's largest difference relative to its scale (None: none)
    score_allowed: float = 0.0         # the most ``check_parity`` lets it differ
    answer: str = "top-1"              # what top1_agreement compares: "top-1", or "label-set" (multi-label)
    sigmoid_diff: float | None = None  # multi-label: the file's probabilities output against the sigmoid of its logits

    @property
    def relative_diff(self) -> float:
        """The largest logit difference relative to the logits' scale: what ``passed`` bounds."""
        return self.max_abs_diff / self.scale

    def passed(self, max_diff: float = MAX_LOGIT_DIFF) -> bool:
        return self.top1_agreement == 1.0 and self.relative_diff <= max_diff and (
            self.sigmoid_diff is None or self.sigmoid_diff <= MAX_SIGMOID_DIFF)

    def score_agrees(self) -> bool:
        return self.score_diff is None or self.score_diff <= self.score_allowed

    def line(self) -> str:
        relative = f" ({self.relative_diff:.2e} of the logits' scale {self.scale:.3g})" if self.scale > 1 else ""
        return (f"parity on {self.source}: max |logit diff| {self.max_abs_diff:.2e}{relative}, "
                f"{self.answer} agreement {self.top1_agreement * 100:.1f}% ({round(self.top1_agreement * self.images)}/"
                f"{self.images})" + (f", familiarity score diff {self.score_diff:.2e}" if self.score_diff is not None
                                     else "")
                + (f", sigmoid output diff {self.sigmoid_diff:.2e}" if self.sigmoid_diff is not None else ""))


def compare_logits(reference: np.ndarray, candidate: np.ndarray, source: str = "",
                   thresholds: tuple[float, ...] | None = None) -> Parity:
    """Largest logit difference (absolute, and the scale it is relative to) and top-1 agreement between two
    (N, classes) arrays; with a multi-label model's ``thresholds``, agreement on the set of labels present
    (metrics.labels_present) instead."""
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ImgclsError(f"exported model returns shape {candidate.shape}, PyTorch {reference.shape}")
    if len(reference) == 0:
        return Parity(0, 0.0, 1.0, source)
    diff = float(np.max(np.abs(reference - candidate)))
    if thresholds is None:
        agree = float(np.mean(reference.argmax(1) == candidate.argmax(1)))
    else:
        same = labels_present(sigmoid(reference), thresholds) == labels_present(sigmoid(candidate), thresholds)
        agree = float(np.mean(same.all(axis=1)))
    return Parity(len(reference), diff, agree, source, scale=max(1.0, float(np.max(np.abs(reference)))),
                  answer="top-1" if thresholds is None else "label-set")


def check_parity(reference: Runner, candidate: Runner, batch: np.ndarray, source: str,
                 outputs: tuple[str, ...] = (), thresholds: tuple[float, ...] | None = None) -> Parity:
    """Logits compared as Parity, and the familiarity score, when there is one, by the rule of the cached export
    that predict runs (runtime/pytorch._keep_export), so that a file written with the score is one predict would run:
    ``Parity.score_diff`` (relative to the score's scale) against ``Parity.score_allowed``.

    A multi-label network (``thresholds``; ``outputs`` names the outputs, the last its probabilities) agrees when
    its label sets do, and its probabilities output must be the sigmoid of its own logits (``Parity.sigmoid_diff``)."""
    from ..runtime.runner import PARITY_RTOL, outputs_error

    inputs = torch.from_numpy(np.ascontiguousarray(batch))
    expected, got = reference.outputs(inputs), candidate.outputs(inputs)
    if len(expected) != len(got):
        raise ImgclsError(f"the exported model gives {len(got)} outputs, PyTorch {len(expected)}; nothing was written")
    parity = compare_logits(expected[0], got[0], source, thresholds)
    if PROBABILITIES in outputs:
        parity.sigmoid_diff = float(np.max(np.abs(got[-1] - sigmoid(got[0])), initial=0.0))
        expected, got = expected[:-1], got[:-1]
    if len(got) > 1:
        parity.score_diff, parity.score_allowed = outputs_error(got[1:], expected[1:]), PARITY_RTOL
    return parity


def split_images(checkpoint: dict, split: str) -> tuple[list[Path], list[int], str]:
    """Paths and labels of ``split`` of the run that produced ``checkpoint``, or none and the reason."""
    from ..data.folders import run_source
    from ..record.checkpoint import card_of, run_dir_of

    try:
        source = run_source(run_dir_of(checkpoint["path"]), list(card_of(checkpoint).class_names))
    except ImgclsError as e:
        return [], [], str(e)
    if not source.items.get(split):
        return [], [], f"the run's data has no {split} images"
    return source.paths(split), source.labels(split), ""


def load_batch(paths: list[Path], preprocess: dict) -> tuple[np.ndarray, list[int]]:
    """Decode and preprocess images exactly as predict does; returns the batch and the indices used."""
    from ..data.geometry import draft_size_for
    from ..data.images import ImageReadError, load_image
    from ..data.transforms import eval_transform

    transform = eval_transform(preprocess)
    tensors, used = [], []
    for i, path in enumerate(paths):
        try:
            tensors.append(transform(load_image(path, draft_size=draft_size_for(preprocess))))
            used.append(i)
        except ImageReadError as e:
            log.warning(f"WARNING: skipped {path}: {e}")
    if not tensors:
        return np.zeros((0, *preprocess["input_size"]), dtype=np.float32), used
    return torch.stack(tensors).numpy().astype(np.float32), used


def evenly(count: int, limit: int) -> list[int]:
    """Indices of up to ``limit`` of ``count`` items spread over the whole list, so every class is represented."""
    if count <= limit:
        return list(range(count))
    return sorted({int(i) for i in np.linspace(0, count - 1, limit)})


def reference_inputs(checkpoint: dict, split: str = "val", limit: int = PARITY_IMAGES,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Preprocessed images of ``split`` (up to ``limit``), their labels, and where they came from.

    Falls back to random inputs, with a warning, when the run's data folder is gone.
    """
    from ..record.checkpoint import card_of

    card = card_of(checkpoint)
    paths, labels, reason = split_images(checkpoint, split)
    if paths:
        chosen = evenly(len(paths), limit)
        batch, used = load_batch([paths[i] for i in chosen], card.preprocess)
        if len(batch):
            return batch, np.asarray([labels[chosen[i]] for i in used]), f"{len(batch)} {split} image(s)"
        reason = "none of its images could be read"
    log.warning(f"WARNING: no {split} images for this check ({reason}); using {min(limit, 8)} random inputs "
                "instead, which proves the file computes the same function but not on real photos")
    rng = np.random.default_rng(seed)
    batch = rng.standard_normal((min(limit, 8), *card.input_size)).astype(np.float32)
    return batch, None, f"{len(batch)} random input(s)"
