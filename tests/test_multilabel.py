"""Several labels per image: a label file with several labels in a cell or one 0/1 column per label trains a
sigmoid head whose per-label thresholds (tuned on val) travel in the checkpoint's card."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import TINY
from imgcls.data.folders import discover
from imgcls.errors import ImgclsError
from imgcls.metrics import best_f1_thresholds, multilabel_report

LABELS = ("red", "blue")


def _squares(folder, n: int = 60, seed: int = 0) -> list[tuple[str, tuple[str, ...]]]:
    """Images with a red square on the left and/or a blue one on the right (or neither): (file name, labels)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(n):
        red, blue = bool(i % 4 in (1, 3)), bool(i % 4 in (2, 3))
        pixels = rng.integers(90, 140, size=(32, 32, 3), dtype=np.uint8)
        if red:
            pixels[8:22, 2:14] = (220, 30, 30)
        if blue:
            pixels[10:24, 18:30] = (30, 30, 220)
        name = f"img{i:03d}.png"
        Image.fromarray(pixels).save(folder / name)
        made.append((name, tuple(label for label, on in zip(LABELS, (red, blue)) if on)))
    return made


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


@pytest.fixture
def joined_csv(tmp_path):
    """labels.csv with the labels of each image joined by ';' in one column."""
    made = _squares(tmp_path / "data")
    return _write(tmp_path / "data" / "joined.csv", ["path", "labels"], [[n, ";".join(ls)] for n, ls in made])


@pytest.fixture
def columns_csv(tmp_path):
    """labels.csv with one 0/1 column per label."""
    made = _squares(tmp_path / "data")
    return _write(tmp_path / "data" / "columns.csv", ["image", *LABELS],
                  [[n, *(int(label in ls) for label in LABELS)] for n, ls in made])


# ------------------------------------------------------------------------- a user's session, end to end

def test_train_then_val_a_multi_label_model(cli, joined_csv, tmp_path):
    import torch

    code, _, err = cli("train", "--data", joined_csv, *TINY, "--epochs", "3", "--lr", "0.01",
                       "--project", tmp_path / "runs", "--name", "ml")
    assert code == 0, err
    run = tmp_path / "runs" / "ml"
    best = torch.load(run / "weights" / "best.pt", weights_only=True)
    assert best["class_names"] == ["blue", "red"]
    assert len(best["thresholds"]) == 2 and all(0 < t < 1 for t in best["thresholds"])
    assert best["rejection"] is not None  # --reject's spec, stored as for a single-label model
    results = json.loads((run / "results.json").read_text())
    assert results["dataset"]["multi_label"] is True
    assert sum(results["dataset"][split]["total"] for split in ("train", "val", "test")) == 60  # images, not labels
    test = results["test"]
    assert {"mAP", "sample_f1", "subset_accuracy", "hamming_loss", "label_cardinality"} <= set(test)
    assert test["per_class"]["red"]["threshold"] == pytest.approx(best["thresholds"][1], abs=1e-6)
    assert test["mAP"] >= 0.9, test  # red and blue squares are easy to tell apart
    assert results["epoch:1"]["valid info"]["multi_label"] is True
    report = (run / "report.html").read_text()
    assert "mAP" in report and "precision-recall per label" in report
    header = (run / "predictions_test.csv").read_text().splitlines()[0]
    assert header == "path,true,labels,p_blue,p_red"

    code, _, err = cli("val", "--weights", run / "weights" / "best.pt", "--split", "test", "--workers", "0")
    assert code == 0, err
    assert "mAP" in err and "sample-F1" in err
    metrics = json.loads((run / "val" / "metrics.json").read_text())
    assert metrics["mAP"] == pytest.approx(test["mAP"], abs=1e-6)
    assert (run / "val" / "predictions_test.csv").read_text().splitlines()[0] == header

    # the same model on a file of the other form: one 0/1 column per label, no split column (all its rows)
    made = _squares(tmp_path / "more", 8, seed=1)
    columns = _write(tmp_path / "more" / "columns.csv", ["image", *LABELS],
                     [[n, *(int(label in ls) for label in LABELS)] for n, ls in made])
    code, _, err = cli("val", "--weights", run / "weights" / "best.pt", "--data", columns, "--workers", "0",
                       "--multi-label")
    assert code == 0, err
    metrics = json.loads((run / "val2" / "metrics.json").read_text())
    assert metrics["split"] == "all" and metrics["images"] == 8
    code, _, err = cli("val", "--weights", run / "weights" / "best.pt", "--calibrate")
    assert code != 0 and "drop --calibrate" in err

    code, out, err = cli("compare", run, "--sort", "test_mAP", "--out", tmp_path / "cmp")
    assert code == 0, err
    assert "test mAP" in out and f"{test['mAP']:.4f}" in out


