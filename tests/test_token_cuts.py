"""Transformers are cut between blocks as CNNs are cut between stages: the tokens after block K are cached, the
blocks above K (with the final norm, pooling and head) tune on them, mirrored at random on their patch grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from imgcls.engine.budget import Costs

SIZE = 32  # a 2 x 2 patch grid for ViT-16, an 8 x 8 map for Swin-4
SIZES = {"eva02_tiny_patch14_224": 28}  # EVA's 14-pixel patches: a 2 x 2 grid


def _model(name: str, classes: int = 3):
    import timm

    return timm.create_model(name, pretrained=False, num_classes=classes, img_size=SIZES.get(name, SIZE)).eval()


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_patch16_224", "eva02_tiny_patch14_224",
                                  "swin_tiny_patch4_window7_224"])
def test_the_blocks_above_a_cut_on_the_tokens_below_it_are_the_whole_network(name):
    """EVA's blocks each apply its rotary position embedding: cut between them, each is given it (parts.RopeBlock)."""
    from imgcls.models.parts import Lower, Upper, count_parameters, cut_points, set_trainable

    model = _model(name)
    size = SIZES.get(name, SIZE)
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = model(images)
        for cut in range(1, cut_points(model)):
            tokens = Lower(model, cut)(images)
            assert torch.allclose(Upper(model, cut)(tokens), whole, atol=1e-5), (name, cut)
    set_trainable(model, Upper(model, cut))  # what trains above the cut: the last stage or block and the head
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and count_parameters(model)[1] < count_parameters(model)[0]
    assert not any(n.startswith(("patch_embed", "cls_token", "pos_embed", "blocks.0.", "layers.0.")) for n in trained)
    assert any(n.startswith("head") for n in trained)


def _mirrored_order(grid, prefix: int) -> torch.Tensor:
    """The token order of a ViT's patch grid mirrored left to right: prefix tokens first, each row reversed."""
    rows, cols = grid
    return torch.cat([torch.arange(prefix), torch.arange(rows * cols).reshape(rows, cols).flip(1).reshape(-1) + prefix])


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_patch16_224"])
def test_vit_tokens_mirrored_on_their_patch_grid_give_the_same_output_so_they_are_not_mirrored(name):
    """The positions are in the tokens' values below the first block; above it nothing depends on their order.
    The patch grid mirrored (the class token kept first) gives the same logits at every cut, so a
    tuned ViT is not mirrored: its training rows stay as they are and it runs its top blocks once."""
    from imgcls.engine.features import FeatureDataset
    from imgcls.models.parts import Lower, Mirrored, Upper, mirror_of

    model = _model(name)
    order = _mirrored_order(model.patch_embed.grid_size, model.num_prefix_tokens)
    assert order[:model.num_prefix_tokens].tolist() == list(range(model.num_prefix_tokens))
    assert sorted(order.tolist()) == list(range(len(order))) and order.tolist() != sorted(order.tolist())
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for cut in (1, 6, 11):
            tokens = Lower(model, cut)(images)
            assert torch.allclose(Upper(model, cut)(tokens[:, order]), Upper(model, cut)(tokens), atol=1e-5)
        assert torch.allclose(Mirrored(model, 9)(images), model(images), atol=1e-5)
    assert mirror_of(model) is None
    rows = Lower(model, 9)(images).detach().numpy()
    assert all(torch.equal(FeatureDataset(rows, [0, 1], mirror_of(model))[i][0], torch.from_numpy(rows[i]))
               for i in range(2) for _ in range(10))


def test_swin_maps_are_mirrored_along_their_width_which_changes_what_the_top_sees():
    from imgcls.engine.features import FeatureDataset
    from imgcls.models.parts import Lower, Mirrored, mirror_of

    model = _model("swin_tiny_patch4_window7_224")
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maps = Lower(model, 2)(images)  # N x H x W x C
        assert maps.shape[1] == maps.shape[2] != maps.shape[3]
        assert torch.equal(mirror_of(model)(maps), maps.flip(2))
        assert not torch.allclose(Mirrored(model, 2)(images), model(images), atol=1e-4)  # windows see positions
    seen = {tuple(FeatureDataset(maps.numpy(), [0, 1], mirror_of(model))[0][0][0, :, 0].tolist()) for _ in range(30)}
    assert seen == {tuple(maps[0, 0, :, 0].tolist()), tuple(maps[0, 0, :, 0].flip(0).tolist())}


