"""Data discovery, the saved split, image decoding and every kind of bad data a user's folder can hold."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import TINY
from imagegen import make_class_folders, shape_image
from imgcls.data.check import quick_check
from imgcls.data.folders import discover, stratified_split
from imgcls.data.loaders import ImageDataset, collate_skip_bad
from imgcls.errors import ImgclsError
from imgcls.data.images import load_image


# --- the split --------------------------------------------------------------------------------------

def test_split_is_stratified_and_seeded():
    labels = [0] * 40 + [1] * 20 + [2] * 10
    a = stratified_split(labels, (0.7, 0.15, 0.15), seed=0)
    assert a == stratified_split(labels, (0.7, 0.15, 0.15), seed=0)
    assert a != stratified_split(labels, (0.7, 0.15, 0.15), seed=1)
    for cls, n in ((0, 40), (1, 20), (2, 10)):
        mine = [s for s, y in zip(a, labels) if y == cls]
        assert mine.count("val") == round(n * 0.15) or mine.count("val") >= 1
        assert abs(mine.count("train") / n - 0.7) < 0.1
    two_way = stratified_split(labels, (0.8, 0.2, 0.0), seed=0)
    assert "test" not in two_way and two_way.count("val") == 8 + 4 + 2


def test_split_keeps_a_training_image_for_tiny_classes():
    a = stratified_split([0, 0, 1, 1, 1], (0.7, 0.15, 0.15), seed=3)
    for cls in (0, 1):
        assert "train" in [s for s, y in zip(a, [0, 0, 1, 1, 1]) if y == cls]


def test_saved_split_is_reused_exactly(cli, flat_data, tmp_path):
    code, _, err = cli("train", "--data", flat_data, "--epochs", "1", *TINY, "--project", tmp_path / "runs")
    assert code == 0, err
    rows = list(csv.DictReader(open(tmp_path / "runs" / "train" / "split.csv", encoding="utf-8")))
    assert {r["split"] for r in rows} == {"train", "val", "test"} and len(rows) == 36
    assert all((flat_data / r["path"]).exists() for r in rows)
    # A different seed makes a different split, but passing the saved split.csv reuses it exactly.
    code, _, err = cli("train", "--data", flat_data, "--epochs", "1", *TINY, "--seed", "7",
                       "--split", tmp_path / "runs" / "train" / "split.csv", "--project", tmp_path / "runs")
    assert code == 0, err
    again = list(csv.DictReader(open(tmp_path / "runs" / "train2" / "split.csv", encoding="utf-8")))
    assert sorted(map(tuple, (r.values() for r in again))) == sorted(map(tuple, (r.values() for r in rows)))


def test_split_two_numbers_means_no_test(flat_data):
    source = discover(flat_data, "0.8,0.2")
    assert not source.items["test"] and len(source.items["val"]) == 3 * round(12 * 0.2)


# --- layouts, names, extensions -----------------------------------------------------------------------

def test_extensions_any_case_unicode_and_spaces(tmp_path):
    root = tmp_path / "my photos ü"
    for cls, ext in (("café au lait", ".JPG"), ("熊 bear", ".Png"), ("zebra", ".webp"), ("yak", ".TIFF")):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            shape_image("circle", 40, i).save(root / cls / f"photo {i} ä{ext}")
    (root / "zebra" / "notes.txt").write_text("not an image")
    source = discover(root, "0.5,0.5")
    assert source.class_names == sorted(["café au lait", "熊 bear", "zebra", "yak"])
    assert sum(len(v) for v in source.items.values()) == 16
    checked, findings = quick_check(source, min_side=8)
    assert checked.items == source.items and "unusable" not in findings


def test_class_only_in_val_is_refused(tmp_path):
    make_class_folders(tmp_path / "a" / "train", per_class=3)
    make_class_folders(tmp_path / "a" / "val", classes=("circle", "square", "triangle", "hexagon"), per_class=2)
    with pytest.raises(ImgclsError, match=r"\['hexagon'\] in val/ are missing from train/"):
        discover(tmp_path / "a")


@pytest.mark.parametrize("layout, message", [
    ("empty_class", "class folder(s) ['square'] contain no images"),
    ("one_class", "found only 1 class ('circle')"),
    ("no_classes", "no class folders found"),
    ("file", "is a file"),
])
def test_untrainable_folders_are_one_error_line(cli, tmp_path, layout, message):
    root = tmp_path / "data"
    if layout == "empty_class":
        make_class_folders(root, classes=("circle", "triangle"), per_class=3)
        (root / "square").mkdir()
    elif layout == "one_class":
        make_class_folders(root, classes=("circle",), per_class=3)
    elif layout == "no_classes":
        root.mkdir()
        shape_image("circle").save(root / "loose.png")
    else:
        root.write_text("x")
    code, out, err = cli("train", "--data", root, *TINY, "--project", tmp_path / "runs")
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "runs").exists()


# --- images: formats, modes, orientation ------------------------------------------------------------

@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1", "I", "F"])
def test_any_colour_mode_becomes_rgb(tmp_path, mode):
    base = shape_image("square", 32, 1)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
        assert image.mode == "I;16"
    elif mode == "P":
        image = base.convert("P", palette=Image.ADAPTIVE)
    else:
        image = base.convert(mode)
    fmt = {"CMYK": "JPEG", "F": "TIFF", "I": "TIFF"}.get(mode, "PNG")
    path = tmp_path / f"img.{fmt.lower()}"
    image.save(path, fmt)
    rgb = load_image(path)
    assert rgb.mode == "RGB" and rgb.size == (32, 32)
    assert np.asarray(rgb).std() > 5  # the picture survived, not a blank frame


def test_transparent_pixels_become_white(tmp_path):
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    image.save(tmp_path / "clear.png")
    assert np.asarray(load_image(tmp_path / "clear.png")).min() == 255


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (60, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 20))  # red strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    shown = load_image(tmp_path / "rotated.jpg")
    assert shown.size == (20, 60)
    top = np.asarray(shown)[:8].mean(axis=(0, 1))
    assert top[0] > 150 and top[2] < 100  # the red strip is now at the top


# --- bad files ----------------------------------------------------------------------------------------

def _plant_bad_files(root):
    folder = root / "circle"
    buffer = io.BytesIO()
    shape_image("circle", 64, 99).save(buffer, "JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is a text file with an image name")
    Image.new("L", (9500, 9500)).save(root / "square" / "bomb.png")  # 90 Mpx, over PIL's limit


def test_bad_images_are_skipped_with_a_warning_naming_them(cli, flat_data, tmp_path):
    _plant_bad_files(flat_data)
    Image.new("RGB", (5, 5), "red").save(flat_data / "circle" / "speck.png")
    code, _, err = cli("train", "--data", flat_data, "--epochs", "1", *TINY, "--project", tmp_path / "runs")
    assert code == 0, err
    assert "skipped 4 unusable file(s)" in err
    for name, reason in [("truncated.jpg", "corrupt"), ("empty.png", "empty file"),
                         ("notes.jpg", "not an image"), ("bomb.png", "decompression bomb")]:
        line = next(line for line in err.splitlines() if name in line)
        assert reason in line, line
    assert "speck.png (5x5)" in err and "far smaller than the model input" in err
    results = json.loads((tmp_path / "runs" / "train" / "results.json").read_text())
    skipped = {s["path"] for s in results["dataset"]["skipped files"]}
    assert skipped == {"circle/truncated.jpg", "circle/empty.png", "circle/notes.jpg", "square/bomb.png"}
    split_paths = {r["path"] for r in csv.DictReader(open(tmp_path / "runs" / "train" / "split.csv"))}
    assert not split_paths & skipped


def test_all_images_bad_in_a_class_is_one_error(cli, tmp_path):
    root = make_class_folders(tmp_path / "data", classes=("circle", "square"), per_class=3)
    for path in (root / "square").iterdir():
        path.write_bytes(b"GIF89a broken")
    code, _, err = cli("train", "--data", root, *TINY, "--project", tmp_path / "runs")
    assert code == 2 and "['square'] have no usable training images" in err


def test_a_file_that_breaks_mid_epoch_is_skipped_not_fatal(tmp_path):
    from imgcls.data.transforms import eval_transform

    root = make_class_folders(tmp_path / "data", per_class=2)
    paths = sorted(root.rglob("*.png"))
    preprocess = {"input_size": [3, 16, 16], "mean": [0.5] * 3, "std": [0.5] * 3,
                  "interpolation": "bilinear", "crop_pct": 1.0}
    dataset = ImageDataset(paths, [0] * len(paths), eval_transform(preprocess))
    paths[1].write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # damaged after the pre-check
    batch = collate_skip_bad([dataset[i] for i in range(len(dataset))])
    images, labels, indices = batch
    assert images.shape == (len(paths) - 1, 3, 16, 16)
    assert 1 not in indices.tolist()


# --- large images are reduced while they are read ----------------------------------------------------

def _gradient(width: int, height: int) -> np.ndarray:
    x = np.linspace(0, 1, width)[None, :]
    y = np.linspace(0, 1, height)[:, None]
    return np.stack([x * np.ones_like(y), y * np.ones_like(x), (x + y) / 2], axis=-1)


@pytest.mark.parametrize("strip_pixels", [4_000_000, 10_000])
@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "I;16", "1"])
def test_large_images_are_reduced_as_read_and_look_the_same(tmp_path, monkeypatch, mode, strip_pixels):
    """With the size the model needs, a 1200x900 image comes back near that size, not at full size, and
    shows the same picture as a full decode shrunk afterwards (transparent parts white, as always)."""
    from imgcls.data import images

    monkeypatch.setattr(images, "STRIP_PIXELS", strip_pixels)  # small: converted in many strips
    rgb = Image.fromarray((_gradient(1200, 900) * 255).astype(np.uint8), "RGB")
    if mode == "I;16":
        image = Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257))
    elif mode == "RGBA":
        image = rgb.convert("RGBA")
        image.paste((0, 0, 0, 0), (0, 0, 600, 450))  # a transparent corner
    else:
        image = rgb.convert(mode)
    image.save(tmp_path / "big.png")
    reduced = load_image(tmp_path / "big.png", draft_size=(100, 100))
    assert reduced.mode == "RGB" and reduced.size == (134, 100)  # reduced 9x: still at least 100 px
    full = load_image(tmp_path / "big.png").resize(reduced.size, Image.BOX)
    difference = np.abs(np.asarray(reduced, dtype=float) - np.asarray(full, dtype=float))
    assert difference.mean() < (5 if mode == "1" else 1.5), difference.mean()  # 1-bit: dithered dots average out


def test_a_large_12_bit_image_reduced_as_read_looks_like_its_full_decode(tmp_path):
    """16-bit files holding 12-bit values (scans): the reduced image gets the same brightness as the full one."""
    values = (np.linspace(0, 4000, 1200)[None, :] * np.ones((900, 1))).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "scan.png")
    reduced = load_image(tmp_path / "scan.png", draft_size=(100, 100))
    full = load_image(tmp_path / "scan.png").resize(reduced.size, Image.BOX)
    assert reduced.size == (134, 100)
    difference = np.abs(np.asarray(reduced, dtype=float) - np.asarray(full, dtype=float))
    assert difference.mean() < 1.5, difference.mean()


def test_reduction_keeps_the_exif_rotation_and_small_images_alone(tmp_path):
    image = Image.new("RGB", (1600, 400), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 200, 400))  # red strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.png", exif=exif.tobytes())
    shown = load_image(tmp_path / "rotated.png", draft_size=(100, 100))
    assert shown.size == (100, 400)  # reduced 4x (the short side stays >= 100), then turned upright
    assert np.asarray(shown)[:20].mean(axis=(0, 1))[0] > 150  # the red strip is at the top
    assert load_image(tmp_path / "rotated.png", draft_size=(300, 300)).size == (400, 1600)  # under 2x: as is


@pytest.mark.parametrize("peak, expected", [(200, 200), (4095, 255), (1023, 255), (65535, 255), (40000, 155)])
def test_16_bit_images_are_scaled_by_their_bit_depth(tmp_path, peak, expected):
    """A 12-bit (or 10-bit) scan stored in 16 bits fills the 8-bit range as a 16-bit photo does; values that fit
    in 8 bits stay as they are. Before, a 12-bit scan came out as 16 shades of near-black."""
    values = np.zeros((20, 30), dtype=np.uint16)
    values[:, 15:] = peak
    Image.fromarray(values).save(tmp_path / "scan.png")
    rgb = np.asarray(load_image(tmp_path / "scan.png"))
    assert rgb.shape == (20, 30, 3) and rgb[:, :15].max() == 0
    assert abs(int(rgb[0, 20, 0]) - expected) <= 1, rgb[0, 20]


def test_a_reduced_16_bit_image_keeps_the_bit_depth_of_its_brightest_pixel(tmp_path):
    """Averaging while reducing can lower the peak below a power of two (2050 -> under 2048): the reduced image
    must still be scaled as the full one is, not made twice as bright."""
    values = np.full((900, 1200), 1000, dtype=np.uint16)
    values[0, 0] = 2050  # the only value that needs 12 bits; a 9x9 box averages it away
    Image.fromarray(values).save(tmp_path / "scan.png")
    reduced = np.asarray(load_image(tmp_path / "scan.png", draft_size=(100, 100)), dtype=float)
    full = np.asarray(load_image(tmp_path / "scan.png"), dtype=float)
    assert reduced.shape[:2] == (100, 134)
    assert abs(reduced[50, 50, 0] - full[450, 600, 0]) <= 1, (reduced[50, 50], full[450, 600])


def test_a_16_bit_array_is_scaled_as_a_16_bit_file_is():
    """Predictor takes numpy arrays too: a 12-bit scan as a uint16 array looks as it does read from a file."""
    from imgcls.data.images import as_image

    values = np.zeros((20, 30), dtype=np.uint16)
    values[:, 15:] = 4095
    rgb = np.asarray(as_image(values))
    assert rgb.shape == (20, 30, 3) and rgb[0, 0, 0] == 0 and rgb[0, 20, 0] >= 254
