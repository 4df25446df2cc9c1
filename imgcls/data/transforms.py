"""Preprocessing presets built from a model's pretrained config (size, mean/std, interpolation, crop)."""

from __future__ import annotations

import torch
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from ..config import parse_imgsz
from .geometry import Normalize, eval_geometry, resize_mode, whole_image_resize, working_size

AUGMENT_LEVELS = ("none", "light", "strong")

_INTERPOLATION = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


def make_preprocess(pretrained_cfg: dict, imgsz=None, resize: str = "crop") -> dict:
    """The preprocessing a checkpoint records: plain lists and strings, so it loads without pickles.

    ``resize``: "crop" resizes the short side to size/crop_pct and cuts the centre (the pretrained
    models' own evaluation); "squash" stretches the whole image to the input size; "pad" fits the whole
    image inside it and fills the rest with the mean colour (letterbox).
    """
    _, height, width = pretrained_cfg.get("input_size", (3, 224, 224))
    height, width = parse_imgsz(imgsz) or (height, width)
    return {
        "input_size": [3, int(height), int(width)],
        "mean": [float(x) for x in pretrained_cfg.get("mean", (0.485, 0.456, 0.406))],
        "std": [float(x) for x in pretrained_cfg.get("std", (0.229, 0.224, 0.225))],
        "interpolation": str(pretrained_cfg.get("interpolation", "bilinear")),
        "crop_pct": float(pretrained_cfg.get("crop_pct", 0.875)),
        "resize": resize,
    }


def _interp(preprocess: dict) -> InterpolationMode:
    return _INTERPOLATION.get(preprocess["interpolation"], InterpolationMode.BILINEAR)


class ToInput:
    """geometry.Normalize as a torch tensor: the one normalisation of training, evaluation and predict."""

    def __init__(self, preprocess: dict):
        self.normalize = Normalize(preprocess)

    def __call__(self, image) -> torch.Tensor:
        return torch.from_numpy(self.normalize(image))


def train_geometry(preprocess: dict, min_scale: float) -> list:
    """A random crop of at least ``min_scale`` of the area, resized to the input size. With a whole-image
    mode the image is squashed or letterboxed to the working size first and the crop keeps its shape."""
    _, height, width = preprocess["input_size"]
    interpolation = _interp(preprocess)
    if resize_mode(preprocess) == "crop":
        return [T.RandomResizedCrop((height, width), scale=(min_scale, 1.0), interpolation=interpolation)]
    aspect = width / height
    return [whole_image_resize(preprocess, working_size(preprocess)),
            T.RandomResizedCrop((height, width), scale=(min_scale, 1.0), ratio=(0.75 * aspect, 4 / 3 * aspect),
                                interpolation=interpolation)]


def eval_transform(preprocess: dict):
    """Resize (geometry.eval_geometry) and normalise, as a tensor."""
    return T.Compose([*eval_geometry(preprocess), ToInput(preprocess)])


def normalize_transform(preprocess: dict):
    """Only normalisation, as a tensor: for images already resized and cropped (decoded cache)."""
    return ToInput(preprocess)


def train_transform(preprocess: dict, augment: str = "light"):
    """Training preset: 'none' is the eval transform; 'light' crops, flips and jitters a little;
    'strong' adds RandAugment and random erasing."""
    if augment not in AUGMENT_LEVELS:
        raise ValueError(f"augment must be one of {AUGMENT_LEVELS}")
    if augment == "none":
        return eval_transform(preprocess)
    normalize = [ToInput(preprocess)]
    if augment == "light":
        return T.Compose([
            *train_geometry(preprocess, 0.7),
            T.RandomHorizontalFlip(),
            T.RandomRotation(10, interpolation=InterpolationMode.BILINEAR),
            T.ColorJitter(0.2, 0.2, 0.2),
            *normalize,
        ])
    return T.Compose([
        *train_geometry(preprocess, 0.25),
        T.RandomHorizontalFlip(),
        T.RandAugment(num_ops=2, magnitude=9, interpolation=InterpolationMode.BILINEAR),
        T.ColorJitter(0.3, 0.3, 0.3),
        *normalize,
        T.RandomErasing(p=0.25),
    ])