# ------------------------------------------------------------------------------------ reading the file

def test_both_forms_give_the_same_labels(joined_csv, columns_csv):
    joined = discover(joined_csv)
    columns = discover(columns_csv)
    assert joined.multi_label and columns.multi_label
    assert joined.class_names == ["blue", "red"] and columns.class_names == ["red", "blue"]  # file's order
    every = {rel: {columns.class_names[i] for i in label} for items in columns.items.values() for rel, label in items}
    assert every["img003.png"] == {"red", "blue"} and every["img000.png"] == set()
    assert columns.counts()["train"]["red"] > 0


def test_space_separated_tags_are_several_labels_but_two_word_names_are_one(tmp_path):
    made = _squares(tmp_path / "d", 12)
    planet = _write(tmp_path / "d" / "planet.csv", ["image_name", "tags"],
                    [[n, " ".join(ls) or "haze"] for n, ls in made])
    assert discover(planet).multi_label
    breeds = _write(tmp_path / "d" / "breeds.csv", ["path", "label"],
                    [[n, "golden retriever" if i % 2 else "german shepherd"] for i, (n, _) in enumerate(made)])
    assert not discover(breeds).multi_label
    assert discover(breeds, multi_label=True).class_names == ["german", "golden", "retriever", "shepherd"]


def test_the_files_of_chestxray14_and_uc_merced_are_read_as_they_come(tmp_path):
    made = _squares(tmp_path / "flat", 12)
    cxr, ucm = tmp_path / "cxr", tmp_path / "ucm"
    for i, (name, _) in enumerate(made):  # images spread over images_001/images, images_002/images...
        folder = cxr / f"images_{i % 2 + 1:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "flat" / name, folder / name)
        folder = ucm / "Images" / ("left" if i % 2 else "right")  # ids without extension, in class folders
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "flat" / name, folder / name)
    findings = {(): "No Finding", ("red",): "red", ("blue",): "blue", ("red", "blue"): "red|blue"}
    entry = _write(cxr / "Data_Entry_2017.csv",
                   ["Image Index", "Finding Labels", "Patient ID", "OriginalImagePixelSpacing[x", "y]"],
                   [[n, findings[ls], "7", "0.143", "0.143"] for n, ls in made])
    source = discover(entry)
    assert source.multi_label and source.class_names == ["No Finding", "blue", "red"]
    assert {rel: label for items in source.items.values() for rel, label in items}[
        "images_002/images/img003.png"] == (1, 2)
    grid = _write(ucm / "LandUse_Multilabeled.csv", ["IMAGE\\LABEL", *LABELS],
                  [[n[:-4], *(int(label in ls) for label in LABELS)] for n, ls in made])
    source = discover(grid, images=ucm / "Images")
    assert source.multi_label and source.class_names == list(LABELS)
    assert sum(len(items) for items in source.items.values()) == 12


