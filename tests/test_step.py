"""An accelerator's training step: autocast, channels_last and torch.compile chosen by timing them (engine/step.py),
driven here by timings recorded on one H100 in place of the device this suite never has; flags force a setting;
a CPU's plan times nothing more; what the plan chose is what fit applies and what the run records."""

from __future__ import annotations

import json

import torch

from imgcls.config import TrainConfig
from imgcls.engine import budget
from imgcls.engine.budget import Costs
from imgcls.engine.step import (
    COMPILE_SECONDS,
    Step,
    StepSettings,
    candidates,
    choose_step,
    decide_compile,
)

BF16 = "bf16"
# Seconds per training image, lite0 at 352 px, batch 32, on one H100: autocast and channels_last each pay
H100 = {Step(False, False): 0.00261, Step(False, True): 0.00240, Step(BF16, False): 0.00138,
        Step(BF16, True): 0.00121}
FLOWERS5 = {"train": 3022, "val": 646, "test": 649}
PREPROCESS = {"input_size": [3, 224, 224], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear",
              "crop_pct": 0.875, "resize": "crop"}
GPU = torch.device("cuda")


def recorded_timer(seconds: dict, calls: list):
    def timer(step):
        calls.append(step)
        return Costs(0.0, top_train=seconds[step], top_eval=seconds[step] / 3)
    return timer


def test_the_fastest_step_is_chosen_and_the_plans_own_timing_is_not_repeated():
    calls = []
    steps = candidates(BF16, None, convolutional=True)
    assert set(steps) == set(H100) and steps[0] == Step(False, False)  # plain first
    known = {Step(BF16, True): Costs(0.0, top_train=H100[Step(BF16, True)], top_eval=0.0004)}
    best, timing, seconds = choose_step(recorded_timer(H100, calls), steps, known)
    assert best == Step(BF16, True) and timing is known[best]
    assert len(calls) == 3 and Step(BF16, True) not in calls  # the plan timed that one already
    assert seconds == H100
    settings = StepSettings(best.amp, best.channels_last, seconds={s.label: t for s, t in seconds.items()},
                            compile_note="left out: ...")
    assert settings.line("cuda").startswith("Step on cuda: bf16 autocast, channels_last (1.21 ms/img; "
                                            "float32+contiguous 2.61, float32+channels_last 2.40, ")
    assert StepSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings


def test_float32_and_the_default_layout_are_kept_unless_clearly_faster():
    nearly = {Step(False, False): 0.00100, Step(False, True): 0.00098, Step(BF16, False): 0.00097,
              Step(BF16, True): 0.00095}  # each a few percent quicker: within the noise of a few steps
    assert choose_step(recorded_timer(nearly, []), list(nearly))[0] == Step(False, False)
    autocast_pays = {Step(False, False): 0.00200, Step(False, True): 0.00196, Step(BF16, False): 0.00100,
                     Step(BF16, True): 0.00098}  # autocast halves the step, channels_last adds 2%
    assert choose_step(recorded_timer(autocast_pays, []), list(autocast_pays))[0] == Step(BF16, False)
    # a network without convolutions is timed in its own layout only
    assert candidates(BF16, None, convolutional=False) == [Step(False, False), Step(BF16, False)]


def test_a_step_that_fails_is_left_out():
    def timer(step):
        if step.amp:
            raise RuntimeError("no kernel for this dtype")
        return Costs(0.0, top_train=H100[step], top_eval=0.001)

    assert choose_step(timer, candidates(BF16, None, True))[0] == Step(False, True)


def test_compile_is_timed_only_where_it_could_pay_and_kept_only_where_it_does():
    timed = []

    def compiler(seconds, compiled):
        return lambda: timed.append(1) or (seconds, compiled)

    # two minutes of lite0 on flowers5 at 224 px: about 20 epochs at 0.9 ms an image
    on, note, measured = decide_compile(None, 0.0009, 20 * 3022, 32, compiler(40.0, 0.0006))
    assert not on and not timed and measured is None and note.startswith("left out: 1,889 steps")
    # a long plan: 100 epochs at 352 px; compiled 30% quicker repays a 40 s compile
    eager, images = 0.0022, 100 * 3022
    assert eager * images / 3 > COMPILE_SECONDS
    on, note, measured = decide_compile(None, eager, images, 32, compiler(40.0, 0.7 * eager))
    assert on and timed and measured == (40.0, 0.7 * eager) and note.startswith("on (40 s to compile")
    # the same plan where compiling takes longer than the steps it saves
    on, note, _ = decide_compile(None, eager, images, 32, compiler(400.0, 0.7 * eager))
    assert not on and note.startswith("left out (400 s to compile")
    # --compile and --no-compile decide without timing
    timed.clear()
    assert decide_compile(True, 0.0009, 100, 32, compiler(1.0, 0.0))[:2] == (True, "on (--compile)")
    assert decide_compile(False, eager, images, 32, compiler(1.0, 0.0))[:2] == (False, "left out (--no-compile)")
    assert not timed


