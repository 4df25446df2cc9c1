"""Grad-CAM: where in the image the network looked for a class.

The target is the last feature map, i.e. the output of ``model.forward_features``, which every
timm CNN (ResNet, EfficientNet, ConvNeXt, ...) and simple_cnn return as N x C x H x W, and that
``forward_head`` pools into the logits (for a network tuned on mirrored activations,
``models.parts.Mirrored``, the activations at its cut, on which its head runs the top stages). Splitting
the forward pass there and asking autograd for the class score's gradient with respect to the map needs
no layer name and leaves no parameter gradient behind in the model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import ImgclsError


def grad_cam(model: nn.Module, images: torch.Tensor, classes) -> np.ndarray:
    """Grad-CAM heatmaps (N x H x W, values in [0, 1], at the feature-map resolution).

    For each image, the feature map A (C x h x w) and the gradient of the class score with respect
    to it give channel weights alpha_k = mean over h, w of dScore/dA_k; the map is relu(sum_k alpha_k A_k),
    scaled to [0, 1] per image (all zero where nothing speaks for the class).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = images.detach().clone().requires_grad_(True)  # a gradient path even with frozen weights
            features = model.forward_features(x)
            if features.ndim != 4:
                raise ImgclsError(
                    f"Grad-CAM needs a convolutional feature map (N x C x H x W); this model's features have "
                    f"shape {tuple(features.shape)} (a transformer?)"
                )
            logits = model.forward_head(features)
            classes_t = torch.as_tensor(classes, device=logits.device).reshape(-1)
            score = logits.gather(1, classes_t[:, None]).sum()
            grad = torch.autograd.grad(score, features)[0]
    finally:
        model.train(was_training)
    features, grad = features.detach(), grad.detach()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * features).sum(dim=1)).float()
    peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-12)[:, None, None]
    cam = torch.where(peak > 1e-12, cam / peak, torch.zeros_like(cam))
    return cam.cpu().numpy()


def upsample(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of one heatmap to the image size, kept in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32))[None, None]
    up = torch.nn.functional.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)
    return up[0, 0].clamp(0, 1).numpy()


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a heatmap (any size, [0, 1]) over an RGB image (H x W x 3, floats in [0, 1]) with the jet colormap."""
    from matplotlib import colormaps

    height, width = image.shape[:2]
    heat = colormaps["jet"](upsample(cam, height, width))[..., :3]
    return np.clip((1 - alpha) * image + alpha * heat, 0, 1)
