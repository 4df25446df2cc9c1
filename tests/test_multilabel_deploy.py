"""A multi-label model (its card has thresholds) deployed: predict, serve and the exports answer with the set of
labels above threshold and every label's probability, by metrics.labels_present, the one decision rule."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgcls.deploy.formats import TFLITE_PACKAGES
from imgcls.errors import ImgclsError
from imgcls.metrics import labels_present, sigmoid
from imgcls.record.card import ModelCard
from imgcls.record.checkpoint import checkpoint_content, save_checkpoint

LABELS = ("sky", "tree", "water")
THRESHOLDS = (0.3, 0.5, 0.7)


def _images(folder: Path, count: int = 6) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A tiny simple_cnn whose card has one threshold per label, its head biased so that the images give
    different label sets (some labels present, some not)."""
    from imgcls.data.transforms import make_preprocess
    from imgcls.models.factory import build_model, pretrained_config

    torch.manual_seed(0)
    model = build_model("simple_cnn", len(LABELS))
    with torch.no_grad():
        head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        head.bias.copy_(torch.tensor([2.0, 0.0, -2.0]))
    card = ModelCard("simple_cnn", LABELS, make_preprocess(pretrained_config("simple_cnn"), "32"),
                     thresholds=THRESHOLDS)
    path = tmp_path_factory.mktemp("multilabel") / "best.pt"
    save_checkpoint(path, checkpoint_content(card, state_dict=model.state_dict()))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    return _images(tmp_path_factory.mktemp("photos"))


