"""Preprocessing presets built from a model's pretrained config (size, mean/std, interpolation, crop)."""

from __future__ import annotations

import math

from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from ..config import parse_imgsz

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


def _mode(preprocess: dict) -> str:
    return preprocess.get("resize", "crop")  # checkpoints written before resize modes all cropped


class Letterbox:
    """Fit the whole image inside (height, width) keeping its aspect ratio; fill the rest with ``fill``."""

    def __init__(self, size: tuple[int, int], interpolation: InterpolationMode, fill: tuple[int, int, int]):
        self.size, self.interpolation, self.fill = size, interpolation, fill

    def __call__(self, image):
        from torchvision.transforms import functional as TF

        height, width = self.size
        scale = min(height / image.height, width / image.width)
        new_h, new_w = max(1, round(image.height * scale)), max(1, round(image.width * scale))
        image = TF.resize(image, [new_h, new_w], interpolation=self.interpolation)
        left, top = (width - new_w) // 2, (height - new_h) // 2
        return TF.pad(image, [left, top, width - new_w - left, height - new_h - top], fill=self.fill)


class Cover:
    """Resize keeping the aspect ratio so that the image covers (height, width), then cut its centre."""

    def __init__(self, size: tuple[int, int], interpolation: InterpolationMode):
        self.size, self.interpolation = size, interpolation

    def __call__(self, image):
        from torchvision.transforms import functional as TF

        height, width = self.size
        scale = max(height / image.height, width / image.width)
        resized = [max(height, round(image.height * scale)), max(width, round(image.width * scale))]
        return TF.center_crop(TF.resize(image, resized, interpolation=self.interpolation), [height, width])


def whole_image_resize(preprocess: dict, size: tuple[int, int]):
    """The "squash" or "pad" resize of the whole image to ``size`` (height, width)."""
    if _mode(preprocess) == "pad":
        fill = tuple(int(round(m * 255)) for m in preprocess["mean"])
        return Letterbox(size, _interp(preprocess), fill)
    return T.Resize(size, interpolation=_interp(preprocess))


def working_size(preprocess: dict) -> tuple[int, int]:
    """(height, width) images are resized to before training crops: the input size / crop_pct."""
    _, height, width = preprocess["input_size"]
    return int(math.floor(height / preprocess["crop_pct"])), int(math.floor(width / preprocess["crop_pct"]))


def eval_geometry(preprocess: dict) -> list:
    """Any image to exactly the input size: centre crop, squash or letterbox (see make_preprocess)."""
    _, height, width = preprocess["input_size"]
    if _mode(preprocess) != "crop":
        return [whole_image_resize(preprocess, (height, width))]
    if height != width:
        return [Cover(working_size(preprocess), _interp(preprocess)), T.CenterCrop((height, width))]
    return [T.Resize(working_size(preprocess)[0], interpolation=_interp(preprocess)), T.CenterCrop((height, width))]


def train_geometry(preprocess: dict, min_scale: float) -> list:
    """A random crop of at least ``min_scale`` of the area, resized to the input size. With a whole-image
    mode the image is squashed or letterboxed to the working size first and the crop keeps its shape."""
    _, height, width = preprocess["input_size"]
    interpolation = _interp(preprocess)
    if _mode(preprocess) == "crop":
        return [T.RandomResizedCrop((height, width), scale=(min_scale, 1.0), interpolation=interpolation)]
    aspect = width / height
    return [whole_image_resize(preprocess, working_size(preprocess)),
            T.RandomResizedCrop((height, width), scale=(min_scale, 1.0), ratio=(0.75 * aspect, 4 / 3 * aspect),
                                interpolation=interpolation)]


def eval_transform(preprocess: dict):
    """Resize (eval_geometry) and normalise."""
    return T.Compose([*eval_geometry(preprocess), T.ToTensor(), T.Normalize(preprocess["mean"], preprocess["std"])])


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
    normalize = [T.ToTensor(), T.Normalize(preprocess["mean"], preprocess["std"])]
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
