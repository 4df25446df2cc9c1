"""Small generated image data sets for tests: coloured shapes on noisy backgrounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")
COLOURS = {"circle": (220, 40, 40), "square": (40, 180, 60), "triangle": (50, 80, 220)}


def shape_image(kind: str, size: int = 48, seed: int = 0) -> Image.Image:
    """One RGB image of a coloured ``kind`` shape at a random place and size."""
    rng = np.random.default_rng(seed)
    background = rng.integers(150, 255, size=(size, size, 3), dtype=np.uint8)
    image = Image.fromarray(background, "RGB")
    draw = ImageDraw.Draw(image)
    r = int(size * rng.uniform(0.22, 0.35))
    cx, cy = rng.integers(r + 1, size - r - 1, size=2)
    colour = tuple(int(np.clip(c + rng.integers(-25, 25), 0, 255)) for c in COLOURS.get(kind, (120, 120, 120)))
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return image


def make_class_folders(root: Path, classes=CLASSES, per_class: int = 12, size: int = 48, seed: int = 0,
                       ext: str = ".png") -> Path:
    """root/<class>/<class>_<i><ext> for every class."""
    root = Path(root)
    for c_index, kind in enumerate(classes):
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape_image(kind, size, seed * 10_000 + c_index * 1000 + i).save(folder / f"{kind}_{i}{ext}")
    return root


def make_split_folders(root: Path, classes=CLASSES, counts=(10, 4, 4), size: int = 48, seed: int = 0) -> Path:
    """root/train|val|test/<class>/... with counts images per class in each split."""
    root = Path(root)
    for split, n, offset in zip(("train", "val", "test"), counts, (0, 100, 200)):
        if n:
            make_class_folders(root / split, classes, n, size, seed + offset)
    return root