def _expected(weights: Path, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Every label's probability and the labels present, computed here from the network's logits."""
    from imgcls.deploy.predict import Decoder
    from imgcls.models.factory import model_from_checkpoint
    from imgcls.record.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(weights)
    decode = Decoder(dict(checkpoint["preprocess"]))
    with torch.no_grad():
        logits = model_from_checkpoint(checkpoint)(torch.from_numpy(np.stack([decode(p) for p in paths]))).numpy()
    probs = sigmoid(logits)
    return probs, labels_present(probs, THRESHOLDS)


def test_predict_writes_the_labels_present_and_every_labels_probability(weights, images, tmp_path):
    from imgcls.deploy.predict import predict

    (images[0].parent / "broken.jpg").write_bytes(b"not an image")
    result = predict(weights, images[0].parent, out=tmp_path / "predict", runtime="torch", progress=False)
    with open(result.csv_path, encoding="utf-8") as f:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    assert list(next(iter(rows.values()))) == ["path", "labels", "p_sky", "p_tree", "p_water", "error"]
    probs, present = _expected(weights, images)
    assert 0 < present.sum() < present.size   # the check below sees labels present and absent
    for path, p, on in zip(images, probs, present):
        row = rows[path.name]
        assert row["labels"] == ";".join(c for c, yes in zip(LABELS, on) if yes)
        assert [float(row[f"p_{c}"]) for c in LABELS] == pytest.approx(p, abs=2e-6)
    assert rows["broken.jpg"]["labels"] == "" and rows["broken.jpg"]["error"]
    answer = json.loads(result.json_path.read_text())
    assert answer["thresholds"] == list(THRESHOLDS) and "topk" not in answer
    entry = next(e for e in answer["predictions"] if Path(e["path"]).name == images[0].name)
    assert entry["labels"] == rows[images[0].name]["labels"].split(";") and set(entry["probabilities"]) == set(LABELS)
    assert answer["summary"]["per_class"] == {c: int(n) for c, n in zip(LABELS, present.sum(0))}
    assert answer["summary"]["failed"] == 1


def test_reject_marks_a_multilabel_answer_unknown(weights, images, tmp_path):
    """--reject keeps working: an image below the open-set threshold is "unknown", its probabilities still there."""
    from imgcls.deploy.predict import Predictor
    from imgcls.metrics import rejection_spec
    from imgcls.record.checkpoint import update_card

    calibrated = tmp_path / "calibrated.pt"
    calibrated.write_bytes(weights.read_bytes())
    probs, present = _expected(weights, images)
    logits = np.log(probs) - np.log1p(-probs)
    update_card(calibrated, rejection=rejection_spec(logits, keep=0.5))
    found = Predictor(calibrated, runtime="torch", reject=True).predict([str(p) for p in images])
    unknown = [p for p in found if p.unknown]
    assert 0 < len(unknown) < len(found)
    assert all(p.labels == ("unknown",) and len(p.probabilities) == 3 for p in unknown)
    for p, on in zip(found, present):
        if not p.unknown:
            assert p.labels == tuple(c for c, yes in zip(LABELS, on) if yes)
    assert unknown[0].to_dict()["labels"] == ["unknown"] and unknown[0].to_dict()["unknown"] is True


def test_serve_answers_labels_and_every_labels_probability(weights, images):
    from fastapi.testclient import TestClient

    from imgcls.deploy.serve import create_app

    client = TestClient(create_app(weights, runtime="torch"))
    model = client.get("/model").json()
    assert model["multi_label"] is True and model["thresholds"] == list(THRESHOLDS)
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in images[:3]]
    answer = client.post("/predict", files=files).json()["predictions"]
    probs, present = _expected(weights, images[:3])
    for got, p, on in zip(answer, probs, present):
        assert got["labels"] == [c for c, yes in zip(LABELS, on) if yes]
        assert [got["probabilities"][c] for c in LABELS] == pytest.approx(p, abs=2e-6)
        assert "topk" not in got
    assert "imgcls_images_predicted_total 3.0" in client.get("/metrics").text


def test_onnx_export_carries_thresholds_and_predicts_as_the_checkpoint(weights, images, tmp_path):
    import onnx
    import onnxruntime as ort

    from imgcls.deploy.export import export
    from imgcls.deploy.predict import Decoder, Predictor

    result = export(weights, "onnx", out=tmp_path / "model.onnx", dynamic_batch=True)
    assert result.parity.answer == "label-set" and result.parity.sigmoid_diff < 1e-5
    meta = json.loads({p.key: p.value for p in onnx.load(str(result.path)).metadata_props}["imgcls"])
    assert meta["thresholds"] == list(THRESHOLDS) and meta["class_names"] == list(LABELS)
    assert meta["outputs"] == ["logits", "probabilities"]
    # a user of the bare file reads probabilities from the graph's own sigmoid
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    batch = np.stack([Decoder(meta["preprocess"])(p) for p in images])
    _, bare = session.run(None, {"images": batch})
    probs, _ = _expected(weights, images)
    assert bare == pytest.approx(probs, abs=1e-5)
    # imgcls reads the logits and applies the sigmoid once: the .onnx answers exactly as the checkpoint does
    from_onnx = Predictor(result.path).predict([str(p) for p in images])
    from_checkpoint = Predictor(weights, runtime="torch").predict([str(p) for p in images])
    assert [p.labels for p in from_onnx] == [p.labels for p in from_checkpoint]
    for a, b in zip(from_onnx, from_checkpoint):
        assert [x for _, x in a.probabilities] == pytest.approx([x for _, x in b.probabilities], abs=1e-5)


@pytest.mark.parametrize("fmt, suffix", [("torchscript", ".torchscript"), ("openvino", ".xml")])
def test_other_exports_end_in_a_sigmoid_read_once(weights, images, tmp_path, fmt, suffix):
    """Every format that writes the sigmoid output gives predict the checkpoint's answer, never the sigmoid twice."""
    pytest.importorskip(fmt if fmt == "openvino" else "torch")
    from imgcls.deploy.export import export
    from imgcls.deploy.formats import load_exported
    from imgcls.deploy.predict import Predictor

    result = export(weights, fmt, out=tmp_path / f"model{suffix}")
    _, card = load_exported(result.path)
    assert card.outputs == ("logits",) and card.thresholds == THRESHOLDS
    from_file = Predictor(result.path).predict([str(p) for p in images])
    probs, present = _expected(weights, images)
    assert [p.labels for p in from_file] == [tuple(c for c, yes in zip(LABELS, on) if yes) for on in present]
    assert np.array([[x for _, x in p.probabilities] for p in from_file]) == pytest.approx(probs, abs=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("coremltools") is None and os.environ.get("CI") != "true",
                    reason="coremltools is not installed (the coreml extra)")
def test_coreml_export_of_a_multilabel_model_is_logits_and_their_sigmoid(weights, tmp_path, cli):
    """Not a Core ML classifier (one class of a softmax): two multi-arrays, the probabilities the sigmoid of the
    logits in the program itself, the labels and thresholds in the metadata and in the outputs' descriptions."""
    from imgcls.deploy.coreml import check_spec, import_coremltools, read_spec

    package = tmp_path / "model.mlpackage"
    code, _, err = cli("export", "--weights", weights, "--format", "coreml", "--out", package)
    assert code == 0, err
    if sys.platform != "darwin":
        assert "numeric parity was NOT checked" in err
    spec = read_spec(package)
    assert spec["outputs"] == {"logits": "multiArrayType", "probabilities": "multiArrayType"}
    assert spec["shapes"] == {"logits": [1, 3], "probabilities": [1, 3]}
    assert spec["computed_by"]["probabilities"] == ["sigmoid", "logits"]
    assert spec["class_labels"] == [] and spec["predicted_feature"] == ""
    meta = json.loads(spec["metadata"])
    assert meta["thresholds"] == list(THRESHOLDS) and meta["class_names"] == list(LABELS)
    assert meta["outputs"] == ["logits", "probabilities"]
    described = {o.name: o.shortDescription for o in
                 import_coremltools().models.MLModel(str(package), skip_model_load=True).get_spec().description.output}
    assert "sky (0.3), tree (0.5), water (0.7)" in described["probabilities"]
    # the one-label form, a classifier over the same labels, is not what a multi-label card asks for
    card = ModelCard.read(meta, "test")
    with pytest.raises(ImgclsError, match="outputs"):
        check_spec(package, card.replace(thresholds=None), meta)


def test_predictions_csv_of_a_multilabel_answer_reads_back(tmp_path):
    """The CSV's labels column joins the labels with ';' and is empty when no label reaches its threshold."""
    from imgcls.record.predictions import PredictionsWriter

    writer = PredictionsWriter(tmp_path, {"class_names": list(LABELS)}, 5, labels=list(LABELS))
    writer.write({"path": "a.jpg", "labels": ["sky", "water"], "probabilities": {"sky": 0.9, "tree": 0.1,
                                                                                  "water": 0.75}, "error": None})
    writer.write({"path": "b.jpg", "labels": [], "probabilities": {"sky": 0.1, "tree": 0.2, "water": 0.3},
                  "error": None})
    writer.close({})
    rows = list(csv.DictReader(io.StringIO((tmp_path / "predictions.csv").read_text())))
    assert [r["labels"] for r in rows] == ["sky;water", ""]
    assert rows[0]["p_water"] == "0.750000"


def test_the_serve_page_shows_a_chip_for_each_label_present(weights, images, browser):
    """Headless chromium: the page shows the labels present as chips and a bar for every label's probability."""
    import socket
    import threading
    import time

    import uvicorn
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from imgcls.deploy.serve import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(weights, runtime="torch"), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        browser.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "model-name").text == "simple_cnn")
        browser.find_element(By.ID, "file-input").send_keys("\n".join(str(p) for p in images))
        cards = WebDriverWait(browser, 30).until(
            lambda d: len(found := d.find_elements(By.CSS_SELECTOR, "#results .card[data-labels]")) == len(images)
            and found)
        _, present = _expected(weights, images)
        shown = {c.find_element(By.CLASS_NAME, "filename").text: c for c in cards}
        for path, on in zip(images, present):
            card = shown[path.name]
            assert [chip.text for chip in card.find_elements(By.CSS_SELECTOR, ".labels .chip")] == \
                [c for c, yes in zip(LABELS, on) if yes]
            assert len(card.find_elements(By.CSS_SELECTOR, ".bars .row")) == len(LABELS)
            assert len(card.find_elements(By.CSS_SELECTOR, ".bars .row.present")) == int(on.sum())
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_web_export_carries_thresholds_and_the_sigmoid_output(weights, images, tmp_path, monkeypatch):
    """The page reads imgcls.json's thresholds and the network's "probabilities" output; predict of the folder
    answers as the checkpoint does. (onnxruntime-web's files are stand-ins: the page is not opened here.)"""
    import onnx

    from imgcls.deploy import web
    from imgcls.deploy.export import export
    from imgcls.deploy.predict import Predictor

    fake = tmp_path / "ort-web"
    fake.mkdir()
    for name in web.ORT_WEB_FILES:
        (fake / name).write_text(f"/*!\n * ONNX Runtime Web v{web.ORT_WEB_VERSION}\n */\n")
    monkeypatch.setenv(web.ORT_WEB_ENV, str(fake))
    folder = export(weights, "web", out=tmp_path / "model_web").path
    card = json.loads((folder / "imgcls.json").read_text())
    assert card["thresholds"] == list(THRESHOLDS) and card["outputs"] == ["logits", "probabilities"]
    assert [o.name for o in onnx.load(str(folder / "model.onnx")).graph.output] == ["logits", "probabilities"]
    _, present = _expected(weights, images)
    assert [p.labels for p in Predictor(folder).predict([str(p) for p in images])] == \
        [tuple(c for c, yes in zip(LABELS, on) if yes) for on in present]


