"""Knowledge distillation: a student learns from hard labels and from a trained teacher's soft targets.

``imgcls distill`` is ``imgcls train`` with a teacher, so the student's run folder is a normal run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ImgclsError

log = logging.getLogger("imgcls")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, times T^2 (Hinton et al., 2015).

    The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones for any T.
    """
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * temperature ** 2


@dataclass
class Distiller:
    """The teacher (in eval mode, no gradients) and how its soft targets are mixed into the loss."""

    teacher: nn.Module
    temperature: float
    alpha: float                      # weight of the soft-target loss; 1 - alpha goes to the hard labels
    student_preprocess: dict
    teacher_preprocess: dict
    description: dict

    def loss(self, images: torch.Tensor, student_logits: torch.Tensor, hard_loss: torch.Tensor) -> torch.Tensor:
        if self.alpha == 0:  # labels only: spare the teacher's forward pass
            return hard_loss
        with torch.no_grad():
            teacher_logits = self.teacher(self._teacher_view(images))
        soft = kd_loss(student_logits, teacher_logits, self.temperature)
        return self.alpha * soft + (1.0 - self.alpha) * hard_loss

    def _teacher_view(self, images: torch.Tensor) -> torch.Tensor:
        """The student's augmented batch as the teacher expects it: same crops and flips, the teacher's
        size and normalisation (they differ when the two models come from different families)."""
        s, t = self.student_preprocess, self.teacher_preprocess
        if s["mean"] != t["mean"] or s["std"] != t["std"]:
            def column(values):
                return torch.tensor(values, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)

            images = (images * column(s["std"]) + column(s["mean"]) - column(t["mean"])) / column(t["std"])
        if list(images.shape[-2:]) != list(t["input_size"][1:]):
            images = F.interpolate(images, size=tuple(t["input_size"][1:]), mode="bilinear", align_corners=False,
                                   antialias=True)
        return images


def make_distiller(teacher_path: str | os.PathLike, class_names: list[str], student_preprocess: dict,
                   temperature: float, alpha: float, device: torch.device) -> Distiller:
    """Load the teacher checkpoint safely and check that it knows the student's classes, in the same order."""
    from ..record.checkpoint import card_of, load_checkpoint
    from .factory import model_from_checkpoint

    try:
        checkpoint = load_checkpoint(teacher_path)
    except ImgclsError as e:
        raise ImgclsError(str(e).replace("--weights", "--teacher", 1)) from None
    card = card_of(checkpoint)
    if list(card.class_names) != list(class_names):
        raise ImgclsError(
            f"--teacher {teacher_path}: was trained on classes {checkpoint['class_names']}, but --data has "
            f"{class_names}; distill on the teacher's data set (same class folders)"
        )
    teacher = model_from_checkpoint(checkpoint).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad = False
    description = {"teacher": str(Path(checkpoint["path"]).resolve()), "teacher model": card.model_name,
                   "teacher val accuracy": card.metrics.get("val_accuracy"),
                   "kd temperature": temperature, "kd alpha": alpha}
    log.info(f"Distilling from teacher {checkpoint['model_name']} ({checkpoint['path']}): "
             f"soft-target weight {alpha}, temperature {temperature}")
    return Distiller(teacher, float(temperature), float(alpha), student_preprocess, card.preprocess,
                     description)
