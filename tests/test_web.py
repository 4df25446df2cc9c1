"""imgcls export --format web: a folder whose page classifies images in the browser as `imgcls predict` does."""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from imagegen import shape_image
from PIL import Image

from imgcls.deploy import web
from imgcls.errors import ImgclsError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(trained_run, tmp_path):
    """A private copy of the shared tiny run, so exports never write into the shared one."""
    return shutil.copytree(trained_run, tmp_path / "run")


@pytest.fixture
def ort_web():
    """onnxruntime-web's files from npm: a developer's machine without them skips; CI installs them (.ci/run)."""
    try:
        return web.ort_web_files()
    except ImgclsError as e:
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(str(e))


@pytest.fixture
def fake_ort_web(tmp_path, monkeypatch):
    """Stand-ins for onnxruntime-web's files, for tests that never open the page."""
    folder = tmp_path / "fake-ort-web"
    folder.mkdir()
    for name in web.ORT_WEB_FILES:
        (folder / name).write_text(f"/*!\n * ONNX Runtime Web v{web.ORT_WEB_VERSION}\n */\n")
    monkeypatch.setenv(web.ORT_WEB_ENV, str(folder))
    return folder


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def static_server(folder: Path):
    """What `python -m http.server` does, on a free port, serving ``folder``; yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def _open(browser, url: str) -> str:
    """Open the page and wait until it has loaded the model or given up; its state ("ready" or "failed")."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 60).until(lambda d: d.execute_script("return document.body.dataset.state") != "loading")
    return browser.execute_script("return document.body.dataset.state")


