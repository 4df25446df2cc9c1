"""imgcls predict and imgcls.Predictor: sources, output files, bad files, .pt vs .onnx."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagegen import CLASSES, make_class_folders, shape_image
from onnxgen import export_onnx


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def weights(trained_run) -> Path:
    return trained_run / "weights" / "best.pt"


@pytest.fixture
def photos(tmp_path) -> Path:
    """3 classes x 3 new images (not seen in training), one truncated PNG, one text file, one hidden file."""
    root = make_class_folders(tmp_path / "photos", per_class=3, seed=7)
    good = (root / "square" / "square_0.png").read_bytes()
    (root / "square" / "broken.png").write_bytes(good[: len(good) // 3])
    (root / "notes.txt").write_text("not a picture\n")
    (root / "circle" / ".DS_Store").write_bytes(b"\0\1\2")
    return root


def test_predict_folder_with_bad_files(cli, weights, photos, tmp_path):
    out = tmp_path / "runs" / "predict"
    code, _, err = cli("predict", "--weights", weights, "--source", photos, "--out", out, "--topk", "2",
                       "--workers", "0")
    assert code == 0, err
    rows = read_csv(out / "predictions.csv")
    assert list(rows[0]) == ["path", "predicted", "confidence", "top2", "top2_confidence", "error"]
    by_name = {Path(r["path"]).name: r for r in rows}
    assert set(by_name) == {f"{c}_{i}.png" for c in CLASSES for i in range(3)} | {"broken.png", "notes.txt"}
    assert "truncated or corrupt" in by_name["broken.png"]["error"] and by_name["broken.png"]["predicted"] == ""
    assert "not an image" in by_name["notes.txt"]["error"]
    good = [r for r in rows if not r["error"]]
    assert len(good) == 9
    for r in good:
        assert r["predicted"] in CLASSES and r["top2"] in CLASSES and r["top2"] != r["predicted"]
        assert 1 >= float(r["confidence"]) >= float(r["top2_confidence"]) >= 0
    correct = sum(r["predicted"] == Path(r["path"]).parent.name for r in good)
    assert correct >= 7, rows  # the tiny model reaches ~90% on validation images

    document = json.loads((out / "predictions.json").read_text())
    assert document["class_names"] == list(CLASSES) and document["topk"] == 2
    assert [p["path"] for p in document["predictions"]] == [r["path"] for r in rows]  # same order as the CSV
    entry = next(p for p in document["predictions"] if p["path"].endswith("notes.txt"))
    assert entry["predicted"] is None and "not an image" in entry["error"]
    first_good = next(p for p in document["predictions"] if p["error"] is None)
    assert [t["class"] for t in first_good["topk"]][0] == first_good["predicted"]
    summary = document["summary"]
    assert (summary["images"], summary["predicted"], summary["failed"]) == (11, 9, 2)
    assert sum(summary["per_class"].values()) == 9

    assert "9 predicted, 2 failed" in err.strip().splitlines()[-1]
    assert "Per-class counts" in err and "broken.png" in err

    # a second run gets its own folder and leaves the first untouched
    before = (out / "predictions.csv").read_bytes()
    code, _, _ = cli("predict", "--weights", weights, "--source", photos / "circle", "--out", out, "--workers", "0")
    assert code == 0
    assert len(read_csv(tmp_path / "runs" / "predict2" / "predictions.csv")) == 3
    assert (out / "predictions.csv").read_bytes() == before


def test_save_img_writes_labelled_copies(cli, weights, photos, tmp_path):
    out = tmp_path / "labelled"
    code, _, err = cli("predict", "--weights", weights, "--source", photos, "--out", out, "--save-img",
                       "--workers", "0")
    assert code == 0, err
    rows = {Path(r["path"]).relative_to(photos): r for r in read_csv(out / "predictions.csv")}
    copies = sorted(p.relative_to(out / "images") for p in (out / "images").rglob("*.png"))
    assert copies == sorted(rel for rel, r in rows.items() if not r["error"])  # folder layout mirrored
    original = np.asarray(Image.open(photos / "circle" / "circle_0.png").convert("RGB"))
    labelled = np.asarray(Image.open(out / "images" / "circle" / "circle_0.png").convert("RGB"))
    assert labelled.shape == original.shape
    assert (labelled[:5] != original[:5]).any()            # the label band is drawn at the top
    assert (labelled[-5:] == original[-5:]).all()          # the rest of the picture is untouched


def test_glob_and_list_file_sources(cli, weights, photos, tmp_path):
    out = tmp_path / "runs" / "predict"
    code, _, err = cli("predict", "--weights", weights, "--source", str(photos / "*" / "triangle_*.png"),
                       "--out", out, "--workers", "0")
    assert code == 0, err
    assert [Path(r["path"]).name for r in read_csv(out / "predictions.csv")] == [f"triangle_{i}.png" for i in range(3)]

    listing = photos / "to_label.txt"
    listing.write_text("# images to label\ncircle/circle_1.png\n\n" + str(photos / "square" / "square_2.png")
                       + "\nmissing.png\n")
    code, _, err = cli("predict", "--weights", weights, "--source", listing, "--out", out, "--workers", "0")
    assert code == 0, err
    rows = read_csv(tmp_path / "runs" / "predict2" / "predictions.csv")
    assert [Path(r["path"]).name for r in rows] == ["circle_1.png", "square_2.png", "missing.png"]
    assert rows[0]["predicted"] in CLASSES and rows[1]["predicted"] in CLASSES
    assert rows[2]["error"] == "file not found"
    assert "2 predicted, 1 failed" in err


def test_bad_source_and_weights_are_one_line_errors(cli, weights, tmp_path):
    code, _, err = cli("predict", "--weights", weights, "--source", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert code == 2 and err.startswith("imgcls: error: --source") and "no such file or folder" in err
    assert "Traceback" not in err
    (tmp_path / "empty").mkdir()
    code, _, err = cli("predict", "--weights", weights, "--source", tmp_path / "empty", "--out", tmp_path / "o")
    assert code == 2 and "no files found" in err
    code, _, err = cli("predict", "--weights", tmp_path / "missing.pt", "--source", weights, "--out", tmp_path / "o")
    assert code == 2 and "--weights" in err and "file not found" in err
    assert not (tmp_path / "o").exists()  # nothing written for a command that could not start


def test_workers_keep_source_order(weights, photos):
    from imgcls import Predictor

    predictor = Predictor(weights, batch_size=2)
    serial = [(p.path, p.label) for p in predictor.predict_stream(photos, workers=0)]
    parallel = [(p.path, p.label) for p in predictor.predict_stream(photos, workers=2)]
    assert parallel == serial and len(serial) == 11


def _without_export_inside(weights: Path, tmp_path: Path) -> Path:
    """The checkpoint as torch.save writes it, without the export imgcls train puts inside (a checkpoint from
    elsewhere, or an older imgcls)."""
    from imgcls.record.checkpoint import load_checkpoint, save_checkpoint

    plain = tmp_path / "plain.pt"
    save_checkpoint(plain, {k: v for k, v in load_checkpoint(weights).items() if k != "path"})
    return plain


def test_a_checkpoint_new_to_this_machine_is_exported_on_the_first_predict(cli, weights, photos, tmp_path,
                                                                          monkeypatch):
    """The first predict on a checkpoint (one without the export imgcls train puts inside) exports and checks it
    (with decoding threads at work): the same rows in the same order as a serial pass; a bad flag is one line
    that leaves no output folder."""
    from imgcls import Predictor

    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))  # nothing exported yet
    weights = _without_export_inside(weights, tmp_path)
    out = tmp_path / "p"
    code, _, err = cli("predict", "--weights", weights, "--source", photos, "--out", out, "--batch-size", "2",
                       "--workers", "1", "--topk", "1")
    assert code == 0, err
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1  # exported and checked once
    serial = [(p.path, p.label or "", p.error or "") for p in Predictor(weights, batch_size=2).predict_stream(photos)]
    assert [(r["path"], r["predicted"], r["error"]) for r in read_csv(out / "predictions.csv")] == serial

    for bad, says in ((["--topk", "0"], "--topk 0"), (["--runtime", "tpu"], "--runtime 'tpu'")):
        code, _, err = cli("predict", "--weights", weights, "--source", photos, "--out", tmp_path / "q",
                           "--batch-size", "2", "--workers", "1", *bad)
        assert code == 2 and says in err and "Traceback" not in err, err
        assert not (tmp_path / "q").exists()


_WARM_PREDICT = """
import json, sys
from imgcls import Predictor
predictor = Predictor(sys.argv[1], device="cpu")
found = [(p.path, p.label, p.confidence) for p in predictor.predict(sys.argv[2:])]
print(json.dumps({"runtime": predictor.runtime, "torch": "torch" in sys.modules, "found": found}))
"""


def _predict_elsewhere(weights: Path, images: list[str], cache: Path) -> dict:
    """Predictor in a new Python process, as a later ``imgcls predict`` is."""
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _WARM_PREDICT, str(weights), *images], capture_output=True,
                          text=True, env={**os.environ, "IMGCLS_CACHE": str(cache)}, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_later_predict_runs_on_the_checked_export_without_loading_pytorch(weights, photos, tmp_path, monkeypatch):
    """Once a checkpoint's network was exported and checked here, the next process predicts on that export with
    ONNX Runtime alone (torch is never imported: about 3.5 s less start-up) and gives the same answers; a changed
    checkpoint file is never answered from the old export."""
    pytest.importorskip("onnxruntime")
    from imgcls import Predictor
    from imgcls.record.checkpoint import load_checkpoint, save_checkpoint

    cache = tmp_path / "cache"
    monkeypatch.setenv("IMGCLS_CACHE", str(cache))
    weights = _without_export_inside(weights, tmp_path)
    images = [str(p) for p in sorted(photos.rglob("*_0.png"))]
    first = Predictor(weights, device="cpu", runtime="onnxruntime")  # exports, checks, leaves the card
    expected = [(p.path, p.label, p.confidence) for p in first.predict(images)]
    later = _predict_elsewhere(weights, images, cache)
    assert later["runtime"] == "onnxruntime (cached ONNX)" and later["torch"] is False
    assert [tuple(row) for row in later["found"]] == expected

    changed = tmp_path / "changed.pt"
    checkpoint = load_checkpoint(weights)
    checkpoint["state_dict"]["classifier.bias"][0] += 100.0  # every image now looks like the first class
    save_checkpoint(changed, {k: v for k, v in checkpoint.items() if k != "path"})
    fresh = _predict_elsewhere(changed, images, cache)
    assert {label for _, label, _ in fresh["found"]} == {checkpoint["class_names"][0]}


def test_a_damaged_card_is_passed_over_and_written_again(weights, photos, tmp_path, monkeypatch):
    """A card is imgcls's own cache: one that is cut short, or lacks a field, is not trusted; the checkpoint is
    loaded as on a first call, with the same answers, and a good card replaces it."""
    pytest.importorskip("onnxruntime")
    from imgcls import Predictor
    from imgcls.runtime.cards import cached_card, card_file

    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    weights = _without_export_inside(weights, tmp_path)
    images = [str(p) for p in sorted(photos.rglob("*_2.png"))]
    expected = [(p.path, p.label) for p in Predictor(weights, device="cpu", runtime="onnxruntime").predict(images)]
    card = card_file(weights)
    good = json.loads(card.read_text())
    for damaged in (card.read_text()[:40], json.dumps(good | {"model": {"class_names": ["x"]}})):
        card.write_text(damaged)
        again = Predictor(weights, device="cpu", runtime="onnxruntime")
        assert [(p.path, p.label) for p in again.predict(images)] == expected
        assert cached_card(weights) is not None and cached_card(weights).card.to_dict() == good["model"]


def test_an_exported_onnx_file_predicts_without_loading_pytorch(weights, photos, tmp_path):
    """An .onnx file from imgcls export carries its labels and preprocessing: predict runs it with ONNX Runtime
    alone, with the answers the checkpoint gives."""
    pytest.importorskip("onnxruntime")
    from imgcls import Predictor

    onnx_path = export_onnx(weights, tmp_path / "model.onnx")
    images = [str(p) for p in sorted(photos.rglob("*_1.png"))]
    expected = [(p.path, p.label) for p in Predictor(weights, device="cpu", runtime="torch").predict(images)]
    later = _predict_elsewhere(onnx_path, images, tmp_path / "cache")
    assert later["runtime"] == "onnxruntime" and later["torch"] is False
    assert [(path, label) for path, label, _ in later["found"]] == expected


def test_a_trained_checkpoint_predicts_without_pytorch_here_and_wherever_it_is_copied(cli, tmp_path, monkeypatch):
    """imgcls train leaves the card of its final best.pt beside the export its evaluation checked, and puts both
    inside best.pt as well (again after `imgcls val --calibrate` rewrites it): the first predict after training
    runs on ONNX Runtime alone, and so does the file copied to a machine with an empty cache. torch.load reads
    the file as before, and a copy whose weights changed is answered from its own weights, never from the
    export inside."""
    pytest.importorskip("onnxruntime")
    import shutil
    import zipfile

    from imgcls.runtime.cards import cached_card, embedded_card
    from imgcls.record.checkpoint import load_checkpoint, save_checkpoint

    cache = tmp_path / "cache"
    monkeypatch.setenv("IMGCLS_CACHE", str(cache))
    _race_won_by(monkeypatch, "onnxruntime")  # `val --calibrate` races the runtimes again
    data = make_class_folders(tmp_path / "shapes", per_class=8)
    code, _, err = cli("train", "--data", data, "--model", "simple_cnn", "--no-pretrained", "--imgsz", "32",
                       "--epochs", "2", "--batch-size", "8", "--workers", "0", "--runtime", "onnxruntime",
                       "--project", tmp_path / "runs", "--name", "train")
    assert code == 0, err
    weights = tmp_path / "runs" / "train" / "weights" / "best.pt"
    assert cached_card(weights) is not None and embedded_card(weights) is not None
    code, _, err = cli("val", "--weights", weights, "--calibrate", "--workers", "0")  # rewrites best.pt
    assert code == 0, err
    carried = embedded_card(weights)
    assert carried is not None and carried.card.temperature == load_checkpoint(weights)["temperature"]
    images = [str(p) for p in sorted(data.rglob("*_1.png"))]
    later = _predict_elsewhere(weights, images, cache)
    assert later["runtime"].startswith("onnxruntime") and later["torch"] is False and len(later["found"]) == 3

    copied, other_cache = Path(shutil.copy(weights, tmp_path / "copied.pt")), tmp_path / "another machine's cache"
    elsewhere = _predict_elsewhere(copied, images, other_cache)
    assert elsewhere["runtime"] == "onnxruntime (ONNX inside the checkpoint)" and elsewhere["torch"] is False
    assert elsewhere["found"] == later["found"] and not other_cache.exists()  # nothing exported there

    checkpoint = load_checkpoint(copied)  # torch.load(weights_only=True), as for any checkpoint
    bias = [name for name in checkpoint["state_dict"] if name.endswith("bias")][-1]
    checkpoint["state_dict"][bias][0] += 100.0  # every image now looks like the first class
    changed = tmp_path / "changed.pt"
    save_checkpoint(changed, {k: v for k, v in checkpoint.items() if k != "path"})
    assert embedded_card(changed) is None  # torch.save writes no export inside
    with zipfile.ZipFile(copied) as old, zipfile.ZipFile(changed, "a") as new:  # the old export, put back by hand
        prefix = next(n for n in new.namelist() if n.endswith("/data.pkl"))[: -len("data.pkl")]
        for name in (n for n in old.namelist() if "/imgcls/" in n):
            new.writestr(prefix + name.split("/", 1)[1], old.read(name))
    assert embedded_card(changed) is None
    fresh = _predict_elsewhere(changed, images, tmp_path / "a third cache")
    assert {label for _, label, _ in fresh["found"]} == {checkpoint["class_names"][0]}


def _race_won_by(monkeypatch, winner: str) -> None:
    """The runtime race's outcome set by the test, not by this machine's speed at that moment (under load
    PyTorch can win a race ONNX Runtime usually wins, and then no export is carried)."""
    from imgcls.runtime import pytorch as runners

    def race(candidates, probe, choice, **_):
        runners._remember(choice, winner)
        return next(c for c in candidates if c.name.split(" (")[0] == winner)

    monkeypatch.setattr(runners, "_faster", race)


def test_a_checkpoint_trained_without_onnx_runtime_carries_its_export_too(cli, tmp_path, monkeypatch):
    """A run whose evaluation ran in PyTorch (on a GPU, or with --runtime torch) exports, checks and races its
    network on the CPU at its end, so its best.pt too predicts anywhere on ONNX Runtime alone; where PyTorch wins
    that race, nothing goes in. The race's winner is set here, not left to this machine's speed."""
    pytest.importorskip("onnxruntime")
    from imgcls.runtime import pytorch as runners
    from imgcls.runtime.cards import embedded_card

    data = make_class_folders(tmp_path / "shapes", per_class=8)
    images = [str(p) for p in sorted(data.rglob("*_1.png"))]
    for winner in (runners.ORT, runners.TORCH):
        _race_won_by(monkeypatch, winner)
        monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / f"cache {winner}"))
        code, _, err = cli("train", "--data", data, "--model", "simple_cnn", "--no-pretrained", "--imgsz", "32",
                           "--epochs", "2", "--batch-size", "8", "--workers", "0", "--runtime", "torch",
                           "--project", tmp_path / "runs", "--name", winner.split()[0])
        assert code == 0, err
        weights = tmp_path / "runs" / winner.split()[0] / "weights" / "best.pt"
        assert (embedded_card(weights) is not None) is (winner == runners.ORT)
    elsewhere = _predict_elsewhere(tmp_path / "runs" / "onnxruntime" / "weights" / "best.pt", images,
                                   tmp_path / "another machine's cache")
    assert elsewhere["runtime"] == "onnxruntime (ONNX inside the checkpoint)" and elsewhere["torch"] is False
    assert len(elsewhere["found"]) == len(images)


def test_predictor_api_paths_pil_numpy(weights, tmp_path):
    import imgcls

    image = shape_image("square", size=64, seed=4242)
    path = tmp_path / "square.png"
    image.save(path)
    array = np.asarray(image)
    predictor = imgcls.Predictor(weights, topk=2)
    assert predictor.class_names == list(CLASSES)

    results = predictor.predict([path, str(path), image, array, array.transpose(2, 0, 1) / 255.0,
                                 path.read_bytes(), tmp_path / "missing.png"])
    assert [r.path for r in results][2:6] == ["<PIL.Image 2>", "<array 3>", "<array 4>", "<bytes 5>"]
    first = results[0]
    assert first.ok and first.label == "square" and first.class_index == CLASSES.index("square")
    assert len(first.topk) == 2 and first.topk[0] == (first.label, first.confidence)
    for same in results[1:6]:  # the same picture given five ways gives the same answer
        assert same.label == first.label and same.confidence == pytest.approx(first.confidence, abs=1e-5)
    assert not results[6].ok and results[6].error == "file not found" and results[6].label is None
    assert results[0].to_dict()["topk"][0] == {"class": "square", "probability": first.confidence}

    single = predictor.predict(image)  # one item in, a list of one out
    assert len(single) == 1 and single[0].label == "square"
    grey = predictor.predict(np.asarray(image.convert("L")))[0]
    assert grey.ok
    bad_shape = predictor.predict(np.zeros((4, 5, 6, 7)))[0]
    assert "unsupported array shape" in bad_shape.error
    with pytest.raises(TypeError, match="expected a path"):
        predictor.predict([42])


def test_temperature_in_checkpoint_softens_probabilities(weights, tmp_path):
    from imgcls import Predictor
    from imgcls.record.checkpoint import load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint(weights)
    checkpoint["temperature"] = 4.0
    save_checkpoint(tmp_path / "calibrated.pt", checkpoint)
    image = shape_image("circle", size=64, seed=99)
    plain = Predictor(weights, topk=3).predict(image)[0]
    calibrated = Predictor(tmp_path / "calibrated.pt", topk=3).predict(image)[0]
    assert calibrated.label == plain.label
    assert calibrated.confidence < plain.confidence
    # softmax(z / T): log-probability gaps shrink by exactly the temperature
    gap = lambda p: np.log(p.topk[0][1]) - np.log(p.topk[1][1])  # noqa: E731
    assert gap(calibrated) == pytest.approx(gap(plain) / 4.0, rel=1e-3)


def test_pt_and_onnx_give_the_same_top1(cli, weights, photos, tmp_path):
    from imgcls import Predictor
    from imgcls.errors import ImgclsError

    onnx_path = export_onnx(weights, tmp_path / "model.onnx")
    torch_predictor, onnx_predictor = Predictor(weights), Predictor(onnx_path)
    assert onnx_predictor.model.runtime == "onnxruntime" and onnx_predictor.class_names == list(CLASSES)
    images = sorted((photos / "circle").glob("*.png")) + sorted((photos / "triangle").glob("*.png"))
    a, b = torch_predictor.predict(images), onnx_predictor.predict(images)
    assert [p.label for p in a] == [p.label for p in b]
    for x, y in zip(a, b):
        assert x.confidence == pytest.approx(y.confidence, abs=1e-4)

    code, _, err = cli("predict", "--weights", onnx_path, "--source", photos / "circle", "--out", tmp_path / "onnx",
                       "--workers", "0")
    assert code == 0, err
    assert "onnxruntime" in err
    assert [r["predicted"] for r in read_csv(tmp_path / "onnx" / "predictions.csv")] == [p.label for p in a[:3]]

    bare = export_onnx(weights, tmp_path / "bare.onnx", metadata=False)
    with pytest.raises(ImgclsError, match="no imgcls metadata"):
        Predictor(bare)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ImgclsError, match="cannot be loaded as an ONNX model"):
        Predictor(tmp_path / "junk.onnx")


def test_softmax_is_stable_and_honours_temperature():
    from imgcls.metrics import softmax

    probs = softmax(np.array([[1000.0, 0.0, -1000.0], [1.0, 1.0, 1.0]]))
    assert np.isfinite(probs).all() and probs[0, 0] == pytest.approx(1.0)
    assert probs[1] == pytest.approx([1 / 3] * 3)
    logits = np.array([[2.0, 0.0]])
    assert softmax(logits, 2.0)[0, 0] == pytest.approx(float(torch.softmax(torch.tensor([1.0, 0.0]), 0)[0]))


def test_concurrent_callers_share_batches_and_each_gets_its_own_rows():
    """What serve relies on: images sent together come back in fewer model calls, each to its own sender."""
    import threading

    from imgcls.runtime.inference import Batcher

    calls, started, release = [], threading.Event(), threading.Event()

    def model(x):
        calls.append(len(x))
        started.set()
        release.wait(5)
        return x * 10

    batched = Batcher(model, max_batch=32)
    answers = {}

    def ask(i):
        answers[i] = batched(np.full((1, 3), float(i), np.float32))

    first = threading.Thread(target=ask, args=(0,))
    first.start()
    started.wait(5)  # the first call is running: the next six queue up behind it
    others = [threading.Thread(target=ask, args=(i,)) for i in range(1, 7)]
    for t in others:
        t.start()
    while len(batched._queue) < 6:
        threading.Event().wait(0.01)
    release.set()
    for t in [first, *others]:
        t.join(5)
    assert calls == [1, 6]
    assert all(answers[i].tolist() == [[i * 10.0] * 3] for i in range(7))


def test_an_error_in_a_shared_batch_reaches_every_caller_and_the_next_call_runs():
    from imgcls.runtime.inference import Batcher

    def model(x):
        if (x < 0).any():
            raise ValueError("bad input")
        return x

    batched = Batcher(model)
    with pytest.raises(ValueError, match="bad input"):
        batched(np.full((2, 3), -1.0, np.float32))
    assert batched(np.ones((1, 3), np.float32)).tolist() == [[1.0, 1.0, 1.0]]
