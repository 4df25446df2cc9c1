"""Console output: imgcls logs plain lines to stderr through the "imgcls" logger."""

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
