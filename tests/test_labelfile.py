"""Label files as users have them: Kaggle's train.csv (ids without extensions), labels.csv with another label
header, a TSV with a split column, train_list.txt with a names file. Every bad row is one line naming the row."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import pytest

from conftest import TINY
from imagegen import make_class_folders, shape_image
from imgcls.errors import ImgclsError


@pytest.fixture
def flat(tmp_path) -> tuple[Path, list[tuple[str, str]]]:
    """A flat folder of images (no class folders) and (file name, class) for each."""
    folders = make_class_folders(tmp_path / "by_class", per_class=8)
    flat = tmp_path / "images"
    flat.mkdir()
    pairs = []
    for path in sorted(folders.rglob("*.png")):
        name = f"img_{len(pairs):03d}.png"
        shutil.copy(path, flat / name)
        pairs.append((name, path.parent.name))
    return flat, pairs


def _write(path: Path, rows: list[list[str]], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)
    return path


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def test_a_kaggle_csv_of_ids_trains_and_every_command_after_finds_its_images(cli, flat, tmp_path):
    images, pairs = flat
    table = _write(tmp_path / "train.csv", [["id", "label"], *[[Path(n).stem, c] for n, c in pairs]])
    before = _digest(images) + table.read_text()
    code, _, err = cli("train", "--data", table, "--images", images, *TINY, "--epochs", "2",
                       "--project", tmp_path / "runs")
    assert code == 0, err
    run = tmp_path / "runs" / "train"
    split = list(csv.DictReader(open(run / "split.csv", encoding="utf-8")))
    assert len(split) == len(pairs) and {r["split"] for r in split} == {"train", "val", "test"}
    assert {r["path"]: r["class"] for r in split} == dict(pairs)  # each id found as its one image file
    for args in (("val", "--weights", run / "weights" / "best.pt", "--split", "test", "--workers", "0"),
                 ("export", "--weights", run / "weights" / "best.pt"),
                 ("predict", "--weights", run / "weights" / "best.onnx", "--source", images, "--workers", "0",
                  "--out", tmp_path / "predict")):
        code, _, err = cli(*args)
        assert code == 0, (args[0], err)
    code, _, err = cli("check", "--data", table, "--images", images, "--no-near", "--out", tmp_path / "check")
    assert code == 0, err
    assert _digest(images) + table.read_text() == before  # the user's file and images are only read


def test_the_error_gallery_of_a_label_file_run_pictures_the_images_it_lists(cli, flat, tmp_path, log):
    import torch

    from imgcls.reporting.gallery import draw_run_errors

    images, pairs = flat
    table = _write(tmp_path / "train.csv", [["id", "label"], *[[Path(n).stem, c] for n, c in pairs]])
    code, _, err = cli("train", "--data", table, "--images", images, *TINY, "--epochs", "1",
                       "--project", tmp_path / "runs")
    assert code == 0, err
    run = tmp_path / "runs" / "train"
    predictions = run / "predictions_val.csv"
    rows = list(csv.reader(predictions.open(encoding="utf-8")))
    for row in rows[1:]:  # every val image a mistake, whatever the tiny network learnt
        row[1] = next(c for c in ("circle", "square") if c != row[2])
    _write(predictions, rows)
    log.clear()
    assert draw_run_errors(run, torch.device("cpu")) == run / "errors_val.png"
    assert "out of the error gallery" not in log.text  # read from --images, not from beside the CSV


def test_ids_are_not_matched_to_the_copies_imgcls_wrote_beside_the_file(cli, flat, tmp_path):
    images, pairs = flat
    table = _write(images / "train.csv", [["id", "label"], *[[Path(n).stem, c] for n, c in pairs]])
    runs = images / "runs"  # the default project, when the command runs in the data folder
    code, _, err = cli("train", "--data", table, *TINY, "--epochs", "1", "--project", runs)
    assert code == 0, err
    code, _, err = cli("predict", "--weights", runs / "train" / "weights" / "best.pt", "--source", images,
                       "--save-img", "--workers", "0", "--out", runs / "predict")
    assert code == 0, err
    assert (runs / "predict" / "images" / pairs[0][0]).exists()  # a copy under the image's own name
    code, _, err = cli("train", "--data", table, *TINY, "--epochs", "1", "--project", runs)
    assert code == 0, err
    split = list(csv.DictReader(open(runs / "train2" / "split.csv", encoding="utf-8")))
    assert {r["path"] for r in split} == {n for n, _ in pairs}


def test_another_label_header_a_tsv_with_a_split_column_and_a_list_with_names(flat, tmp_path):
    from imgcls.data.folders import discover

    images, pairs = flat
    breeds = _write(images / "labels.csv", [["filename", "breed"], *[[n, c] for n, c in pairs]])
    source = discover(breeds)
    assert source.class_names == ["circle", "square", "triangle"] and source.root == images
    assert sum(map(len, source.items.values())) == len(pairs) and source.split_made

    splits = ["train"] * 6 + ["valid"] + ["Test"]
    rows = [[n, c, splits[i % 8]] for i, (n, c) in enumerate(pairs)]
    source = discover(_write(tmp_path / "data.tsv", [["image", "class", "split"], *rows], "\t"), images=images)
    assert {s: len(v) for s, v in source.items.items()} == {"train": 18, "val": 3, "test": 3}
    assert not source.split_made and source.listed

    names = ["circle", "square", "triangle"]
    (images / "names.txt").write_text("\n".join(names) + "\n")
    (images / "train_list.txt").write_text("".join(f"./{n} {names.index(c)}\n" for n, c in pairs))
    source = discover(images / "train_list.txt")
    assert source.class_names == names
    labels = {rel: source.class_names[label] for items in source.items.values() for rel, label in items}
    assert labels == dict(pairs)


def test_kaggle_class_indices_take_their_names_from_a_json_beside_the_file(flat, tmp_path):
    import json

    from imgcls.data.folders import discover

    images, pairs = flat
    names = ["triangle", "circle", "square"]  # the map's order, not the alphabet's, is the class order
    folder = tmp_path / "cassava"
    folder.mkdir()
    (folder / "label_num_to_disease_map.json").write_text(json.dumps({str(i): n for i, n in enumerate(names)}))
    table = _write(folder / "train.csv", [["image_id", "label"], *[[n, names.index(c)] for n, c in pairs]])
    source = discover(table, images=images)
    assert source.class_names == names
    assert {rel: names[label] for items in source.items.values() for rel, label in items} == dict(pairs)
    (folder / "label_num_to_disease_map.json").write_text(json.dumps({"0": "triangle", "1": "circle"}))
    with pytest.raises(ImgclsError, match=r"row \d+: label 2 is not an index of the 2 names in "
                                          "label_num_to_disease_map.json"):
        discover(table, images=images)


@pytest.mark.parametrize("case, message", [
    ("missing", "row 3: image nope.png not found under"),
    ("no label", "row 2: 'img_000.png' has no label"),
    ("two labels", "row 4: img_000.png already has the label 'circle' (row 2)"),
    ("header", "cannot tell which column holds the image paths and which the labels (header: a, b, c); name them "
               "with --columns"),
    ("ambiguous id", "row 2: id 'twin' matches 2 files"),
    ("split", "row 2: split 'holdout' is not train, val or test"),
])
def test_each_bad_row_is_one_line_that_names_it(cli, flat, tmp_path, case, message):
    images, pairs = flat
    good = [[n, c] for n, c in pairs[1:]]
    rows = {
        "missing": [["path", "label"], [pairs[0][0], "circle"], ["nope.png", "circle"], *good],
        "no label": [["path", "label"], [pairs[0][0], ""], *good],
        "two labels": [["path", "label"], [pairs[0][0], "circle"], *good[:1], [pairs[0][0], "square"], *good[1:]],
        "header": [["a", "b", "c"], *[[n, c, "x"] for n, c in pairs]],
        "ambiguous id": [["id", "label"], ["twin", "circle"], *good],
        "split": [["path", "label", "split"], [pairs[0][0], "circle", "holdout"], *[[*r, "train"] for r in good]],
    }[case]
    if case == "ambiguous id":
        shape_image("circle").save(images / "twin.png")
        shape_image("circle").convert("RGB").save(images / "twin.jpg")
    table = _write(tmp_path / "labels.csv", rows)
    code, _, err = cli("train", "--data", table, "--images", images, *TINY, "--epochs", "1",
                       "--project", tmp_path / "runs")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert message in err and "labels.csv" in err
    assert not (tmp_path / "runs").exists()


def test_an_unreadable_image_is_named_with_its_row_and_training_goes_on(cli, flat, tmp_path):
    images, pairs = flat
    (images / pairs[5][0]).write_bytes(b"not a picture")
    table = _write(tmp_path / "labels.csv", [["path", "label"], *[[n, c] for n, c in pairs]])
    code, _, err = cli("train", "--data", table, *TINY, "--images", images, "--epochs", "1",
                       "--project", tmp_path / "runs")
    assert code == 0, err
    assert f"row 7: {pairs[5][0]} cannot be used" in err


def test_columns_names_them_and_a_wrong_name_is_one_line(cli, flat, tmp_path):
    from imgcls.data.folders import discover

    images, pairs = flat
    table = _write(tmp_path / "odd.csv", [["picture", "kind"], *[[n, c] for n, c in pairs]])
    assert discover(table, images=images, columns="picture,kind").class_names == ["circle", "square", "triangle"]
    code, _, err = cli("train", "--data", table, "--images", images, "--columns", "picture,type", *TINY,
                       "--epochs", "1", "--project", tmp_path / "runs")
    assert code == 2 and "--columns picture,type" in err and "picture, kind" in err


def test_a_label_file_that_is_not_there_is_one_line(cli, tmp_path):
    code, _, err = cli("train", "--data", tmp_path / "train.csv", *TINY, "--project", tmp_path / "runs")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "train.csv: file not found" in err


def test_images_or_columns_beside_a_folder_is_one_line(cli, flat_data, tmp_path):
    for flag, value in (("--images", tmp_path), ("--columns", "path,label")):
        for command in (("train", *TINY, "--epochs", "1", "--project", tmp_path / "runs"),
                        ("check", "--no-near", "--out", tmp_path / "checked")):
            code, _, err = cli(command[0], "--data", flat_data, flag, value, *command[1:])
            assert code == 2 and len(err.strip().splitlines()) == 1, err
            assert f"{flag} {value}: is for a label file" in err and f"drop {flag}" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "checked").exists()


def test_tune_reads_a_label_file_with_its_images_and_columns(flat, tmp_path):
    from imgcls.engine.tune import _base_settings

    images, pairs = flat
    table = _write(tmp_path / "odd.csv", [["picture", "kind"], *[[n, c] for n, c in pairs]])
    base = _base_settings(str(table), "simple_cnn", 0, {"images": str(images), "columns": "picture,kind",
                                                        "pretrained": False})
    assert base.columns == "picture,kind" and base.images == str(images)


def test_val_takes_a_label_file_with_its_images_folder_and_columns(cli, flat, tmp_path):
    import json

    images, pairs = flat
    table = _write(tmp_path / "train.csv", [["path", "label"], *[[n, c] for n, c in pairs]])
    code, _, err = cli("train", "--data", table, "--images", images, *TINY, "--epochs", "1",
                       "--project", tmp_path / "runs")
    assert code == 0, err
    best = tmp_path / "runs" / "train" / "weights" / "best.pt"
    (tmp_path / "elsewhere").mkdir()
    odd = _write(tmp_path / "elsewhere" / "odd.csv", [["picture", "kind"], *[[n, c] for n, c in pairs]])
    code, _, err = cli("val", "--weights", best, "--data", odd, "--images", images, "--columns", "picture,kind",
                       "--workers", "0")
    assert code == 0, err
    metrics = json.loads((tmp_path / "runs" / "train" / "val" / "metrics.json").read_text())
    assert metrics["split"] == "all" and metrics["images"] == len(pairs)
    code, _, err = cli("val", "--weights", best, "--images", images)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no --data is given; drop --images" in err
