"""How an image becomes a model input at evaluation: its geometry (centre crop, squash or letterbox to the input
size) and its normalisation to a float32 C x H x W array, with Pillow and numpy only.

Training, ``imgcls val``, predict and serve all use these, so an image gets the same input everywhere. They do
what torchvision's Resize, CenterCrop, Pad, ToTensor and Normalize do on PIL images, pixel for pixel (those call
Pillow the same way; tests/test_transforms.py pins it), without importing torch: a warm ``imgcls predict`` runs
on ONNX Runtime alone and starts in a fraction of a second, without the seconds importing torch takes
(docs/benchmarks.md).
data/transforms.py builds training's random augmentation on top with torchvision.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageOps

_RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
               "nearest": Image.Resampling.NEAREST}


def resampling(preprocess: dict) -> Image.Resampling:
    return _RESAMPLING.get(preprocess["interpolation"], Image.Resampling.BILINEAR)


def resize_mode(preprocess: dict) -> str:
    return preprocess.get("resize", "crop")  # checkpoints written before resize modes all cropped


def working_size(preprocess: dict) -> tuple[int, int]:
    """(height, width) images are resized to before training crops: the input size / crop_pct."""
    _, height, width = preprocess["input_size"]
    return int(math.floor(height / preprocess["crop_pct"])), int(math.floor(width / preprocess["crop_pct"]))


def working_side(preprocess: dict) -> int:
    """The side every decoded image keeps at least: the short side the centre crop resizes to (e.g. 256
    for 224 at crop_pct 0.875), or the longer working side for the whole-image resize modes."""
    height, width = working_size(preprocess)
    return max(height, width) if resize_mode(preprocess) != "crop" else min(height, width)


def draft_size_for(preprocess: dict) -> tuple[int, int]:
    """The smallest decode size that still feeds the resize without upsampling.

    PIL's JPEG draft only reduces the DCT scale (1/2, 1/4, 1/8) while the result stays at least
    this big, so it kicks in exactly when the source is at least twice the target.
    """
    side = working_side(preprocess)
    return side, side


class Resize:
    """To exactly (height, width); an int resizes the short side to it, keeping the aspect ratio."""

    def __init__(self, size: int | tuple[int, int], resample: Image.Resampling):
        self.size, self.resample = size, resample

    def __call__(self, image: Image.Image) -> Image.Image:
        if isinstance(self.size, int):
            short, long = sorted((image.width, image.height))
            new_short, new_long = self.size, int(self.size * long / short)
            width, height = (new_short, new_long) if image.width <= image.height else (new_long, new_short)
        else:
            height, width = self.size
        if (width, height) == image.size:
            return image
        return image.resize((width, height), self.resample)


class CenterCrop:
    """The centre (height, width) of an image, zero-padded first where it is smaller."""

    def __init__(self, size: tuple[int, int]):
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        height, width = self.size
        if width > image.width or height > image.height:
            left, top = max(0, (width - image.width) // 2), max(0, (height - image.height) // 2)
            right, bottom = max(0, (width - image.width + 1) // 2), max(0, (height - image.height + 1) // 2)
            image = ImageOps.expand(image, border=(left, top, right, bottom), fill=0)
            if image.size == (width, height):
                return image
        top, left = int(round((image.height - height) / 2.0)), int(round((image.width - width) / 2.0))
        return image.crop((left, top, left + width, top + height))


class Letterbox:
    """Fit the whole image inside (height, width) keeping its aspect ratio; fill the rest with ``fill``."""

    def __init__(self, size: tuple[int, int], resample: Image.Resampling, fill: tuple[int, int, int]):
        self.size, self.resample, self.fill = size, resample, fill

    def __call__(self, image: Image.Image) -> Image.Image:
        height, width = self.size
        scale = min(height / image.height, width / image.width)
        new_h, new_w = max(1, round(image.height * scale)), max(1, round(image.width * scale))
        image = Resize((new_h, new_w), self.resample)(image)
        left, top = (width - new_w) // 2, (height - new_h) // 2
        return ImageOps.expand(image, border=(left, top, width - new_w - left, height - new_h - top), fill=self.fill)


class Cover:
    """Resize keeping the aspect ratio so that the image covers (height, width), then cut its centre."""

    def __init__(self, size: tuple[int, int], resample: Image.Resampling):
        self.size, self.resample = size, resample

    def __call__(self, image: Image.Image) -> Image.Image:
        height, width = self.size
        scale = max(height / image.height, width / image.width)
        resized = (max(height, round(image.height * scale)), max(width, round(image.width * scale)))
        return CenterCrop((height, width))(Resize(resized, self.resample)(image))


def whole_image_resize(preprocess: dict, size: tuple[int, int]):
    """The "squash" or "pad" resize of the whole image to ``size`` (height, width)."""
    if resize_mode(preprocess) == "pad":
        return Letterbox(size, resampling(preprocess), tuple(int(round(m * 255)) for m in preprocess["mean"]))
    return Resize(size, resampling(preprocess))


def eval_geometry(preprocess: dict) -> list:
    """Any image to exactly the input size: centre crop, squash or letterbox (data/transforms.make_preprocess)."""
    _, height, width = preprocess["input_size"]
    if resize_mode(preprocess) != "crop":
        return [whole_image_resize(preprocess, (height, width))]
    if height != width:
        return [Cover(working_size(preprocess), resampling(preprocess)), CenterCrop((height, width))]
    return [Resize(working_size(preprocess)[0], resampling(preprocess)), CenterCrop((height, width))]


class Normalize:
    """An RGB image (PIL, or uint8 H x W x 3) to the model's input: float32 C x H x W, scaled to 0..1, then the
    mean taken off and divided by the standard deviation, channel by channel."""

    def __init__(self, preprocess: dict):
        self.mean = np.asarray(preprocess["mean"], dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(preprocess["std"], dtype=np.float32).reshape(3, 1, 1)

    def __call__(self, image) -> np.ndarray:
        chw = np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1), dtype=np.float32)
        chw /= np.float32(255)
        return (chw - self.mean) / self.std


class EvalInput:
    """A decoded RGB image to the model's input array: eval_geometry, then Normalize."""

    def __init__(self, preprocess: dict):
        self.steps = eval_geometry(preprocess)
        self.normalize = Normalize(preprocess)

    def __call__(self, image: Image.Image) -> np.ndarray:
        for step in self.steps:
            image = step(image)
        return self.normalize(image)
