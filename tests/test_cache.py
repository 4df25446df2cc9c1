"""Feature cache, decoded-image cache and runtime choice: a frozen backbone runs once per image."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from imagegen import make_split_folders, shape_image
from PIL import Image

from imgcls.data.decoded import DecodedImages, decode_to_working
from imgcls.engine.features import FeatureStore, feature_key, weights_hash
from imgcls.record.cache import file_hash
from imgcls.errors import ImgclsError
from imgcls.record.checkpoint import load_checkpoint
from imgcls.data.transforms import eval_transform

FAST = ["--model", "simple_cnn", "--imgsz", "32", "--batch-size", "8", "--workers", "0", "--freeze",
        "--lr", "0.05", "--warmup-epochs", "0", "--runtime", "torch"]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """Every test gets its own empty cache, never the user's ~/.cache/imgcls."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("IMGCLS_CACHE", str(folder))
    return folder


@pytest.fixture
def backbone(trained_run, tmp_path) -> Path:
    """Weights of a simple_cnn that has learnt the shapes, so a head on its frozen features learns too."""
    return trained_run / "weights" / "best.pt"


@pytest.fixture
def data(tmp_path) -> Path:
    return make_split_folders(tmp_path / "data", counts=(8, 4, 3))


def _epochs(run: Path) -> list[dict]:
    results = json.loads((run / "results.json").read_text())
    return [results[f"epoch:{i}"] for i in range(1, results["best epoch"] + 100) if f"epoch:{i}" in results]


