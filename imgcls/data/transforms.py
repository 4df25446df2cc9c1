"""Preprocessing presets built from a model's pretrained config (size, mean/std, interpolation, crop)."""

from __future__ import annotations

import math

from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

AUGMENT_LEVELS = ("none", "light", "strong")

_INTERPOLATION = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


def make_preprocess(pretrained_cfg: dict, imgsz: int | None = None) -> dict:
    """The preprocessing a checkpoint records: plain lists and strings, so it loads without pickles."""
    _, height, width = pretrained_cfg.get("input_size", (3, 224, 224))
    if imgsz:
        height = width = int(imgsz)
    return {
        "input_size": [3, int(height), int(width)],
        "mean": [float(x) for x in pretrained_cfg.get("mean", (0.485, 0.456, 0.406))],
        "std": [float(x) for x in pretrained_cfg.get("std", (0.229, 0.224, 0.225))],
        "interpolation": str(pretrained_cfg.get("interpolation", "bilinear")),
        "crop_pct": float(pretrained_cfg.get("crop_pct", 0.875)),
    }


def _interp(preprocess: dict) -> InterpolationMode:
    return _INTERPOLATION.get(preprocess["interpolation"], InterpolationMode.BILINEAR)


def eval_transform(preprocess: dict):
    """Resize the short side to size/crop_pct, center-crop to size, normalise."""
    _, height, width = preprocess["input_size"]
    scale = int(math.floor(min(height, width) / preprocess["crop_pct"]))
    return T.Compose([
        T.Resize(scale, interpolation=_interp(preprocess)),
        T.CenterCrop((height, width)),
        T.ToTensor(),
        T.Normalize(preprocess["mean"], preprocess["std"]),
    ])


def normalize_transform(preprocess: dict):
    """Only tensor conversion and normalisation: for images already resized and cropped (decoded cache)."""
    return T.Compose([T.ToTensor(), T.Normalize(preprocess["mean"], preprocess["std"])])


def train_transform(preprocess: dict, augment: str = "light"):
    """Training preset: 'none' is the eval transform; 'light' crops, flips and jitters a little;
    'strong' adds RandAugment and random erasing."""
    if augment not in AUGMENT_LEVELS:
        raise ValueError(f"augment must be one of {AUGMENT_LEVELS}")
    if augment == "none":
        return eval_transform(preprocess)
    _, height, width = preprocess["input_size"]
    interpolation = _interp(preprocess)
    normalize = [T.ToTensor(), T.Normalize(preprocess["mean"], preprocess["std"])]
    if augment == "light":
        return T.Compose([
            T.RandomResizedCrop((height, width), scale=(0.7, 1.0), interpolation=interpolation),
            T.RandomHorizontalFlip(),
            T.RandomRotation(10, interpolation=InterpolationMode.BILINEAR),
            T.ColorJitter(0.2, 0.2, 0.2),
            *normalize,
        ])
    return T.Compose([
        T.RandomResizedCrop((height, width), scale=(0.25, 1.0), interpolation=interpolation),
        T.RandomHorizontalFlip(),
        T.RandAugment(num_ops=2, magnitude=9, interpolation=InterpolationMode.BILINEAR),
        T.ColorJitter(0.3, 0.3, 0.3),
        *normalize,
        T.RandomErasing(p=0.25),
    ])
