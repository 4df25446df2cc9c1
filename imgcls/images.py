"""Reading images safely: any format, any colour mode, EXIF orientation, no decompression bombs."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

# Images above this many pixels are refused before decoding (PIL's own default limit).
MAX_IMAGE_PIXELS = 89_478_485
# imgcls enforces the limit itself with a clear message, so PIL's generic warning is only noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name has one of the supported image extensions (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


class ImageReadError(Exception):
    """An image that cannot be used; the message says why in a few words."""


def _open(source, max_pixels: int) -> Image.Image:
    try:
        if isinstance(source, (bytes, bytearray)):
            if not source:
                raise ImageReadError("empty file (0 bytes)")
            image = Image.open(io.BytesIO(source))
        else:
            if os.path.getsize(source) == 0:
                raise ImageReadError("empty file (0 bytes)")
            image = Image.open(source)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError("not an image (the file content is not a known image format)") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"decompression bomb refused ({e})") from None
    except FileNotFoundError:
        raise ImageReadError("file not found") from None
    except OSError as e:
        raise ImageReadError(f"cannot be opened ({e})") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageReadError(
            f"decompression bomb refused: {width}x{height} pixels is over the limit of {max_pixels:,}"
        )
    if width == 0 or height == 0:
        raise ImageReadError("image has zero width or height")
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, P, RGBA, CMYK, I;16, I, F, ...) to 8-bit RGB.

    Transparent areas are composited on white, which is what an image viewer shows.
    16-bit and float images are scaled by their own range rather than clipped.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        if mode.startswith("I;16") and low >= 0 and high <= 65535:
            array = array / 257.0 if high > 255 else array
        elif high > low:
            array = (array - low) / (high - low) * 255.0
        return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(
    source: str | os.PathLike | bytes,
    *,
    draft_size: tuple[int, int] | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> Image.Image:
    """Decode an image fully and return it as RGB with EXIF orientation applied.

    ``draft_size`` lets JPEGs decode at a reduced DCT scale when the file is at least
    twice that size, which is several times faster and visually the same after resizing.
    Raises ``ImageReadError`` with a short reason for anything unusable.
    """
    image = _open(source, max_pixels)
    try:
        if draft_size is not None and image.format == "JPEG":
            image.draft("RGB", draft_size)
        image.load()
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"decompression bomb refused ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        reason = str(e) or type(e).__name__
        if "truncated" in reason:
            reason = "truncated or corrupt image data"
        raise ImageReadError(f"corrupt image ({reason})") from None


@dataclass(frozen=True)
class ImageInfo:
    """What a full decode of one file found: its size and mode, or why it is unusable."""

    path: str
    width: int = 0
    height: int = 0
    mode: str = ""
    format: str = ""
    error: str | None = None


def inspect_image(path: str | os.PathLike, *, max_pixels: int = MAX_IMAGE_PIXELS) -> ImageInfo:
    """Open and fully decode ``path`` (draft mode where possible) to prove it can be trained on."""
    try:
        image = _open(path, max_pixels)
    except ImageReadError as e:
        return ImageInfo(str(path), error=str(e))
    width, height, mode, fmt = image.width, image.height, image.mode, image.format or ""
    try:
        if fmt == "JPEG":
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
        image.load()
    except Image.DecompressionBombError as e:
        return ImageInfo(str(path), width, height, mode, fmt, f"decompression bomb refused ({e})")
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        reason = str(e) or type(e).__name__
        if "truncated" in reason:
            reason = "truncated or corrupt image data"
        return ImageInfo(str(path), width, height, mode, fmt, f"corrupt image ({reason})")
    finally:
        image.close()
    return ImageInfo(str(path), width, height, mode, fmt)
