"""A checkpoint's checked ONNX export and its model card, found without PyTorch.

``imgcls predict`` on a checkpoint file runs its checked ONNX export on ONNX Runtime without loading PyTorch when
it finds one of two things: the export that ``imgcls train`` put inside its best.pt (``embed_export``), or a card an
earlier predict left in the cache for this exact file's bytes (``remember_export``). Either holds the model card
(record/card.ModelCard) and what the runtime race decided here. Reading them imports no torch; writing them does.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..record.card import ModelCard
from .runner import ORT, runtime_threads

log = logging.getLogger("imgcls")

CARD_FORMAT = "imgcls-onnx-card"


@dataclass(frozen=True)
class CheckedExport:
    """A checkpoint's checked ONNX export (a cached file's path, or the bytes inside the checkpoint) and its card."""

    card: ModelCard
    onnx: Path | bytes
    threads: int          # the cores ONNX Runtime runs on (those the race ran with)
    runner: str           # the runner's name in logs and results


def card_file(weights: str | os.PathLike) -> Path:
    """Where the card of a checkpoint file lives: under the hash of its bytes, so any change to the file (new
    weights, a new calibration, another run's best.pt copied over it) finds no card."""
    from ..record.cache import cache_root, file_hash

    return cache_root() / "onnx" / "cards" / f"{file_hash(weights)}.json"


def card_conditions() -> dict:
    """What a card holds only for: the same libraries, imgcls and cores (the runtime race ran under them)."""
    from ..data.cores import available_cpus
    from ..version import __version__

    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "none"

    return {"imgcls": __version__, "torch": version("torch"), "onnxruntime": version("onnxruntime"),
            "cpus": available_cpus(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def checked_export(weights: str | os.PathLike) -> CheckedExport | None:
    """The checked export of this exact checkpoint file: the card in the cache, else the export inside the file;
    None when there is neither, or when what was found is damaged or was written under other conditions."""
    return cached_card(weights) or embedded_card(weights)


def cached_card(weights: str | os.PathLike) -> CheckedExport | None:
    """The card an earlier call left in the cache for this exact file (``remember_export``)."""
    try:
        path = card_file(weights)
        stored = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(stored, dict) or stored.get("format") != CARD_FORMAT \
                or stored.get("conditions") != card_conditions():
            return None
        name = str(stored.get("onnx", ""))
        onnx = path.parent.parent / name
        if Path(name).name != name or onnx.suffix != ".onnx" or not onnx.is_file():
            return None
        return CheckedExport(ModelCard.read(stored["model"], str(path)), onnx, int(stored["threads"]),
                             f"{ORT} (cached ONNX)")
    except Exception:  # noqa: BLE001 - a missing or damaged card: the full path writes it again
        return None


def embedded_card(weights: str | os.PathLike) -> CheckedExport | None:
    """The checked export and card inside the checkpoint file itself (``embed_export``)."""
    from ..record.checkpoint import attached_export

    try:
        found = attached_export(weights)
        if found is None or found[0].get("format") != CARD_FORMAT:
            return None
        return CheckedExport(ModelCard.read(found[0]["model"], str(weights)), found[1], runtime_threads(),
                             f"{ORT} (ONNX inside the checkpoint)")
    except Exception:  # noqa: BLE001 - as above
        return None


def remember_export(checkpoint: dict, weights: str | os.PathLike) -> bool:
    """Leave a card in the cache for the checkpoint file ``weights`` (``checkpoint`` is its content) when its
    network's checked ONNX export is in the cache and PyTorch has not won the race for it here. True when a card
    was written."""
    found = _export_card(checkpoint)
    return found is not None and _leave_card(found[0], weights)


def _leave_card(stored: dict, weights: str | os.PathLike) -> bool:
    from ..record.files import write_json

    try:
        write_json(card_file(weights), stored)
    except (OSError, TypeError, ValueError):  # a read-only cache, or metrics JSON cannot hold: no card, no harm
        return False
    return True


def embed_export(checkpoint: dict, weights: str | os.PathLike) -> bool:
    """Put the card and the checked export inside the checkpoint file ``weights`` itself, so that it predicts
    without PyTorch wherever it is copied; then leave the card in the cache for the new file's bytes, as
    ``remember_export`` does. For the best.pt that ``imgcls train`` wrote; when training ran no ONNX Runtime, the
    export is made and checked here first. True when the export went in."""
    import importlib.util

    from ..record.checkpoint import attach_export
    from .pytorch import TORCH, checkpoint_choice, checkpoint_runner, remembered

    found = _export_card(checkpoint)
    if found is None and remembered(checkpoint_choice(checkpoint)) != TORCH \
            and importlib.util.find_spec("onnxruntime") is not None:
        # trained where ONNX Runtime did not run (on a GPU, or with --runtime torch): export, check and race
        # here, on this machine's CPU, as predict's first call would
        checkpoint_runner(checkpoint, device="cpu")
        found = _export_card(checkpoint)
    if found is None:
        return False
    try:
        embedded = attach_export(weights, found[0], found[1].read_bytes())
    except (OSError, TypeError, ValueError):  # no room on the disk, or metrics JSON cannot hold: file unchanged
        embedded = False
    _leave_card(found[0], weights)  # keyed by the file's new bytes
    return embedded


def _export_card(checkpoint: dict) -> tuple[dict, Path] | None:
    """(the card as stored, the cached export's path) when the checkpoint's network has a checked export in the
    cache and PyTorch has not won the race for it here, else None."""
    import torch

    from ..record.checkpoint import card_of
    from .pytorch import TORCH, cached_export_path, checkpoint_choice, remembered

    onnx = cached_export_path(checkpoint)
    if not onnx.is_file() or remembered(checkpoint_choice(checkpoint)) == TORCH:
        return None
    stored = {"format": CARD_FORMAT, "conditions": card_conditions(), "threads": torch.get_num_threads(),
              "onnx": onnx.name, "model": card_of(checkpoint).to_dict()}
    return stored, onnx