def test_int8_keeps_the_sigmoid_output_in_float(weights, images, tmp_path):
    """INT8 quantizes the network but not its final sigmoid: the bare file's probabilities are the sigmoid of its
    own logits (not steps of 1/256), and it carries the thresholds."""
    import onnx
    import onnxruntime as ort

    from imgcls.deploy.export import export
    from imgcls.deploy.predict import Decoder, Predictor

    result = export(weights, "onnx", out=tmp_path / "model.onnx", dynamic_batch=True, int8=True,
                    calibration_images=4, bench_seconds=0.05)
    meta = json.loads({p.key: p.value for p in onnx.load(str(result.int8_path)).metadata_props}["imgcls"])
    assert meta["thresholds"] == list(THRESHOLDS) and meta["outputs"] == ["logits", "probabilities"]
    assert "label_set_agreement_with_pytorch" in result.int8_report["int8"]
    session = ort.InferenceSession(str(result.int8_path), providers=["CPUExecutionProvider"])
    logits, probs = session.run(None, {"images": np.stack([Decoder(meta["preprocess"])(p) for p in images])})
    assert probs == pytest.approx(sigmoid(logits), abs=1e-6)
    answers = Predictor(result.int8_path).predict([str(p) for p in images])
    assert np.array([[x for _, x in p.probabilities] for p in answers]) == pytest.approx(sigmoid(logits), abs=2e-6)


