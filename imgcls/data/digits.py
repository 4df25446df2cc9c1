"""scikit-learn's bundled handwritten digits as PNG class folders: real data that needs no network."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_digits(root: str | Path = "data/digits", size: int = 32, seed: int = 0) -> Path:
    """Write sklearn's 1,797 8x8 digit scans, upscaled to ``size`` px, as train/val/test class folders.

    The split is 70/15/15, stratified and seeded. An existing complete folder is reused as is.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    from .folders import stratified_split

    root = Path(root)
    marker = root / ".imgcls-digits"
    if marker.exists():
        return root
    digits = load_digits()
    assignment = stratified_split(list(digits.target), (0.7, 0.15, 0.15), seed)
    counters: dict[tuple[str, int], int] = {}
    for image, label, split in zip(digits.images, digits.target, assignment):
        pixels = (255 - image / 16.0 * 255).clip(0, 255).astype(np.uint8)  # dark ink on white paper
        folder = root / split / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        n = counters.get((split, int(label)), 0)
        counters[(split, int(label))] = n + 1
        Image.fromarray(pixels, "L").resize((size, size), Image.BICUBIC).save(folder / f"{label}_{n:04d}.png")
    marker.write_text("written by imgcls demo\n")
    return root
