"""Self-describing checkpoints: tensors plus model name, class names, preprocessing, settings and metrics.

They load with ``torch.load(weights_only=True)``, so loading one never runs code from the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

from ..errors import ImgclsError
from .card import LOGITS_ONLY, WITH_FAMILIARITY, ModelCard
from .files import _replace_atomically

CHECKPOINT_FORMAT = "imgcls-checkpoint"
_KEEP = object()


def checkpoint_content(card: ModelCard, **content) -> dict:
    """What a checkpoint file holds: the format tag, the model card's fields, then ``content`` (the tensors, the
    settings, the training state)."""
    return {"format": CHECKPOINT_FORMAT, "version": 1, **card.to_dict(), **content}


def card_of(checkpoint: dict) -> ModelCard:
    """The model card of a checkpoint's content (as load_checkpoint returns it). Its outputs are those of the
    network the checkpoint builds: the familiarity score second when it holds the score's statistics."""
    card = ModelCard.read(checkpoint, f"--weights {checkpoint.get('path', 'checkpoint')}")
    return card.replace(outputs=WITH_FAMILIARITY if checkpoint.get("familiarity") else LOGITS_ONLY)


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> None:
    """torch.save into a temporary file, then rename: a failure mid-write never leaves a truncated checkpoint."""
    import torch

    _replace_atomically(Path(path), lambda tmp: torch.save(checkpoint, tmp))


def update_card(path: str | os.PathLike, *, familiarity=_KEEP, **changes) -> ModelCard:
    """Rewrite the checkpoint file ``path`` with its card changed (``changes``: card fields such as temperature
    or rejection) and, when given, the familiarity score's statistics (None removes them), everything else kept.
    Atomic: the file is either the old one or the new one."""
    import torch

    stored = torch.load(path, map_location="cpu", weights_only=True)
    if familiarity is not _KEEP:
        stored.pop("familiarity", None)
        if familiarity:
            stored["familiarity"] = familiarity
    card = card_of(stored | {"path": str(path)}).replace(**changes)
    save_checkpoint(path, stored | card.to_dict())
    return card


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load an imgcls checkpoint without unpickling code (weights_only=True).

    A run folder stands for its weights/best.pt. Raises ImgclsError naming the file when it is
    missing, damaged or not from imgcls. The returned dict gets a "path" key.
    """
    path = Path(path)
    if not path.exists():
        raise ImgclsError(f"--weights {path}: file not found")
    if path.is_dir():
        candidate = path / "weights" / "best.pt"
        if not candidate.exists():
            raise ImgclsError(f"--weights {path}: is a folder; pass a checkpoint such as RUN/weights/best.pt")
        path = candidate
    import torch

    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling refusal, truncated zip, random bytes...
        raise ImgclsError(f"--weights {path}: {describe_load_failure(e)}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ImgclsError(
            f"--weights {path}: not an imgcls checkpoint (no class names or preprocessing inside); "
            "use weights/best.pt or weights/last.pt from an imgcls train run"
        )
    checkpoint["path"] = str(path)
    card_of(checkpoint)  # one clear error now for a damaged description, not a KeyError later
    return checkpoint


def describe_load_failure(error: Exception) -> str:
    """A short reason why torch.load(weights_only=True) refused a file, without PyTorch's long advice."""
    text = str(error)
    if "Unsupported global" in text:
        return ("holds Python objects besides tensors; imgcls never unpickles code from a file, "
                "so use a checkpoint or state_dict saved with plain tensors")
    if "Weights only load failed" in text:
        return "is not a PyTorch checkpoint (its content is not a saved tensor file)"
    if isinstance(error, (EOFError, RuntimeError)) and ("zip" in text.lower() or "archive" in text.lower()
                                                         or not text):
        return "is truncated or not a PyTorch file (was the download or copy interrupted?)"
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return f"is not a PyTorch checkpoint ({first[:120]})"


