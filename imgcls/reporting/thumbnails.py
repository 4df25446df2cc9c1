"""Thumbnails of a data set's images for the pages (check.html, the label review of report.html): small JPEGs as
data: URIs, so a page stays one file that opens offline."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from ..data.images import ImageReadError, load_image
from ..pages import esc


def thumbnail_uri(path: Path, size: int = 128) -> str | None:
    """A small JPEG of the image as a data: URI, or None when it cannot be decoded."""
    try:
        image = load_image(path, draft_size=(size, size))
    except ImageReadError:
        return None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class Thumbnails:
    """figure(rel): the image at ``root / rel`` as a captioned thumbnail. Each image is read once per page, and
    at most ``budget`` are read, so a data set with thousands of findings still gives a page that opens fast."""

    def __init__(self, root: Path, budget: int = 800):
        self.root = Path(root)
        self.budget = budget
        self.cache: dict[str, str | None] = {}

    def __call__(self, rel: str) -> str:
        if rel not in self.cache:
            if self.budget <= 0:
                return f"<figure><div class='nothumb'>&hellip;</div>{esc(rel)}</figure>"
            self.budget -= 1
            self.cache[rel] = thumbnail_uri(self.root / rel)
        uri = self.cache[rel]
        picture = f"<img src='{uri}' alt=''>" if uri else "<div class='nothumb'>cannot decode</div>"
        return f"<figure>{picture}{esc(rel)}</figure>"
