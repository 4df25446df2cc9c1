"""Self-describing checkpoints: tensors plus model name, class names, preprocessing, settings and metrics.

They load with ``torch.load(weights_only=True)``, so loading one never runs code from the file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from ..errors import ImgclsError
from .files import _replace_atomically

CHECKPOINT_FORMAT = "imgcls-checkpoint"


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> None:
    """torch.save into a temporary file, then rename: a failure mid-write never leaves a truncated checkpoint."""
    _replace_atomically(Path(path), lambda tmp: torch.save(checkpoint, tmp))


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
    digest = hashlib.blake2b(digest_size=16)
    spec = (checkpoint["model_name"], sorted(checkpoint.get("model_kwargs", {}).items()),
            list(checkpoint["preprocess"]["input_size"]))
    if checkpoint.get("mirrored_at") is not None:  # the same weights, predicting from mirrored activations too
        spec += (("mirrored_at", checkpoint["mirrored_at"]),)
    digest.update(repr(spec).encode())
    tensors = {**checkpoint["state_dict"], **{f"familiarity.{k}": v for k, v in
                                               (checkpoint.get("familiarity") or {}).items()}}
    for name, tensor in sorted(tensors.items()):
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(name.encode())
        digest.update(str(data.dtype).encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()