def run_dir_of(checkpoint_path: str | os.PathLike) -> Path:
    """RUN for RUN/weights/best.pt."""
    path = Path(checkpoint_path).resolve()
    return path.parent.parent if path.parent.name == "weights" else path.parent


def network_key(checkpoint: dict) -> str:
    """What the network computes: architecture, input size and every tensor (the familiarity score's statistics
    too). Calibration, metrics or a rewritten file with the same weights keep the key; any changed weight gives a
    new one."""
    import torch

    card = card_of(checkpoint)
    digest = hashlib.blake2b(digest_size=16)
    spec = (card.model_name, sorted(card.model_kwargs.items()), list(card.input_size))
    if card.mirrored_at is not None:  # the same weights, predicting from mirrored activations too
        spec += (("mirrored_at", card.mirrored_at),)
    digest.update(repr(spec).encode())
    tensors = {**checkpoint["state_dict"], **{f"familiarity.{k}": v for k, v in
                                               (checkpoint.get("familiarity") or {}).items()}}
    for name, tensor in sorted(tensors.items()):
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(name.encode())
        digest.update(str(data.dtype).encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


# A checkpoint file that ``imgcls train`` wrote carries its checked ONNX export and the card to run it with, as
# two more records of the zip archive torch.save writes (torch.load reads the file as it is): it predicts without
# PyTorch on any machine, with no cache. The card names a digest of the checkpoint's own records, so a file whose
# weights or settings changed (torch.save drops the extra records anyway) is never answered from an old export.
ATTACHED_CARD, ATTACHED_ONNX = "imgcls/card.json", "imgcls/model.onnx"


def attach_export(path: str | os.PathLike, card: dict, onnx: bytes) -> bool:
    """Write ``card`` (JSON) and the export ``onnx`` into the checkpoint file, atomically (a copy gets them, then
    replaces the file). False when the file is not a torch.save archive or already carries them."""
    import shutil

    try:
        with zipfile.ZipFile(path) as archive:
            prefix = _records_prefix(archive)
            if any(name.startswith(prefix + "imgcls/") for name in archive.namelist()):
                return False
            card = card | {"records": _records_digest(archive, prefix)}
    except (zipfile.BadZipFile, ValueError):
        return False

    def write(copy: str) -> None:
        shutil.copyfile(path, copy)
        with zipfile.ZipFile(copy, "a") as archive:
            archive.writestr(prefix + ATTACHED_ONNX, onnx)
            archive.writestr(prefix + ATTACHED_CARD, json.dumps(card))

    _replace_atomically(Path(path), write)
    return True


def attached_export(path: str | os.PathLike) -> tuple[dict, bytes] | None:
    """(card, export bytes) that ``attach_export`` put inside this checkpoint file, read without PyTorch; None
    when there are none, or when the checkpoint's records are not those they were written with."""
    try:
        with zipfile.ZipFile(path) as archive:
            prefix = _records_prefix(archive)
            card = json.loads(archive.read(prefix + ATTACHED_CARD))
            if not isinstance(card, dict) or card.get("records") != _records_digest(archive, prefix):
                return None
            return card, archive.read(prefix + ATTACHED_ONNX)  # zipfile checks its CRC-32
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _records_prefix(archive: zipfile.ZipFile) -> str:
    """The folder torch.save put the checkpoint's records in (the file's first name, kept through renames)."""
    names = [name for name in archive.namelist() if name.endswith("/data.pkl")]
    if len(names) != 1:
        raise ValueError("not a torch.save archive")
    return names[0][: -len("data.pkl")]


def _records_digest(archive: zipfile.ZipFile, prefix: str) -> str:
    """A digest of the records torch.save wrote (names, sizes and CRC-32s, read from the archive's directory)."""
    own = sorted((info.filename, info.file_size, info.CRC) for info in archive.infolist()
                 if not info.filename.startswith(prefix + "imgcls/"))
    return hashlib.sha256(json.dumps(own).encode()).hexdigest()