def test_two_word_labels_read_as_one_class_say_how_to_read_them_as_several(tmp_path, log):
    made = _squares(tmp_path / "d", 12)
    tags = _write(tmp_path / "d" / "train_v2.csv", ["image_name", "tags"],
                  [[n[:-4], "clear primary" if i % 2 else "haze water"] for i, (n, _) in enumerate(made)])
    assert discover(tags).class_names == ["clear primary", "haze water"]
    assert "pass --multi-label if they are several labels" in log.text
    assert discover(tags, multi_label=True).class_names == ["clear", "haze", "primary", "water"]


def test_an_image_with_no_label_is_a_negative(tmp_path):
    made = _squares(tmp_path / "d", 12)
    path = _write(tmp_path / "d" / "l.csv", ["path", "labels"], [[n, "|".join(ls)] for n, ls in made])
    source = discover(path)
    assert source.multi_label
    assert sum(1 for items in source.items.values() for _, label in items if label == ()) == 3


@pytest.mark.parametrize("cell, message", [("2", "row 4: column 'blue' holds '2'; a label column holds 1"),
                                           ("", "row 4: column 'blue' holds ''; a label column holds 1")])
def test_a_bad_zero_one_cell_is_one_line(tmp_path, cell, message):
    made = _squares(tmp_path / "d", 12)
    rows = [[n, *(int(label in ls) for label in LABELS)] for n, ls in made]
    rows[2][2] = cell
    path = _write(tmp_path / "d" / "l.csv", ["file", *LABELS], rows)
    with pytest.raises(ImgclsError, match=message) as raised:
        discover(path)
    assert "\n" not in str(raised.value)


def test_bad_multi_label_rows_are_one_line_each(tmp_path):
    made = _squares(tmp_path / "d", 12)
    twice = _write(tmp_path / "d" / "twice.csv", ["path", "labels"],
                   [[n, ";".join(ls)] for n, ls in made] + [[made[3][0], "red"]])
    with pytest.raises(ImgclsError, match=r"row 14: img003.png already has the labels 'red;blue' \(row 5\), here "
                                          "'red'"):
        discover(twice)
    with pytest.raises(ImgclsError, match="--multi-label reads a label file"):
        discover(tmp_path / "d", multi_label=True)


# ------------------------------------------------------------------------------------- pure metrics

def test_multilabel_report_and_thresholds():
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    probs = np.array([[0.9, 0.2], [0.3, 0.8], [0.6, 0.45], [0.1, 0.5]])
    thresholds = best_f1_thresholds(targets, probs)
    # a: F1 peaks at 0.6, midway down to 0.3; b: at 0.45 (both positives, one false), midway down to 0.2
    assert thresholds[0] == pytest.approx(0.45) and thresholds[1] == pytest.approx(0.325)
    report = multilabel_report(targets, probs, ["a", "b"], thresholds, loss=0.2)
    assert report["mAP"] == pytest.approx((1 + (1 + 2 / 3) / 2) / 2)
    assert report["sample_f1"] == pytest.approx(0.75)  # the last image gets b, which it has not
    assert report["per_class"]["b"]["threshold"] == pytest.approx(0.325) and report["loss"] == 0.2
    at_half = multilabel_report(targets, probs, ["a", "b"])
    # at 0.5: image 3 misses b (0.45), image 4 gets b (0.5) wrongly
    assert at_half["subset_accuracy"] == pytest.approx(0.5)
    assert at_half["hamming_loss"] == pytest.approx(2 / 8)
    assert at_half["sample_f1"] == pytest.approx((1 + 1 + 2 / 3 + 0) / 4)
    assert at_half["label_cardinality"] == {"data": 1.0, "predicted": 1.0}
    assert at_half["per_class"]["b"]["precision"] == pytest.approx(0.5)


