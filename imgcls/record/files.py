"""Run folders with numbered names that never collide, atomic writes, and marked staging folders."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import yaml

from ..errors import ImgclsError


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` is ``folder`` or lies somewhere below it (symbolic links resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


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


def write_csv(path: str | os.PathLike, header: list[str], rows) -> None:
    """A CSV file with ``header`` and ``rows`` (lists of values), written atomically."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_yaml(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping, or {} for an empty file."""
    content = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return content if isinstance(content, dict) else {}


# A staging folder holds a result while it is written; this file inside marks it as imgcls's own, and
# only a folder carrying it is ever removed, so a user's folder can never be mistaken for one.
STAGING_MARKER = ".imgcls-staging"


def new_staging_dir(beside: str | os.PathLike) -> Path:
    """A new hidden folder next to ``beside`` (.NAME.partial-XXXX), created here and marked as imgcls's."""
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{beside.name}.partial-", dir=beside.parent))
    (folder / STAGING_MARKER).write_text("imgcls writes here, then renames the folder; safe to delete\n")
    return folder


def remove_staging_dir(folder: str | os.PathLike) -> bool:
    """Remove a staging folder, and only one that carries imgcls's marker. Returns whether it was removed."""
    folder = Path(folder)
    if folder.is_dir() and not folder.is_symlink() and (folder / STAGING_MARKER).is_file():
        shutil.rmtree(folder)
        return True
    return False


@contextmanager
def staged_dir(dest: str | os.PathLike):
    """Yield a marked staging folder; when the block ends, rename it to ``dest`` (new, or an empty folder).

    On any failure the staging folder is removed and ``dest`` is untouched, so an interrupted copy never
    looks finished.
    """
    dest = Path(dest)
    staging = new_staging_dir(dest)
    try:
        yield staging
        (staging / STAGING_MARKER).unlink()
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        os.rename(staging, dest)  # fails rather than replace anything that appeared at dest meanwhile
    except BaseException:
        if staging.is_dir() and not staging.is_symlink():  # made by mkdtemp above: ours, marker or not
            (staging / STAGING_MARKER).touch()
            remove_staging_dir(staging)
        raise


def put_in_place(staged: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename ``staged`` over ``target``; a folder (a Core ML .mlpackage, a web export) replaces what is there as a
    whole, which a rename alone cannot do over a folder that is not empty."""
    staged, target = Path(staged), Path(target)
    if staged.is_dir() and (target.exists() or target.is_symlink()):
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(staged, target)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    else:
        os.replace(staged, target)
