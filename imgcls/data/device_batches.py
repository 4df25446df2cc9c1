"""The input pipeline of an accelerator: decoded uint8 images sliced into batches, moved to the device and augmented
there, so that a GPU never waits for CPU processes decoding and transforming one image at a time.

``BatchAugment`` does on a whole batch what data/transforms.train_transform does to one image: a random resized crop,
a horizontal flip and a small rotation (one affine resampling per image, ``grid_sample``), colour jitter and, for
"strong", RandAugment-like operations and random erasing. ``mix`` is mixup or CutMix on a batch. ``DeviceBatches``
yields what the loaders yield, (inputs, labels, indices), with the inputs already on the device.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import resize_mode
from .transforms import AUGMENT_LEVELS

# The strengths of train_transform's presets, so that both pipelines train on the same distribution of images.
LEVELS = {
    "light": {"min_scale": 0.7, "rotate": 10.0, "jitter": 0.2, "ops": 0, "erase": 0.0},
    "strong": {"min_scale": 0.25, "rotate": 0.0, "jitter": 0.3, "ops": 2, "erase": 0.25},
}
MAGNITUDE = 9 / 30   # RandAugment's magnitude 9 of 30 (torchvision's default), as a share of each op's range
OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color", "contrast",
       "sharpness", "posterize", "solarize", "autocontrast")
MIX = {"mixup_alpha": 0.8, "cutmix_alpha": 1.0}   # timm's defaults for mixup and CutMix


def _uniform(generator: torch.Generator, n: int, low: float, high: float, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


class BatchAugment:
    """Random training views of a batch of uint8 (N, H, W, 3) images at the working size, as normalised float
    (N, 3, h, w) at the input size, computed on the batch's device from the generator's random numbers."""

    def __init__(self, preprocess: dict, level: str, device: torch.device | str, seed: int = 0):
        if level not in AUGMENT_LEVELS:
            raise ValueError(f"augment must be one of {AUGMENT_LEVELS}")
        self.device = torch.device(device)
        self.size = tuple(preprocess["input_size"][1:])
        self.level = level
        self.whole = resize_mode(preprocess) != "crop"
        self.mean = torch.tensor(preprocess["mean"], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(preprocess["std"], device=self.device).view(1, 3, 1, 1)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        if self.level == "none":
            x = self._resample(x, self._centre(x))
            return (x - self.mean) / self.std
        settings = LEVELS[self.level]
        ops = self._ops(len(x), settings["ops"])
        x = self._resample(x, self._views(x, settings, ops))
        x = self._jitter(x, settings["jitter"])
        if settings["ops"]:
            x = self._photometric(x, ops)
        x = (x - self.mean) / self.std
        return self._erase(x, settings["erase"]) if settings["erase"] else x

    def rand(self, n: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        return _uniform(self.generator, n, low, high, self.device)

    def _ops(self, n: int, count: int) -> torch.Tensor:
        """(n, len(OPS)) booleans: each image's ``count`` RandAugment operations, drawn with replacement."""
        chosen = torch.zeros(n, len(OPS), dtype=torch.bool, device=self.device)
        for _ in range(count):
            pick = torch.randint(len(OPS), (n,), generator=self.generator, device=self.device)
            chosen[torch.arange(n, device=self.device), pick] = True
        return chosen

    def _centre(self, x: torch.Tensor) -> torch.Tensor:
        """The evaluation geometry's affine on a training-cache image: the input size cut from the centre at one
        pixel per pixel (crop mode), or the whole image resized (squash and pad modes)."""
        n, _, height, width = x.shape
        out_h, out_w = self.size
        theta = torch.zeros(n, 2, 3, device=self.device)
        theta[:, 0, 0] = 1.0 if self.whole else min(1.0, out_w / width)
        theta[:, 1, 1] = 1.0 if self.whole else min(1.0, out_h / height)
        return theta

    def _views(self, x: torch.Tensor, settings: dict, ops: torch.Tensor) -> torch.Tensor:
        """One affine per image (``affine_grid``'s normalised coordinates): a crop of a random share of the area
        and aspect (RandomResizedCrop's), a random flip, a rotation, and the chosen geometric operations."""
        n, _, height, width = x.shape
        out_h, out_w = self.size
        aspect = (out_w / out_h) if self.whole else 1.0
        area = self.rand(n, settings["min_scale"], 1.0) * height * width
        ratio = torch.exp(self.rand(n, math.log(0.75 * aspect), math.log(4 / 3 * aspect)))
        crop_w = torch.sqrt(area * ratio).clamp(max=width)
        crop_h = torch.sqrt(area / ratio).clamp(max=height)
        centre_x = (self.rand(n) * (width - crop_w) + crop_w / 2) / (width / 2) - 1
        centre_y = (self.rand(n) * (height - crop_h) + crop_h / 2) / (height / 2) - 1
        flip = torch.where(self.rand(n) < 0.5, -1.0, 1.0)
        sign = torch.where(self.rand(n) < 0.5, -1.0, 1.0)
        degrees = self.rand(n, -settings["rotate"], settings["rotate"]) + sign * 30 * MAGNITUDE * ops[:, OPS.index("rotate")]
        angle = degrees * math.pi / 180
        cos, sin = torch.cos(angle), torch.sin(angle)
        half_w, half_h = crop_w / 2 * flip, crop_h / 2
        shear_x = sign * 0.3 * MAGNITUDE * ops[:, OPS.index("shear_x")]
        shear_y = sign * 0.3 * MAGNITUDE * ops[:, OPS.index("shear_y")]
        shift_x = sign * 2 * 0.45 * MAGNITUDE * ops[:, OPS.index("translate_x")]
        shift_y = sign * 2 * 0.45 * MAGNITUDE * ops[:, OPS.index("translate_y")]
        theta = torch.empty(n, 2, 3, device=self.device)
        # output (u, v) in [-1, 1] -> pixels of the crop (u * half_w, v * half_h), sheared, rotated -> the source's
        # normalised coordinates around the crop's centre
        theta[:, 0, 0] = (cos * half_w - sin * shear_y * half_w) / (width / 2)
        theta[:, 0, 1] = (cos * shear_x * half_h - sin * half_h) / (width / 2)
        theta[:, 1, 0] = (sin * half_w + cos * shear_y * half_w) / (height / 2)
        theta[:, 1, 1] = (sin * shear_x * half_h + cos * half_h) / (height / 2)
        theta[:, 0, 2] = centre_x + shift_x
        theta[:, 1, 2] = centre_y + shift_y
        return theta

    def _resample(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta, (len(x), 3, *self.size), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _jitter(self, x: torch.Tensor, strength: float) -> torch.Tensor:
        """ColorJitter's brightness, contrast and saturation, a random factor of each per image."""
        n = len(x)
        x = x * self.rand(n, 1 - strength, 1 + strength).view(n, 1, 1, 1)
        gray = _gray(x.clamp(0, 1))
        x = (x - gray.mean((2, 3), keepdim=True)) * self.rand(n, 1 - strength, 1 + strength).view(n, 1, 1, 1) \
            + gray.mean((2, 3), keepdim=True)
        gray = _gray(x.clamp(0, 1))
        return ((x - gray) * self.rand(n, 1 - strength, 1 + strength).view(n, 1, 1, 1) + gray).clamp(0, 1)

    def _photometric(self, x: torch.Tensor, ops: torch.Tensor) -> torch.Tensor:
        """RandAugment's colour operations at MAGNITUDE, each on the images that drew it."""
        n = len(x)
        sign = torch.where(self.rand(n) < 0.5, -1.0, 1.0).view(n, 1, 1, 1)
        factor = 1 + sign * 0.9 * MAGNITUDE

        def where(op: str, changed: torch.Tensor) -> torch.Tensor:
            return torch.where(ops[:, OPS.index(op)].view(n, 1, 1, 1), changed, x)

        x = where("brightness", (x * factor).clamp(0, 1))
        gray = _gray(x)
        x = where("color", ((x - gray) * factor + gray).clamp(0, 1))
        mean = _gray(x).mean((2, 3), keepdim=True)
        x = where("contrast", ((x - mean) * factor + mean).clamp(0, 1))
        blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        x = where("sharpness", (blurred + (x - blurred) * factor).clamp(0, 1))
        levels = 2 ** (8 - int(4 * MAGNITUDE))
        x = where("posterize", torch.floor(x * (levels - 1e-6)) / (levels - 1))
        x = where("solarize", torch.where(x >= 1 - MAGNITUDE, 1 - x, x))
        low, high = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
        return where("autocontrast", ((x - low) / (high - low).clamp(min=1e-3)).clamp(0, 1))

    def _erase(self, x: torch.Tensor, probability: float) -> torch.Tensor:
        """RandomErasing's defaults: with ``probability``, a rectangle of 2 to 33% of the area set to zero."""
        n, _, height, width = x.shape
        area = self.rand(n, 0.02, 0.33) * height * width
        ratio = torch.exp(self.rand(n, math.log(0.3), math.log(3.3)))
        h = torch.sqrt(area * ratio).clamp(max=height)
        w = torch.sqrt(area / ratio).clamp(max=width)
        top = self.rand(n) * (height - h)
        left = self.rand(n) * (width - w)
        rows = torch.arange(height, device=self.device).view(1, height, 1)
        cols = torch.arange(width, device=self.device).view(1, 1, width)
        inside = (rows >= top.view(n, 1, 1)) & (rows < (top + h).view(n, 1, 1)) & \
                 (cols >= left.view(n, 1, 1)) & (cols < (left + w).view(n, 1, 1))
        erased = inside & (self.rand(n) < probability).view(n, 1, 1)
        return x.masked_fill(erased.unsqueeze(1), 0.0)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, torchvision's grayscale, as (N, 1, H, W)."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def mix(images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix (one of the two per batch, as timm's Mixup with both on): each image blended with, or
    given a patch of, another image of the batch, and its target (probabilities (N, classes)) mixed by the
    share each image keeps."""
    n, _, height, width = images.shape
    device = images.device
    partner = torch.randperm(n, generator=generator, device=device)
    cut = bool(torch.rand(1, generator=generator, device=device) < 0.5)
    alpha = MIX["cutmix_alpha"] if cut else MIX["mixup_alpha"]
    lam = float(torch.distributions.Beta(alpha, alpha).sample().item())
    if cut:
        cut_h, cut_w = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
        top = int(torch.randint(height - cut_h + 1, (1,), generator=generator, device=device))
        left = int(torch.randint(width - cut_w + 1, (1,), generator=generator, device=device))
        images = images.clone()
        images[:, :, top:top + cut_h, left:left + cut_w] = images[partner, :, top:top + cut_h, left:left + cut_w]
        lam = 1 - cut_h * cut_w / (height * width)
    else:
        images = images * lam + images[partner] * (1 - lam)
    return images, targets * lam + targets[partner] * (1 - lam)


class DeviceBatches:
    """(inputs, labels, indices) batches of a DecodedImages array: the inputs sliced from the uint8 array, moved
    to ``augment``'s device and turned into training views (or, with level "none", evaluation inputs) there; labels
    and indices stay on the CPU as the loaders give them. The next batch is sliced and pinned on a thread while
    the device works on this one. Images that could not be decoded are left out."""

    def __init__(self, images, labels: list[int], augment: BatchAugment, *, batch_size: int, order=None,
                 shuffle: bool = True, seed: int = 0, epoch: int = 0):
        several = len(labels) and isinstance(labels[0], np.ndarray)  # multi-label: multi-hot float targets
        self.images, self.labels = images, np.asarray(labels, dtype=np.float32 if several else np.int64)
        self.augment, self.batch_size = augment, batch_size
        usable = np.flatnonzero(images.ok)
        if order is not None:   # a distributed sampler's share of the indices
            usable = np.asarray([i for i in order if images.ok[i]], dtype=np.int64)
        elif shuffle:
            usable = usable[np.random.default_rng(seed * 1000 + epoch).permutation(len(usable))]
        self.order = usable

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def _slice(self, chunk: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ascending = np.sort(chunk)   # a memory-mapped array reads sorted rows fastest
        pixels = torch.from_numpy(np.ascontiguousarray(self.images.array[ascending]))
        if self.augment.device.type == "cuda":
            pixels = pixels.pin_memory()
        return pixels, torch.from_numpy(self.labels[ascending]), torch.from_numpy(ascending)

    def __iter__(self):
        chunks = [self.order[i:i + self.batch_size] for i in range(0, len(self.order), self.batch_size)]
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._slice, chunks[0]) if chunks else None
            for k in range(len(chunks)):
                pixels, labels, indices = pending.result()
                if k + 1 < len(chunks):
                    pending = pool.submit(self._slice, chunks[k + 1])
                yield self.augment(pixels), labels, indices
