"""Where caches live and how their entries are keyed: by file content, never by name or date."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def cache_root() -> Path:
    """$IMGCLS_CACHE, else ~/.cache/imgcls (XDG_CACHE_HOME respected). Outside any run folder, so runs share it."""
    env = os.environ.get("IMGCLS_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imgcls"


def file_hash(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Content hash of a file: an edited image gets a new key even when its name and size stay."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(paths: list, workers: int = 2) -> list[str]:
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # hashlib releases the GIL
        return list(pool.map(file_hash, paths))


def recalled(memo: str, key: str) -> str | None:
    """What ``remember`` kept under ``key`` in the cache's ``memo`` file (a JSON object), or None."""
    import json

    try:
        found = json.loads((cache_root() / memo).read_text())
    except (OSError, ValueError):
        return None
    return found.get(key) if isinstance(found, dict) else None


def remember(memo: str, key: str, value: str) -> None:
    """Keep ``value`` under ``key`` in the cache's ``memo`` file: what this machine measured, so that it is measured
    once. A read-only or damaged cache only means measuring again next time."""
    import json

    from .files import write_json

    path = cache_root() / memo
    try:
        kept = json.loads(path.read_text()) if path.exists() else {}
        write_json(path, (kept if isinstance(kept, dict) else {}) | {key: value})
    except (OSError, ValueError):
        pass
