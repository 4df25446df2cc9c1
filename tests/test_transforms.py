"""Input size and shape: --imgsz H,W and the resize modes that keep the whole image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from imgcls.config import TrainConfig, parse_imgsz
from imgcls.data.decoded import decode_to_working
from imgcls.data.transforms import eval_transform, make_preprocess, train_transform
from imgcls.errors import ImgclsError

CFG = {"input_size": (3, 224, 224), "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bilinear",
       "crop_pct": 0.875}


def _wide(path=None) -> Image.Image:
    """600x200: a blue band on the left sixth, red elsewhere, like a panorama with its subject at the edge."""
    image = Image.new("RGB", (600, 200), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 100, 200))
    if path is not None:
        image.save(path)
    return image


def test_imgsz_takes_one_number_or_height_and_width():
    assert parse_imgsz(None) is None and parse_imgsz(96) == (96, 96) and parse_imgsz("96") == (96, 96)
    assert parse_imgsz("320,512") == (320, 512) and parse_imgsz([320, 512]) == (320, 512)
    assert make_preprocess(CFG, "320,512")["input_size"] == [3, 320, 512]
    for bad, message in [("big", "expected one number or H,W"), ("4,4", "at least 8 pixels"), ("1,2,3", "H,W")]:
        with pytest.raises(ImgclsError, match=message):
            TrainConfig(imgsz=bad)
    with pytest.raises(ImgclsError, match="--resize 'zoom': choose crop, squash, pad"):
        TrainConfig(resize="zoom")


@pytest.mark.parametrize("mode, keeps_the_edge", [("crop", False), ("squash", True), ("pad", True)])
def test_whole_image_modes_keep_what_a_centre_crop_cuts_off(mode, keeps_the_edge, tmp_path):
    preprocess = make_preprocess(CFG, "64,128", mode)
    view = eval_transform(preprocess)(_wide())
    assert view.shape == (3, 64, 128)
    blue = ((view[2] > 0.5) & (view[0] < -0.5)).float().mean().item()  # pure blue pixels
    assert (blue > 0.08) is keeps_the_edge
    assert train_transform(preprocess, "light")(_wide()).shape == (3, 64, 128)
    # The decoded-image cache stores the same geometry the transforms make.
    _wide(tmp_path / "wide.png")
    decoded = decode_to_working(tmp_path / "wide.png", preprocess, training=False)
    assert decoded.shape == (64, 128, 3)
    assert torch.allclose(torch.tensor(decoded).permute(2, 0, 1) / 127.5 - 1, view, atol=2 / 127.5)


def test_pad_fills_with_the_mean_colour():
    preprocess = make_preprocess(CFG, 64, "pad")
    view = eval_transform(preprocess)(_wide())
    assert torch.allclose(view[:, 0, :], torch.zeros(3, 64), atol=1 / 127.5)  # top rows: padding, normalised to 0
    assert view[0, 32, 40] > 0.9  # the middle row holds the picture (red)


def test_a_run_at_height_by_width_with_padding_predicts_with_the_same_geometry(cli, flat_data, tmp_path):
    import imgcls

    code, _, err = cli("train", "--data", flat_data, "--model", "simple_cnn", "--no-pretrained", "--imgsz", "24,40",
                       "--resize", "pad", "--epochs", "1", "--batch-size", "8", "--workers", "0",
                       "--project", tmp_path / "runs")
    assert code == 0, err
    best = tmp_path / "runs" / "train" / "weights" / "best.pt"
    checkpoint = torch.load(best, weights_only=True)
    assert checkpoint["preprocess"]["input_size"] == [3, 24, 40] and checkpoint["preprocess"]["resize"] == "pad"
    assert checkpoint["args"]["imgsz"] == "24,40" and checkpoint["args"]["resize"] == "pad"
    image = next((flat_data / "circle").iterdir())
    torch_result = imgcls.Predictor(best, runtime="torch").predict(image)[0]
    onnx_result = imgcls.Predictor(best, runtime="onnxruntime").predict(image)[0]
    assert torch_result.label == onnx_result.label
    assert abs(torch_result.confidence - onnx_result.confidence) < 1e-4


@pytest.mark.parametrize("mode", ["crop", "squash", "pad"])
@pytest.mark.parametrize("size", [(3, 64, 64), (3, 48, 80), (3, 80, 48)])
def test_evaluation_inputs_are_torchvisions_pixel_for_pixel(mode, size):
    """imgcls's own Pillow/numpy evaluation input (data/geometry, which predict runs without torch) gives exactly
    what torchvision's Resize / CenterCrop / Pad + ToTensor + Normalize give, for every resize mode, on wide, tall,
    square and small images."""
    import torch
    from torchvision import transforms as T
    from torchvision.transforms import functional as TF

    from imgcls.data.geometry import EvalInput, working_size

    preprocess = make_preprocess({"input_size": size, "interpolation": "bicubic"}, resize=mode)
    height, width = size[1:]
    mode_of = T.InterpolationMode.BICUBIC

    def reference(image):
        if mode == "squash":
            image = TF.resize(image, [height, width], interpolation=mode_of)
        elif mode == "pad":
            scale = min(height / image.height, width / image.width)
            new_h, new_w = max(1, round(image.height * scale)), max(1, round(image.width * scale))
            image = TF.resize(image, [new_h, new_w], interpolation=mode_of)
            left, top = (width - new_w) // 2, (height - new_h) // 2
            fill = tuple(int(round(m * 255)) for m in preprocess["mean"])
            image = TF.pad(image, [left, top, width - new_w - left, height - new_h - top], fill=fill)
        elif height == width:
            image = TF.resize(image, working_size(preprocess)[0], interpolation=mode_of)
            image = TF.center_crop(image, [height, width])
        else:
            cover_h, cover_w = working_size(preprocess)
            scale = max(cover_h / image.height, cover_w / image.width)
            resized = [max(cover_h, round(image.height * scale)), max(cover_w, round(image.width * scale))]
            image = TF.center_crop(TF.resize(image, resized, interpolation=mode_of), [cover_h, cover_w])
            image = TF.center_crop(image, [height, width])
        return T.Normalize(preprocess["mean"], preprocess["std"])(T.ToTensor()(image))

    rng = np.random.default_rng(0)
    for shape in [(90, 150), (150, 90), (73, 73), (20, 30), (height, width)]:
        image = Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
        got, expected = EvalInput(preprocess)(image), reference(image).numpy()
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert np.array_equal(got, expected), f"{mode} {size} from {shape}"
        assert torch.equal(eval_transform(preprocess)(image), reference(image))  # training's evaluation too
