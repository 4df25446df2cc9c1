"""The error gallery: the most confident mistakes, each next to a Grad-CAM heatmap of the predicted class."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..metrics import mistake_rows

log = logging.getLogger("imgcls")

GALLERY_SIZE = 16


def draw_error_gallery(model, root: Path, rows: list[dict], class_names: list[str], preprocess: dict, path: Path,
                       *, device: torch.device, title: str) -> list[dict]:
    """Draw ``rows`` (path, true, predicted, confidence; see metrics.mistake_rows) into ``path``.

    Returns the rows drawn: an image that can no longer be read is left out with a warning.
    """
    from ..data.images import ImageReadError, load_image
    from ..data.transforms import eval_transform
    from .gradcam import grad_cam, overlay
    from .plots import plot_error_gallery

    transform = eval_transform(preprocess)
    mean = np.array(preprocess["mean"])[:, None, None]
    std = np.array(preprocess["std"])[:, None, None]
    drawn, tensors = [], []
    for row in rows:
        try:
            tensors.append(transform(load_image(root / row["path"])))
            drawn.append(row)
        except ImageReadError as e:
            log.warning(f"WARNING: left {row['path']} out of the error gallery: {e}")
    tiles = []
    if drawn:
        cams = grad_cam(model, torch.stack(tensors).to(device), [class_names.index(r["predicted"]) for r in drawn])
        for row, tensor, cam in zip(drawn, tensors, cams):
            image = np.clip(tensor.numpy() * std + mean, 0, 1).transpose(1, 2, 0)
            tiles.append(dict(row, image=image, heatmap=overlay(image, cam), name=row["path"],
                              cam_empty=not cam.any()))
    plot_error_gallery(tiles, path, title)
    return drawn


def draw_run_errors(run_dir: str | Path, device: torch.device, n: int = GALLERY_SIZE) -> Path | None:
    """errors_val.png of a finished run: the best weights' most confident val mistakes, from
    predictions_val.csv and the images under the run's data folder, explained (Grad-CAM) by the network that made
    them, as the checkpoint describes it (models.factory.model_from_checkpoint)."""
    from ..data.folders import images_root
    from ..models.factory import model_from_checkpoint
    from ..record.checkpoint import card_of, load_checkpoint
    from ..record.files import read_yaml
    from ..record.predictions import read_predictions_csv

    run_dir = Path(run_dir)
    checkpoint = load_checkpoint(run_dir / "weights" / "best.pt")
    card = card_of(checkpoint)
    found = read_predictions_csv(run_dir / "predictions_val.csv", list(card.class_names))
    if found is None:
        return None
    y_true, probs, paths = found
    root = images_root(read_yaml(run_dir / "args.yaml"))
    rows = mistake_rows(paths, y_true, probs, list(card.class_names), n)
    path = run_dir / "errors_val.png"
    draw_error_gallery(model_from_checkpoint(checkpoint).to(device), root, rows, list(card.class_names),
                       card.preprocess, path, device=device,
                       title=f"Most confident mistakes, val (best epoch {checkpoint['epoch']})")
    return path