def _choose(browser, paths: list[Path]) -> dict:
    """Give the page's file input ``paths`` and wait for every card; file name -> what its card shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.find_element(By.ID, "file-input").send_keys("\n".join(str(p.resolve()) for p in paths))
    finished = "#results .card[data-predicted], #results .card.failed"
    WebDriverWait(browser, 120).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, finished)) == len(paths))
    return {card["name"]: card for card in browser.execute_script("""
        return Array.from(document.querySelectorAll('#results .card'), (c) => ({
          name: c.querySelector('.filename').textContent,
          predicted: c.dataset.predicted || null,
          shown: c.querySelector('.predicted-label') ? c.querySelector('.predicted-label').textContent : null,
          probabilities: c.dataset.probabilities ? JSON.parse(c.dataset.probabilities) : null,
          bars: Array.from(c.querySelectorAll('.row'), (r) => [r.dataset.class, Number(r.dataset.probability)]),
          error: c.querySelector('.error') ? c.querySelector('.error').textContent : null}));""")}


def _varied_images(folder: Path) -> list[Path]:
    """Images read along every path but JPEG draft decoding: greyscale, transparency, JPEG, EXIF rotation, WebP,
    GIF, one large enough to be box-reduced as it is read, and one far from square."""
    folder.mkdir()
    image = shape_image("triangle", 48, seed=71)
    rgba = np.asarray(image.convert("RGBA")).copy()
    rgba[..., 3] = np.linspace(40, 255, 48).astype(np.uint8)[None, :]
    Image.fromarray(rgba).save(folder / "see-through.png")
    image.convert("L").save(folder / "grey.png")
    image.save(folder / "photo.jpg", quality=90)
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6  # stored sideways: imgcls and the page both turn it upright
    shape_image("square", 48, seed=72).crop((0, 0, 48, 40)).save(folder / "sideways.jpg", exif=exif, quality=95)
    shape_image("circle", 48, seed=73).save(folder / "circle.webp", quality=90)
    shape_image("square", 48, seed=74).save(folder / "square.gif")
    shape_image("circle", 48, seed=75).resize((100, 70)).save(folder / "reduced.png")
    shape_image("triangle", 48, seed=76).resize((120, 30)).save(folder / "banner.png")
    return sorted(folder.iterdir())


def test_the_page_classifies_every_test_image_as_imgcls_predict_does(cli, run, browser, ort_web, tmp_path):
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt", "--format", "web")
    assert code == 0, err
    folder = run / "weights" / "best_web"
    assert "Open it in a browser: python -m http.server 8000 --directory" in err
    images = tmp_path / "images"
    shutil.copytree(_test_folder(run), images)
    paths = sorted(images.rglob("*.png")) + _varied_images(images / "varied")
    assert len(paths) == 15 + 8

    out = tmp_path / "predicted"
    code, _, err = cli("predict", "--weights", run / "weights" / "best.pt", "--source", images, "--topk", "3",
                       "--out", out)
    assert code == 0, err
    expected = {Path(p["path"]).name: p for p in json.loads((out / "predictions.json").read_text())["predictions"]}

    with static_server(folder) as url:
        assert _open(browser, url) == "ready"
        shown = _choose(browser, paths)
    classes = ["circle", "square", "triangle"]
    for name, answer in expected.items():
        page = shown[name]
        assert page["error"] is None and page["predicted"] == page["shown"] == answer["predicted"], name
        for top in answer["topk"]:
            assert abs(page["probabilities"][classes.index(top["class"])] - top["probability"]) < 1e-3, name
        assert [c for c, _ in page["bars"]] == [t["class"] for t in answer["topk"]]  # the top-k bars, in order
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(artifacts / "web_page.png"))


def test_an_unreadable_file_is_an_error_in_the_page(run, browser, ort_web, tmp_path, cli):
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt", "--format", "web")
    assert code == 0, err
    text = tmp_path / "holiday.jpg"
    text.write_text("this is text, not a JPEG")
    empty = tmp_path / "empty.png"
    empty.touch()
    good = tmp_path / "circle.png"
    shape_image("circle", 48, seed=5).save(good)
    with static_server(run / "weights" / "best_web") as url:
        assert _open(browser, url) == "ready"
        shown = _choose(browser, [text, empty, good])
        summary = browser.execute_script("return document.getElementById('summary').textContent")
        assert browser.execute_script("return document.body.dataset.state") == "ready"  # the page goes on working
    assert shown["holiday.jpg"]["error"].startswith("not an image this browser can read")
    assert shown["empty.png"]["error"] == "empty file (0 bytes)"
    assert shown["circle.png"]["error"] is None and shown["circle.png"]["predicted"] == "circle"
    assert summary == "1 classified, 2 failed"


def test_the_page_uses_the_camera_where_the_browser_gives_one(run, browser, ort_web, cli):
    """A stand-in camera (a canvas stream, as Chromium's getUserMedia would give): its frames are classified live,
    and a kept frame becomes a card like a chosen file."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    code, _, err = cli("export", "--weights", run / "weights" / "best.pt", "--format", "web")
    assert code == 0, err
    with static_server(run / "weights" / "best_web") as url:
        assert _open(browser, url) == "ready"
        browser.execute_script("""
            const canvas = document.createElement('canvas');
            canvas.width = 64; canvas.height = 48;
            const context = canvas.getContext('2d');
            context.fillStyle = '#ddd'; context.fillRect(0, 0, 64, 48);
            context.fillStyle = '#d22'; context.beginPath(); context.arc(32, 24, 14, 0, 7); context.fill();
            setInterval(() => context.fillRect(0, 0, 1, 1), 50);   // keeps the stream producing frames
            navigator.mediaDevices.getUserMedia = async () => canvas.captureStream(20);""")
        browser.find_element(By.ID, "camera-start").click()
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: int(d.execute_script("return document.getElementById('live').dataset.frames || 0")) >= 2)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#live .row")) == 3
        browser.find_element(By.ID, "snapshot").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .card[data-predicted]"))
        browser.find_element(By.ID, "camera-stop").click()
        assert browser.execute_script("return document.getElementById('camera').hidden")


def test_a_page_opened_from_disk_says_to_serve_it(run, browser, ort_web, cli):
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt", "--format", "web")
    assert code == 0, err
    folder = run / "weights" / "best_web"
    assert _open(browser, (folder / "index.html").as_uri()) == "failed"
    from selenium.webdriver.common.by import By

    assert "python -m http.server" in browser.find_element(By.ID, "state").text
    readme = (folder / "README.md").read_text()
    assert "Browsers do not load WebAssembly from file:// pages" in readme


def _pixels(image: np.ndarray) -> dict:
    height, width = image.shape[:2]
    return {"width": width, "height": height, "data": base64.b64encode(image.tobytes()).decode()}


_RUN_PREPROCESS = """
    const [cases, pillow] = arguments;
    const decode = (b) => Uint8Array.from(atob(b), (c) => c.charCodeAt(0));
    const encode = (bytes) => { let s = ''; for (const b of bytes) s += String.fromCharCode(b); return btoa(s); };
    return cases.map((c) => {
      const img = Preprocess.image(c.width, c.height, decode(c.data));
      if (c.input) return encode(new Uint8Array(Preprocess.modelInput(img, c.preprocess, pillow, false).buffer));
      const how = {interpolation: c.interpolation, ...pillow};
      const read = () => Preprocess.reduceAsRead(img, Preprocess.workingSide(c.preprocess), false);
      const out = c.resize ? Preprocess.resize(img, c.resize[0], c.resize[1], how)
                           : Preprocess.evalGeometry(read(), c.preprocess, pillow);
      return [out.width, out.height, encode(out.data)];
    });"""


