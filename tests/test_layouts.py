"""Data folders as they come from Kaggle, archives and notebooks: split folders under any common name, a
validation split carved from train, hidden and system entries ignored, leakage across a given split named."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from conftest import TINY
from imagegen import make_class_folders, shape_image
from imgcls.data.check import run_check
from imgcls.data.folders import discover, split_of
from imgcls.errors import ImgclsError

CLASSES = ("glioma", "meningioma", "pituitary")


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def kaggle_medical(root: Path) -> dict[str, str]:
    """Training/<class>/ + Testing/<class>/ as the Kaggle brain-tumour set ships, with the debris of a
    notebook and a Mac archive, one identical image and one resized copy on both sides of the split."""
    make_class_folders(root / "Training", classes=CLASSES, per_class=14, size=64)
    make_class_folders(root / "Testing", classes=CLASSES, per_class=4, size=64, seed=7)
    checkpoints = root / "Training" / ".ipynb_checkpoints"
    checkpoints.mkdir()
    shape_image("circle", 64, 1).save(checkpoints / "glioma_0-checkpoint.png")
    (root / "__MACOSX" / "Training" / "glioma").mkdir(parents=True)
    (root / "__MACOSX" / "Training" / "glioma" / "._glioma_0.png").write_bytes(b"\x00\x05\x16\x07 apple double")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "Training" / "meningioma" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    shutil.copyfile(root / "Training" / "glioma" / "glioma_3.png", root / "Testing" / "glioma" / "same.png")
    with Image.open(root / "Training" / "pituitary" / "pituitary_5.png") as original:
        original.resize((56, 56), Image.BICUBIC).save(root / "Testing" / "pituitary" / "resized.jpg", quality=85)
    return {"identical": "Training/glioma/glioma_3.png = Testing/glioma/same.png",
            "near": "Testing/pituitary/resized.jpg"}


def test_training_testing_layout_trains_with_the_real_classes(cli, tmp_path):
    root = tmp_path / "brain_tumor"
    planted = kaggle_medical(root)
    code, _, err = cli("train", "--data", root, *TINY, "--epochs", "1", "--project", tmp_path / "runs")
    assert code == 0, err
    run = tmp_path / "runs" / "train"
    assert json.loads((run / "class_indices.json").read_text()) == {str(i): c for i, c in enumerate(CLASSES)}

    rows = _rows(run / "split.csv")
    by_split = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    assert all(r["path"].startswith("Training/") for r in by_split["train"] + by_split["val"])
    assert all(r["path"].startswith("Testing/") for r in by_split["test"]) and len(by_split["test"]) == 14
    for c in CLASSES:  # stratified: every class in val, about 15% of Training
        assert sum(r["class"] == c for r in by_split["val"]) == 2
    assert not any(".ipynb_checkpoints" in r["path"] or "Thumbs" in r["path"] for r in rows)
    assert "a seeded, stratified 15% validation split carved from Training/ (seed 0" in err

    block = err[err.index("WARNING: data check"):err.index("`imgcls check --data")]
    assert "2 group(s) (4 images) of identical or near-identical images in more than one split (leakage)" in block
    assert "Training/glioma/glioma_3.png = Testing/glioma/same.png" in block and planted["near"] in block
    assert "Ignored 4 hidden, system or imgcls output file(s)/folder(s): .DS_Store, Training/.ipynb_checkpoints/, " \
           "Training/meningioma/Thumbs.db, __MACOSX/" in err

    results = json.loads((run / "results.json").read_text())
    assert results["dataset"]["class_names"] == list(CLASSES)
    assert results["test"]["split"] == "test" and sum(results["dataset"]["test"][c] for c in CLASSES) == 14
    # imgcls val finds the same splits from the run folder alone.
    code, _, err = cli("val", "--weights", run / "weights" / "best.pt", "--split", "test", "--workers", "0")
    assert code == 0, err
    metrics = json.loads((run / "val" / "metrics.json").read_text())
    assert metrics["split"] == "test" and sum(metrics["per_class"][c]["support"] for c in CLASSES) == 14


def test_check_names_hidden_entries_once_and_the_leakage(tmp_path):
    root = tmp_path / "brain_tumor"
    kaggle_medical(root)
    report = run_check(root, write=False)
    assert report.layout == "splits" and report.split_folders == {"train": "Training/", "test": "Testing/"}
    assert list(report.counts) == ["train", "test"] and list(report.counts["train"]) == list(CLASSES)
    hidden = [f for f in report.findings if f.kind == "hidden"]
    assert len(hidden) == 1 and hidden[0].severity == "info"
    assert hidden[0].paths == [".DS_Store", "Training/.ipynb_checkpoints", "Training/meningioma/Thumbs.db",
                               "__MACOSX"]
    leaks = sorted((f.details["match"], tuple(f.paths)) for f in report.findings if f.kind == "leakage")
    assert leaks == [("exact", ("Training/glioma/glioma_3.png", "Testing/glioma/same.png")),
                     ("near", ("Training/pituitary/pituitary_5.png", "Testing/pituitary/resized.jpg"))]
    assert not any(f.severity == "error" and f.kind == "layout" for f in report.findings)
    assert any("carves a seeded, stratified validation split from Training/" in f.message for f in report.findings)


@pytest.mark.parametrize("name, split", [
    ("train", "train"), ("Training", "train"), ("TRAIN", "train"), ("seg_train", "train"), ("training_set", "train"),
    ("train-images", "train"), ("val", "val"), ("Valid", "val"), ("validation", "val"), ("dev", "val"),
    ("seg_test", "test"), ("Testing", "test"), ("test_set", "test"), ("test", "test"),
    ("seg_pred", None), ("test_tube", None), ("trains", None), ("cats", None), ("train_val", None),
    ("chest_xray", None)])
def test_split_folder_names(name, split):
    assert split_of(name) == split


def test_train_and_test_without_val_carves_a_seeded_stratified_split(tmp_path):
    root = tmp_path / "data"
    make_class_folders(root / "train", per_class=20)
    make_class_folders(root / "test", per_class=3, seed=4)
    a, b, c = discover(root, seed=0), discover(root, seed=0), discover(root, seed=1)
    assert a.items == b.items and a.items["val"] != c.items["val"]
    assert a.split_made and a.given == ("train", "test")
    assert [len([y for _, y in a.items["val"] if y == k]) for k in range(3)] == [3, 3, 3]  # 15% of 20 per class
    assert sorted(rel for rel, _ in a.items["train"] + a.items["val"]) == \
        sorted(str(p.relative_to(root)) for p in (root / "train").rglob("*.png"))
    assert len(a.items["test"]) == 9
    assert len(discover(root, "0.8,0.2").items["val"]) == 12  # --split's val fraction of train/
    with pytest.raises(ImgclsError, match="has no validation folder and --split 0.8,0,0.2 leaves none"):
        discover(root, "0.8,0,0.2")


def test_a_train_folder_alone_is_split_like_a_single_tree(tmp_path):
    make_class_folders(tmp_path / "d" / "Train", per_class=20)
    source = discover(tmp_path / "d")
    assert source.class_names == ["circle", "square", "triangle"]
    assert [len(source.items[s]) for s in ("train", "val", "test")] == [42, 9, 9]


def test_a_class_named_test_full_of_images_stays_a_class(tmp_path):
    root = make_class_folders(tmp_path / "d", classes=("bus", "test", "train"), per_class=6)
    source = discover(root)
    assert source.class_names == ["bus", "test", "train"] and not source.given


def test_nested_kaggle_folders_and_a_wrapper_folder(tmp_path):
    root = tmp_path / "intel"
    make_class_folders(root / "archive" / "seg_train" / "seg_train", per_class=8)
    make_class_folders(root / "archive" / "seg_test" / "seg_test", per_class=3, seed=2)
    (root / "archive" / "seg_pred" / "seg_pred").mkdir(parents=True)
    shape_image("circle").save(root / "archive" / "seg_pred" / "seg_pred" / "1.png")
    source = discover(root)
    assert source.class_names == ["circle", "square", "triangle"]
    assert source.items["test"][0][0].startswith("archive/seg_test/seg_test/circle/")
    report = run_check(root, near=False, write=False)
    assert report.split_folders == {"train": "archive/seg_train/seg_train/", "test": "archive/seg_test/seg_test/"}
    unused = next(f for f in report.findings if f.kind == "unused")
    assert unused.paths == ["archive/seg_pred"]


def test_two_folders_for_one_split_is_one_error_line(cli, tmp_path):
    root = tmp_path / "d"
    make_class_folders(root / "train", per_class=4)
    make_class_folders(root / "Training", per_class=4, seed=1)
    make_class_folders(root / "val", per_class=2, seed=2)
    code, _, err = cli("train", "--data", root, *TINY, "--project", tmp_path / "runs")
    assert code == 2 and not (tmp_path / "runs").exists()
    assert err.strip().splitlines() == [f"imgcls: error: --data {root}: Training/ and train/ both look like the train "
                                        "split; keep one (or rename the other)"]


def test_mac_archive_debris_is_not_a_class(tmp_path):
    root = make_class_folders(tmp_path / "d", classes=("ants", "bees"), per_class=5, size=64)
    (root / "__MACOSX" / "ants").mkdir(parents=True)
    (root / "__MACOSX" / "ants" / "._ants_0.png").write_bytes(b"\x00\x05\x16\x07")
    (root / "ants" / ".DS_Store").write_bytes(b"Bud1")
    (root / "ants" / "._ants_1.png").write_bytes(b"\x00\x05\x16\x07")
    source = discover(root)
    assert source.class_names == ["ants", "bees"] and sum(len(v) for v in source.items.values()) == 10
    report = run_check(root, near=False, write=False)
    assert [f.kind for f in report.findings] == ["hidden"]
    assert report.findings[0].paths == ["__MACOSX", "ants/.DS_Store", "ants/._ants_1.png"]



def test_imgcls_output_inside_the_data_folder_is_never_a_class(cli, flat_data, tmp_path):
    """`imgcls predict --save-img` run in the data folder leaves runs/predict/ (labelled copies) there; the next
    train does not read it as a class."""
    code, _, err = cli("train", "--data", flat_data, *TINY, "--epochs", "1", "--project", tmp_path / "runs")
    assert code == 0, err
    code, _, err = cli("predict", "--weights", tmp_path / "runs" / "train" / "weights" / "best.pt", "--source",
                       flat_data / "circle", "--save-img", "--workers", "0", "--out", flat_data / "runs" / "predict")
    assert code == 0, err
    assert any((flat_data / "runs" / "predict" / "images").iterdir())
    code, _, err = cli("train", "--data", flat_data, *TINY, "--epochs", "1", "--project", tmp_path / "runs")
    assert code == 0, err
    results = json.loads((tmp_path / "runs" / "train2" / "results.json").read_text())
    assert results["dataset"]["class_names"] == ["circle", "square", "triangle"]
    assert "imgcls output" in err and "runs/" in err