def test_check_labels_ranks_a_multi_label_file_with_cleanlab(cli, tmp_path):
    made = _squares(tmp_path / "d", 24)
    rows = [[n, ";".join(ls)] for n, ls in made]
    rows[3][1] = ""  # img003 has both squares; its row says none
    data = _write(tmp_path / "d" / "l.csv", ["path", "labels"], rows)
    code, _, err = cli("check", "--data", data, "--labels", "--imgsz", "64", "--no-near", "--out", tmp_path / "r")
    assert code == 0, err
    labels = json.loads((tmp_path / "r" / "check.json").read_text())["labels"]
    assert labels["multi_label"] is True and labels["images"] == 24
    assert labels["ranked"][0]["path"] == "img003.png" and labels["ranked"][0]["given"] == "(none)"


def test_export_relabel_is_refused_for_multi_label_data(cli, joined_csv, tmp_path):
    code, _, err = cli("check", "--data", joined_csv, "--labels", "--export-relabel", tmp_path / "edits.csv",
                       "--out", tmp_path / "r")
    assert code != 0 and "drop --export-relabel" in err and not (tmp_path / "edits.csv").exists()


def test_check_counts_the_images_that_have_each_label_not_each_label_set(cli, joined_csv, tmp_path):
    code, out, err = cli("check", "--data", joined_csv, "--no-near", "--out", tmp_path / "r")
    assert code == 0, err
    report = json.loads((tmp_path / "r" / "check.json").read_text())
    # 60 squares: i % 4 gives none, red, blue, both: 30 images have red, 30 have blue
    assert report["counts"] == {"all": {"blue": 30, "red": 30}} and report["multi_label"] is True
    assert report["label_sets"]["cardinality"] == 1.0 and report["label_sets"]["without_labels"] == 15
    assert report["label_sets"]["most_common"] == {"(none)": 15, "blue": 15, "red": 15, "red;blue": 15}
    assert "label " in out and "red;blue" not in out.split("labels per image")[0]
    assert "Images per label" in (tmp_path / "r" / "check.html").read_text()


def test_an_interrupted_multi_label_run_resumes_as_multi_label_with_its_loss(cli, joined_csv, tmp_path, monkeypatch):
    import os

    import torch

    real_save, writes = torch.save, []

    def stop_after_the_second_epoch(obj, f, *args, **kwargs):
        if "last.pt" in os.path.basename(str(f)):
            writes.append(f)
            if len(writes) == 3:
                raise KeyboardInterrupt  # Ctrl-C in epoch 3, as its checkpoint is written
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", stop_after_the_second_epoch)
    code, _, err = cli("train", "--data", joined_csv, *TINY, "--epochs", "4", "--lr", "0.01", "--asl",
                       "--project", tmp_path / "runs", "--name", "ml")
    assert code == 130 and "--resume" in err
    monkeypatch.setattr(torch, "save", real_save)
    run = tmp_path / "runs" / "ml"
    assert torch.load(run / "weights" / "last.pt", weights_only=True)["epoch"] == 2

    code, _, err = cli("train", "--resume", run)
    assert code == 0, err
    assert "Resuming" in err and "from epoch 3/4" in err
    results = json.loads((run / "results.json").read_text())
    assert [k for k in results if k.startswith("epoch:")] == [f"epoch:{i}" for i in range(1, 5)]
    assert results["dataset"]["multi_label"] is True and results["epoch:4"]["valid info"]["multi_label"] is True
    assert results["train parameters"]["asl"] is True  # the asymmetric loss, before and after the resume
    best = torch.load(run / "weights" / "best.pt", weights_only=True)
    assert len(best["thresholds"]) == 2 and results["test"]["mAP"] >= 0.9
    assert (run / "predictions_test.csv").read_text().splitlines()[0] == "path,true,labels,p_blue,p_red"


def test_asl_on_single_label_data_is_one_line(cli, tmp_path):
    from imagegen import make_class_folders

    data = make_class_folders(tmp_path / "data", per_class=4)
    code, _, err = cli("train", "--data", data, *TINY, "--epochs", "1", "--asl", "--project", tmp_path / "runs")
    assert code == 2 and "--asl: the asymmetric loss is for multi-label data" in err and "drop --asl" in err
    assert not (tmp_path / "runs").exists()
