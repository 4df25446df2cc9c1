"""The default plan: fitted to --budget from measured costs; each phase trains what it says; resumable mid-phase;
--fast is the frozen linear head imgcls trained by default before plans."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from imgcls.engine.state import is_better
from imgcls.engine.budget import RECIPE, Costs, choose, choose_size, epochs_that_fit, estimate, larger_sizes

COUNTS = {"train": 2000, "val": 250, "test": 250}
COSTS = Costs(lower=0.02, top_train=0.02, top_eval=0.005, head=0.0001)  # seconds per image, a slow CPU


def test_the_plan_fits_the_budget_and_uses_it():
    for minutes in (3, 8, 15, 40):
        budget = minutes * 60
        views, probe, tune, est = choose(COSTS, COUNTS, budget, max_views=8)
        assert est.total <= budget, (minutes, est.steps)
        assert est.total == pytest.approx(estimate(COSTS, COUNTS, views, probe, tune).total)
    small = choose(COSTS, COUNTS, 8 * 60, 8)
    large = choose(COSTS, COUNTS, 40 * 60, 8)
    assert large[3].total > small[3].total and (large[0], large[2]) >= (small[0], small[2])  # more time, more work
    views, _, tune, _ = choose(COSTS, COUNTS, 3 * 60, 8)
    assert views >= 1 and tune >= 1


def test_the_label_review_is_planned_inside_the_budget():
    budget = 8 * 60
    plain = choose(COSTS, COUNTS, budget, 8)
    reviewed = choose(COSTS, COUNTS, budget, 8, review_seconds=90.0)
    assert dict(reviewed[3].steps)["label review"] == 90.0 and "label review" not in dict(plain[3].steps)
    assert reviewed[3].total <= budget and (reviewed[0], reviewed[2]) < (plain[0], plain[2])  # less left to train


def test_reading_the_image_files_is_planned():
    """Reading a large PNG or TIFF takes a tenth of a second and more, which random tensors do not show: the
    caching and the final evaluation count it once per image, and the plan does less in the same budget."""
    heavy, budget = dataclasses.replace(COSTS, read=0.05), 15 * 60
    plain, slow = (dict(estimate(c, COUNTS, 4, 10, 8).steps) for c in (COSTS, heavy))
    caching = next(step for step in plain if step.startswith("caching"))
    assert slow[caching] - plain[caching] == pytest.approx(0.05 * sum(COUNTS.values()))
    light_plan, heavy_plan = choose(COSTS, COUNTS, budget, 8), choose(heavy, COUNTS, budget, 8)
    assert heavy_plan[3].total <= budget and (heavy_plan[0], heavy_plan[2]) < (light_plan[0], light_plan[2])


def test_what_the_run_took_before_planning_comes_out_of_the_budget():
    """The data check reads every file before the plan is made: on large files that is minutes of the budget."""
    budget = 8 * 60
    fresh, late = choose(COSTS, COUNTS, budget, 8), choose(COSTS, COUNTS, budget, 8, spent=120.0)
    assert dict(late[3].steps)["data check, model set-up and measuring (done)"] == 120.0
    assert late[3].total <= budget and (late[0], late[2]) < (fresh[0], fresh[2])


def test_reading_seconds_are_measured_on_the_files_themselves(tmp_path):
    from PIL import Image

    from imgcls.engine.budget import reading_seconds

    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "fine.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert reading_seconds([tmp_path / "fine.png", tmp_path / "broken.png"], (32, 32)) > 0
    assert reading_seconds([tmp_path / "broken.png"], (32, 32)) == 0.0  # the run's own warnings name it


def test_a_larger_input_only_when_the_budget_holds_the_whole_recipe_at_it():
    sizes = larger_sizes((224, 224))
    assert sizes == [(224, 224), (256, 256), (288, 288), (320, 320), (352, 352)]
    assert larger_sizes((240, 320))[0] == (240, 320)
    at_largest = Costs(lower=0.03, top_train=0.03, top_eval=0.008, head=0.0001)
    roomy = choose_size(at_largest, sizes, COUNTS, 60 * 60, 8)
    assert roomy[0] == (352, 352) and roomy[4].total <= 60 * 60
    tight = choose_size(at_largest, sizes, COUNTS, 6 * 60, 8)  # the full recipe fits at no larger size
    scale = 224 ** 2 / 352 ** 2
    assert tight[0] == (224, 224) and tight[4].total <= 6 * 60
    assert tight[1:4] == choose(Costs(lower=0.03 * scale, top_train=0.03 * scale, top_eval=0.008 * scale,
                                      head=0.0001), COUNTS, 6 * 60, 8)[:3]
    chosen = set()
    for minutes in (8, 10, 15, 20, 30):  # whatever size is chosen, the recipe at it is whole, or it is the smallest
        size, views, _, tune, est = choose_size(at_largest, sizes, COUNTS, minutes * 60, 8)
        chosen.add(size)
        assert est.total <= minutes * 60
        assert size == (224, 224) or (views == RECIPE["max_views"] and tune >= RECIPE["tune_epochs"])
    assert len(chosen) >= 3  # the size grows with the budget


def test_a_slow_moment_before_the_run_does_not_cost_the_larger_input(monkeypatch):
    """The input size is chosen once, before caching: when the first measurement allows only a smaller size, the
    machine is measured again and the quicker of each cost counts; a machine slow both times keeps the smaller."""
    import imgcls.engine.budget as budget
    from imgcls.config import TrainConfig
    from imgcls.models.simple_cnn import SimpleCNN

    slow, quick = Costs(0.03, 0.12, 0.03, 1e-4), Costs(0.006, 0.02, 0.006, 1e-4)
    counts, preprocess = {"train": 1000, "val": 200, "test": 200}, {"input_size": (3, 224, 224)}

    def plan_with(*measured):
        calls = iter(measured)
        monkeypatch.setattr(budget, "measure", lambda *args, **kwargs: next(calls))
        return budget.budget_plan(TrainConfig(data="photos", budget="10m"), SimpleCNN(3), preprocess, counts,
                                  torch.device("cpu"))

    said = []
    monkeypatch.setattr(budget.log, "info", said.append)
    assert plan_with(slow, quick)[3] == (352, 352)   # measured twice: the quick measurement counts
    assert "Measured this machine twice, as the first measurement allowed only 224x224" in " ".join(said)
    assert plan_with(quick)[3] == (352, 352)         # the largest size at once: measured once (next() would fail)
    assert plan_with(slow, slow)[3] == (224, 224)    # really slow: slow twice


def test_a_data_set_too_large_to_fine_tune_in_the_budget_gets_the_probe_alone():
    """When not even one view and one tune epoch fit, the plan drops fine-tuning rather than the budget; it stays
    the cheapest plan (and over budget) when the probe alone does not fit either."""
    big = {"train": 40_000, "val": 5_000, "test": 5_000}
    probe_fits = (40_000 + 10_000) * (COSTS.lower + COSTS.top_eval + 0.004) + 60 + 10 * 45_000 * COSTS.head \
        + (10_000 + 1_000) * (COSTS.lower + COSTS.top_eval + 0.004)
    views, probe, tune, est = choose(COSTS, big, probe_fits * 1.05, 8)
    assert (views, tune) == (1, 0) and est.total <= probe_fits * 1.05
    assert not any(step.startswith("fine-tuning") for step, _ in est.steps)
    one_epoch = estimate(COSTS, big, 1, probe, 1).total
    assert one_epoch > probe_fits * 1.05  # what was given up did not fit
    assert choose(COSTS, big, one_epoch, 8)[2] >= 1  # given the time, it fine-tunes
    assert choose(COSTS, big, 60, 8)[:3] == (1, probe, 0)  # nothing fits: the cheapest plan


def test_the_probe_alone_is_said_and_the_budget_that_would_fine_tune_named(monkeypatch):
    import imgcls.engine.budget as budget
    from imgcls.config import TrainConfig
    from imgcls.models.simple_cnn import SimpleCNN

    counts = {"train": 40_000, "val": 5_000, "test": 5_000}
    said, warned = [], []
    monkeypatch.setattr(budget.log, "info", said.append)
    monkeypatch.setattr(budget.log, "warning", warned.append)
    monkeypatch.setattr(budget, "measure", lambda *args, **kwargs: Costs(0.004, 0.02, 0.005, 1e-4))
    plan, views, est, size = budget.budget_plan(TrainConfig(data="photos", budget="10m"), SimpleCNN(3),
                                                {"input_size": (3, 224, 224)}, counts, torch.device("cpu"))
    assert [p.name for p in plan] == ["probe"] and views == 1 and size == (224, 224) and est.total <= 600
    message = next(line for line in said if "too short to fine-tune" in line)
    minutes = int(message.split("--budget ")[1].split("m")[0])
    assert choose(budget.scaled(Costs(0.004, 0.02, 0.005, 1e-4), (352, 352), (224, 224)), counts, minutes * 60,
                  8)[2] >= 1  # the budget it names would fine-tune
    assert not warned
    budget.budget_plan(TrainConfig(data="photos", budget="1m"), SimpleCNN(3), {"input_size": (3, 224, 224)},
                       counts, torch.device("cpu"))
    assert len(warned) == 1 and "more than --budget 1m" in warned[0]


def test_a_probe_only_plan_trains_and_records_one_phase(cli, split_data, trained_run, tmp_path, monkeypatch):
    import imgcls.engine.budget as budget

    monkeypatch.setattr(budget, "measure", lambda *args, **kwargs: Costs(lower=0.004, top_train=5.0,
                                                                           top_eval=0.005, head=1e-4))
    start = torch.load(trained_run / "weights" / "best.pt", weights_only=True)["state_dict"]
    code, _, err = _planned(cli, split_data, trained_run / "weights" / "best.pt", tmp_path / "runs")
    assert code == 0, err
    assert "the plan trains the linear probe alone" in err, err
    run = tmp_path / "runs" / "train"
    results = json.loads((run / "results.json").read_text())
    assert [p["name"] for p in results["phases"]] == ["probe"] and results["test"]["accuracy"] >= 0
    # its epochs take a blink: the probe keeps its planned length, however little of the budget is left
    assert results["phases"][0]["epochs"] == RECIPE["probe_epochs"] and "Re-planned" not in err
    final = torch.load(run / "weights" / "best.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(final[k], v) for k, v in start.items() if not k.startswith("classifier"))
    assert not torch.equal(final["classifier.weight"], start["classifier.weight"])


def test_estimate_counts_every_image_view_once():
    est = dict(estimate(Costs(lower=1.0, top_train=0.0, top_eval=0.0), {"train": 10, "val": 3, "test": 2}, 4, 0, 0)
               .steps)
    caching = next(v for k, v in est.items() if k.startswith("caching"))
    assert caching == pytest.approx((10 * 4 + 3 + 2) * (1.0 + 0.004))


def test_the_tune_phase_refits_to_the_time_left():
    assert epochs_that_fit(1, 3, epoch_seconds=25, seconds_left=600) == RECIPE["max_tune_epochs"]  # room: grows
    assert epochs_that_fit(1, 8, epoch_seconds=60, seconds_left=300) == 6
    assert epochs_that_fit(1, 8, epoch_seconds=60, seconds_left=0) == RECIPE["min_tune_epochs"]  # late: shrinks
    assert epochs_that_fit(1, 2, epoch_seconds=60, seconds_left=-50) == 2  # never below a short plan's own length


def test_a_pessimistic_measurement_is_corrected_by_the_runs_own_epochs(cli, split_data, trained_run, tmp_path,
                                                                         monkeypatch):
    """The measurement before the run says the tune phase is slow, so the plan has few tune epochs; its first
    epoch shows it is fast, so the phase grows into the budget, and the record says so everywhere."""
    import yaml

    import imgcls.engine.budget as budget

    monkeypatch.setattr(budget, "measure", lambda *args, **kwargs: Costs(lower=0.004, top_train=0.5,
                                                                           top_eval=0.005, head=1e-4))
    code, _, err = _planned(cli, split_data, trained_run / "weights" / "best.pt", tmp_path / "runs")
    assert code == 0, err
    assert "tune: 2 epoch(s)" in err, err  # what the slow measurement allows
    assert "Re-planned with this run's own speed" in err
    run = tmp_path / "runs" / "train"
    results = json.loads((run / "results.json").read_text())
    probe, tune = results["phases"]
    assert 2 < tune["epochs"] <= RECIPE["max_tune_epochs"]  # grew into the time left (how far depends on the load)
    total = probe["epochs"] + tune["epochs"]
    assert f"epoch:{total}" in results and f"epoch:{total + 1}" not in results
    assert results["train parameters"]["epochs"] == total
    assert yaml.safe_load((run / "args.yaml").read_text())["epochs"] == total
    last = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert last["plan"] == results["phases"] and last["args"]["epochs"] == total


@pytest.fixture(autouse=True)
def steady_machine(monkeypatch):
    """Plans follow measured speed; tests pin the measurement so the plan does not depend on the machine's load.
    With these costs a 60 s budget grows the recipe to its largest plan: 8 views, 10 probe + 20 tune epochs."""
    import imgcls.engine.budget as budget

    monkeypatch.setattr(budget, "measure", lambda *args, **kwargs: Costs(lower=0.004, top_train=0.02,
                                                                           top_eval=0.005, head=1e-4))


def _stages(state: dict) -> dict[int, dict]:
    """simple_cnn's parameters by stage (its stages end at the max-pools: 7 layers each with SE off)."""
    out: dict[int, dict] = {}
    for key, value in state.items():
        if key.startswith("features."):
            out.setdefault(int(key.split(".")[1]) // 7, {})[key] = value
    return out


def _planned(cli, data, weights, project, *extra):
    return cli("train", "--data", data, "--model", "simple_cnn", "--weights", weights, "--imgsz", "32",
               "--batch-size", "8", "--workers", "0", "--budget", "60s", "--patience", "0", "--project", project, *extra)


def test_each_phase_trains_what_it_says(cli, split_data, trained_run, tmp_path):
    start = torch.load(trained_run / "weights" / "best.pt", weights_only=True)["state_dict"]
    code, _, err = _planned(cli, split_data, trained_run / "weights" / "best.pt", tmp_path / "runs")
    assert code == 0, err
    run = tmp_path / "runs" / "train"
    results = json.loads((run / "results.json").read_text())
    probe, tune = results["phases"]
    assert (probe["name"], probe["trains"], tune["name"], tune["trains"], tune["cut"]) == \
        ("probe", "head", "tune", "top", 2)
    assert "Plan for --budget 60s" in err and "Estimated time" in err
    assert "ms to read an image file" in err and "data check, model set-up and measuring (done)" in err
    phases = [results[f"epoch:{i}"]["phase"] for i in range(1, probe["epochs"] + tune["epochs"] + 1)]
    assert phases == ["probe"] * probe["epochs"] + ["tune"] * tune["epochs"]
    final = torch.load(run / "weights" / "last.pt", weights_only=True)["state_dict"]
    before, after = _stages(start), _stages(final)
    for stage in (0, 1):  # below the cut: untouched, batch-norm statistics included
        assert all(torch.equal(after[stage][k], v) for k, v in before[stage].items()), stage
    for stage in (2, 3):  # above it: trained
        assert any(not torch.equal(after[stage][k], v) for k, v in before[stage].items()), stage
    assert not torch.equal(final["classifier.weight"], start["classifier.weight"])
    args = json.loads(json.dumps(results["train parameters"]))
    assert args["epochs"] == probe["epochs"] + tune["epochs"] and args["budget"] == "60s"
    # The record and the report count what each phase trains: the head alone, then the top stages with it.
    model = results["model"]
    trained = model["trainable parameters per phase"]
    assert trained["probe"] == final["classifier.weight"].numel() + final["classifier.bias"].numel()
    assert trained["probe"] < trained["tune"] == model["trainable parameters"] < model["total parameters"]
    assert f"probe: {trained['probe']:,}, tune: {trained['tune']:,}" in (run / "report.html").read_text()
    # best.pt: the better by val of the epochs that end the probe and the tune phase, never one in between
    ends = [probe["epochs"], probe["epochs"] + tune["epochs"]]
    later_wins = is_better(results[f"epoch:{ends[1]}"]["valid info"], results[f"epoch:{ends[0]}"]["valid info"])
    best = torch.load(run / "weights" / "best.pt", weights_only=True)
    assert results["best epoch"] == best["epoch"] == ends[later_wins]
    marked = [int(line.split()[1].split("/")[0]) for line in err.splitlines()
              if line.startswith("epoch ") and "*best*" in line]
    assert marked == ends[:1 + later_wins]


def _best_of_every_epoch(results: dict) -> int:
    best = 1
    for epoch in range(2, 1 + sum(k.startswith("epoch:") for k in results)):
        if is_better(results[f"epoch:{epoch}"]["valid info"], results[f"epoch:{best}"]["valid info"]):
            best = epoch
    return best


def test_probe_phase_leaves_the_backbone_alone(cli, split_data, trained_run, tmp_path):
    """Interrupted right after the probe: only the head has moved."""
    import imgcls

    start = torch.load(trained_run / "weights" / "best.pt", weights_only=True)["state_dict"]

    def stop_after_the_probe(epoch, valid_info):
        if epoch == probe_epochs:
            raise KeyboardInterrupt

    probe_epochs = 10
    with pytest.raises(KeyboardInterrupt):
        imgcls.train(data=str(split_data), model="simple_cnn", weights=str(trained_run / "weights" / "best.pt"),
                     imgsz=32, batch_size=8, workers=0, budget="60s", project=str(tmp_path / "runs"),
                     progress=False, on_epoch_end=stop_after_the_probe)
    last = torch.load(tmp_path / "runs" / "train" / "weights" / "last.pt", weights_only=True)
    assert last["epoch"] == probe_epochs and last["phase"] == "probe"
    moved = [k for k, v in start.items() if not torch.equal(last["state_dict"][k], v)]
    assert moved and set(moved) <= {"classifier.weight", "classifier.bias"}


def test_resume_mid_phase_continues_the_same_plan(cli, split_data, trained_run, tmp_path, capsys):
    import imgcls

    weights = trained_run / "weights" / "best.pt"

    def interrupt(epoch, valid_info):
        if epoch == 12:  # two epochs into the tune phase
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        imgcls.train(data=str(split_data), model="simple_cnn", weights=str(weights), imgsz=32, batch_size=8,
                     workers=0, budget="60s", project=str(tmp_path / "runs"), progress=False, on_epoch_end=interrupt,
                     patience=0)
    run = tmp_path / "runs" / "train"
    planned = json.loads((run / "results.json").read_text())["phases"]
    interrupted = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert interrupted["epoch"] == 12 and interrupted["phase"] == "tune"
    capsys.readouterr()  # what the interrupted run printed
    code, _, err = cli("train", "--resume", run)
    assert code == 0, err
    assert "Resuming" in err and "Measured this machine" not in err  # the recorded plan, not a new one
    results = json.loads((run / "results.json").read_text())
    assert results["phases"] == planned
    total = sum(p["epochs"] for p in planned)
    assert [results[f"epoch:{i}"]["phase"] for i in (12, 13, total)] == ["tune"] * 3
    assert f"epoch:{total + 1}" not in results and "test" in results
    assert results["best epoch"] in (planned[0]["epochs"], total)  # the resumed run keeps the plan's best.pt rule
    assert results[f"epoch:{total}"]["elapsed"] > results["epoch:12"]["elapsed"]


def test_fast_is_the_frozen_linear_head(cli, split_data, trained_run, tmp_path):
    """--fast: what `imgcls train` did by default before plans: 30 epochs of a linear head on cached features."""
    weights = trained_run / "weights" / "best.pt"
    start = torch.load(weights, weights_only=True)["state_dict"]
    code, _, err = cli("train", "--data", split_data, "--model", "simple_cnn", "--weights", weights, "--imgsz", "32",
                       "--batch-size", "8", "--workers", "0", "--fast", "--project", tmp_path / "runs")
    assert code == 0, err
    results = json.loads((tmp_path / "runs" / "train" / "results.json").read_text())
    assert [(p["name"], p["epochs"], p["trains"], p["inputs"], p["cut"]) for p in results["phases"]] == \
        [("head", 30, "head", "features", None)]
    assert results["train parameters"]["freeze"] is True and results["train parameters"]["epochs"] == 30
    assert results["best epoch"] == _best_of_every_epoch(results)  # any epoch may be best.pt, as before plans
    assert "Measured this machine" not in err
    final = torch.load(tmp_path / "runs" / "train" / "weights" / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(final[k], v) for k, v in start.items() if not k.startswith("classifier"))


def test_the_tuned_network_predicts_from_its_activations_and_their_mirror_image(cli, split_data, trained_run,
                                                                                  tmp_path, monkeypatch):
    """The tune phase trains on cached activation maps mirrored at random; what it leaves predicts from the maps at
    the cut and their mirror image (the top of the network run on both), in training's validation and in `imgcls
    val` alike; the run's error gallery explains (Grad-CAM) that network's mistakes with that network, and its
    FLOPs per image are that network's. --fast leaves the plain network."""
    from mirrored import CUT, expected_logits

    import imgcls.reporting.gallery as gallery
    from imgcls.models.factory import model_from_checkpoint
    from imgcls.models.parts import count_flops

    explained, draw = [], gallery.draw_error_gallery
    monkeypatch.setattr(gallery, "draw_error_gallery", lambda model, *args, **kwargs: explained.append(model)
                        or draw(model, *args, **kwargs))
    code, _, err = _planned(cli, split_data, trained_run / "weights" / "best.pt", tmp_path / "runs")
    assert code == 0, err
    run = tmp_path / "runs" / "train"
    results = json.loads((run / "results.json").read_text())
    last = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert last["mirrored_at"] == results["phases"][1]["cut"] == CUT
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected, plain = expected_logits(last, images)
    with torch.no_grad():
        logits = model_from_checkpoint(last)(images)
        assert torch.allclose(logits, expected, atol=1e-5) and not torch.allclose(logits, plain, atol=1e-3)
        best = torch.load(run / "weights" / "best.pt", weights_only=True)
        assert len(explained) == 1 and (run / "errors_val.png").exists()
        # best.pt is the better of the phases' ends by val, a near tie on this tiny set: whichever it is, the
        # gallery explains the network it describes (the tuned one predicting from the mirrored maps, or the probe's)
        mirrored, plain_best = expected_logits(best, images)
        reference = mirrored if best.get("mirrored_at") == CUT else plain_best
        assert torch.allclose(explained[0].cpu().eval()(images), reference, atol=1e-5)
    flops = results["model"]["FLOPs per image"]
    assert flops == count_flops(model_from_checkpoint(last), (3, 32, 32)) > count_flops(model_from_checkpoint(last).model,
                                                                                         (3, 32, 32))
    code, _, err = cli("val", "--weights", run / "weights" / "last.pt", "--workers", "0")
    assert code == 0, err
    m = json.loads((run / "val" / "metrics.json").read_text())
    epoch = results[f"epoch:{last['epoch']}"]["valid info"]
    assert m["log_loss"] == pytest.approx(epoch["loss"], abs=1e-4)
    assert m["accuracy"] == pytest.approx(epoch["accuracy"])
    code, _, err = cli("train", "--data", split_data, "--model", "simple_cnn", "--weights", run / "weights" / "best.pt",
                       "--imgsz", "32", "--batch-size", "8", "--workers", "0", "--fast", "--project", tmp_path / "runs",
                       "--name", "fast")
    assert code == 0, err
    assert torch.load(tmp_path / "runs" / "fast" / "weights" / "last.pt", weights_only=True)["mirrored_at"] is None
    assert json.loads((tmp_path / "runs" / "fast" / "results.json").read_text())["model"]["FLOPs per image"] < flops


# A whole-network plan (on a GPU, for networks imgcls cannot cut, from scratch): measured, fitted, re-fitted.
# Seconds per image of a whole training step and of inference, recorded from runs that stand in for devices
# this suite never has: lite0 at 224 px on one H100 (bf16, channels_last) and a tiny ViT on a 2-core CPU.
GPU = Costs(lower=0.0, top_train=0.0009, top_eval=0.0003, head=6e-6, read=0.0016)
CPU_VIT = Costs(lower=0.0, top_train=0.040, top_eval=0.013, head=2.6e-4, read=0.0001)
FLOWERS5 = {"train": 3022, "val": 646, "test": 649}


def test_the_whole_network_plan_fits_the_budget_at_the_measured_speed():
    from imgcls.engine.budget import WHOLE, fit_whole_epochs

    for costs, budget in ((GPU, 15 * 60), (GPU, 2 * 60), (CPU_VIT, 2 * 60), (CPU_VIT, 15 * 60)):
        epochs, est = fit_whole_epochs(costs, FLOWERS5, budget, WHOLE["probe_epochs"], WHOLE["epochs"], views=4)
        assert 1 <= epochs <= WHOLE["epochs"]
        if epochs > 1:  # the most epochs that fit: one more would not
            assert est.total <= budget
            more = fit_whole_epochs(costs, FLOWERS5, budget * 10, WHOLE["probe_epochs"], epochs + 1, views=4)[1]
            assert epochs == WHOLE["epochs"] or more.total > budget
    # a GPU holds the whole recipe in 15 minutes; a 2-core CPU training a ViT from scratch on flowers5 cannot
    assert fit_whole_epochs(GPU, FLOWERS5, 15 * 60, 5, WHOLE["epochs"], 4)[0] == WHOLE["epochs"]
    assert fit_whole_epochs(CPU_VIT, FLOWERS5, 2 * 60, 0, WHOLE["scratch_epochs"], 4)[0] == 1


def test_a_network_trained_from_scratch_gets_the_epochs_its_budget_holds(cli, split_data, tmp_path, monkeypatch):
    """--no-pretrained trains every layer for as many epochs as the measured speed fits in --budget (not a fixed
    number of epochs, which a slow network would run far past it), prints the plan and its estimate, and re-fits
    after the first epoch."""
    import imgcls.engine.budget as budget

    monkeypatch.setattr(budget, "measure_whole", lambda *args, **kwargs: Costs(0.0, top_train=0.05, top_eval=0.01))
    code, _, err = cli("train", "--data", split_data, "--model", "simple_cnn", "--no-pretrained", "--imgsz", "32",
                       "--batch-size", "8", "--workers", "0", "--budget", "40s", "--project", tmp_path / "runs")
    assert code == 0, err
    assert "Plan for --budget 40s" in err and "all layers:" in err and "augmented view" not in err
    results = json.loads((tmp_path / "runs" / "train" / "results.json").read_text())
    (full,) = results["phases"]
    assert full["name"] == "full" and full["trains"] == "all" and full["inputs"] == "images"
    planned = int(err.split("full: ")[1].split(" epoch")[0])
    assert 1 <= planned < budget.WHOLE["scratch_epochs"]  # 0.05 s an image: 40 s holds a few epochs, not 30
    # a re-fit grows each phase up to its own cap: the whole network's from scratch, not the tune phase's
    assert budget.epochs_that_fit(1, 5, 1.0, 1000.0, budget.most_epochs("full")) == budget.WHOLE["scratch_epochs"]
    assert budget.epochs_that_fit(1, 5, 1.0, 1000.0, budget.most_epochs("tune")) == RECIPE["max_tune_epochs"]
    assert "Re-planned with this run's own speed" in err  # the real epochs are far quicker than measured


def test_an_accelerator_plan_fills_the_budget_with_epochs_a_larger_input_and_strong_augmentation(monkeypatch,
                                                                                                  capsys):
    """With the timings recorded on one H100 (GPU above, lite0 at 224 px), the default 15-minute budget buys the
    largest input the plan weighs, as many epochs of every layer as help, strong augmentation and mixup/CutMix, and
    fills most of the budget; two minutes buy the model's own input and fewer epochs, without mixing."""
    import imgcls.engine.budget as budget
    from imgcls.config import TrainConfig

    measured_at = []

    def recorded(model, input_size, device, batch=32, amp=False, channels_last=None):  # scaled with the pixels
        measured_at.append(tuple(input_size[1:]))
        return budget.scaled(GPU, (224, 224), tuple(input_size[1:]))

    monkeypatch.setattr(budget, "measure_whole", recorded)
    monkeypatch.setattr(budget, "measure_input", lambda *args, **kwargs: 0.0001)
    # compiled steps no quicker: torch.compile is timed for the long plan and left out
    monkeypatch.setattr(budget, "measure_compiled", lambda model, size, *args, **kwargs: (
        40.0, budget.scaled(GPU, (224, 224), tuple(size[1:])).top_train))
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    preprocess = {"input_size": [3, 224, 224], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear",
                  "crop_pct": 0.875, "resize": "crop"}
    gpu = torch.device("cuda")
    long_plan, long_est, size = budget.whole_network_plan(TrainConfig(data="x", budget="15m"), network, preprocess,
                                                          FLOWERS5, gpu, [], views=1, amp="bf16")
    assert set(measured_at) == {(352, 352)}               # measured at the largest input weighed (each step timed)
    probe, finetune = long_plan
    assert size == (352, 352) and finetune.trains == "all" and finetune.inputs == "images"
    assert finetune.epochs == budget.ACCELERATOR["epochs"] and finetune.augment == "strong" and finetune.mix
    assert finetune.ema and finetune.graded and finetune.frozen_norm and "rising layer by layer" in finetune.describe()
    assert 0.75 * 15 * 60 <= long_est.total <= 15 * 60
    assert "ends about" not in capsys.readouterr().err or long_est.total < 0.8 * 15 * 60

    short_plan, short_est, short_size = budget.whole_network_plan(TrainConfig(data="x", budget="2m"), network,
                                                                  preprocess, FLOWERS5, gpu, [], views=1, amp="bf16")
    assert short_size is None                             # the model's own 224 px
    assert 10 <= short_plan[1].epochs < budget.ACCELERATOR["min_epochs"] and short_est.total <= 2 * 60
    assert short_plan[1].augment is None and not short_plan[1].mix and not short_plan[1].ema and short_plan[1].graded
    assert short_plan[1].frozen_norm
    # a CPU's whole-network plan (networks it cannot cut) trains the body at one lr and moves its statistics
    assert not any(p.graded or p.frozen_norm for p in budget.whole_phases(10, pretrained=True, accelerator=False))
    # the re-fit after the first epoch may grow an accelerator's phase to ACCELERATOR's cap, not the CPU's
    assert budget.most_epochs("finetune", accelerator=True) == budget.ACCELERATOR["epochs"]
    assert budget.most_epochs("finetune") == budget.WHOLE["epochs"]


def test_model_auto_picks_the_costliest_backbone_at_hand_that_the_budget_trains_well(monkeypatch):
    """--model auto on a GPU: each backbone whose weights are on the machine is timed (here: recorded H100-like
    costs), and the costliest that still gets 30 epochs in --budget is chosen, with the reason; on a CPU it is the
    default, with nothing measured."""
    import imgcls.engine.budget as budget
    import imgcls.models.factory as factory
    from imgcls.config import TrainConfig

    recorded = {"tf_efficientnet_lite0": 0.0009, "tf_efficientnet_lite1": 0.0016, "tf_efficientnet_lite2": 0.0026,
                "convnext_base.fb_in22k_ft_in1k": 0.012}

    class Stub(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

    monkeypatch.setattr(factory, "backbones_at_hand", lambda: list(recorded))
    monkeypatch.setattr(factory, "create_model", lambda name, classes, **kwargs: (Stub(name), {}, "stub"))
    monkeypatch.setattr(budget, "measure_whole", lambda model, size, device, batch=32, amp=False: Costs(
        0.0, top_train=recorded[model.name], top_eval=recorded[model.name] / 3))
    gpu = torch.device("cuda")
    name, why = budget.choose_backbone(TrainConfig(data="x", budget="15m"), FLOWERS5, 5, gpu, "bf16")
    assert name == "tf_efficientnet_lite2"   # convnext_base would get fewer than 30 epochs in 15 minutes
    assert "holds 30 epochs" in why and "convnext_base.fb_in22k_ft_in1k" in why
    assert budget.choose_backbone(TrainConfig(data="x", budget="1h"), FLOWERS5, 5, gpu)[0] == \
        "convnext_base.fb_in22k_ft_in1k"
    assert budget.choose_backbone(TrainConfig(data="x", budget="20s"), FLOWERS5, 5, gpu)[0] == "tf_efficientnet_lite0"
    assert budget.choose_backbone(TrainConfig(data="x", budget="15m"), FLOWERS5, 5, torch.device("cpu")) == \
        (factory.DEFAULT_MODEL, "the default")
    # an explicit plan or weights file: the default, unmeasured
    assert budget.choose_backbone(TrainConfig(data="x", epochs=3), FLOWERS5, 5, gpu)[0] == factory.DEFAULT_MODEL


def test_backbones_at_hand_are_the_packaged_ones_and_timm_models_in_the_hub_cache(tmp_path, monkeypatch):
    from imgcls.models.factory import PACKAGED, backbones_at_hand

    for repo, files in (("models--timm--resnet18.a1_in1k", ["model.safetensors"]),
                        ("models--timm--convnext_atto.d2_in1k", []),            # an interrupted download
                        ("models--timm--no_such_net.x", ["model.safetensors"]),  # not a timm model
                        ("models--someone--resnet50", ["model.safetensors"])):  # not a timm repository
        snapshot = tmp_path / repo / "snapshots" / "abc123"
        snapshot.mkdir(parents=True)
        for name in files:
            (snapshot / name).write_bytes(b"0")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    found = backbones_at_hand()
    assert found[-1] == "resnet18.a1_in1k" and set(found[:-1]) <= set(PACKAGED)
    assert "tf_efficientnet_lite0" in found      # the dev extra installs the packaged weights


def test_a_last_phase_whose_epochs_slow_down_is_shortened_to_keep_the_budget(tmp_path):
    """After its first epoch the last phase is re-fitted both ways; after a later one it only shrinks, when the
    mean of its recent epochs (another job came onto the cores) says the planned ones would run past --budget."""
    from types import SimpleNamespace

    from imgcls.config import TrainConfig
    from imgcls.engine.fit import _refit_last_phase
    from imgcls.engine.plan import Phase
    from imgcls.engine.state import TrainState

    tune = Phase("tune", 10, "top", "features", 1e-3, 1e-3, cut=3)
    run = SimpleNamespace(budget=600.0, reserve=30.0, device=torch.device("cpu"), main=True, run_dir=tmp_path,
                          plan=[Phase("probe", 10, "head", "features", 3e-3, 3e-3), tune], state=TrainState(),
                          cfg=TrainConfig(data="x"), results={}, checkpoint_extra={}, now=300.0)
    run.elapsed = lambda: run.now
    for seconds in (20.0, 20.0, 60.0, 60.0):
        run.state.history.append({"phase": "tune", "seconds": seconds})
    # 4 epochs done, recent epochs 46.7 s on average, 270 s left: 5 more fit, not the 6 planned
    shorter = _refit_last_phase(run, tune, 60.0, done=4)
    assert shorter.epochs == 4 + 5 and run.plan[-1] == shorter and run.cfg.epochs == 19
    assert run.results["phases"][-1]["epochs"] == 9
    # quicker epochs after the first never grow the phase again, and a phase never ends before what it has done
    assert _refit_last_phase(run, shorter, 1.0, done=5).epochs == 9
    run.now = 900.0
    assert _refit_last_phase(run, shorter, 60.0, done=5).epochs == 5


def test_graded_groups_raise_the_lr_layer_by_layer_from_the_stem_to_the_head():
    """A graded phase (layer-wise lr decay) gives the stem the body's lr and each layer above it more, up to just
    below the head's; every trainable parameter outside the head is in exactly one group. A network without timm's
    group_matcher trains its body at one lr."""
    import timm

    from imgcls.engine.fit import graded_groups
    from imgcls.models.factory import create_model
    from imgcls.models.parts import head

    model = timm.create_model("tf_efficientnet_lite0", num_classes=3, pretrained=False)
    heads = {id(p) for p in head(model).parameters()}
    groups = graded_groups(model, 1e-3, 1e-4, heads)
    lrs = [g["lr"] for g in groups]
    assert lrs[0] == pytest.approx(1e-4) and all(a < b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 1e-3
    assert all(g["initial_lr"] == g["lr"] for g in groups)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert len(grouped) == len(set(grouped)) and set(grouped) | heads == {id(p) for p in model.parameters()}
    assert id(model.conv_stem.weight) in {id(p) for p in groups[0]["params"]}  # the stem moves least

    cnn = create_model("simple_cnn", 3, pretrained=False)[0]
    (body,) = graded_groups(cnn, 1e-3, 1e-4, {id(p) for p in head(cnn).parameters()})
    assert body["lr"] == 1e-4 and len(body["params"]) == len(list(cnn.parameters())) - len(list(head(cnn).parameters()))


def test_an_accelerators_finetuning_grades_its_lrs_and_keeps_the_batch_norm_statistics(cli, split_data, tmp_path,
                                                                                       monkeypatch):
    """The fine-tuning phase an accelerator's plan makes (here on a CPU, injected into a whole-network plan) trains
    with the lrs of graded_groups (the stem's lowest, each layer above it higher, the head's highest) and leaves the
    batch-norm running statistics as they were; the log says both."""
    import imgcls.engine.budget as budget
    from imgcls.engine import fit

    planned, seen = budget.whole_network_plan, []

    def graded(*args, **kwargs):
        plan, est, size = planned(*args, **kwargs)
        return [dataclasses.replace(p, graded=True, frozen_norm=True, body_lr=1e-4) for p in plan], est, size

    monkeypatch.setattr(budget, "whole_network_plan", graded)
    monkeypatch.setattr(budget, "measure_whole", lambda *args, **kwargs: Costs(0.0, top_train=0.01, top_eval=0.01))
    epoch = fit.train_one_epoch
    monkeypatch.setattr(fit, "train_one_epoch", lambda *a, **k: seen.append(
        [g["initial_lr"] for g in a[2].optimizer.param_groups]) or epoch(*a, **k))
    code, _, err = cli("train", "--data", split_data, "--model", "resnet10t", "--no-pretrained", "--imgsz", "32",
                       "--batch-size", "8", "--workers", "0", "--budget", "10s", "--project", tmp_path / "runs")
    assert code == 0, err
    assert "rising layer by layer" in err and "batch-norm statistics kept" in err
    head_lr, *body = seen[0]
    assert len(body) > 3 and body[0] == pytest.approx(1e-4) and body == sorted(body) and body[-1] < head_lr
    from imgcls.record.checkpoint import load_checkpoint

    state = load_checkpoint(tmp_path / "runs" / "train" / "weights" / "last.pt")["state_dict"]
    means = [v for k, v in state.items() if k.endswith("running_mean")]
    variances = [v for k, v in state.items() if k.endswith("running_var")]
    assert means and all(torch.equal(m, torch.zeros_like(m)) for m in means)  # as initialised: never moved
    assert all(torch.equal(v, torch.ones_like(v)) for v in variances)
