"""The run folder: numbered names that never collide, atomic writes, safe checkpoint IO."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
import yaml

from .errors import ImgclsError

CHECKPOINT_FORMAT = "imgcls-checkpoint"


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def new_run_dir(project: str | os.PathLike, name: str, exist_ok: bool = False) -> Path:
    """Create runs/train, then runs/train2, runs/train3, ... and return the new folder.

    ``os.mkdir`` is atomic, so two runs started at once still get different folders.
    """
    project = Path(project)
    project.mkdir(parents=True, exist_ok=True)
    if exist_ok:
        path = project / name
        path.mkdir(parents=True, exist_ok=True)
        return path
    for n in range(1, 100_000):
        path = project / (name if n == 1 else f"{name}{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ImgclsError(f"{project}: too many runs named {name!r}; choose another --name")


def next_free_dir(parent: Path, name: str) -> Path:
    """Like new_run_dir, for sub-folders such as RUN/val, RUN/val2."""
    return new_run_dir(parent, name)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())  # mkstemp makes 0600 files; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_yaml(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> None:
    """torch.save into a temp file, then rename: a kill never leaves a truncated checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(checkpoint, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load an imgcls checkpoint without unpickling code (weights_only=True).

    Raises ImgclsError naming the file when it is missing, damaged or not from imgcls.
    """
    path = Path(path)
    if not path.exists():
        raise ImgclsError(f"--weights {path}: file not found")
    if path.is_dir():
        candidate = path / "weights" / "best.pt"
        if candidate.exists():
            path = candidate
        else:
            raise ImgclsError(f"--weights {path}: is a folder; pass a checkpoint such as RUN/weights/best.pt")
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

