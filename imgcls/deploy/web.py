"""The web export: a folder that classifies images in any browser, with no server-side code.

    best_web/
      index.html, page.js, preprocess.js, style.css   the page: plain JavaScript, no build step; the serve page's look
      model.onnx                                       the network (FP32; INT8 in best_int8_web/), the model card inside
      imgcls.json                                      what the page reads: the model card (class names, preprocessing,
                                                       temperature) and how to show and resize ("web")
      ort/                                             onnxruntime-web's script and WebAssembly (works offline)
      README.md

preprocess.js computes imgcls's evaluation geometry (data/geometry.py) on pixel arrays with Pillow's resampling,
so the page answers as ``imgcls predict`` does. onnxruntime-web is not part of imgcls (its WebAssembly alone is
15 MB a version): it is installed once from npm (``npm install --prefix DIR onnxruntime-web@VERSION``) and its
three files are copied into every export.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from ..errors import ImgclsError

ORT_WEB_VERSION = "1.31.1"
# The plain WebAssembly build (CPU, SIMD; threads where the page is cross-origin isolated): the script that defines
# `ort`, the module it imports and the WebAssembly they run.
ORT_WEB_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
ORT_WEB_ENV = "IMGCLS_ORT_WEB"
STATIC = Path(__file__).parent / "static"
PAGE = STATIC / "web"
PAGE_FILES = ("index.html", "page.js", "preprocess.js")
VENDOR = PAGE / "vendor"              # the default npm prefix (git-ignored)
MODEL_FILE, CARD_FILE = "model.onnx", "imgcls.json"


def ort_web_files() -> Path:
    """The folder that holds onnxruntime-web's files: $IMGCLS_ORT_WEB (an npm prefix, the package, or its dist
    folder), else imgcls's vendor folder. One ImgclsError naming the npm command when they are missing or are
    another version."""
    root = Path(os.environ[ORT_WEB_ENV]).expanduser() if os.environ.get(ORT_WEB_ENV) else VENDOR
    install = f"`npm install --prefix {root} onnxruntime-web@{ORT_WEB_VERSION}`"
    for folder in (root / "node_modules" / "onnxruntime-web" / "dist", root / "dist", root):
        if all((folder / name).is_file() for name in ORT_WEB_FILES):
            found = ort_web_version(folder / ORT_WEB_FILES[0])
            if found != ORT_WEB_VERSION:
                raise ImgclsError(f"--format web: {folder} holds onnxruntime-web {found or '(unknown version)'}, "
                                  f"imgcls needs {ORT_WEB_VERSION}: run {install}")
            return folder
    where = f"${ORT_WEB_ENV}" if os.environ.get(ORT_WEB_ENV) else "imgcls's folder for it"
    raise ImgclsError(f"--format web needs onnxruntime-web {ORT_WEB_VERSION} ({', '.join(ORT_WEB_FILES)}), not "
                      f"found in {root} ({where}): run {install}, or set {ORT_WEB_ENV} to a folder that holds them")


def ort_web_version(script: Path) -> str | None:
    """The version in the banner of onnxruntime-web's script ("ONNX Runtime Web v1.31.1")."""
    with open(script, encoding="utf-8", errors="replace") as f:
        found = re.search(r"ONNX Runtime Web v(\S+)", f.read(400))
    return found.group(1) if found else None


def pillow_resizes_height_first() -> bool:
    """Whether this Pillow resizes height first when the height shrinks by more than twice as many pixels as the
    width (Pillow 13 does; earlier ones always start with the width). The passes round to 8 bits in between, so
    the page must take them in the same order to give the same pixels."""
    import numpy as np
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (9, 6, 3), dtype=np.uint8))
    bicubic = Image.Resampling.BICUBIC
    both = np.asarray(image.resize((5, 3), bicubic))
    height_first = np.asarray(image.resize((6, 3), bicubic).resize((5, 3), bicubic))
    return bool(np.array_equal(both, height_first))


def page_card(metadata: dict, weights: str) -> dict:
    """imgcls.json: the model card the file carries, and what the page needs besides."""
    return metadata | {"web": {"model": MODEL_FILE, "weights": weights, "onnxruntime_web": ORT_WEB_VERSION,
                               "pillow": {"heightFirst": pillow_resizes_height_first()}}}


def serve_style() -> str:
    """The serve page's stylesheet, so that both pages look alike without two copies to keep in step."""
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    found = re.search(r"<style>(.*?)</style>", html, re.DOTALL)
    if found is None:
        raise RuntimeError(f"{STATIC / 'index.html'} has no <style> block")
    return found.group(1).strip() + "\n"


def write(path: Path, onnx: bytes, metadata: dict, weights: str = "FP32") -> None:
    """The web folder at ``path`` (created): the page, the network, its card and onnxruntime-web."""
    ort_dir = ort_web_files()
    path.mkdir(parents=True)
    (path / MODEL_FILE).write_bytes(onnx)
    write_page(path, metadata, weights)
    (path / "ort").mkdir()
    for name in ORT_WEB_FILES:
        shutil.copyfile(ort_dir / name, path / "ort" / name)


def write_page(path: Path, metadata: dict, weights: str) -> None:
    """Everything but the network and onnxruntime-web: the page, its style, imgcls.json and the README."""
    for name in PAGE_FILES:
        shutil.copyfile(PAGE / name, path / name)
    (path / "style.css").write_text(serve_style(), encoding="utf-8")
    (path / CARD_FILE).write_text(json.dumps(page_card(metadata, weights), indent=1), encoding="utf-8")
    (path / "README.md").write_text(readme(metadata, weights), encoding="utf-8")


def copy_as(source: Path, target: Path, onnx: bytes, metadata: dict, weights: str) -> None:
    """A copy of the web folder ``source`` at ``target`` with another network (the INT8 one)."""
    shutil.copytree(source, target)
    (target / MODEL_FILE).write_bytes(onnx)
    write_page(target, metadata, weights)


def model_file(path: Path) -> Path:
    """The network of the web folder ``path``; one ImgclsError when it is not one."""
    if not (path / MODEL_FILE).is_file() or not (path / CARD_FILE).is_file():
        raise ImgclsError(f"--weights {path}: not an imgcls web export (no {MODEL_FILE} and {CARD_FILE} inside)")
    return path / MODEL_FILE


def is_web_export(path: Path) -> bool:
    return path.is_dir() and (path / CARD_FILE).is_file() and (path / "index.html").is_file()


def readme(metadata: dict, weights: str) -> str:
    classes = metadata["class_names"]
    shown = ", ".join(classes[:10]) + (f" and {len(classes) - 10} more" if len(classes) > 10 else "")
    return f"""# {metadata['model_name']}: an image classifier that runs in the browser

Classes: {shown}. Weights: {weights}. Exported by imgcls; runs on onnxruntime-web {ORT_WEB_VERSION} (WebAssembly).
Images are classified in the browser and never leave it.

Serve this folder with any static file server, for example:

    python -m http.server 8000     # in this folder, then open http://localhost:8000

or copy it to any static host (GitHub Pages, Netlify, S3, an intranet web server).
Browsers do not load WebAssembly from file:// pages, so opening index.html from disk does not work.
The camera works on https:// pages and on http://localhost.

Files: index.html, page.js, preprocess.js and style.css (the page), model.onnx (the network, ONNX),
imgcls.json (class names, preprocessing, temperature), ort/ (onnxruntime-web).
"""
