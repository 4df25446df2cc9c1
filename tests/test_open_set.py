"""Open-set rejection: --reject says "unknown" for images unlike the training data, in predict, serve and val.

The model is a linear head on the packaged tf_efficientnet_lite0 at 64 px (`--fast`): the way the benchmark trains,
and a few seconds on a CPU. The out-of-distribution images are a colour and patterns no training image has.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagegen import make_split_folders, shape_image
from imgcls import metrics
from imgcls.errors import ImgclsError


def unseen_images(folder: Path, more: bool = False) -> list[Path]:
    """Colours and patterns no training image has (the shapes are red, green and blue on light noise): a
    yellow-on-black checkerboard, flat magenta and flat black; with ``more`` also flat cyan, two shifted
    checkerboards, orange-and-purple stripes and yellow rings (which a small model may well call a red circle)."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.indices((64, 64))
    board = (yy // 8 % 2 ^ xx // 8 % 2)[..., None] * np.array([255, 230, 0])
    images = {"checkerboard.png": board, "magenta.png": np.full((64, 64, 3), (255, 0, 255)),
              "black.png": np.zeros((64, 64, 3))}
    if more:
        stripe = ((yy + xx) // 6 % 2)[..., None]
        images |= {"cyan.png": np.full((64, 64, 3), (0, 230, 230)), "board_3.png": np.roll(board, 3, axis=0),
                   "board_5.png": np.roll(board, 5, axis=1),
                   "stripes.png": stripe * np.array([255, 140, 0]) + (1 - stripe) * np.array([90, 0, 140]),
                   "rings.png": (np.hypot(yy - 32, xx - 32) // 5 % 2)[..., None] * np.array([255, 200, 0])}
    for name, pixels in images.items():
        Image.fromarray(pixels.astype(np.uint8)).save(folder / name)
    return sorted(folder.iterdir())


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory) -> Path:
    """A --fast run: linear head on cached lite0 features, 3 classes of shapes, train/val/test."""
    from imgcls.engine.train import train

    base = tmp_path_factory.mktemp("open_set")
    data = make_split_folders(base / "data", counts=(10, 8, 4), size=64)
    result = train(data=str(data), model="tf_efficientnet_lite0", imgsz=64, fast=True, cache_views=1,
                   batch_size=16, workers=0, project=str(base / "runs"), name="train", progress=False)
    return result.run_dir


@pytest.fixture
def run(fast_run, tmp_path):
    return shutil.copytree(fast_run, tmp_path / "run")


def test_train_calibrates_the_threshold_on_val_and_stores_it(fast_run):
    checkpoint = torch.load(fast_run / "weights" / "best.pt", weights_only=True)
    spec = checkpoint["rejection"]
    assert spec["score"] == "familiarity" and spec["keep"] == 0.95 and spec["calibrated_on"] == "val"
    assert spec["images"] == 24 and len(spec["quantiles"]) == 101
    assert spec["fallback"]["score"] == "energy" and spec["fallback"]["images"] == 24
    stats = checkpoint["familiarity"]  # fitted on the 30 training images' pooled lite0 features (1,280 numbers)
    assert stats["means"].shape == (3, 1280) and stats["basis"].shape[0] == 1280
    val = json.loads((fast_run / "results.json").read_text())["test"]["open_set"]
    assert val["threshold_from"] == "checkpoint" and val["threshold"] == pytest.approx(spec["threshold"], abs=1e-6)


def test_predict_reject_says_unknown_for_a_pattern_never_seen(cli, fast_run, tmp_path):
    odd = unseen_images(tmp_path / "source")
    for i, kind in enumerate(("circle", "square", "triangle")):
        shape_image(kind, 64, seed=900 + i).save(tmp_path / "source" / f"{kind}.png")
    weights = fast_run / "weights" / "best.pt"
    code, _, err = cli("predict", "--weights", weights, "--source", tmp_path / "source", "--reject",
                       "--out", tmp_path / "predict", "--workers", "0")
    assert code == 0, err
    rows = {Path(r["path"]).name: r for r in csv.DictReader(open(tmp_path / "predict" / "predictions.csv"))}
    for path in odd:
        assert rows[path.name]["predicted"] == "unknown" and rows[path.name]["unknown"] == "true", rows[path.name]
    for kind in ("circle", "square", "triangle"):
        assert rows[f"{kind}.png"]["predicted"] == kind and rows[f"{kind}.png"]["unknown"] == "false"
    summary = json.loads((tmp_path / "predict" / "predictions.json").read_text())
    assert summary["summary"]["per_class"]["unknown"] == 3 and summary["rejection"]["score"] == "familiarity"

    # without --reject the same images get a confident-looking class: what --reject is for
    code, _, err = cli("predict", "--weights", weights, "--source", odd[0], "--out", tmp_path / "plain")
    row = next(csv.DictReader(open(tmp_path / "plain" / "predictions.csv")))
    assert row["predicted"] in ("circle", "square", "triangle") and "unknown" not in row


def test_threshold_round_trips_through_the_onnx_export(cli, run, tmp_path):
    from imgcls.deploy.formats import load_exported
    from imgcls.deploy.predict import Predictor

    weights = run / "weights" / "best.pt"
    assert cli("export", "--weights", weights)[0] == 0
    stored = torch.load(weights, weights_only=True)["rejection"]
    runner, card = load_exported(run / "weights" / "best.onnx")
    assert card.rejection == stored and list(card.outputs) == runner.metadata["outputs"] == ["logits", "familiarity"]
    odd = [str(p) for p in unseen_images(tmp_path / "odd")]
    from_pt, from_onnx = Predictor(weights, reject=True), Predictor(run / "weights" / "best.onnx", reject=True)
    assert from_onnx.threshold == from_pt.threshold == stored["threshold"]
    assert [p.unknown for p in from_onnx.predict(odd)] == [True] * 3
    assert [p.score for p in from_onnx.predict(odd)] == pytest.approx([p.score for p in from_pt.predict(odd)],
                                                                       abs=1e-3)
    # --reject 0.8 keeps 80% of val instead: a higher threshold, from the stored quantiles
    assert Predictor(run / "weights" / "best.onnx", reject=0.8).threshold > stored["threshold"]


def test_a_file_without_the_familiarity_output_falls_back_to_energy(run, tmp_path):
    """TFLite and Core ML files give logits only: --reject then uses the energy threshold stored beside."""
    from imgcls.deploy.formats import FORMATS
    from imgcls.deploy.predict import Predictor
    from imgcls.metrics import open_set_score
    from imgcls.models.factory import model_from_checkpoint
    from imgcls.record.checkpoint import card_of, load_checkpoint

    checkpoint = load_checkpoint(run / "weights" / "best.pt")
    FORMATS["onnx"].write(model_from_checkpoint(checkpoint), card_of(checkpoint), tmp_path / "logits_only.onnx", False)
    predictor = Predictor(tmp_path / "logits_only.onnx", reject=True)
    fallback = checkpoint["rejection"]["fallback"]
    assert predictor.model.card.outputs == ("logits",) and predictor.threshold == fallback["threshold"]
    odd = [str(p) for p in unseen_images(tmp_path / "odd")]
    found = predictor.predict(odd)
    energy = open_set_score(predictor.logits(np.stack([predictor.decode(p) for p in odd])), "energy")
    assert [p.score for p in found] == pytest.approx(energy.tolist(), abs=1e-5)
    assert [p.unknown for p in found] == [s < fallback["threshold"] for s in energy]


def test_val_calibrate_gives_an_older_checkpoint_the_familiarity_score(cli, run):
    """A checkpoint from before the familiarity score (energy only) gets it from `imgcls val --calibrate`, fitted
    on the run's own training images, its threshold on val."""
    weights = run / "weights" / "best.pt"
    old = torch.load(weights, weights_only=True)
    energy = old["rejection"]["fallback"]
    old.pop("familiarity")
    torch.save(old | {"rejection": energy}, weights)
    code, _, err = cli("val", "--weights", weights, "--calibrate", "--workers", "0")
    assert code == 0, err
    new = torch.load(weights, weights_only=True)
    assert new["rejection"]["score"] == "familiarity" and new["rejection"]["fallback"]["score"] == "energy"
    assert new["familiarity"]["means"].shape == (3, 1280)
    assert "familiarity score fitted on the pooled features of 30 training images" in err


def test_serve_answers_unknown_true_and_the_score(fast_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from imgcls.deploy.serve import create_app

    buffer, odd = io.BytesIO(), io.BytesIO()
    shape_image("circle", 64, seed=950).save(buffer, format="PNG")
    Image.fromarray(np.full((64, 64, 3), (255, 0, 255), np.uint8)).save(odd, format="PNG")
    files = [("files", ("circle.png", buffer.getvalue(), "image/png")), ("files", ("odd.png", odd.getvalue(),
                                                                                    "image/png"))]
    client = TestClient(create_app(fast_run / "weights" / "best.pt", reject=True))
    circle, magenta = client.post("/predict", files=files).json()["predictions"]
    assert circle["predicted"] == "circle" and circle["unknown"] is False
    assert magenta["predicted"] == "unknown" and magenta["unknown"] is True
    assert magenta["score"] < client.get("/model").json()["rejection"]["threshold"] < circle["score"]
    plain = TestClient(create_app(fast_run / "weights" / "best.pt")).post("/predict", files=files).json()
    assert "unknown" not in plain["predictions"][1] and plain["predictions"][1]["predicted"] != "unknown"


def test_val_reports_the_rejection_rate_and_ood_auroc(cli, run, tmp_path):
    unseen_images(tmp_path / "ood", more=True)
    code, _, err = cli("val", "--weights", run / "weights" / "best.pt", "--ood", tmp_path / "ood", "--workers", "0")
    assert code == 0, err
    block = json.loads((run / "val" / "metrics.json").read_text())["open_set"]
    assert block["ood_images"] == 8 and block["threshold_from"] == "checkpoint"
    assert block["rejected"] <= 0.05 + 1e-9  # calibrated on this very split to keep 95%
    assert block["auroc"] >= 0.9 and block["false_accept_rate"] <= 0.25
    assert "AUROC" in err and "false-accept rate" in err


def test_reject_and_ood_refuse_bad_input_in_one_line(cli, run, tmp_path):
    weights = run / "weights" / "best.pt"
    code, _, err = cli("predict", "--weights", weights, "--source", tmp_path, "--reject", "1.5")
    assert code == 2 and "--reject 1.5: the share of familiar images to keep, between 0 and 1" in err
    code, _, err = cli("val", "--weights", weights, "--ood", tmp_path / "nowhere")
    assert code == 2 and err.strip().splitlines()[-1].endswith("folder not found; expected a folder of images of "
                                                               "none of the model's classes")
    (tmp_path / "empty").mkdir()
    code, _, err = cli("val", "--weights", weights, "--ood", tmp_path / "empty")
    assert code == 2 and "no images found" in err
    old = torch.load(weights, weights_only=True)
    old.pop("rejection")
    torch.save(old, tmp_path / "old.pt")
    from imgcls.deploy.predict import Predictor

    with pytest.raises(ImgclsError, match="holds no rejection threshold") as refused:
        Predictor(tmp_path / "old.pt", reject=True)
    assert "run `imgcls val --weights CHECKPOINT --calibrate`, then export again" in str(refused.value)
    assert not list(run.glob("val*")) and not list(tmp_path.glob("runs*"))


# ------------------------------------------------------------------------------------------ pure functions

def test_energy_and_max_logit_scores():
    logits = np.array([[2.0, 0.0, 0.0], [0.1, 0.1, 0.1]])
    assert metrics.open_set_score(logits, "energy") == pytest.approx(np.log(np.exp(logits).sum(axis=1)))
    assert metrics.open_set_score(logits, "max_logit").tolist() == [2.0, 0.1]
    assert metrics.open_set_score(logits * 1000, "energy")[0] == pytest.approx(2000)  # no overflow
    with pytest.raises(ValueError):
        metrics.open_set_score(logits, "entropy")


def test_threshold_keeps_the_asked_share_and_is_recoverable_from_quantiles():
    scores = np.random.default_rng(0).normal(size=1000)
    spec = metrics.rejection_spec(np.c_[scores, np.full(1000, -50.0)], keep=0.95, kind="max_logit")
    assert (scores >= spec["threshold"]).mean() == pytest.approx(0.95, abs=0.002)
    assert metrics.threshold_for(spec) == spec["threshold"]
    assert (scores >= metrics.threshold_for(spec, 0.8)).mean() == pytest.approx(0.8, abs=0.01)


def test_auroc_and_false_accept_rate():
    assert metrics.auroc([3, 4, 5], [0, 1, 2]) == 1.0 and metrics.auroc([1, 1], [1, 1]) == 0.5
    assert metrics.auroc([], [1]) is None
    report = metrics.open_set_report([2, 3, 4, 5], [0, 1, 2.5, 6], threshold=2.5)
    assert report["in_rejected"] == 0.25 and report["false_accept_rate"] == 0.5
    assert report["auroc"] == pytest.approx(11 / 16)


def test_the_page_shows_not_sure_in_a_real_browser(fast_run, browser, tmp_path):
    """Served with --reject, the web page shows "not sure" for an image unlike the training data, and the
    class for one like it (uploaded through the page's own file input, as a user does)."""
    pytest.importorskip("fastapi")
    import threading

    import uvicorn
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from imgcls.deploy.serve import create_app

    shape_image("circle", 64, seed=950).save(tmp_path / "circle.png")
    Image.fromarray(np.full((64, 64, 3), (255, 0, 255), np.uint8)).save(tmp_path / "magenta.png")
    server = uvicorn.Server(uvicorn.Config(create_app(fast_run / "weights" / "best.pt", reject=True),
                                           host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        WebDriverWait(None, 60, poll_frequency=0.1).until(lambda _: server.started)
        port = server.servers[0].sockets[0].getsockname()[1]
        browser.get(f"http://127.0.0.1:{port}/")
        upload = browser.find_element(By.CSS_SELECTOR, "input[type=file]")
        upload.send_keys(f"{tmp_path / 'magenta.png'}\n{tmp_path / 'circle.png'}")
        WebDriverWait(browser, 60).until(lambda b: "2 classified" in b.find_element(By.TAG_NAME, "body").text)
        cards = browser.find_elements(By.CSS_SELECTOR, "#results > *")
        texts = {card.text.splitlines()[0]: card.text for card in cards}
        assert "not sure" in texts["magenta.png"] and "unlike the images" in texts["magenta.png"]
        assert "not sure" not in texts["circle.png"] and "\ncircle\n" in texts["circle.png"]
        assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")] == []
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_familiarity_is_the_mahalanobis_distance_under_its_fitted_covariance():
    """The distance is (x - mean)' C^-1 (x - mean) of the normalised features to the nearest class mean, C the
    probabilistic-PCA covariance the statistics describe (kept directions with their variances, one variance for
    the rest)."""
    from imgcls.models.familiarity import Familiarity, fit_familiarity, unit

    rng = np.random.default_rng(0)
    dims, classes = 24, 3
    labels = rng.integers(0, classes, 400)
    features = rng.normal(size=(400, dims)) * np.linspace(0.3, 4, dims) + 3 * labels[:, None]
    stats = fit_familiarity(features, labels, classes, dims=5)
    basis, weights = stats["basis"].double().numpy(), stats["weights"].double().numpy()
    residual = 1 / float(stats["residual_precision"])
    kept = 1 / (weights + 1 / residual)
    assert basis.shape == (dims, 5) and np.all(kept >= residual - 1e-9)
    covariance = basis @ np.diag(kept) @ basis.T + residual * (np.eye(dims) - basis @ basis.T)
    precision = np.linalg.inv(covariance)
    means = np.stack([unit(features)[labels == c].mean(0) for c in range(classes)])
    queries = unit(rng.normal(size=(6, dims)) * 3)
    expected = np.min([np.einsum("nd,de,ne->n", queries - m, precision, queries - m) for m in means], axis=0)
    got = Familiarity(stats).distance(torch.tensor(queries * 7, dtype=torch.float32)).double().numpy()
    assert got == pytest.approx(expected, rel=1e-3)  # the length of a feature vector does not count


def test_familiarity_scores_points_far_from_every_class_lowest():
    from imgcls.models.familiarity import Familiarity, fit_familiarity

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 32)) * 4
    labels = rng.integers(0, 4, 600)
    score = Familiarity(fit_familiarity(centres[labels] + rng.normal(size=(600, 32)), labels, 4))
    near = torch.tensor(centres + rng.normal(size=(4, 32)), dtype=torch.float32)
    far = torch.tensor(rng.normal(size=(4, 32)) * 4, dtype=torch.float32)  # no class's direction
    assert score(near).min() > score(far).max()


def test_familiarity_stays_float32_under_mixed_precision():
    """AMP (--amp on CUDA, bf16 on CPU) must not round the distances, which are small differences of large terms."""
    from imgcls.models.familiarity import Familiarity, fit_familiarity

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 300)
    score = Familiarity(fit_familiarity(rng.normal(size=(300, 64)) + labels[:, None], labels, 3))
    x = torch.tensor(rng.normal(size=(8, 64)) + 1, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = score(x)
    assert mixed.dtype == torch.float32 and torch.allclose(mixed, score(x), rtol=1e-6)


def test_familiarity_is_exact_in_float32_when_the_features_barely_differ():
    """A weak network gives every image nearly the same features (a large common part, classes apart by a
    hundredth of it, images within a class by far less): the float32 score must still be the distance itself, not
    the rounding error of large terms whose small difference it would be in a naive expansion."""
    from imgcls.models.familiarity import Familiarity, fit_familiarity, unit

    rng = np.random.default_rng(3)
    dims, classes = 256, 3
    common, apart = rng.normal(size=dims), rng.normal(size=(classes, dims)) * 1e-2
    labels = rng.integers(0, classes, 200)
    stats = fit_familiarity(common + apart[labels] + rng.normal(size=(200, dims)) * 1e-5, labels, classes)
    queries = unit(common + apart[rng.integers(0, classes, 16)] + rng.normal(size=(16, dims)) * 3e-5)
    means, basis = stats["means"].double().numpy(), stats["basis"].double().numpy()
    precisions = stats["weights"].double().numpy() + float(stats["residual_precision"])
    offsets = queries[:, None, :] - means[None]                 # the distance from its definition, in float64
    along = offsets @ basis
    across = offsets - along @ basis.T
    expected = (float(stats["residual_precision"]) * (across ** 2).sum(-1) + along ** 2 @ precisions).min(1)
    got = Familiarity(stats).distance(torch.tensor(queries, dtype=torch.float32)).double().numpy()
    assert got == pytest.approx(expected, rel=1e-3)
