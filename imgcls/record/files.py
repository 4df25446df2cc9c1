"""Run folders with numbered names that never collide, and atomic writes."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import yaml

from ..errors import ImgclsError


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


def _replace_atomically(path: Path, write) -> None:
    """``write(tmp_path)`` into a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())  # mkstemp makes 0600 files; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """A reader sees the old file or the whole new one, never a partial write."""
    _replace_atomically(Path(path), lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_yaml(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping, or {} for an empty file."""
    content = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return content if isinstance(content, dict) else {}
