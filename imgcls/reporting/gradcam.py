"""Grad-CAM: where in the image the network looked for a class.

The target is the last feature map, i.e. the output of ``model.forward_features``, which every
timm CNN (ResNet, EfficientNet, ConvNeXt, ...) and simple_cnn return as N x C x H x W, Swin as N x H x W x C and
the vision transformers (ViT, DeiT, EVA, LeViT) as N x tokens x C; ``feature_map`` lays each out as N x C x H x W
(tokens on their patch grid, without the class and register tokens, as pytorch-grad-cam's ``reshape_transform``
does). ``forward_head`` pools it into the logits (for a network tuned on mirrored activations,
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
    captured = []
    layer = _token_layer(model)
    hook = layer.register_forward_hook(lambda _m, _i, out: captured.append(out)) if layer is not None else None
    try:
        with torch.enable_grad():
            x = images.detach().clone().requires_grad_(True)  # a gradient path even with frozen weights
            features = model.forward_features(x)
            logits = model.forward_head(features)
            classes_t = torch.as_tensor(classes, device=logits.device).reshape(-1)
            score = logits.gather(1, classes_t[:, None]).sum()
            target = captured[-1] if captured else features
            grad = torch.autograd.grad(score, target)[0]
    finally:
        model.train(was_training)
        if hook is not None:
            hook.remove()
    features, grad = feature_map(model, target.detach()), feature_map(model, grad.detach())
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * features).sum(dim=1)).float()
    peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-12)[:, None, None]
    cam = torch.where(peak > 1e-12, cam / peak, torch.zeros_like(cam))
    return cam.cpu().numpy()


def _token_layer(model: nn.Module) -> nn.Module | None:
    """Where to look in a transformer that classifies from its class token alone (ViT, DeiT): the output of its
    last block's first norm, where the patch tokens still feed the class token through attention. After the last
    block the head reads the class token only, so the patch tokens there carry no gradient."""
    blocks = getattr(model, "blocks", None)
    if getattr(model, "global_pool", None) != "token" or not isinstance(blocks, nn.Sequential) or not len(blocks):
        return None
    return getattr(blocks[-1], "norm1", None)


def feature_map(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """``forward_features``' output (or its gradient) as N x C x H x W: a CNN's map as it is, a channels-last map
    (Swin: ``output_fmt`` NHWC) permuted, a token sequence without its prefix tokens on the patch grid."""
    if features.ndim == 4:
        return features.permute(0, 3, 1, 2) if getattr(model, "output_fmt", "NCHW") == "NHWC" else features
    if features.ndim == 3:
        tokens = features[:, int(getattr(model, "num_prefix_tokens", 0) or 0):]
        grid = tuple(getattr(getattr(model, "patch_embed", None), "grid_size", None) or ())
        if len(grid) != 2 or grid[0] * grid[1] != tokens.shape[1]:
            side = int(round(tokens.shape[1] ** 0.5))
            grid = (side, side)
        if grid[0] * grid[1] == tokens.shape[1]:
            return tokens.transpose(1, 2).reshape(len(tokens), tokens.shape[2], *grid)
    raise ImgclsError(f"Grad-CAM needs a feature map or a square grid of tokens; this model's features have shape "
                      f"{tuple(features.shape)}")


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
