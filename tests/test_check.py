"""imgcls check: planted problems are found and named, clean data gives nothing, outputs are usable."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from conftest import TINY
from imagegen import make_class_folders, make_split_folders, shape_image

from imgcls.data import check

SIZE = 64  # clean images; above the tiny limit of --imgsz 224 (56 px)


def plant_problems(root: Path) -> dict[str, str]:
    """A train/val/test set of shape PNGs with one of each problem; returns kind -> planted relative path."""
    make_split_folders(root, size=SIZE)
    planted = {}

    buffer = root / "train" / "circle" / "corrupt.jpg"
    shape_image("circle", SIZE, 999).save(buffer, "JPEG", quality=90)
    data = buffer.read_bytes()
    buffer.write_bytes(data[: len(data) // 2])  # cut off mid-scan: a truncated download
    planted["corrupt"] = "train/circle/corrupt.jpg"

    (root / "train" / "square" / "notes.jpg").write_text("these are my notes, not a picture\n")
    planted["text"] = "train/square/notes.jpg"

    placeholder = Image.new("RGB", (300, 300), "white")
    ImageDraw.Draw(placeholder).text((90, 140), "image not found", fill="black")
    placeholder.save(root / "train" / "triangle" / "imageNotFound.gif")
    planted["gif"] = "train/triangle/imageNotFound.gif"

    shutil.copyfile(root / "train" / "circle" / "circle_0.png", root / "test" / "circle" / "copy.png")
    planted["leak_train"], planted["leak_test"] = "train/circle/circle_0.png", "test/circle/copy.png"

    with Image.open(root / "train" / "square" / "square_3.png") as original:
        original.resize((52, 52), Image.BICUBIC).save(root / "train" / "triangle" / "resized.jpg", "JPEG", quality=75)
    planted["near_original"], planted["near_copy"] = "train/square/square_3.png", "train/triangle/resized.jpg"

    shape_image("circle", 12, 555).save(root / "train" / "circle" / "tiny.png")
    planted["tiny"] = "train/circle/tiny.png"

    shape_image("square", SIZE, 777).save(root / "val" / "square" / "really_png.jpg", "PNG")
    planted["png_as_jpg"] = "val/square/really_png.jpg"
    return planted


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def kinds_of(report_json: dict, path: str) -> set[tuple[str, str]]:
    return {(f["severity"], f["kind"]) for f in report_json["findings"] if path in f["paths"]}


@pytest.fixture
def planted(tmp_path):
    root = tmp_path / "messy"
    return root, plant_problems(root)


def test_every_planted_problem_is_found_and_named(cli, planted, tmp_path):
    root, p = planted
    code, out, _ = cli("check", "--data", root, "--out", tmp_path / "report")
    assert code == 0  # without --strict a report is not a failure
    report = json.loads((tmp_path / "report" / "check.json").read_text())

    assert ("error", "unreadable") in kinds_of(report, p["corrupt"])
    assert ("error", "unreadable") in kinds_of(report, p["text"])
    text_finding = next(f for f in report["findings"] if p["text"] in f["paths"])
    assert "text file" in text_finding["message"]
    assert ("warning", "placeholder") in kinds_of(report, p["gif"])
    assert ("error", "leakage") in kinds_of(report, p["leak_test"])
    leak = next(f for f in report["findings"] if f["kind"] == "leakage")
    assert sorted(leak["paths"]) == sorted([p["leak_train"], p["leak_test"]])
    assert leak["details"]["match"] == "exact" and leak["details"]["splits"] == ["train", "test"]
    conflict = next(f for f in report["findings"] if f["kind"] == "label_conflict")
    assert sorted(conflict["paths"]) == sorted([p["near_original"], p["near_copy"]])
    assert conflict["details"]["match"] == "near" and conflict["details"]["classes"] == ["square", "triangle"]
    assert ("warning", "tiny") in kinds_of(report, p["tiny"])
    assert ("warning", "extension") in kinds_of(report, p["png_as_jpg"])

    # Nothing else is reported: every finding points at a planted file (the GIF is also a palette-mode image).
    planted_paths = set(p.values())
    for finding in report["findings"]:
        assert set(finding["paths"]) & planted_paths, finding
    assert report["errors"] == 4  # corrupt, text, leakage, label conflict

    # The console names the culprits too.
    for key in ("corrupt", "text", "gif", "leak_test", "near_copy", "tiny", "png_as_jpg"):
        assert p[key] in out, key
    assert "4 error(s)" in out
    assert report["counts"]["train"]["circle"] == 11  # 10 + tiny; the corrupt file is not counted


def test_clean_folders_give_no_findings(cli, tmp_path):
    for root in (make_split_folders(tmp_path / "split", size=SIZE),
                 make_class_folders(tmp_path / "tree", per_class=15, size=SIZE)):
        code, out, _ = cli("check", "--data", root, "--out", tmp_path / f"report_{root.name}", "--strict")
        report = json.loads((tmp_path / f"report_{root.name}" / "check.json").read_text())
        assert report["findings"] == [], report["findings"]
        assert code == 0 and "No problems found." in out
        assert report["imbalance_ratio"] == 1.0


def test_strict_exit_code_and_outputs(cli, planted, tmp_path):
    root, p = planted
    code, _, _ = cli("check", "--data", root, "--out", tmp_path / "r", "--strict")
    assert code == 1
    page = (tmp_path / "r" / "check.html").read_text()
    assert "http" not in page.lower()  # self-contained: nothing to fetch
    assert "<link" not in page and "<script" not in page
    assert page.count("data:image/jpeg;base64,") >= 4  # thumbnails of the leak pair and the near pair at least
    assert "data:image/png;base64," in page  # the class-count chart
    assert "cannot decode" in page  # bad files get a box instead of a thumbnail
    assert p["corrupt"] in page and p["near_copy"] in page
    chart = Image.open(tmp_path / "r" / "class_counts.png")
    assert chart.format == "PNG" and chart.width > 200


def test_export_clean_copy_trains_and_source_is_untouched(cli, planted, tmp_path):
    root, p = planted
    before = tree_digest(root)
    clean = tmp_path / "clean"
    code, out, _ = cli("check", "--data", root, "--out", tmp_path / "r", "--export-clean", clean)
    assert code == 0 and "Clean copy" in out
    assert tree_digest(root) == before
    kept = set(tree_digest(clean))
    assert p["corrupt"] not in kept and p["text"] not in kept and p["gif"] not in kept
    assert p["leak_test"] in kept and p["leak_train"] not in kept  # the leaked copy leaves train
    assert p["tiny"] in kept and p["png_as_jpg"] in kept  # usable files stay
    report = json.loads((tmp_path / "r" / "check.json").read_text())
    assert report["export_clean"]["dropped"]["leakage"] == [p["leak_train"]]

    code, out2, _ = cli("check", "--data", clean, "--out", tmp_path / "r2", "--strict", "--no-near")
    assert code == 0, out2  # nothing left that is an error by content hash

    code, _, err = cli("train", "--data", clean, *TINY, "--epochs", "1", "--project", tmp_path / "runs")
    assert code == 0, err
    assert (tmp_path / "runs" / "train" / "weights" / "best.pt").exists()


def test_export_clean_refuses_a_used_folder(cli, planted, tmp_path):
    root, _ = planted
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    code, _, err = cli("check", "--data", root, "--export-clean", used)
    assert code == 2
    assert err.strip().splitlines() == [f"imgcls: error: --export-clean {used}: already exists and is not empty; "
                                        "choose a new folder"]
    assert (used / "keep.txt").read_text() == "mine"
    code, _, err = cli("check", "--data", root, "--export-clean", root / "train" / "clean")
    assert code == 2 and "must be outside --data" in err


def test_single_tree_duplicates_and_imbalance(cli, tmp_path):
    root = make_class_folders(tmp_path / "tree", per_class=6, size=SIZE, classes=("circle", "square"))
    make_class_folders(tmp_path / "more", per_class=20, size=SIZE, classes=("circle",), seed=3)
    for f in (tmp_path / "more" / "circle").iterdir():
        shutil.copyfile(f, root / "circle" / f"more_{f.name}")
    shutil.copyfile(root / "square" / "square_1.png", root / "square" / "square_1 copy.png")
    gray = Image.open(root / "square" / "square_2.png").convert("L")
    gray.save(root / "square" / "gray.png")
    code, out, _ = cli("check", "--data", root, "--out", tmp_path / "r", "--strict")
    report = json.loads((tmp_path / "r" / "check.json").read_text())
    assert report["layout"] == "single tree" and code == 0  # warnings only
    dup = next(f for f in report["findings"] if f["kind"] == "duplicate")
    assert sorted(dup["paths"]) == ["square/square_1 copy.png", "square/square_1.png"]
    assert "random split" in dup["message"]
    imbalance = next(f for f in report["findings"] if f["kind"] == "imbalance")
    assert report["imbalance_ratio"] == pytest.approx(26 / 8)  # circle 26, square 8
    assert "circle 26" in imbalance["message"] and "--balance" in imbalance["message"]
    mode = next(f for f in report["findings"] if f["kind"] == "colour_mode")
    assert mode["paths"] == ["square/gray.png"] and mode["severity"] == "info"


def test_exif_rotation_is_reported(tmp_path):
    root = make_class_folders(tmp_path / "d", per_class=3, size=SIZE, classes=("a", "b"))
    image = shape_image("circle", SIZE, 4242)
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(root / "a" / "rotated.jpg", "JPEG", exif=exif)
    report = check.run_check(root, write=False)
    rotation = next(f for f in report.findings if f.kind == "exif_rotation")
    assert rotation.paths == ["a/rotated.jpg"] and rotation.details["orientations"] == [6]


def test_16_bit_greyscale_scans_are_checked_and_trained_not_skipped(cli, tmp_path):
    """Scans often come as 16-bit greyscale PNGs (Pillow's "I;16", whose colours Pillow cannot count directly):
    the data check reads them like any image, so `check` reports none unreadable and `train` skips none."""
    import numpy as np

    root = make_class_folders(tmp_path / "scans", per_class=6, size=SIZE)
    for path in root.rglob("*.png"):
        with Image.open(path) as image:
            grey = np.asarray(image.convert("L"), dtype=np.uint16) * 16  # 12-bit values, as a scanner writes
        Image.fromarray(grey).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"
    code, _, err = cli("check", "--data", root, "--out", tmp_path / "report")
    report = json.loads((tmp_path / "report" / "check.json").read_text())
    assert code == 0 and not [f for f in report["findings"] if f["kind"] == "unreadable"], report["findings"]
    code, _, err = cli("train", "--data", root, *TINY, "--epochs", "1", "--project", tmp_path / "runs")
    assert code == 0, err
    assert "skipped files" not in json.loads((tmp_path / "runs" / "train" / "results.json").read_text())["dataset"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_among_the_images_is_named_not_waited_on(cli, tmp_path):
    """Reading a named pipe waits for a writer forever: check and train name it and go on."""
    import threading

    root = make_class_folders(tmp_path / "d", per_class=6, size=SIZE)
    pipe = root / "circle" / "pipe.png"
    os.mkfifo(pipe)
    waited, done = [], threading.Event()

    def writer():  # a reader stuck on the pipe gets its end of file here: the test then fails rather than hangs
        while not done.wait(0.2):
            try:
                os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))  # succeeds only while someone reads
                waited.append(True)
            except OSError:
                pass

    threading.Thread(target=writer, daemon=True).start()
    try:
        code, _, err = cli("check", "--data", root, "--out", tmp_path / "report")
        unreadable = [f for f in json.loads((tmp_path / "report" / "check.json").read_text())["findings"]
                      if f["kind"] == "unreadable"]
        trained, _, train_err = cli("train", "--data", root, *TINY, "--epochs", "1", "--project", tmp_path / "runs")
    finally:
        done.set()
    assert not waited
    assert code == 0 and [f["paths"] for f in unreadable] == [["circle/pipe.png"]], err
    assert "not a regular file" in unreadable[0]["message"]
    assert trained == 0 and "circle/pipe.png: not a regular file" in train_err, train_err


def test_unreadable_files_never_leave_a_class_out_of_the_split_imgcls_makes(cli, tmp_path):
    """imgcls splits a one-tree folder before its data check finds the unreadable files; when those were all of a
    class's validation images, the split is made again over the usable files, so validation still holds every
    class (and without unusable files the split stays exactly as before)."""
    import csv

    from imgcls.data.folders import discover

    root = make_class_folders(tmp_path / "d", per_class=8, size=SIZE)
    first = discover(root, seed=0)
    circle = first.class_names.index("circle")
    val_circles = [rel for rel, label in first.items["val"] if label == circle]
    for rel in val_circles:
        (root / rel).write_bytes(b"not an image")
    code, _, err = cli("train", "--data", root, *TINY, "--epochs", "1", "--project", tmp_path / "runs")
    assert code == 0, err
    with open(tmp_path / "runs" / "train" / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {row["class"] for row in rows if row["split"] == "val"} == set(first.class_names)
    assert not {row["path"] for row in rows} & set(val_circles)
    clean = make_class_folders(tmp_path / "clean", per_class=8, size=SIZE)
    code, _, err = cli("train", "--data", clean, *TINY, "--epochs", "1", "--project", tmp_path / "runs", "--name", "c")
    with open(tmp_path / "runs" / "c" / "split.csv", newline="") as f:
        kept = {(row["path"], row["split"]) for row in csv.DictReader(f)}
    assert code == 0 and kept == {(rel, s) for s, items in discover(clean, seed=0).items.items() for rel, _ in items}


def test_train_prints_one_compact_block_and_skips_bad_files(cli, planted, tmp_path):
    root, p = planted
    code, _, err = cli("train", "--data", root, *TINY, "--epochs", "1", "--project", tmp_path / "runs")
    assert code == 0, err
    blocks = [chunk for chunk in err.split("\n") if chunk.startswith("WARNING: data check")]
    assert len(blocks) == 1
    block = err[err.index("WARNING: data check"): err.index("imgcls check --data")]
    assert p["corrupt"] in block and p["text"] in block  # skipped, by name
    assert "leakage" in block and p["leak_test"] in block
    assert p["tiny"] not in block  # 12 px is not far smaller than a 32 px model input
    assert "skipped 2 unusable file(s):" in block
    assert "near" not in block.split("`imgcls check")[0]  # the slow near-duplicate search is not run in train
    results = json.loads((tmp_path / "runs" / "train" / "results.json").read_text())
    skipped = {s["path"] for s in results["dataset"]["skipped files"]}
    assert skipped == {p["corrupt"], p["text"]}


def test_train_on_data_that_cannot_train_is_one_error_line(cli, tmp_path):
    root = make_split_folders(tmp_path / "d", classes=("a", "b"), counts=(3, 2, 0), size=SIZE)
    for f in (root / "train" / "b").iterdir():
        f.write_bytes(b"")
    code, _, err = cli("train", "--data", root, *TINY, "--epochs", "1", "--project", tmp_path / "runs")
    assert code == 2
    assert err.strip().splitlines()[-1] == (f"imgcls: error: --data {root}: class(es) ['b'] have no usable "
                                            "training images after skipping bad files")


def test_missing_folder_is_one_error_line(cli, tmp_path):
    code, _, err = cli("check", "--data", tmp_path / "nope")
    assert code == 2 and err.strip() == f"imgcls: error: --data {tmp_path / 'nope'}: folder not found"


# ---- pure functions


def test_exact_groups_and_connected_groups():
    assert check.exact_groups(["a", "b", "a", None, None, "b", "c"]) == [[0, 2], [1, 5]]
    assert check.connected_groups(6, [(0, 3), (3, 5), (1, 2)]) == [[0, 3, 5], [1, 2]]
    assert check.connected_groups(3, []) == []


def test_near_pairs_uses_the_threshold_in_bits():
    base = (1 << 255) | 12345
    flipped = base ^ sum(1 << k for k in range(0, 200, 10))  # 20 bits differ
    far = base ^ ((1 << 256) - 1)
    assert check.near_pairs([base, flipped, far], threshold=20) == [(0, 1)]
    assert check.near_pairs([base, flipped, far], threshold=19) == []


def test_compact_block_names_the_split_of_each_copy():
    """In a split imgcls made from a single tree, paths do not say which side each copy is on."""
    records = [check.FileRecord(f"cat/{i}.png", "cat", "train", sha256=str(i), width=100, height=100, mode="RGB",
                                format="PNG") for i in range(6)]
    records += [check.FileRecord(f"dog/{i}.png", "dog", "train", sha256=f"d{i}", width=100, height=100, mode="RGB",
                                 format="PNG") for i in range(6)]
    records.append(check.FileRecord("cat/copy.png", "cat", "val", sha256="3", width=100, height=100, mode="RGB",
                                    format="PNG"))
    findings, counts, _ = check.analyse(records, ["cat", "dog"], imgsz=224, near=False)
    assert [f.kind for f in findings] == ["leakage"]
    block = check.format_compact(findings, len(records), "pets", imgsz=224)
    assert "cat/3.png (train) = cat/copy.png (val)" in block
    assert block.splitlines()[0] == "WARNING: data check of 13 files: 1 error(s), 0 warning(s)"
    assert "`imgcls check --data pets`" in block.splitlines()[-1]
    assert counts == {"train": {"cat": 6, "dog": 6}, "val": {"cat": 1, "dog": 0}}


def test_imbalance_ratio():
    assert check.imbalance_ratio({"a": 10, "b": 40}) == 4.0
    assert check.imbalance_ratio({"a": 10}) is None
    assert check.imbalance_ratio({"a": 10, "b": 0}) is None  # an empty class is reported as an error instead
