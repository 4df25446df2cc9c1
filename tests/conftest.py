"""Shared fixtures: generated data sets, a CLI runner, and one tiny trained run reused by many tests."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

from imagegen import make_class_folders, make_split_folders  # noqa: E402

# Tests never touch the network: hub downloads must fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("IMGCLS_OFFLINE", "1")
# bf16 autocast on CPU is chosen by timing a step, which varies with the machine's load; tests pin it
# off so that every run trains the same way (test_cache covers the bf16 choice explicitly).
os.environ.setdefault("IMGCLS_CPU_BF16", "0")
# Feature and decoded-image caches of a test session stay in a temporary folder, never in ~/.cache.
if "IMGCLS_CACHE" not in os.environ:
    import tempfile

    os.environ["IMGCLS_CACHE"] = tempfile.mkdtemp(prefix="imgcls-test-cache-")

TINY = ["--model", "simple_cnn", "--no-pretrained", "--imgsz", "32", "--batch-size", "8", "--workers", "0"]


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m imgcls ARGS`` in a fresh process, as a user would from a shell."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "imgcls", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process (fast); returns (exit code, stdout, stderr + log output)."""
    from imgcls.cli import main

    def invoke(*args):
        logger = logging.getLogger("imgcls")
        # the command sets up its own stderr handler on a logger without one; a test's capture (`log`) comes back after
        captures = [h for h in logger.handlers if type(h) is not logging.StreamHandler]
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse rejects bad flags by exiting, as the real command does
            code = e.code
        finally:
            for handler in captures:
                logger.addHandler(handler)
        out = capsys.readouterr()
        return code, out.out, out.err

    return invoke


@pytest.fixture
def log(caplog, monkeypatch):
    """caplog at INFO for the "imgcls" logger, which stops propagating to the root once a CLI test set it up:
    the handler goes on the logger itself, so that each record is captured once either way."""
    logger = logging.getLogger("imgcls")
    monkeypatch.setattr(logger, "propagate", False)
    logger.addHandler(caplog.handler)
    with caplog.at_level("INFO", logger="imgcls"):
        yield caplog
    logger.removeHandler(caplog.handler)


@pytest.fixture
def flat_data(tmp_path) -> Path:
    """A single tree of 3 class folders, 12 images each."""
    return make_class_folders(tmp_path / "shapes")


@pytest.fixture
def split_data(tmp_path) -> Path:
    """train/val/test folders with 3 classes."""
    return make_split_folders(tmp_path / "shapes_split")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One tiny run (simple_cnn, 32px, 4 epochs, train/val/test; it learns, ~90% val), trained once per session.

    Tests that only read a run (val, predict, export, serve, report) use it instead of training again.
    Do not modify it; copy it first.
    """
    from imgcls.engine.train import train

    base = tmp_path_factory.mktemp("trained")
    data = make_split_folders(base / "data", counts=(12, 5, 5))
    result = train(data=str(data), model="simple_cnn", pretrained=False, imgsz=32, batch_size=8, workers=0,
                   epochs=4, lr=0.01, warmup_epochs=0, project=str(base / "runs"), name="train",
                   progress=False)
    return result.run_dir


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture
def download_dir(tmp_path) -> Path:
    """Where the `browser` fixture's Chromium saves what a page downloads."""
    folder = tmp_path / "downloads"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture
def browser(tmp_path, download_dir):
    """Headless Debian chromium through selenium, saving downloads into `download_dir`. Skips on a developer's
    machine without it; fails in CI."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian chromium and chromium-driver for the browser tests")
        pytest.skip("chromium is not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,2400", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
