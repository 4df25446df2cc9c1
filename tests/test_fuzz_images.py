"""Hostile image files: every reader turns whatever a decoder raises into a named skip or a 4xx, never a crash.

About 300 mutated files across every supported format (truncations, bit flips, wrong headers, huge declared
sizes, inserted junk) go through ``load_image`` and the check reader ``read_record``; then the two files that
crashed imgcls before (a TIFF whose second frame has no dimensions, a PPM with a zero maxval) go through
check, train, predict and serve.
"""

from __future__ import annotations

import io
import json
import random
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import TINY
from imagegen import make_class_folders, shape_image
from imgcls.data.check import read_record
from imgcls.data.images import ImageReadError, load_image

# PIL warns about the malformed files it is fed here; imgcls's answer is what the tests check.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::PIL.Image.DecompressionBombWarning")

EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp", "TIFF": ".tif"}


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _originals() -> list[tuple[str, bytes]]:
    """Small valid files: every format, several colour modes, animations and multi-page TIFF."""
    rgb = shape_image("circle", 40, 3).resize((40, 30))
    frames = [rgb, shape_image("square", 40, 4).resize((40, 30))]
    return [
        ("JPEG", _encode(rgb, "JPEG", quality=80)), ("JPEG", _encode(rgb.convert("L"), "JPEG")),
        ("JPEG", _encode(rgb, "JPEG", progressive=True)), ("PNG", _encode(rgb, "PNG")),
        ("PNG", _encode(rgb.convert("P"), "PNG")), ("PNG", _encode(rgb.convert("RGBA"), "PNG")),
        ("PNG", _encode(Image.new("I;16", (40, 30), 40000), "PNG")), ("BMP", _encode(rgb, "BMP")),
        ("BMP", _encode(rgb.convert("P"), "BMP")), ("GIF", _encode(rgb.convert("P"), "GIF")),
        ("GIF", _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])),
        ("WEBP", _encode(rgb, "WEBP")), ("WEBP", _encode(rgb, "WEBP", lossless=True)),
        ("TIFF", _encode(rgb, "TIFF")), ("TIFF", _encode(rgb, "TIFF", compression="tiff_deflate")),
        ("TIFF", _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])),
    ]


ORIGINALS = _originals()
MAGIC = [b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"II*\x00",
         b"MM\x00*", b"P6\n", b"%PDF-1.4", b"<html>"]


def with_size(fmt: str, data: bytes, width: int, height: int) -> bytes:
    """The file with its declared width and height replaced (the pixel data stays as it was)."""
    data = bytearray(data)
    if fmt == "PNG":
        data[16:24] = struct.pack(">II", width % 2**32, height % 2**32)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # a valid CRC: only the size lies
    elif fmt == "BMP":
        data[18:26] = struct.pack("<ii", width % 2**31, height % 2**31)
    elif fmt == "GIF":
        data[6:10] = struct.pack("<HH", width % 2**16, height % 2**16)
    elif fmt == "JPEG":
        sof = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
        if sof > 0:
            data[sof + 5:sof + 9] = struct.pack(">HH", height % 2**16, width % 2**16)
    elif fmt == "WEBP":
        chunk = data.find(b"VP8")
        if data[chunk:chunk + 4] == b"VP8X":
            data[chunk + 12:chunk + 18] = ((width - 1) % 2**24).to_bytes(3, "little") + \
                ((height - 1) % 2**24).to_bytes(3, "little")
        elif data[chunk:chunk + 4] == b"VP8 ":
            data[chunk + 14:chunk + 18] = struct.pack("<HH", width % 2**14, height % 2**14)
    elif fmt == "TIFF":
        offset = struct.unpack("<I", data[4:8])[0]
        for i in range(struct.unpack("<H", data[offset:offset + 2])[0]):
            entry = offset + 2 + 12 * i
            tag, kind = struct.unpack("<HH", data[entry:entry + 4])
            value = {256: width, 257: height}.get(tag)
            if value is not None:
                packed = struct.pack("<I", value % 2**32) if kind == 4 else struct.pack("<HH", value % 2**16, 0)
                data[entry + 8:entry + 12] = packed
    return bytes(data)


SIZES = st.one_of(st.sampled_from([0, 1, 65_535, 30_000, 2**31 - 1, 2**32 - 1]), st.integers(1, 20_000))


@st.composite
def mutated_files(draw) -> tuple[str, bytes]:
    fmt, data = draw(st.sampled_from(ORIGINALS))
    kind = draw(st.sampled_from(["truncate", "flip", "header", "size", "insert", "size+truncate"]))
    if kind in ("size", "size+truncate"):
        data = with_size(fmt, data, draw(SIZES), draw(SIZES))
    if kind in ("truncate", "size+truncate"):
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif kind == "flip":
        data = bytearray(data)
        for _ in range(draw(st.integers(1, 12))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        data = bytes(data)
    elif kind == "header":
        data = draw(st.sampled_from(MAGIC)) + data[draw(st.integers(0, 12)):]
    elif kind == "insert":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]
    return fmt, data


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=mutated_files())
def test_mutated_files_give_the_projects_own_error_or_an_image(scratch, case):
    fmt, data = case
    path = scratch / f"fuzzed{EXTENSIONS[fmt]}"
    path.write_bytes(data)
    for source, draft in ((data, None), (path, (16, 16))):
        try:
            image = load_image(source, draft_size=draft)
        except ImageReadError as e:
            assert str(e) and "\n" not in str(e)  # a short reason for a named skip
        else:
            assert image.mode == "RGB" and min(image.size) >= 1
    for perceptual in (False, True):
        record = read_record(path, path.name, "cls", "train", perceptual=perceptual)
        assert (record.error is None) == (record.width > 0), record  # read, or named as unusable
        assert record.error is None or "\n" not in record.error


