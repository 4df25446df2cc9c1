"""Reading images safely: any format, any colour mode, EXIF orientation, no decompression bombs.

``read_image`` (and ``load_image``, its picture alone) is the one reader of image files and uploads.
Whatever goes wrong inside a decoder (truncated data, a lying header, a declared size of billions of
pixels, a malformed TIFF tag) comes out as ``ImageReadError`` with a short reason, which callers turn
into a named skip or a 4xx reply. Given the size the model needs, a large image is reduced as it is
read (JPEG at a smaller DCT scale, other formats by an integer box filter), so its full-size pixels
never outlive the read.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# Folders and files that operating systems, archivers and notebooks leave behind; never read as data.
SYSTEM_NAMES = frozenset({"__macosx", "thumbs.db", "ehthumbs.db", "desktop.ini", "@eadir", "$recycle.bin",
                          "system volume information", "__pycache__", "lost+found"})


def is_hidden(name: str) -> bool:
    """Dot-names (.DS_Store, .ipynb_checkpoints, ._photo.jpg) and system names (__MACOSX, Thumbs.db, ...)."""
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


# files that mark a folder as imgcls's own output: a run (train), a predict --out, a check --out
OUTPUT_MARKS = frozenset({"args.yaml", "predictions.json", "check.json"})


def is_imgcls_output(folder: Path) -> bool:
    """A run, predict or check folder of imgcls, or a folder of them (runs/ beside the data when a command runs in
    the data folder): never data, though it holds images (plots, labelled copies)."""
    try:
        subfolders = []
        with os.scandir(folder) as entries:  # a class folder's images are listed, not stat'ed
            for entry in entries:
                if entry.name in OUTPUT_MARKS:
                    return True
                if entry.is_dir():
                    subfolders.append(entry.path)
        return any(OUTPUT_MARKS.intersection(os.listdir(sub)) for sub in subfolders)
    except OSError:
        return False


IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

# Images above this many pixels are refused before decoding (PIL's own default limit).
MAX_IMAGE_PIXELS = 89_478_485
# imgcls enforces the limit itself with a clear message, so PIL's generic warning is only noise; so are its
# warnings about malformed metadata (TIFF tags, EXIF) in files that still decode.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
# Modes whose pixels Image.reduce may average channel by channel; others (palette, alpha, 1-bit, 16-bit)
# are converted strip by strip first, so the full-size converted copy never exists.
LINEAR_MODES = frozenset({"L", "RGB", "CMYK", "YCbCr", "LAB", "HSV", "I", "F"})
STRIP_PIXELS = 4_000_000
# EXIF orientation -> the transposition that shows the picture upright (as ImageOps.exif_transpose does).
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name has one of the supported image extensions (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


class ImageReadError(Exception):
    """An image that cannot be used; the message says why in a few words."""


def _open(source, max_pixels: int) -> Image.Image:
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageReadError("empty file (0 bytes)")
        image = Image.open(io.BytesIO(source))
    else:
        try:
            empty = os.path.getsize(source) == 0
        except FileNotFoundError:
            raise ImageReadError("file not found") from None
        if empty:
            raise ImageReadError("empty file (0 bytes)")
        image = Image.open(source)
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageReadError(f"decompression bomb refused: {width}x{height} pixels is over the limit of "
                             f"{max_pixels:,}")
    if width == 0 or height == 0:
        raise ImageReadError("image has zero width or height")
    return image


def _reason(error: Exception) -> str:
    """A few words for a decoder's exception."""
    if isinstance(error, UnidentifiedImageError):
        return "not an image (the file content is not a known image format)"
    if isinstance(error, Image.DecompressionBombError):
        return f"decompression bomb refused ({error})"
    if isinstance(error, MemoryError):
        return "corrupt image (its header asks for more memory than there is)"
    if isinstance(error, (PermissionError, IsADirectoryError)):
        return f"cannot be opened ({error.strerror or error})"
    text = (str(error) or type(error).__name__).splitlines()[0][:160]
    return f"corrupt image ({'truncated or corrupt image data' if 'truncated' in text else text})"


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, P, RGBA, CMYK, I;16, I, F, ...) to 8-bit RGB.

    Transparent areas are composited on white, which is what an image viewer shows.
    16-bit images are scaled by their bit depth (``sixteen_bit_divisor``), 32-bit and float ones by their own
    range, rather than clipped.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        if mode.startswith("I;16"):
            return _grey_to_rgb(array / sixteen_bit_divisor(high))
        if high > low:
            array = (array - low) / (high - low) * 255.0
        return _grey_to_rgb(array)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def sixteen_bit_divisor(peak: float) -> float:
    """What a 16-bit image's values are divided by to become 8-bit: its bit depth is taken to be the fewest bits
    (8 at least) that hold its brightest value, so a 12-bit scan (0..4095) fills the 8-bit range as a 16-bit
    photo (0..65535, divided by 257) does, rather than showing as 16 shades of near-black."""
    return (2 ** max(8, int(peak).bit_length()) - 1) / 255.0