def _probabilities(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as f:
        return {row["path"]: [float(v) for k, v in row.items() if k.startswith("p_")] for row in csv.DictReader(f)}


def test_cached_and_uncached_head_training_agree(cli, cache_dir, data, backbone, tmp_path):
    common = [*FAST, "--data", data, "--weights", backbone, "--epochs", "3", "--augment", "none",
              "--project", tmp_path / "runs"]
    code, _, log_cached = cli("train", *common, "--name", "cached")
    assert code == 0, log_cached
    assert "Feature cache: 0 of" in log_cached  # the first run computes the features
    code, _, log_plain = cli("train", *common, "--name", "plain", "--no-cache")
    assert code == 0, log_plain
    assert "Feature cache" not in log_plain

    cached, plain = tmp_path / "runs" / "cached", tmp_path / "runs" / "plain"
    for a, b in zip(_epochs(cached), _epochs(plain), strict=True):
        for info in ("train info", "valid info"):
            assert a[info]["loss"] == pytest.approx(b[info]["loss"], abs=1e-4)
            assert a[info]["accuracy"] == b[info]["accuracy"]
            assert a[info]["confusion matrix"] == b[info]["confusion matrix"]
    assert _epochs(cached)[-1]["valid info"]["accuracy"] > 0.6  # the head did learn on cached features
    probs_cached = _probabilities(cached / "predictions_val.csv")
    probs_plain = _probabilities(plain / "predictions_val.csv")
    assert probs_cached.keys() == probs_plain.keys()
    for path in probs_cached:
        assert probs_cached[path] == pytest.approx(probs_plain[path], abs=1e-4)
    for name in ("predictions_test.csv", "results.csv", "loss.png", "confusion_matrix_val.png",
                 "weights/best.pt"):
        assert (cached / name).exists(), name
    # The checkpoint holds the trained head: its logits reproduce the predictions file.
    ckpt_cached, ckpt_plain = load_checkpoint(cached / "weights" / "best.pt"), load_checkpoint(plain / "weights/best.pt")
    for key, tensor in ckpt_cached["state_dict"].items():
        assert torch.allclose(tensor.float(), ckpt_plain["state_dict"][key].float(), atol=1e-4), key


def test_second_run_hits_the_cache_and_a_changed_image_is_recomputed(cli, cache_dir, data, backbone, tmp_path):
    common = [*FAST, "--data", data, "--weights", backbone, "--epochs", "2", "--project", tmp_path / "runs",
              "--cache-views", "2"]
    code, _, first = cli("train", *common)
    assert code == 0, first
    total = 3 * 8 * 2 + 3 * 4 + 3 * 3  # 2 augmented views per training image, 1 eval view per val/test image
    assert f"Feature cache: 0 of {total} image views found" in first

    code, _, second = cli("train", *common)
    assert code == 0, second
    assert f"Feature cache hit: all {total} image views" in second

    # Edit one training image in place (same name, same size on disk is not required): its 2 views are stale.
    victim = next((data / "train" / "circle").iterdir())
    shape_image("circle", 48, seed=999).save(victim)
    code, _, third = cli("train", *common)
    assert code == 0, third
    assert f"Feature cache: {total - 2} of {total} image views found; computing 2 once" in third


def test_changed_weights_miss_the_cache(cli, cache_dir, data, backbone, tmp_path):
    common = [*FAST, "--data", data, "--epochs", "1", "--augment", "none", "--project", tmp_path / "runs"]
    code, _, first = cli("train", *common, "--weights", backbone)
    assert code == 0 and "Feature cache: 0 of" in first
    state = load_checkpoint(backbone)["state_dict"]
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    other = tmp_path / "other_weights.pt"
    torch.save(state, other)
    code, _, second = cli("train", *common, "--weights", other)
    assert code == 0, second
    assert "Feature cache: 0 of 45 image views found" in second
    # The two stores sit side by side; the first is still a hit afterwards.
    assert len(list((cache_dir / "features").iterdir())) == 2
    code, _, third = cli("train", *common, "--weights", backbone)
    assert "Feature cache hit" in third


def test_unfreeze_falls_back_to_image_training(cli, cache_dir, data, backbone, tmp_path):
    code, _, log = cli("train", *FAST, "--data", data, "--weights", backbone, "--epochs", "3", "--unfreeze-at", "3",
                       "--project", tmp_path / "runs", "--cache-views", "4")
    assert code == 0, log
    # Only 2 epochs run on features, so 2 views per training image are enough.
    assert "Feature cache: 0 of 69 image views found" in log
    assert "Phase full: 1 epoch(s), all layers" in log
    epochs = _epochs(tmp_path / "runs" / "train")
    assert len(epochs) == 3
    state = load_checkpoint(tmp_path / "runs" / "train" / "weights" / "last.pt")
    start = load_checkpoint(backbone)["state_dict"]
    conv = "features.0.weight"
    assert not torch.equal(state["state_dict"][conv], start[conv])  # the backbone trained in epoch 3


def test_feature_key_depends_on_weights_and_preprocessing(backbone):
    from imgcls.models.factory import model_from_checkpoint

    checkpoint = load_checkpoint(backbone)
    model = model_from_checkpoint(checkpoint)
    base = feature_key("simple_cnn", weights_hash(model), checkpoint["preprocess"])
    assert base == feature_key("simple_cnn", weights_hash(model), dict(checkpoint["preprocess"]))
    bigger = dict(checkpoint["preprocess"], input_size=[3, 48, 48])
    assert feature_key("simple_cnn", weights_hash(model), bigger) != base
    with torch.no_grad():
        model.get_classifier().weight.add_(1.0)  # the head does not change the features
    assert feature_key("simple_cnn", weights_hash(model), checkpoint["preprocess"]) == base
    with torch.no_grad():
        next(model.features.parameters()).add_(1.0)
    assert feature_key("simple_cnn", weights_hash(model), checkpoint["preprocess"]) != base


def test_file_hash_follows_content(tmp_path):
    a = tmp_path / "a.png"
    shape_image("square", 32, seed=1).save(a)
    before = file_hash(a)
    shape_image("square", 32, seed=2).save(a)
    assert file_hash(a) != before


def test_feature_store_survives_a_damaged_shard(tmp_path):
    store = FeatureStore("k", root=tmp_path)
    store.add(["h1", "h2"], ["eval", "eval"], np.arange(6, dtype=np.float32).reshape(2, 3))
    (store.folder / "shard-broken.npz").write_bytes(b"not a zip")
    reopened = FeatureStore("k", root=tmp_path).load()
    assert len(reopened) == 2
    assert reopened.get("h2", "eval").tolist() == [3.0, 4.0, 5.0]


def test_onnxruntime_matches_eager_pytorch(cache_dir):
    pytest.importorskip("onnxruntime")
    import timm

    from imgcls.runtime.pytorch import export_onnx_bytes, fastest_runner, parity_error
    from imgcls.runtime.runner import onnx_runner
    from imgcls.models.parts import PreLogits
    from imgcls.models.simple_cnn import SimpleCNN

    torch.manual_seed(0)
    model = timm.create_model("efficientnet_lite0", num_classes=3).eval()
    images = torch.randn(3, 3, 64, 64)
    runner = onnx_runner(export_onnx_bytes(PreLogits(model), (3, 64, 64)), threads=2)
    assert parity_error(runner, PreLogits(model), images) < 1e-4

    # The automatic choice is measured among runtimes that pass parity, and gives eager's answer.
    small = SimpleCNN(num_classes=3).eval()
    chosen = fastest_runner(small, (3, 32, 32))
    assert chosen.name in ("onnxruntime", "torch channels_last")
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        expected = small(x).numpy()
    np.testing.assert_allclose(chosen(x), expected, rtol=1e-3, atol=1e-3)


def test_a_clear_runtime_race_is_remembered_and_a_close_one_is_run_again(cache_dir, monkeypatch):
    """The winner of a clear race is remembered, so the next run skips the race (and still passes parity); a
    race won by a hair is not, so one slow moment cannot send every later run of that network to the slower
    runtime. The runtimes' speeds are set by a clock the test controls, not by this machine's load."""
    pytest.importorskip("onnxruntime")
    from types import SimpleNamespace

    from imgcls.runtime import pytorch as runners
    from imgcls.models.simple_cnn import SimpleCNN

    now = [0.0]
    monkeypatch.setattr(runners, "time", SimpleNamespace(perf_counter=lambda: now[0]))

    def costing(build, cost):
        """Runners from ``build`` whose every image advances the test's clock by ``cost`` seconds."""
        def made(*args, **kwargs):
            runner = build(*args, **kwargs)
            run = runner.run

            def timed(inputs):
                now[0] += cost * len(inputs)
                return run(inputs)
            runner.run = timed
            return runner
        return made

    onnx, pytorch = runners.onnx_runner, runners.torch_runner
    small = SimpleCNN(num_classes=3).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        expected = small(x).numpy()
    monkeypatch.setattr(runners, "onnx_runner", costing(onnx, 0.010))
    monkeypatch.setattr(runners, "torch_runner", costing(pytorch, 0.011))  # ONNX Runtime ahead by 10%: too close
    assert runners.fastest_runner(small, (3, 32, 32)).name == runners.ORT
    assert not (cache_dir / "runtime-choices.json").exists()
    monkeypatch.setattr(runners, "torch_runner", costing(pytorch, 0.005))  # now PyTorch, twice as fast: remembered
    chosen = runners.fastest_runner(small, (3, 32, 32))
    assert chosen.name == runners.TORCH and chosen.images_per_second is not None
    assert (cache_dir / "runtime-choices.json").exists()
    again = runners.fastest_runner(small, (3, 32, 32))
    assert again.name == runners.TORCH and again.images_per_second is None  # no race this time
    np.testing.assert_allclose(again(x), expected, rtol=1e-3, atol=1e-3)
    assert runners.decisive([10.0]) and runners.decisive([12.5, 10.0]) and not runners.decisive([12.0, 10.0])


def _failing_after(monkeypatch, calls: int) -> list:
    """ONNX Runtime sessions that compute right for their first ``calls`` batches (the parity check and the race)
    and then fail, as a kernel that breaks on one batch shape only; the race is won by ONNX Runtime."""
    from imgcls.runtime import pytorch as runners

    built = runners.onnx_runner

    def build(*args, **kwargs):
        runner = built(*args, **kwargs)
        run, seen = runner.run, [0]

        def flaky(inputs):
            seen[0] += 1
            if seen[0] > calls:
                raise RuntimeError("Non-zero status code returned while running Conv node")
            return run(inputs)
        runner.run = flaky
        return runner

    monkeypatch.setattr(runners, "onnx_runner", build)
    monkeypatch.setattr(runners, "_faster", lambda candidates, *a, **k: candidates[0])
    warned = []
    monkeypatch.setattr(runners.log, "warning", warned.append)
    return warned


def test_a_runtime_that_fails_on_a_later_batch_hands_over_to_pytorch(trained_run, cache_dir, monkeypatch):
    """An ONNX Runtime session that passed its parity check and then fails on a batch does not end the job
    (hours into caching features, or in the middle of predict): one warning, and PyTorch computes that batch
    and the rest, giving what PyTorch gives. With --runtime onnxruntime asked for, its error is not hidden."""
    pytest.importorskip("onnxruntime")
    from imgcls.runtime import pytorch as runners
    from imgcls.models.factory import model_from_checkpoint
    from imgcls.models.simple_cnn import SimpleCNN

    warned = _failing_after(monkeypatch, calls=1)
    small = SimpleCNN(num_classes=3).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        expected = small(x).numpy()
    chosen = runners.fastest_runner(small, (3, 32, 32))
    assert chosen.name == runners.ORT
    np.testing.assert_allclose(chosen(x), expected, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(chosen(x[:3]), expected[:3], rtol=1e-3, atol=1e-3)
    assert len(warned) == 1 and "failed on a batch of 4" in warned[0] and "going on with PyTorch" in warned[0]

    checkpoint = load_checkpoint(trained_run / "weights" / "best.pt")
    images = torch.randn(5, *checkpoint["preprocess"]["input_size"], generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        logits = model_from_checkpoint(checkpoint)(images).numpy()
    runner = runners.checkpoint_runner(checkpoint)
    assert runner.name.startswith(runners.ORT)
    np.testing.assert_allclose(runner(images), logits, rtol=1e-4, atol=1e-4)
    assert len(warned) == 2

    forced = runners.fastest_runner(small, (3, 32, 32), kind="onnxruntime")
    with pytest.raises(RuntimeError, match="Non-zero status"):
        forced(x)


def _photo(size=(1024, 768)) -> Image.Image:
    """A smooth gradient with shapes: like a photo, JPEG-compressible, with edges to blur."""
    w, h = size
    x, y = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    pixels = np.stack([x * 255, y * 255, (1 - x) * 180 + 40], axis=-1).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    image.paste(shape_image("circle", 400, seed=3), (100, 150))
    return image


def test_draft_decoding_is_close_to_full_decoding(tmp_path):
    from imgcls.data.images import load_image

    path = tmp_path / "big.jpg"
    _photo().save(path, quality=92)
    preprocess = {"input_size": [3, 224, 224], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear",
                  "crop_pct": 0.875}
    assert load_image(path, draft_size=(256, 256)).size == (512, 384)  # decoded at 1/2 scale: source >= 2x target
    drafted = decode_to_working(path, preprocess, training=False).astype(np.float64)
    full = eval_transform(dict(preprocess, mean=[0.0] * 3, std=[1.0] * 3))(load_image(path))
    full = full.permute(1, 2, 0).numpy() * 255
    assert drafted.shape == full.shape == (224, 224, 3)
    assert np.abs(drafted - full).mean() < 2.0  # of 255: invisible


def test_decoded_images_in_ram_and_memory_mapped_are_identical(tmp_path):
    make_split_folders(tmp_path / "d", counts=(3, 0, 0), size=40)
    paths = sorted((tmp_path / "d" / "train").rglob("*.png"))
    (tmp_path / "d" / "train" / "circle" / "broken.png").write_bytes(b"junk")
    paths.append(tmp_path / "d" / "train" / "circle" / "broken.png")
    preprocess = {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear",
                  "crop_pct": 1.0}
    in_ram = DecodedImages(paths, preprocess, training=False, progress=False)
    mapped = DecodedImages(paths, preprocess, training=False, ram_limit_bytes=0, root=tmp_path / "c", progress=False)
    assert in_ram.file is None and mapped.file is not None and mapped.file.exists()
    assert mapped[len(paths) - 1] is None  # the unreadable file is marked, not fatal
    for i in range(len(paths) - 1):
        assert np.array_equal(in_ram[i], mapped[i])
        # Exactly what the eval transform would have fed the network.
        expected = eval_transform(dict(preprocess, mean=[0.0] * 3, std=[1.0] * 3))(Image.open(paths[i]).convert("RGB"))
        assert np.allclose(in_ram[i] / 255.0, expected.permute(1, 2, 0).numpy(), atol=1e-6)
    again = DecodedImages(paths, preprocess, training=False, ram_limit_bytes=0, root=tmp_path / "c", progress=False)
    assert again.file == mapped.file and np.array_equal(again[0], mapped[0])


def test_bad_cache_views_is_one_clear_error(cli, data):
    code, _, err = cli("train", "--data", data, "--cache-views", "0")
    assert code == 2
    assert "--cache-views 0: must be at least 1" in err


def test_cached_onnx_runner_matches_pytorch_and_follows_the_weights(trained_run, cache_dir):
    """A .pt checkpoint is exported to ONNX once, parity-checked and cached; changed weights get a new export."""
    pytest.importorskip("onnxruntime")
    from imgcls.runtime.pytorch import checkpoint_runner
    from imgcls.models.factory import model_from_checkpoint

    checkpoint = load_checkpoint(trained_run / "weights" / "best.pt")
    images = torch.randn(5, *checkpoint["preprocess"]["input_size"], generator=torch.Generator().manual_seed(1))
    runner = checkpoint_runner(checkpoint, kind="onnxruntime")
    assert runner.name.startswith("onnxruntime")
    with torch.inference_mode():
        expected = model_from_checkpoint(checkpoint)(images).numpy()
    np.testing.assert_allclose(runner(images), expected, rtol=1e-4, atol=1e-4)
    exported = sorted((cache_dir / "onnx").glob("*.onnx"))
    assert len(exported) == 1
    again = checkpoint_runner(checkpoint | {"temperature": 2.0, "metrics": {}}, kind="onnxruntime")
    assert sorted((cache_dir / "onnx").glob("*.onnx")) == exported  # same network: the cached file is reused
    np.testing.assert_allclose(again(images), expected, rtol=1e-4, atol=1e-4)

    changed = dict(checkpoint, state_dict={k: v.clone() for k, v in checkpoint["state_dict"].items()})
    changed["state_dict"]["classifier.bias"] += 1.0  # e.g. the run trained another epoch
    fresh = checkpoint_runner(changed, kind="onnxruntime")
    assert len(list((cache_dir / "onnx").glob("*.onnx"))) == 2  # a new export, never the stale one
    np.testing.assert_allclose(fresh(images), expected + 1.0, rtol=1e-4, atol=1e-4)


def test_a_damaged_cached_export_is_exported_again(trained_run, cache_dir):
    """The cache is imgcls's own: a cached ONNX file that no longer loads (a disk error, a killed copy) is
    replaced by a new checked export instead of sending every later call to PyTorch."""
    pytest.importorskip("onnxruntime")
    from imgcls.runtime.pytorch import checkpoint_runner

    checkpoint = load_checkpoint(trained_run / "weights" / "best.pt")
    images = torch.randn(3, *checkpoint["preprocess"]["input_size"], generator=torch.Generator().manual_seed(2))
    expected = checkpoint_runner(checkpoint, kind="onnxruntime")(images)
    [cached] = (cache_dir / "onnx").glob("*.onnx")
    cached.write_bytes(b"\0" * 100)
    again = checkpoint_runner(checkpoint, kind="onnxruntime")
    assert again.name.startswith("onnxruntime")
    np.testing.assert_allclose(again(images), expected, rtol=1e-5, atol=1e-5)
    assert cached.stat().st_size > 100  # replaced by the new export, which the next call loads
    np.testing.assert_allclose(checkpoint_runner(checkpoint, kind="onnxruntime")(images), expected, rtol=1e-5, atol=1e-5)


def test_an_export_that_differs_from_pytorch_is_neither_used_nor_cached(trained_run, cache_dir, monkeypatch):
    """The first call on a new checkpoint checks the export against PyTorch before it keeps it: a wrong export
    falls back to PyTorch with a warning (or is refused with --runtime onnxruntime) and leaves no file behind."""
    pytest.importorskip("onnxruntime")
    from imgcls.runtime import pytorch as runners
    from imgcls.models.factory import network_from_checkpoint

    checkpoint = load_checkpoint(trained_run / "weights" / "best.pt")
    wrong = network_from_checkpoint(checkpoint)  # with the familiarity output when the run fitted one
    with torch.no_grad():
        getattr(wrong, "model", wrong).get_classifier().bias += 5.0
    export = runners.export_onnx_bytes
    monkeypatch.setattr(runners, "export_onnx_bytes", lambda module, size, **kw: export(wrong, size, **kw))

    warned = []
    monkeypatch.setattr(runners.log, "warning", warned.append)
    runner = runners.checkpoint_runner(checkpoint, kind="auto")
    assert runner.name == runners.TORCH and "differs from eager PyTorch" in " ".join(warned)
    assert not list(cache_dir.glob("onnx/*.onnx"))
    with pytest.raises(ImgclsError, match="--runtime onnxruntime: the ONNX export differs"):
        runners.checkpoint_runner(checkpoint, kind="onnxruntime")
    assert not list(cache_dir.glob("onnx/*.onnx"))


def _autocast_of_training_steps(cli, data, tmp_path, monkeypatch, name: str) -> set:
    """Train one epoch; return the (autocast on?, dtype) pairs seen by the network's forward in training mode."""
    from imgcls.models.simple_cnn import SimpleCNN

    seen = set()
    forward = SimpleCNN.forward

    def spy(self, x):
        if self.training:
            seen.add((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return forward(self, x)

    monkeypatch.setattr(SimpleCNN, "forward", spy)
    code, _, err = cli("train", "--data", data, "--model", "simple_cnn", "--no-pretrained", "--imgsz", "32",
                       "--batch-size", "8", "--workers", "0", "--epochs", "1", "--project", tmp_path / "runs",
                       "--name", name)
    assert code == 0, err
    results = json.loads((tmp_path / "runs" / name / "results.json").read_text())
    assert 0 < results["epoch:1"]["train info"]["loss"] < 10  # bf16 or not, it trains
    monkeypatch.setattr(SimpleCNN, "forward", forward)
    return seen, err


def test_bf16_autocast_on_cpu_trains_when_chosen(cli, flat_data, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLS_CPU_BF16", "1")
    seen, err = _autocast_of_training_steps(cli, flat_data, tmp_path, monkeypatch, "bf16")
    assert "bf16 autocast: on for training" in err
    assert seen == {(True, torch.bfloat16)}  # every training step ran under bf16 autocast
    monkeypatch.setenv("IMGCLS_CPU_BF16", "0")
    seen, err = _autocast_of_training_steps(cli, flat_data, tmp_path, monkeypatch, "fp32")
    assert "bf16 autocast" not in err and {on for on, _ in seen} == {False}


class _Timed(torch.nn.Module):
    """A network whose step takes 20 ms in one precision and 5 ms in the other."""

    def __init__(self, bf16_faster: bool):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.bf16_faster = bf16_faster

    def forward(self, x):
        import time

        bf16 = torch.is_autocast_enabled("cpu")
        time.sleep(0.005 if bf16 == self.bf16_faster else 0.02)
        return x.mean() * self.weight


def test_bf16_is_chosen_only_where_it_measures_faster():
    from imgcls.runtime.device import cpu_bf16_is_faster

    assert cpu_bf16_is_faster(_Timed(bf16_faster=True), (3, 8, 8)) is True
    assert cpu_bf16_is_faster(_Timed(bf16_faster=False), (3, 8, 8)) is False


@pytest.mark.parametrize("rows", [1, 2, 5])
def test_onnx_runner_on_several_cores_gives_every_row_its_own_logits_in_order(trained_run, rows):
    """On N cores a batch is split into N slices run at once: the rows come back whole and in their order."""
    pytest.importorskip("onnxruntime")
    from imgcls.runtime.pytorch import export_onnx_bytes
    from imgcls.runtime.runner import onnx_runner
    from imgcls.models.factory import model_from_checkpoint

    checkpoint = load_checkpoint(trained_run / "weights" / "best.pt")
    model = model_from_checkpoint(checkpoint).eval()
    data = export_onnx_bytes(model, checkpoint["preprocess"]["input_size"])
    images = torch.randn(rows, *checkpoint["preprocess"]["input_size"], generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = model(images).numpy()
    for threads in (1, 2, 3):
        got = onnx_runner(data, threads=threads)(images)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