def test_the_web_page_shows_the_labels_present_as_chips(weights, images, browser, tmp_path):
    """Headless chromium on the web export: each image's chips are the labels imgcls predict gives, from the
    network's own sigmoid output and the thresholds of imgcls.json."""
    import functools
    import http.server
    import os
    import threading

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from imgcls.deploy import web
    from imgcls.deploy.export import export

    try:
        web.ort_web_files()
    except ImgclsError as e:   # onnxruntime-web's files come from npm: CI installs them (.ci/run)
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(str(e))
    folder = export(weights, "web", out=tmp_path / "model_web").path
    quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{server.server_port}/")
        WebDriverWait(browser, 60).until(lambda d: d.execute_script("return document.body.dataset.state") == "ready")
        browser.find_element(By.ID, "file-input").send_keys("\n".join(str(p) for p in images))
        WebDriverWait(browser, 60).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .card[data-labels]")) == len(images))
        shown = {c["name"]: c for c in browser.execute_script("""
            return Array.from(document.querySelectorAll('#results .card'), (c) => ({
              name: c.querySelector('.filename').textContent,
              chips: Array.from(c.querySelectorAll('.labels .chip'), (chip) => chip.textContent),
              bars: c.querySelectorAll('.bars .row').length,
              probabilities: JSON.parse(c.dataset.probabilities)}));""")}
    finally:
        server.shutdown()
        server.server_close()
    probs, present = _expected(weights, images)
    for path, p, on in zip(images, probs, present):
        page = shown[path.name]
        assert page["chips"] == [c for c, yes in zip(LABELS, on) if yes], path.name
        assert page["bars"] == len(LABELS) and page["probabilities"] == pytest.approx(p, abs=1e-4)


def test_a_labelled_copy_names_every_label_present_with_its_probability():
    from imgcls.deploy.predict import Prediction, caption

    probabilities = (("sky", 0.9), ("tree", 0.1), ("water", 0.75))
    assert caption(Prediction("a.jpg", labels=("sky", "water"), probabilities=probabilities)) == "sky 0.90, water 0.75"
    assert caption(Prediction("a.jpg", labels=(), probabilities=probabilities)) == "none"
    assert caption(Prediction("a.jpg", labels=("unknown",), probabilities=probabilities)) == "unknown"


# ------------------------------------------------------------------------------ TFLite (the tflite extra)

TFLITE_MISSING = [package for module, package in TFLITE_PACKAGES if importlib.util.find_spec(module) is None]
# skipped where the extra is missing, unless CI's tflite step (IMGCLS_TEST_TFLITE=1) promised it
NEEDS_TFLITE = pytest.mark.skipif(bool(TFLITE_MISSING) and os.environ.get("IMGCLS_TEST_TFLITE") != "1",
                                  reason=f"the tflite extra is not installed (missing {', '.join(TFLITE_MISSING)})")


@pytest.fixture(scope="module")
def tflite_exported(tmp_path_factory):
    """A tiny multi-label run (red and/or blue squares, so its val images have label sets to agree on), exported
    as best.tflite and best_int8.tflite once; the export's result and the INT8 table it printed."""
    from imgcls.deploy.export import export
    from imgcls.engine.train import train

    if TFLITE_MISSING:  # only reached where IMGCLS_TEST_TFLITE=1 promised the packages
        pytest.fail(f"IMGCLS_TEST_TFLITE=1 but {', '.join(TFLITE_MISSING)} is not installed")
    base = tmp_path_factory.mktemp("tflite-multilabel")
    run = train(data=str(_squares(base / "data")), model="simple_cnn", pretrained=False, imgsz=32, batch_size=8,
                workers=0, epochs=3, lr=0.01, warmup_epochs=0, project=str(base / "runs"), name="train",
                progress=False).run_dir
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = export(run / "weights" / "best.pt", "tflite", int8=True, calibration_images=16, bench_seconds=0.05)
    return run, result, printed.getvalue()


