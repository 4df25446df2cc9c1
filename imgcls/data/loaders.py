"""Datasets and loaders: (tensor, label, index) samples, a bad file skipped instead of ending an epoch. A label is a
class index, or in multi-label data a multi-hot float32 vector."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .images import ImageReadError, load_image

log = logging.getLogger("imgcls")


class ImageDataset(Dataset):
    """(path, label) pairs decoded on demand; an unreadable file yields None instead of an exception."""

    def __init__(self, paths: list[Path], labels: list[int], transform, draft_size=None):
        self.paths = [str(p) for p in paths]
        self.labels = list(labels)
        self.transform = transform
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            image = load_image(self.paths[index], draft_size=self.draft_size)
        except ImageReadError as e:
            log.warning(f"WARNING: skipped {self.paths[index]}: {e}")
            return None
        return self.transform(image), self.labels[index], index


def collate_skip_bad(batch):
    """Default collation after dropping samples that failed to load, so one bad file never ends an epoch."""
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    images = torch.stack([b[0] for b in batch])
    if isinstance(batch[0][1], np.ndarray):  # multi-label: multi-hot float targets (data/folders.multi_hot)
        labels = torch.from_numpy(np.stack([b[1] for b in batch]))
    else:
        labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    indices = torch.tensor([b[2] for b in batch], dtype=torch.long)
    return images, labels, indices


def make_loader(dataset, *, batch_size: int, shuffle: bool, workers: int, seed: int = 0,
                epoch: int = 0, sampler=None, drop_last: bool = False) -> DataLoader:
    generator = torch.Generator()
    generator.manual_seed(seed * 1000 + epoch)  # same order for the same epoch, so a resumed run matches
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skip_bad,
        generator=generator,
        persistent_workers=False,
        drop_last=drop_last,
    )