def test_the_fuzzer_reaches_every_kind_of_failure():
    """The mutations are hostile enough: each kind of reason shows up, and some files still decode."""
    rng = random.Random(0)
    reasons = []
    for _ in range(400):
        fmt, data = _one(rng)
        try:
            load_image(data)
            reasons.append("decoded")
        except ImageReadError as e:
            reasons.append(str(e).split(" (")[0].split(":")[0])
    for expected in ("decoded", "not an image", "corrupt image", "decompression bomb refused"):
        assert expected in reasons, (expected, sorted(set(reasons)))


def _one(rng) -> tuple[str, bytes]:
    fmt, data = rng.choice(ORIGINALS)
    kind = rng.choice(["truncate", "flip", "header", "size"])
    if kind == "truncate":
        return fmt, data[:rng.randrange(len(data))]
    if kind == "flip":
        data = bytearray(data)
        for _ in range(rng.randint(1, 12)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return fmt, bytes(data)
    if kind == "header":
        return fmt, rng.choice(MAGIC) + data[rng.randrange(12):]
    return fmt, with_size(fmt, data, rng.choice([30_000, 65_535, 12_000]), rng.choice([30_000, 65_535, 9_000]))


# ---- the files that crashed imgcls, through every command that reads images


def tiff_second_frame_without_size() -> bytes:
    """A two-page TIFF whose second page has no width or height tag: PIL raises TypeError counting pages."""
    frames = [shape_image("circle", 48, 1), shape_image("circle", 48, 2)]
    data = bytearray(_encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]))
    first = struct.unpack("<I", data[4:8])[0]
    count = struct.unpack("<H", data[first:first + 2])[0]
    second = struct.unpack("<I", data[first + 2 + 12 * count:first + 6 + 12 * count])[0]
    for i in range(struct.unpack("<H", data[second:second + 2])[0]):
        entry = second + 2 + 12 * i
        if struct.unpack("<H", data[entry:entry + 2])[0] in (256, 257):
            data[entry:entry + 2] = struct.pack("<H", 40_000 + i)  # an unknown tag instead
    return bytes(data)


PPM_ZERO_MAXVAL = b"P6\n48 48\n0\n" + bytes(48 * 48 * 3)  # PIL raises ValueError


def test_the_reported_crashes_are_handled_by_the_reader():
    with pytest.raises(ImageReadError, match="corrupt image"):
        load_image(PPM_ZERO_MAXVAL)
    with pytest.raises(TypeError, match="Missing dimensions"):  # what escaped before
        Image.open(io.BytesIO(tiff_second_frame_without_size())).n_frames
    image = load_image(tiff_second_frame_without_size())  # its first page is a whole picture
    assert image.size == (48, 48)


def test_check_train_and_predict_name_the_bad_files(cli, tmp_path):
    root = make_class_folders(tmp_path / "data", per_class=8, size=64)
    (root / "circle" / "pages.tif").write_bytes(tiff_second_frame_without_size())
    (root / "square" / "scan.jpg").write_bytes(PPM_ZERO_MAXVAL)
    (root / "square" / "cut.webp").write_bytes(_encode(shape_image("square", 64, 5), "WEBP")[:60])

    code, out, err = cli("check", "--data", root, "--out", tmp_path / "report", "--no-near")
    assert code == 0, err
    assert "square/scan.jpg: corrupt image (maxval must be greater than 0" in out
    assert "square/cut.webp: corrupt image" in out and "pages.tif: " not in out.split("WARNINGS")[0]

    code, _, err = cli("train", "--data", root, *TINY, "--epochs", "1", "--project", tmp_path / "runs")
    assert code == 0 and "Traceback" not in err, err
    assert "skipped 2 unusable file(s):" in err and "square/scan.jpg: corrupt image" in err
    results = json.loads((tmp_path / "runs" / "train" / "results.json").read_text())
    assert {s["path"] for s in results["dataset"]["skipped files"]} == {"square/scan.jpg", "square/cut.webp"}

    code, _, err = cli("predict", "--weights", tmp_path / "runs" / "train" / "weights" / "best.pt", "--source",
                       root / "square", "--out", tmp_path / "pred", "--workers", "0")
    assert code == 0, err
    rows = {Path(r["path"]).name: r for r in _csv(tmp_path / "pred" / "predictions.csv")}
    assert rows["scan.jpg"]["error"].startswith("corrupt image") and rows["scan.jpg"]["predicted"] == ""
    assert rows["square_0.png"]["error"] == "" and len(rows) == 10


def _csv(path: Path) -> list[dict]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_serve_answers_a_json_4xx_for_each(trained_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from imgcls.deploy.serve import create_app

    client = TestClient(create_app(trained_run / "weights" / "best.pt"))
    response = client.post("/predict", files={"files": ("scan.ppm", PPM_ZERO_MAXVAL, "image/x-portable-pixmap")})
    assert response.status_code == 422 and response.headers["content-type"] == "application/json"
    assert response.json()["detail"].startswith("scan.ppm: corrupt image (maxval must be greater than 0")
    response = client.post("/predict", files={"files": ("pages.tif", tiff_second_frame_without_size(), "image/tiff")})
    assert response.status_code == 200 and response.json()["predictions"][0]["filename"] == "pages.tif"
    rng = random.Random(1)
    for fmt, data in (_one(rng) for _ in range(40)):
        response = client.post("/predict", files={"files": (f"x{EXTENSIONS[fmt]}", data, "application/octet-stream")})
        assert response.status_code in (200, 413, 415, 422), response.text
        assert response.headers["content-type"] == "application/json"
