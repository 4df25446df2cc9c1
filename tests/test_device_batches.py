"""The accelerator's input pipeline (data/device_batches): decoded uint8 batches augmented on the device. CPU tensors
stand in for the GPU: the operations are the same."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from imagegen import shape_image
from imgcls.data.decoded import DecodedImages
from imgcls.data.device_batches import BatchAugment, DeviceBatches, mix
from imgcls.data.transforms import eval_transform, make_preprocess, train_transform


def _working(preprocess: dict, n: int = 6) -> np.ndarray:
    return np.stack([decode_to_working_image(shape_image(("circle", "square", "triangle")[i % 3], size=80, seed=i),
                                             preprocess) for i in range(n)])


def decode_to_working_image(image: Image.Image, preprocess: dict) -> np.ndarray:
    """What the decoded cache holds for a training image (data/decoded.decode_to_working, from a file)."""
    from imgcls.data.geometry import Cover, resampling, resize_mode, whole_image_resize, working_size

    if resize_mode(preprocess) == "crop":
        return np.asarray(Cover(working_size(preprocess), resampling(preprocess))(image))
    return np.asarray(whole_image_resize(preprocess, working_size(preprocess))(image))


@pytest.mark.parametrize("resize", ["crop", "squash", "pad"])
@pytest.mark.parametrize("level", ["none", "light", "strong"])
def test_device_views_have_the_cpu_transforms_shape_and_value_range(level, resize):
    preprocess = make_preprocess({"input_size": (3, 40, 48)}, resize=resize)
    pixels = _working(preprocess)
    views = BatchAugment(preprocess, level, "cpu", seed=0)(torch.from_numpy(pixels))
    torch.manual_seed(0)   # torchvision's random transforms draw from the global generator
    cpu = torch.stack([train_transform(preprocess, level)(Image.fromarray(p)) for p in pixels])
    assert views.shape == cpu.shape == (len(pixels), 3, 40, 48) and views.dtype == cpu.dtype == torch.float32
    mean = torch.tensor(preprocess["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(preprocess["std"]).view(1, 3, 1, 1)
    low, high = (0 - mean) / std, (1 - mean) / std
    assert bool(((views >= low - 1e-5) & (views <= high + 1e-5)).all())
    if level != "strong":  # the same images, roughly the same brightness (RandAugment's solarize inverts a few)
        assert abs(float(views.mean()) - float(cpu.mean())) < 0.5
    if level != "none":  # random views: two draws differ, and a seed repeats them
        again = BatchAugment(preprocess, level, "cpu", seed=0)(torch.from_numpy(pixels))
        other = BatchAugment(preprocess, level, "cpu", seed=1)(torch.from_numpy(pixels))
        assert torch.equal(views, again) and not torch.allclose(views, other)


def test_no_augmentation_is_the_evaluation_view():
    preprocess = make_preprocess({"input_size": (3, 32, 32)})
    image = shape_image("circle", size=70, seed=3)
    pixels = decode_to_working_image(image, preprocess)
    view = BatchAugment(preprocess, "none", "cpu")(torch.from_numpy(pixels[None].copy()))[0]
    expected = eval_transform(preprocess)(Image.fromarray(pixels))
    assert torch.allclose(view, expected, atol=1e-4)


def test_mixing_keeps_the_batch_and_mixes_the_targets_by_the_share_each_image_keeps():
    images = torch.rand(8, 3, 16, 16)
    targets = torch.nn.functional.one_hot(torch.arange(8) % 4, 4).float()
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):   # both mixup and CutMix come up
        mixed, soft = mix(images, targets, generator)
        assert mixed.shape == images.shape and soft.shape == targets.shape
        assert torch.allclose(soft.sum(1), torch.ones(8)) and float(soft.max()) <= 1
        assert float(mixed.min()) >= 0 and float(mixed.max()) <= 1


def test_batches_hold_every_readable_image_once_per_epoch_in_a_seeded_order(tmp_path):
    preprocess = make_preprocess({"input_size": (3, 24, 24)})
    paths = []
    for i in range(11):
        path = tmp_path / f"{i}.png"
        shape_image("square", size=40, seed=i).save(path)
        paths.append(path)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    paths.insert(4, tmp_path / "bad.png")
    images = DecodedImages(paths, preprocess, training=True, progress=False)
    labels = list(range(len(paths)))
    augment = BatchAugment(preprocess, "light", "cpu")

    def epoch(e):
        return [(x, y, i) for x, y, i in DeviceBatches(images, labels, augment, batch_size=4, seed=0, epoch=e)]

    batches = epoch(1)
    seen = torch.cat([i for _, _, i in batches]).tolist()
    assert sorted(seen) == [i for i in range(12) if i != 4]         # the unreadable file is left out
    assert all(torch.equal(y, i) for _, y, i in batches)            # labels stay with their images
    assert all(x.shape[1:] == (3, 24, 24) for x, _, _ in batches) and len(batches) == 3
    assert [i.tolist() for _, _, i in epoch(1)] == [i.tolist() for _, _, i in batches]
    assert [i.tolist() for _, _, i in epoch(2)] != [i.tolist() for _, _, i in batches]
    # under torchrun each rank's sampler hands it its share: exactly those images (the unreadable one left out)
    share = [7, 4, 0, 9, 2]
    ranked = DeviceBatches(images, labels, augment, batch_size=2, order=share)
    assert sorted(torch.cat([i for _, _, i in ranked]).tolist()) == [0, 2, 7, 9]


def test_a_run_trains_through_the_device_pipeline_and_records_its_throughput(tmp_path, monkeypatch, capsys):
    """What a GPU run does with its images, here with the CPU as the device: the plan's phase asks for strong
    augmentation, mixup/CutMix and an EMA of the weights; every epoch records images per second and the busy share,
    and the log shows them."""
    from imagegen import make_class_folders
    from imgcls.engine import fit
    from imgcls.engine.plan import Phase
    from imgcls.engine.train import train

    monkeypatch.setattr(fit, "uses_device_batches", lambda run: True)
    used = []
    original = DeviceBatches.__iter__

    def counting(self):
        used.append(self.augment.level)
        return original(self)

    monkeypatch.setattr(DeviceBatches, "__iter__", counting)
    phase = Phase("finetune", 2, "all", "images", 1e-3, 1e-3, augment="strong", mix=True, ema=True)
    monkeypatch.setattr("imgcls.engine.train.explicit_plan", lambda cfg: [phase])
    data = make_class_folders(tmp_path / "shapes", per_class=8)
    result = train(data=str(data), model="simple_cnn", pretrained=False, imgsz=32, batch_size=8, workers=0,
                   epochs=2, project=str(tmp_path / "runs"), progress=False)
    # each epoch: its training views (and the batch-norm statistics' pass over them), then validation
    assert used.count("none") == 2 and used.count("strong") >= 2 and set(used) == {"strong", "none"}
    results = json.loads((result.run_dir / "results.json").read_text())
    for epoch in (1, 2):
        speed = results[f"epoch:{epoch}"]["throughput"]
        assert speed["images per second"] > 0 and 0 <= speed["busy"] <= 1
    assert results["phases"][0]["augment"] == "strong" and results["phases"][0]["mix"] is True
    log = capsys.readouterr().err
    assert "img/s, cpu busy" in log and "strong augmentation and mixup/CutMix and an EMA of the weights" in log
    # the checkpoints hold the average of the weights, the network validated; last.pt keeps the trained ones too
    last = torch.load(result.run_dir / "weights" / "last.pt", weights_only=True)
    trained, averaged = last["trained_state_dict"], last["state_dict"]
    assert set(trained) == set(averaged)
    assert any(not torch.equal(trained[k], averaged[k]) for k in trained if trained[k].is_floating_point())
