"""A tuned network's checkpoint, as the default plan's tune phase leaves it: ``mirrored_at`` names the cut whose
activations (and their mirror image) it predicts from; and the logits such a network must give."""

from __future__ import annotations

from pathlib import Path

import torch

CUT = 2  # simple_cnn at 32 px: the tune phase's cut


def make_mirrored(weights: Path) -> dict:
    """Rewrite ``weights`` (a copy of the tiny run's best.pt) as a checkpoint of a network tuned on mirrored
    activations at ``CUT``; returns the checkpoint."""
    from imgcls.record.checkpoint import save_checkpoint

    checkpoint = torch.load(weights, weights_only=True) | {"mirrored_at": CUT}
    save_checkpoint(weights, checkpoint)
    return checkpoint


def expected_logits(checkpoint: dict, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits of the top of the network on the activations at CUT and on their mirror image, averaged; the plain
    network's logits), computed from the parts, not from models.parts.Mirrored."""
    from imgcls.models.factory import build_model
    from imgcls.models.parts import Lower, Upper

    plain = build_model(checkpoint["model_name"], len(checkpoint["class_names"]), **checkpoint.get("model_kwargs", {}))
    plain.load_state_dict(checkpoint["state_dict"])
    plain.eval()
    with torch.no_grad():
        activations, top = Lower(plain, CUT)(images), Upper(plain, CUT)
        return (top(activations) + top(activations.flip(3))) / 2, plain(images)
