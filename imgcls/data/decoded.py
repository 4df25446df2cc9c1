"""The decoded-image cache: every image decoded once to uint8 at the working size, for epochs that train on pixels.

Small sets stay in RAM; large ones go to a memory-mapped file under the cache folder, keyed by the files'
content and the preprocessing, so the OS pages them in and out and RSS stays bounded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..console import progress_bar
from ..record.cache import cache_root, file_hashes
from .geometry import Cover, draft_size_for, eval_geometry, resampling, whole_image_resize, working_size
from .images import ImageReadError, load_image

log = logging.getLogger("imgcls")

# In every cache's key, so a cache written by another format version is not read.
CACHE_FORMAT = 3


def _output_shape(preprocess: dict, training: bool) -> tuple[int, int, int]:
    _, height, width = preprocess["input_size"]
    return (*working_size(preprocess), 3) if training else (height, width, 3)


def decode_to_working(path, preprocess: dict, *, training: bool) -> np.ndarray:
    """Decode (draft mode for large JPEGs) and resize to uint8 HxWx3.

    ``training=False`` gives exactly the eval transform's geometry; ``training=True`` keeps room for
    random crops: the working size, cut from the centre (crop mode) or holding the whole image.
    """
    image = load_image(path, draft_size=draft_size_for(preprocess))
    if not training:
        for step in eval_geometry(preprocess):
            image = step(image)
    elif preprocess.get("resize", "crop") == "crop":
        image = Cover(working_size(preprocess), resampling(preprocess))(image)
    else:
        image = whole_image_resize(preprocess, working_size(preprocess))(image)
    return np.asarray(image, dtype=np.uint8)


class DecodedImages:
    """Every image decoded once into one uint8 array (N,H,W,3): in RAM when small, else a memory-mapped
    file in the cache folder that the OS pages in and out, so RSS stays bounded on big data sets."""

    def __init__(self, paths: list, preprocess: dict, *, training: bool, ram_limit_bytes: int = 512 << 20,
                 workers: int = 2, root: Path | None = None, hashes: list[str] | None = None, progress: bool = True):
        self.shape = _output_shape(preprocess, training)
        self.paths = [str(p) for p in paths]
        nbytes = len(self.paths) * int(np.prod(self.shape))
        self.ok = np.zeros(len(self.paths), dtype=bool)
        self.file: Path | None = None
        if nbytes <= ram_limit_bytes:
            self.array = np.empty((len(self.paths), *self.shape), dtype=np.uint8)
            self._fill(preprocess, training, workers, progress)
            return
        hashes = hashes if hashes is not None else file_hashes(self.paths, workers)
        spec = {"format": CACHE_FORMAT, "hashes": hashes, "preprocess": preprocess, "training": training}
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]
        folder = (root or cache_root()) / "decoded"
        folder.mkdir(parents=True, exist_ok=True)
        self.file = folder / f"{key}.u8"
        ok_file = folder / f"{key}.ok.npy"
        if self.file.exists() and ok_file.exists():
            self.array = np.memmap(self.file, dtype=np.uint8, mode="r", shape=(len(self.paths), *self.shape))
            self.ok = np.load(ok_file)
            return
        tmp = folder / f".{key}.{uuid.uuid4().hex}.tmp"
        self.array = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(len(self.paths), *self.shape))
        try:
            self._fill(preprocess, training, workers, progress)
            self.array.flush()
            np.save(folder / f".{key}.ok.tmp.npy", self.ok)
            os.replace(folder / f".{key}.ok.tmp.npy", ok_file)
            os.replace(tmp, self.file)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        del self.array
        self.array = np.memmap(self.file, dtype=np.uint8, mode="r", shape=(len(self.paths), *self.shape))

    def _fill(self, preprocess, training, workers, progress):
        def decode(i):
            try:
                self.array[i] = decode_to_working(self.paths[i], preprocess, training=training)
                self.ok[i] = True
            except ImageReadError as e:
                log.warning(f"WARNING: skipped {self.paths[i]}: {e}")

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # PIL decodes without the GIL
            for _ in progress_bar(pool.map(decode, range(len(self.paths))), "decoding images", progress,
                                  total=len(self.paths), unit="img"):
                pass

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i) -> np.ndarray | None:
        return np.asarray(self.array[i]) if self.ok[i] else None


class DecodedDataset(torch.utils.data.Dataset):
    """ImageDataset's contract ((tensor, label, index) or None) served from a DecodedImages array."""

    def __init__(self, images: DecodedImages, labels: list[int], transform):
        self.images, self.labels, self.transform = images, list(labels), transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        pixels = self.images[i]
        if pixels is None:
            return None
        return self.transform(Image.fromarray(pixels, "RGB")), self.labels[i], i
