"""The web export in a real browser: its answers next to `imgcls predict`'s, and how soon its page is ready.

    python benchmarks/web_export.py WEIGHTS --images DIR [--loads 5] [--draft-jpegs 30] [--int8] [--results FILE]

Exports WEIGHTS with `imgcls export --format web` into a temporary folder, serves it from a local static server
(Python's http.server in a thread, as `python -m http.server` serves it) and opens it in headless Chromium:

1. ready: ``--loads`` cold loads, each in a new browser with an empty profile (no HTTP or WebAssembly cache), from
   navigation start to the page saying it is ready (the model loaded and run once): median and worst. Target: under
   2 s.
2. parity: every image under DIR through the page's file input; top-1 and every class's probability read from the
   page, against `imgcls predict --weights WEIGHTS` on the same files. Target: the same top-1 on every image and
   probabilities within 1e-3.
3. ``--draft-jpegs N``: N of the images saved as JPEGs 2x and 4x the model's working side, which imgcls decodes at
   reduced scale inside libjpeg (JPEG draft mode) and the page cannot: the same comparison, reported on its own.
4. ``--int8``: the INT8 folder's page against `imgcls predict` on that folder (the same network on ONNX Runtime).

Prints one JSON line per measurement (benchmarks/common.py); ``--results FILE`` appends them to FILE as well.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import machine  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}


def imgcls(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "imgcls", *map(str, args)], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def static_server(folder: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def chromium(profile: Path):
    """Headless Chromium with an empty profile (the repository's test flags)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,2400", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver, url: str, timeout: float = 60) -> float:
    """Load the page; milliseconds from navigation start to ready."""
    driver.get(url)
    end = time.time() + timeout
    while driver.execute_script("return document.body.dataset.state") == "loading" and time.time() < end:
        time.sleep(0.02)
    state = driver.execute_script("return document.body.dataset.state")
    if state != "ready":
        raise SystemExit(f"the page did not get ready: {driver.find_element('id', 'state').text}")
    return driver.execute_script("return window.imgclsReadyMs")


def page_answers(driver, url: str, images: list[Path]) -> dict:
    """file name -> every class's probability as the page shows it (its cards' data), for ``images``."""
    open_page(driver, url)
    driver.find_element("id", "file-input").send_keys("\n".join(str(p.resolve()) for p in images))
    done = "#results .card[data-predicted], #results .card.failed"
    end = time.time() + 30 + 2 * len(images)
    while len(driver.find_elements("css selector", done)) < len(images) and time.time() < end:
        time.sleep(0.2)
    cards = driver.execute_script("""return Array.from(document.querySelectorAll('#results .card'), (c) =>
        [c.querySelector('.filename').textContent, c.dataset.probabilities ? JSON.parse(c.dataset.probabilities) : null,
         c.querySelector('.error') ? c.querySelector('.error').textContent : null]);""")
    return {name: (probabilities, error) for name, probabilities, error in cards}


def predict_answers(weights: Path, images: Path, classes: int, out: Path) -> dict:
    """file name -> every class's probability from `imgcls predict`."""
    imgcls("predict", "--weights", weights, "--source", images, "--topk", classes, "--out", out)
    document = json.loads((out / "predictions.json").read_text())
    names = document["class_names"]
    return {Path(p["path"]).name: [dict((t["class"], t["probability"]) for t in p["topk"])[c] for c in names]
            for p in document["predictions"]}


def compare(page: dict, expected: dict) -> dict:
    """Top-1 agreement and the largest probability difference of the page against imgcls predict."""
    agree, worst, failed = 0, 0.0, [name for name, (probs, _) in page.items() if probs is None]
    for name, want in expected.items():
        got = page[name][0]
        if got is None:
            continue
        agree += max(range(len(got)), key=got.__getitem__) == max(range(len(want)), key=want.__getitem__)
        worst = max(worst, max(abs(a - b) for a, b in zip(got, want)))
    return {"images": len(expected), "same_top1": agree, "max_probability_diff": float(f"{worst:.3g}"),
            "page_errors": len(failed)}


def draft_jpegs(images: list[Path], side: int, folder: Path) -> list[Path]:
    """Copies of ``images`` as JPEGs 2x and 4x ``side`` (the model's working side) on their short side."""
    from PIL import Image

    folder.mkdir()
    written = []
    for path in images:
        image = Image.open(path).convert("RGB")
        for factor in (2, 4):
            scale = factor * side / min(image.size)
            size = (round(image.width * scale) + 1, round(image.height * scale) + 1)
            target = folder / f"{path.stem}_x{factor}.jpg"
            image.resize(size, Image.Resampling.BICUBIC).save(target, quality=90)
            written.append(target)
    return written


def measure_ready(url: str, loads: int, tmp: Path) -> list[float]:
    times = []
    for i in range(loads):
        with chromium(tmp / f"profile-ready-{i}") as driver:
            times.append(open_page(driver, url))
    return times


def parity_rows(url: str, weights: Path, images: list[Path], classes: int, tmp: Path, label: str) -> dict:
    folder = images[0].parent
    expected = predict_answers(weights, folder, classes, tmp / f"predicted-{label}")
    with chromium(tmp / f"profile-{label}") as driver:
        page = page_answers(driver, url, images)
        version = driver.capabilities.get("browserVersion")
    return {"measure": f"parity: {label}", **compare(page, expected), "chromium": version}


def run(args) -> list[dict]:
    import torch

    from imgcls.data.geometry import working_side
    from imgcls.deploy.web import ORT_WEB_VERSION

    checkpoint = torch.load(args.weights, weights_only=True)
    classes, side = len(checkpoint["class_names"]), working_side(checkpoint["preprocess"])
    images = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        flat = tmp / "images"
        flat.mkdir()
        for i, path in enumerate(images):  # one folder, unique names: the page shows file names only
            (flat / f"{i:05d}_{path.name}").write_bytes(path.read_bytes())
        images = sorted(flat.iterdir())
        folder = tmp / "model_web"
        imgcls("export", "--weights", args.weights, "--format", "web", "--out", folder, *(["--int8"] if args.int8 else []))
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        with static_server(folder) as url:
            ready = measure_ready(url, args.loads, tmp)
            rows.append({"measure": "page ready, cold load", "loads": args.loads,
                         "median_ms": round(statistics.median(ready)), "worst_ms": round(max(ready)),
                         "folder_mb": round(size / 1e6, 2), "onnxruntime_web": ORT_WEB_VERSION})
            rows.append(parity_rows(url, Path(args.weights), images, classes, tmp, "FP32, the images"))
            if args.draft_jpegs:
                jpegs = draft_jpegs(images[::max(1, len(images) // args.draft_jpegs)][:args.draft_jpegs], side,
                                    tmp / "jpegs")
                rows.append(parity_rows(url, Path(args.weights), jpegs, classes, tmp, "FP32, large JPEGs"))
        if args.int8:
            int8 = tmp / "model_int8_web"
            with static_server(int8) as url:
                rows.append(parity_rows(url, int8, images, classes, tmp, "INT8 page vs imgcls predict on INT8"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("--images", required=True, help="a folder of images (e.g. the run's test split)")
    parser.add_argument("--loads", type=int, default=5, help="cold page loads timed (default 5)")
    parser.add_argument("--draft-jpegs", type=int, default=0, metavar="N",
                        help="also compare N images saved as large JPEGs (decoded at reduced scale by imgcls)")
    parser.add_argument("--int8", action="store_true", help="also export and compare the INT8 folder")
    parser.add_argument("--results", metavar="FILE", help="append the rows to this JSONL file")
    args = parser.parse_args()
    command = "python benchmarks/web_export.py " + " ".join(sys.argv[1:])
    for row in run(args):
        row |= {"weights": args.weights, "command": command, "date": date.today().isoformat(), "machine": machine()}
        print(json.dumps(row), flush=True)
        if args.results:
            with open(args.results, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