def _geometry_cases(rng) -> tuple[list, list]:
    """Random images through Pillow's resize and imgcls's evaluation geometry: (cases for the page, answers)."""
    from imgcls.data.geometry import eval_geometry, working_side
    from imgcls.data.images import reduce_towards

    filters = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
               "nearest": Image.Resampling.NEAREST}
    cases, answers = [], []
    for i in range(60):  # sizes up and down, one side or both, either pass first
        width, height, new_width, new_height = (int(v) for v in rng.integers(1, 80, 4))
        interpolation = list(filters)[i % 3]
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        cases.append(_pixels(image) | {"resize": [new_width, new_height], "interpolation": interpolation})
        answers.append(np.asarray(Image.fromarray(image).resize((new_width, new_height), filters[interpolation])))
    for interpolation in filters:
        for resize in ("crop", "squash", "pad"):
            for size, crop_pct in (((3, 32, 32), 1.0), ((3, 128, 128), 0.875), ((3, 48, 64), 0.9)):
                preprocess = {"input_size": list(size), "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                              "interpolation": interpolation, "crop_pct": crop_pct, "resize": resize}
                for width, height in ((48, 48), (300, 140), (33, 200)):
                    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
                    cases.append(_pixels(np.asarray(image)) | {"preprocess": preprocess})
                    image = reduce_towards(image, (working_side(preprocess),) * 2)
                    for step in eval_geometry(preprocess):
                        image = step(image)
                    answers.append(np.asarray(image))
                cases.append(cases[-1] | {"input": True})  # the float32 input of the last image: checked in the test
                answers.append(None)
    return cases, answers


def test_the_page_computes_imgcls_geometry_pixel_for_pixel(browser, tmp_path):
    """preprocess.js on random images gives exactly Pillow's resize and imgcls's evaluation geometry (crop, squash,
    pad; square and not; bilinear, bicubic, nearest), and the model input exactly as float32 numpy computes it."""
    from imgcls.data.geometry import EvalInput, working_side
    from imgcls.data.images import reduce_towards

    shutil.copy(web.PAGE / "preprocess.js", tmp_path / "preprocess.js")
    (tmp_path / "index.html").write_text('<!doctype html><script src="preprocess.js"></script>')
    cases, answers = _geometry_cases(np.random.default_rng(0))
    pillow = {"heightFirst": web.pillow_resizes_height_first()}
    with static_server(tmp_path) as url:
        browser.get(url)
        results = browser.execute_script(_RUN_PREPROCESS, cases, pillow)
    for case, answer, result in zip(cases, answers, results):
        if case.get("input"):
            image = Image.fromarray(np.frombuffer(base64.b64decode(case["data"]), np.uint8)
                                    .reshape(case["height"], case["width"], 3))
            expected = EvalInput(case["preprocess"])(reduce_towards(image, (working_side(case["preprocess"]),) * 2))
            got = np.frombuffer(base64.b64decode(result), np.float32).reshape(expected.shape)
            assert np.array_equal(got, expected), case["preprocess"]
            continue
        width, height, data = result
        got = np.frombuffer(base64.b64decode(data), np.uint8).reshape(height, width, 3)
        assert got.shape == answer.shape and np.array_equal(got, answer), \
            {k: v for k, v in case.items() if k != "data"} | {"size": (case["width"], case["height"])}


def test_pillow_13_resizes_height_first_when_it_shrinks_much_more():
    import PIL

    assert web.pillow_resizes_height_first() == (int(PIL.__version__.split(".")[0]) >= 13)


def test_the_folder_holds_the_page_the_model_and_onnxruntime_web(cli, run, fake_ort_web):
    import onnx

    code, _, err = cli("export", "--weights", run / "weights" / "best.pt", "--format", "web")
    assert code == 0, err
    assert "top-1 agreement 100.0% (15/15)" in err  # model.onnx checked against PyTorch, as every export is
    folder = run / "weights" / "best_web"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "imgcls.json", "index.html", "model.onnx", "ort",
                                                        "page.js", "preprocess.js", "style.css"]
    assert sorted(p.name for p in (folder / "ort").iterdir()) == sorted(web.ORT_WEB_FILES)
    card = json.loads((folder / "imgcls.json").read_text())
    proto = onnx.load(str(folder / "model.onnx"))
    inside = json.loads({p.key: p.value for p in proto.metadata_props}["imgcls"])
    assert {k: v for k, v in card.items() if k != "web"} == inside  # the model card the ONNX file carries
    assert card["class_names"] == ["circle", "square", "triangle"] and card["outputs"] == ["logits"]
    assert card["web"] | {"pillow": None} == {"model": "model.onnx", "weights": "FP32", "pillow": None,
                                              "onnxruntime_web": web.ORT_WEB_VERSION}
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]
    assert (folder / "style.css").read_text() == web.serve_style()  # the serve page's look
    assert (folder / "README.md").read_text().startswith("# simple_cnn: an image classifier that runs in the browser")