def _grey_to_rgb(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L").convert("RGB")


@dataclass
class ImageFile:
    """A decoded picture (RGB, upright, reduced when asked) and what the file's header said."""

    image: Image.Image
    format: str            # JPEG, PNG, ... as found in the content, whatever the extension
    width: int             # as stored, before any reduction or rotation
    height: int
    mode: str              # as stored; "PA" for a palette with a transparent colour
    orientation: int = 1   # EXIF orientation tag; 1 means upright
    colours: int | None = None  # distinct colours when asked for and at most 256


def read_image(source: str | os.PathLike | bytes, *, draft_size: tuple[int, int] | None = None,
               max_pixels: int = MAX_IMAGE_PIXELS, count_colours: bool = False) -> ImageFile:
    """Decode an image once: RGB with EXIF orientation applied, plus its header facts.

    ``draft_size`` is the smallest size the caller needs: an image at least twice as large on both sides
    is reduced while it is read (JPEG draft mode, else ``Image.reduce`` by the largest integer factor that
    keeps it at least that size), so a huge upload costs its full size only for a moment.
    Raises ``ImageReadError`` with a short reason for anything unusable, and nothing else.
    """
    try:
        image = _open(source, max_pixels)
        facts = ImageFile(image, image.format or "", image.width, image.height,
                          "PA" if image.mode == "P" and "transparency" in image.info else image.mode,
                          _orientation(image))
        if draft_size is not None and image.format in ("JPEG", "MPO"):  # MPO: multi-picture JPEG from cameras
            image.draft("RGB", draft_size)
        image.load()
        if count_colours:
            facts.colours = _colour_count(image)
        image = reduce_towards(image, draft_size)
        if facts.orientation in UPRIGHT:
            image = image.transpose(UPRIGHT[facts.orientation])
        facts.image = to_rgb(image)
        return facts
    except ImageReadError:
        raise
    except Exception as e:  # noqa: BLE001 - decoders raise anything on hostile data; all of it means "unusable"
        raise ImageReadError(_reason(e)) from None


def _colour_count(image: Image.Image) -> int | None:
    """Distinct colours when there are at most 256, else None. Pillow cannot count 16-bit greyscale (a scan's
    "I;16"): it is counted as 32-bit integers."""
    colours = (image.convert("I") if image.mode.startswith("I;16") else image).getcolors(256)
    return len(colours) if colours else None


def load_image(source: str | os.PathLike | bytes, *, draft_size: tuple[int, int] | None = None,
               max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """The picture of ``read_image``: RGB, upright, reduced towards ``draft_size`` when much larger.

    Raises ``ImageReadError`` with a short reason for anything unusable, and nothing else.
    """
    return read_image(source, draft_size=draft_size, max_pixels=max_pixels).image


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a malformed EXIF block does not make the picture unusable
        return 1


def reduce_towards(image: Image.Image, size: tuple[int, int] | None) -> Image.Image:
    """``image`` reduced by the largest integer factor that keeps it at least ``size``, when that factor is 2
    or more (the rule of JPEG draft mode); otherwise ``image`` itself."""
    factor = 1 if size is None else min(image.width // size[0], image.height // size[1])
    return _reduce(image, factor) if factor >= 2 else image


def _reduce(image: Image.Image, factor: int) -> Image.Image:
    """``image`` shrunk by an integer ``factor`` with a box filter (every source pixel counts once).

    Palette, alpha, 1-bit and 16-bit images are converted (to RGB on white, or 32-bit) a strip at a time,
    so no converted full-size copy is ever made.
    """
    if image.mode in LINEAR_MODES:
        return image.reduce(factor)
    sixteen = image.mode.startswith("I;16")
    convert = (lambda part: part.convert("I")) if sixteen else to_rgb
    width, height = -(-image.width // factor), -(-image.height // factor)  # as Image.reduce: edge boxes count
    rows = max(1, STRIP_PIXELS // (image.width * factor))  # output rows per strip
    reduced, peak = None, 0
    for top in range(0, height, rows):
        bottom = min(image.height, (top + rows) * factor)
        full = convert(image.crop((0, top * factor, image.width, bottom)))
        if sixteen:
            peak = max(peak, full.getextrema()[1])
        part = full.reduce(factor)
        if reduced is None:
            reduced = Image.new(part.mode, (width, height))
        reduced.paste(part, (0, top))
    # 16 bits: scaled by the full image's bit depth, which averaging may have hidden, as a full decode would be
    return _grey_to_rgb(np.asarray(reduced, dtype=np.float64) / sixteen_bit_divisor(peak)) if sixteen else reduced


def array_to_image(array: np.ndarray) -> Image.Image:
    """An RGB PIL image from an H x W, H x W x 1/3/4 (or channels-first) array; floats are taken as 0..1."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channels-first, as torch tensors are laid out
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))) or a.size == 0:
        raise ImageReadError(f"unsupported array shape {tuple(array.shape)}; expected H x W, H x W x 3 or H x W x 4")
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float64))
        a = np.clip(a * 255.0 if a.max() <= 1.0 else a, 0, 255).round().astype(np.uint8)
    elif a.dtype == np.uint16:
        a = (a / sixteen_bit_divisor(a.max())).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(a), "L" if a.ndim == 2 else ("RGB" if a.shape[-1] == 3 else "RGBA"))
    return to_rgb(image)


def as_image(item) -> Image.Image:
    """An RGB image from a path, bytes, a PIL image or a numpy array (what Predictor accepts)."""
    if isinstance(item, (str, os.PathLike, bytes, bytearray)):
        return load_image(bytes(item) if isinstance(item, bytearray) else item)
    if isinstance(item, Image.Image):
        try:
            return to_rgb(item)
        except Exception as e:  # noqa: BLE001 - a half-loaded or exotic PIL image
            raise ImageReadError(f"cannot be converted to RGB ({e})") from None
    if isinstance(item, np.ndarray):
        return array_to_image(item)
    raise TypeError(f"expected a path, bytes, a PIL image or a numpy array, not {type(item).__name__}")