def _plan(monkeypatch, seconds: dict, compiled=None, **settings):
    """whole_network_plan on a "cuda" device whose timings are ``seconds`` per Step (at 224 px, scaled by pixels) and,
    for torch.compile, (compile seconds, compiled share of the eager step); returns (plan, estimate, timed steps,
    compile timings asked for)."""
    calls, compiles = [], []

    def measure_whole(model, size, device, batch=32, amp=False, channels_last=None):
        calls.append(Step(amp, bool(channels_last)))
        return budget.scaled(Costs(0.0, seconds[calls[-1]], seconds[calls[-1]] / 3, read=0.0016), (224, 224),
                             tuple(size[1:]))

    def measure_compiled(model, size, device, batch=32, amp=False, channels_last=False):
        compiles.append(tuple(size[1:]))
        eager = budget.scaled(Costs(0.0, seconds[Step(amp, channels_last)], 0.0), (224, 224), tuple(size[1:]))
        return compiled[0], compiled[1] * eager.top_train

    monkeypatch.setattr(budget, "measure_whole", measure_whole)
    monkeypatch.setattr(budget, "measure_compiled", measure_compiled)
    monkeypatch.setattr(budget, "measure_input", lambda *args, **kwargs: 0.0001)
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    plan, est, _ = budget.whole_network_plan(TrainConfig(data="x", **settings), network, PREPROCESS, FLOWERS5, GPU,
                                             [], views=1, amp=False if settings.get("amp") is False else BF16)
    return plan, est, calls, compiles


AT_224 = {step: s / (352 / 224) ** 2 for step, s in H100.items()}


def test_the_plan_times_each_step_once_and_records_the_choice(monkeypatch, log):
    _, est, calls, compiles = _plan(monkeypatch, AT_224, compiled=(40.0, 0.7), budget="15m")
    assert calls[0] == Step(BF16, True) and sorted(map(str, calls)) == sorted(map(str, H100))  # each once
    step = est.step
    assert (step.amp, step.channels_last) == (BF16, True)
    assert step.compile and compiles == [(352, 352)] and step.compile_note.startswith("on (40 s to compile")
    assert ("compiling the network (torch.compile)", 40.0) in est.steps
    assert "Step on cuda: bf16 autocast, channels_last (1.21 ms/img; float32+contiguous 2.61" in log.text
    # two minutes: too few steps to repay a compile, which is not timed
    _, short, _, compiles = _plan(monkeypatch, AT_224, compiled=(40.0, 0.7), budget="2m")
    assert not short.step.compile and not compiles and short.step.compile_note.startswith("left out: ")


def test_flags_force_autocast_and_compile(monkeypatch):
    float32_faster = {Step(False, False): 0.0010, Step(False, True): 0.0009, Step(BF16, False): 0.0020,
                      Step(BF16, True): 0.0020}
    _, est, calls, compiles = _plan(monkeypatch, float32_faster, compiled=(1.0, 0.5), budget="15m", amp=True,
                                    compile=False)
    assert est.step.amp == BF16 and {c.amp for c in calls} == {BF16}  # --amp: autocast even where it is slower
    assert not est.step.compile and not compiles and est.step.compile_note == "left out (--no-compile)"
    _, est, calls, compiles = _plan(monkeypatch, float32_faster, budget="2m", amp=False, compile=True)
    assert est.step.amp is False and {c.amp for c in calls} == {False}
    assert est.step.compile and not compiles and est.step.channels_last  # --compile on a short plan, untimed
    _, est, _, _ = _plan(monkeypatch, float32_faster, budget="2m")
    assert est.step.amp is False and est.step.channels_last  # by default the timing decides


def test_a_cpu_plan_times_nothing_more(monkeypatch, log):
    calls = []
    monkeypatch.setattr(budget, "measure_whole", lambda *args, **kwargs: calls.append(kwargs) or Costs(
        0.0, top_train=0.05, top_eval=0.01))
    monkeypatch.setattr(budget, "measure_compiled", lambda *args, **kwargs: calls.append("compile"))
    _, est, _ = budget.whole_network_plan(TrainConfig(data="x", budget="15m", pretrained=False),
                                          torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), PREPROCESS, FLOWERS5,
                                          torch.device("cpu"), [], views=4)
    assert calls == [{"channels_last": False}] and est.step is None and "Step on" not in log.text