def test_predict_runs_a_web_folder_as_its_checkpoint(cli, run, fake_ort_web, tmp_path):
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt", "--format", "web")
    assert code == 0, err
    answers = {}
    for weights in ("best.pt", "best_web"):
        out = tmp_path / weights
        code, _, err = cli("predict", "--weights", run / "weights" / weights, "--source", _test_folder(run),
                           "--out", out)
        assert code == 0, err
        answers[weights] = {Path(p["path"]).name: p["predicted"]
                            for p in json.loads((out / "predictions.json").read_text())["predictions"]}
    assert answers["best_web"] == answers["best.pt"]


def _test_folder(run: Path) -> Path:
    return Path(yaml.safe_load((run / "args.yaml").read_text())["data"]) / "test"


def test_int8_writes_a_second_folder_with_the_quantized_network(cli, run, fake_ort_web):
    import onnx

    code, out, err = cli("export", "--weights", run / "weights" / "best.pt", "--format", "web", "--int8")
    assert code == 0, err
    int8 = run / "weights" / "best_int8_web"
    assert "top-1 agreement with PyTorch" in out and "file size" in out
    assert json.loads((int8 / "imgcls.json").read_text())["web"]["weights"] == "INT8"
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(int8 / "model.onnx")).graph.node)
    assert sorted(p.name for p in int8.iterdir()) == sorted(p.name for p in (run / "weights" / "best_web").iterdir())


def test_a_new_export_replaces_an_earlier_folder_only_with_force(cli, run, fake_ort_web):
    weights = run / "weights" / "best.pt"
    assert cli("export", "--weights", weights, "--format", "web")[0] == 0
    folder = run / "weights" / "best_web"
    (folder / "left-over.txt").write_text("from before")
    code, _, err = cli("export", "--weights", weights, "--format", "web")
    assert code == 2 and "best_web already exists (an earlier export?); pass --force" in err
    assert (folder / "left-over.txt").exists()
    code, _, err = cli("export", "--weights", weights, "--format", "web", "--force")
    assert code == 0, err
    assert not (folder / "left-over.txt").exists() and (folder / "index.html").exists()
    site = run / "site_web"
    site.mkdir()
    (site / "mine.html").write_text("someone's own page")
    code, _, err = cli("export", "--weights", weights, "--format", "web", "--out", site, "--force")
    assert code == 2 and "is a folder that is not an earlier web export" in err and (site / "mine.html").exists()


@pytest.mark.parametrize("args, message", [
    (["--dynamic-batch"], "--dynamic-batch: web files are exported for batch 1"),
    (["--out", "model.onnx"], "--out model.onnx: a web folder should end in _web"),
])
def test_bad_web_options_are_one_line(cli, run, fake_ort_web, args, message):
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt", "--format", "web", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_missing_onnxruntime_web_is_one_line_naming_the_npm_command(cli, run, tmp_path, monkeypatch):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    monkeypatch.setenv(web.ORT_WEB_ENV, str(empty))
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt", "--format", "web")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"`npm install --prefix {empty} onnxruntime-web@{web.ORT_WEB_VERSION}`" in err
    assert sorted(p.name for p in (run / "weights").iterdir()) == ["best.pt", "last.pt"]  # nothing written


def test_another_onnxruntime_web_version_is_one_line(cli, run, fake_ort_web):
    (fake_ort_web / web.ORT_WEB_FILES[0]).write_text("/*!\n * ONNX Runtime Web v1.20.0\n */\n")
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt", "--format", "web")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"holds onnxruntime-web 1.20.0, imgcls needs {web.ORT_WEB_VERSION}" in err
