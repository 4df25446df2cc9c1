"""Any file imgcls accepts, as a model ready to run: a checkpoint (or a run folder) on the fastest runtime measured
here, or an exported file on its own runtime; each described by its model card (record/card.ModelCard)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImgclsError
from ..metrics import usable_spec
from ..record.card import ModelCard
from ..runtime.runner import RUNTIMES, Runner


@dataclass(frozen=True)
class LoadedModel:
    """A trained classifier ready to run: the file it came from, its card, and the runner of its network."""

    path: Path
    card: ModelCard
    runner: Runner

    @property
    def runtime(self) -> str:
        return self.runner.name

    @property
    def usable_rejection(self) -> dict | None:
        """The rejection spec this network can apply (metrics.usable_spec), None when it has none."""
        return usable_spec(self.card.rejection, self.card.scored) if self.card.rejection else None


def load_model(weights: str | os.PathLike, device: str = "auto", runtime: str = "auto") -> LoadedModel:
    """The one way a file becomes a runnable model. An exported file (.onnx, .xml, .torchscript, ...) runs on its
    own runtime; a checkpoint (or a run folder) on the fastest one measured here: ONNX Runtime through a checked
    export, or PyTorch (``runtime`` forces one). A checkpoint file with a checked export (the best.pt of
    ``imgcls train``, or one an earlier call left a card for: runtime/cards.py) runs on it at once, without
    loading the file or PyTorch."""
    if runtime not in RUNTIMES:
        raise ImgclsError(f"--runtime {runtime!r}: choose {', '.join(RUNTIMES)}")
    path = Path(weights)
    if path.is_dir() and (path / "weights" / "best.pt").is_file():
        path = path / "weights" / "best.pt"
    from .formats import format_of, load_exported

    if format_of(path) is not None:
        if runtime != "auto":
            raise ImgclsError(f"--runtime {runtime}: applies to .pt checkpoints; {path.name} runs on its own runtime")
        runner, card = load_exported(path)  # ONNX and OpenVINO files run without PyTorch
        return LoadedModel(path, card, runner)
    warm = _from_checked_export(path, device, runtime)
    return warm if warm is not None else _from_checkpoint(path, device, runtime)


def _from_checked_export(path: Path, device: str, runtime: str) -> LoadedModel | None:
    from ..runtime.cards import checked_export
    from ..runtime.runner import accelerator_visible, onnx_runner

    cpu = device == "cpu" or (device == "auto" and not accelerator_visible())
    if not cpu or runtime == "torch" or path.suffix.lower() not in (".pt", ".pth") or not path.is_file():
        return None
    found = checked_export(path)
    if found is None:
        return None
    try:
        runner = onnx_runner(found.onnx, threads=found.threads, name=found.runner)
    except Exception:  # noqa: BLE001 - a damaged export: the full path below writes it again
        return None
    return LoadedModel(path, found.card, runner)


def _from_checkpoint(path: Path, device: str, runtime: str) -> LoadedModel:
    from ..record.checkpoint import card_of, load_checkpoint
    from ..runtime.cards import remember_export
    from ..runtime.device import select_device
    from ..runtime.pytorch import checkpoint_runner
    from ..runtime.runner import ORT

    checkpoint = load_checkpoint(path)
    runner = checkpoint_runner(checkpoint, device=select_device(device), kind=runtime)
    if runner.name.startswith(ORT):
        remember_export(checkpoint, checkpoint["path"])
    return LoadedModel(Path(checkpoint["path"]), card_of(checkpoint), runner)
