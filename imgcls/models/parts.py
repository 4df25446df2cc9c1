"""Parts of a classifier that training needs: the head, the backbone, freezing, sizes and FLOPs.

Every model imgcls trains offers timm's classifier interface: ``forward_features``, ``forward_head``,
``get_classifier`` and ``reset_classifier``.
"""

from __future__ import annotations

import torch
from torch import nn


class PreLogits(nn.Module):
    """The backbone as a module of its own: images in, pooled features (the classifier's input) out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model.forward_head(self.model.forward_features(images), pre_logits=True)


def zero_classifier(model: nn.Module) -> None:
    """Start a new head at zero: every class equally likely, and no large random logits on top
    of pretrained features, which makes head training several times faster to converge."""
    with torch.no_grad():
        for p in model.get_classifier().parameters():
            p.zero_()


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze everything but the classifier head."""
    head = {id(p) for p in model.get_classifier().parameters()}
    for p in model.parameters():
        p.requires_grad = trainable or id(p) in head


def head_and_backbone_params(model: nn.Module) -> tuple[list, list]:
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    head = [p for p in model.parameters() if id(p) in head_ids]
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    return head, backbone


def count_parameters(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def count_flops(model: nn.Module, input_size) -> int:
    """FLOPs of one forward pass on one image, from PyTorch's own FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, *input_size, device=device))
    model.train(was_training)
    return int(counter.get_total_flops())