def test_fit_applies_the_recorded_step_and_the_run_records_it(cli, split_data, tmp_path, monkeypatch):
    """The settings the plan chose are the ones fit trains with (channels_last, torch.compile, autocast) and the ones
    results.json and the checkpoints record; here on a CPU, with the plan's choice injected."""
    from imgcls.engine import fit
    from imgcls.record.checkpoint import load_checkpoint

    # each unlike fit's own rules on a CPU (float32 unless measured faster, channels_last, no compile)
    chosen = StepSettings(amp="bf16", channels_last=False, compile=True, seconds={"bf16+contiguous": 0.01},
                          compile_note="on (recorded)")
    planned = budget.whole_network_plan

    def with_step(*args, **kwargs):
        plan, est, size = planned(*args, **kwargs)
        est.step = chosen
        return plan, est, size

    trained, compiled = [], []
    epoch = fit.train_one_epoch
    monkeypatch.setattr(budget, "whole_network_plan", with_step)
    monkeypatch.setattr(budget, "measure_whole", lambda *args, **kwargs: Costs(0.0, top_train=0.5, top_eval=0.1))
    monkeypatch.setattr(budget, "epochs_that_fit", lambda done, planned, *args, **kwargs: planned)
    monkeypatch.setattr(fit, "train_one_epoch", lambda *a, **k: trained.append((k["channels_last"], a[2].amp))
                        or epoch(*a, **k))
    monkeypatch.setattr(torch, "compile", lambda module, *a, **k: compiled.append(module) or module)
    code, _, err = cli("train", "--data", split_data, "--model", "simple_cnn", "--no-pretrained", "--imgsz", "32",
                       "--batch-size", "8", "--workers", "0", "--budget", "10s", "--project", tmp_path / "runs")
    assert code == 0, err
    assert trained and all(t == (False, "bf16") for t in trained) and len(compiled) == 1
    run = tmp_path / "runs" / "train"
    assert json.loads((run / "results.json").read_text())["training step"] == chosen.to_dict()
    last = load_checkpoint(run / "weights" / "last.pt")
    assert StepSettings.from_dict(last["training step"]) == chosen
    # --resume on an accelerator trains with the recorded step again; on a CPU with the CPU's own choices
    from imgcls.engine.train import _step

    assert _step(None, last, GPU) == chosen and _step(None, last, torch.device("cpu")) is None


def test_compile_and_amp_are_each_a_flag_pair_left_to_the_plan_by_default():
    from imgcls.cli import _train_settings, build_parser

    def settings(*flags):
        return _train_settings(build_parser().parse_args(["train", "--data", "x", *flags]))

    assert "compile" not in settings() and "amp" not in settings()
    assert settings("--compile", "--no-amp") == {"data": "x", "compile": True, "amp": False}
    assert settings("--no-compile", "--amp")["compile"] is False
    assert TrainConfig(data="x").compile is None and TrainConfig(data="x").amp is None


def test_a_compiled_phase_is_refitted_on_its_second_epoch_not_on_the_compile(tmp_path):
    """The first epoch of a compiled phase includes the compile: the re-fit to the budget waits for the second and
    leaves the first out of the phase's speed."""
    from types import SimpleNamespace

    from imgcls.engine.fit import _refit_last_phase
    from imgcls.engine.plan import Phase
    from imgcls.engine.state import TrainState

    finetune = Phase("finetune", 20, "all", "images", 1e-3, 1e-4)
    run = SimpleNamespace(budget=600.0, reserve=30.0, device=GPU, main=True, run_dir=tmp_path, plan=[finetune],
                          state=TrainState(), cfg=TrainConfig(data="x"), results={}, checkpoint_extra={}, now=170.0)
    run.elapsed = lambda: run.now
    for seconds in (80.0, 10.0):  # 70 s of compiling, then 10 s an epoch
        run.state.history.append({"phase": "finetune", "seconds": seconds})
    # 400 s left at 10 s an epoch: 2 done + 40, capped at ACCELERATOR's 100 (at 80 s an epoch it would be 7)
    assert _refit_last_phase(run, finetune, 10.0, done=2, one_off=1).epochs == 42
    run.state.history.append({"phase": "finetune", "seconds": 10.0})
    run.now = 600.0 - 30.0 - 10.0 * 39  # on time: the mean of the recent epochs (not the compile's) keeps the phase
    assert _refit_last_phase(run, run.plan[-1], 10.0, done=3, one_off=1).epochs == 42