def _vit_made_for(monkeypatch, size: int):
    """Build vit_tiny for ``size``-pixel inputs wherever imgcls builds it (a stand-in for pretrained weights at
    224 pixels, which would make the test slow)."""
    import imgcls.models.factory as factory

    build = factory._build
    monkeypatch.setattr(factory, "_build", lambda name, classes, se=False, img_size=None:
                        build(name, classes, se, img_size or (size, size)))


def test_the_budget_plan_of_a_pretrained_vit_tunes_its_top_blocks(monkeypatch):
    import imgcls.engine.budget as budget
    from imgcls.config import TrainConfig

    model = _model("vit_tiny_patch16_224")
    measured, said = [], []
    monkeypatch.setattr(budget, "measure", lambda model, cut, size, *a, **k: measured.append((cut, size))
                        or Costs(lower=0.002, top_train=0.004, top_eval=0.001, head=1e-5))
    monkeypatch.setattr(budget.log, "info", said.append)
    plan, views, est, size = budget.budget_plan(TrainConfig(data="photos", budget="5m"), model,
                                                {"input_size": (3, SIZE, SIZE)}, {"train": 300, "val": 60, "test": 60},
                                                torch.device("cpu"))
    assert [(p.name, p.trains, p.inputs, p.cut) for p in plan] == [("probe", "head", "features", None),
                                                                   ("tune", "top", "features", 9)]
    assert size == (SIZE, SIZE) and measured == [(9, (3, SIZE, SIZE))]  # its own size: the only one it takes
    assert est.total <= 300 and "per image below block 9" in " ".join(said)


def test_a_budget_run_of_a_vit_trains_its_top_blocks_on_cached_tokens(cli, split_data, tmp_path, monkeypatch):
    import imgcls.engine.budget as budget
    from imgcls.models.factory import build_model, model_from_checkpoint
    from imgcls.models.parts import Lower, Upper

    _vit_made_for(monkeypatch, SIZE)
    monkeypatch.setattr(budget, "measure", lambda *args, **kwargs: Costs(lower=0.002, top_train=0.004,
                                                                           top_eval=0.001, head=1e-5))
    for key, value in {"max_views": 1, "probe_epochs": 3, "tune_epochs": 2, "min_tune_epochs": 2,
                       "max_tune_epochs": 2}.items():  # a short plan: this is about what trains, not how long
        monkeypatch.setitem(budget.RECIPE, key, value)
    start = build_model("vit_tiny_patch16_224", 3)
    torch.save(start.state_dict(), tmp_path / "vit.pth")
    code, _, err = cli("train", "--data", split_data, "--model", "vit_tiny_patch16_224", "--weights",
                       tmp_path / "vit.pth", "--imgsz", SIZE, "--batch-size", "8", "--workers", "0", "--budget", "60s",
                       "--patience", "0", "--project", tmp_path / "runs")
    assert code == 0, err
    run = tmp_path / "runs" / "train"
    results = json.loads((run / "results.json").read_text())
    assert [(p["name"], p["trains"], p["cut"]) for p in results["phases"]] == [("probe", "head", None),
                                                                              ("tune", "top", 9)]
    last = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert last["mirrored_at"] == 9 and results["phases"][1]["epochs"] == 2
    weights, before = last["state_dict"], start.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in before.items() if k.startswith(("patch_embed", "blocks.8.")))
    assert not torch.equal(weights["blocks.11.mlp.fc2.weight"], before["blocks.11.mlp.fc2.weight"])
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    plain = build_model("vit_tiny_patch16_224", 3)
    plain.load_state_dict(weights)
    with torch.no_grad():
        expected = Upper(plain.eval(), 9)(Lower(plain, 9)(images))  # the tokens' mirror image changes nothing
        assert np.allclose(model_from_checkpoint(last)(images).numpy(), expected.numpy(), atol=1e-5)
