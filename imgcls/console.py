"""Console output: plain lines to stderr through the "imgcls" logger, and progress bars on a terminal."""

from __future__ import annotations

import logging


def setup_logging(level: int = logging.INFO) -> None:
    """Give the "imgcls" logger a plain handler once, unless the application configured one."""
    logger = logging.getLogger("imgcls")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


def progress_bar(iterable=None, desc: str = "", enabled: bool = True, **options):
    """tqdm with ETA when ``enabled`` and stderr is a terminal; the iterable itself otherwise.

    Without an iterable (``total=`` given) it returns a bar to ``update`` by hand, or None when disabled.
    """
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, disable=None, **options)