def _squares(folder: Path, n: int = 48) -> Path:
    """Images with a red square on the left and/or a blue one on the right (or neither), and their labels.csv."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["path,labels"]
    for i in range(n):
        red, blue = i % 4 in (1, 3), i % 4 in (2, 3)
        pixels = rng.integers(90, 140, size=(32, 32, 3), dtype=np.uint8)
        if red:
            pixels[8:22, 2:14] = (220, 30, 30)
        if blue:
            pixels[10:24, 18:30] = (30, 30, 220)
        Image.fromarray(pixels).save(folder / f"img{i:03d}.png")
        rows.append(f"img{i:03d}.png," + ";".join(name for name, on in (("red", red), ("blue", blue)) if on))
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder / "labels.csv"


def _bare_litert(path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """What a user of the bare file gets: LiteRT's signature runner, outputs by name, dequantized by hand."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    inp = runner.get_input_details()["images"]
    found = {}
    for image in images:
        x = image.transpose(1, 2, 0)[None]
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            x = np.clip(np.round(x / scale + zero), -128, 127)
        for name, y in runner(images=x.astype(inp["dtype"])).items():
            scale, zero = runner.get_output_details()[name]["quantization"]
            found.setdefault(name, []).append((y.astype(np.float32) - zero) * scale if scale else y)
    return {name: np.concatenate(rows) for name, rows in found.items()}


@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.tflite
@NEEDS_TFLITE
def test_tflite_files_of_a_multilabel_run_carry_logits_and_their_sigmoid(tflite_exported, int8):
    from imgcls.deploy.parity import reference_inputs
    from imgcls.deploy.tflite import file_metadata
    from imgcls.record.checkpoint import card_of, load_checkpoint

    run, result, _ = tflite_exported
    path = result.int8_path if int8 else result.path
    meta = json.loads(file_metadata(path))
    checkpoint = load_checkpoint(run / "weights" / "best.pt")
    assert meta["thresholds"] == list(card_of(checkpoint).thresholds) and meta["class_names"] == ["blue", "red"]
    assert meta["outputs"] == ["logits", "probabilities"]
    batch, _, _ = reference_inputs(checkpoint, "val")
    bare = _bare_litert(path, batch)
    assert set(bare) == {"logits", "probabilities"} and bare["probabilities"].shape == (len(batch), 2)
    # FP32: the sigmoid to float rounding; INT8 requantizes it to steps of 1/256 (TFLite's int8 LOGISTIC output)
    assert bare["probabilities"] == pytest.approx(sigmoid(bare["logits"]), abs=1 / 256 if int8 else 1e-6)
    if not int8:  # checked against PyTorch on the run's val images before it was kept
        parity = result.parity
        assert parity.answer == "label-set" and parity.source.endswith("val image(s)")
        assert parity.top1_agreement == 1.0 and parity.sigmoid_diff < 1e-5


@pytest.mark.tflite
@NEEDS_TFLITE
def test_predict_with_a_multilabel_tflite_gives_the_label_sets_of_the_checkpoint(tflite_exported):
    from imgcls.deploy.predict import Predictor

    run, result, printed = tflite_exported
    images = sorted(str(p) for p in (run.parent.parent / "data").glob("*.png"))
    from_checkpoint = Predictor(run / "weights" / "best.pt", runtime="torch").predict(images)
    from_tflite = Predictor(result.path).predict(images)
    assert len({p.labels for p in from_checkpoint}) > 1   # the images have different label sets
    assert [p.labels for p in from_tflite] == [p.labels for p in from_checkpoint]
    for a, b in zip(from_tflite, from_checkpoint):
        assert [x for _, x in a.probabilities] == pytest.approx([x for _, x in b.probabilities], abs=1e-5)
    # INT8: imgcls reads its dequantized logits, and its label-set agreement with PyTorch is reported
    report = result.int8_report
    assert report["fp32"]["label_set_agreement_with_pytorch"] == 1.0
    assert report["int8"]["label_set_agreement_with_pytorch"] >= 0.75 and report["val_images"] > 0
    assert "label-set agreement with PyTorch" in printed
    from_int8 = Predictor(result.int8_path).predict(images)
    assert np.mean([a.labels == b.labels for a, b in zip(from_int8, from_checkpoint)]) >= 0.75
