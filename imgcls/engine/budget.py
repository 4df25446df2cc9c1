"""The default training plan: measure this machine, then fit the most accurate phases into --budget.

On a CPU the network is cut before its last stages, or a ViT before its last blocks (``cut``): the frozen lower
part runs once per augmented view of each image into a cache of activations (a ViT's: its tokens), a linear probe trains on their pooled features, then the top
stages fine-tune on the cache (LP-FT on cached activations: surgical fine-tuning at a fraction of the cost of
training the whole network). On CUDA, where whole-network training is cheap, it is LP-FT of all layers.
The numbers of the recipe come from runs on real photos (docs/benchmarks.md).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import astuple, dataclass, field, replace
from functools import partial

import torch
from torch import nn

from ..config import TrainConfig, parse_duration
from .evaluate import FAMILIARITY_IMAGES
from .plan import Phase
from .step import Step, StepSettings, candidates, choose_step, decide_compile, uses_convolutions

log = logging.getLogger("imgcls")

RECIPE = {
    "views": 4,              # augmented views cached per training image (more only when the budget allows)
    "max_views": 8,
    "probe_epochs": 10,      # linear probe on the pooled features of the cached views
    "probe_lr": 3e-3,        # AdamW, per 32 images (a larger lr overfits the head: docs/benchmarks.md)
    "tune_epochs": 8,        # the top stages on the cached activations
    "min_tune_epochs": 3,
    "max_tune_epochs": 20,   # a re-fit may grow the phase this far when its epochs are quicker than measured
    "tune_lr": 1e-3,         # AdamW, the same for the top stages and the head
    "top_stages": 2,         # stages trained above the cut
}
WHOLE = {
    "probe_epochs": 5,       # a linear head on pooled features first, when the weights are pretrained (LP-FT)
    "epochs": 20,            # then every layer, at most this many epochs (the plan shrinks to the budget)
    "scratch_epochs": 30,    # from random weights, every layer from the start
    "lr": 1e-3,              # AdamW for the head; the body at body_lr
    "body_lr": 1e-4,
}
# An accelerator trains every layer on images decoded once and augmented on the device (data/device_batches): its
# epochs are seconds long, so the budget buys many of them, a larger input, and the regularisation long schedules
# need. Epochs beyond ACCELERATOR["epochs"] fine-tuning a pretrained network on one data set add little.
ACCELERATOR = {
    "epochs": 100,           # at most this many epochs of all layers (from pretrained weights or from scratch)
    "min_epochs": 30,        # a larger input only when the budget still holds this many epochs at it
    "strong_from": 40,       # strong augmentation, mixup/CutMix and an EMA of the weights from this many epochs on
}
MOST_CANDIDATES = 8           # --model auto measures at most this many backbones (a few seconds each on a GPU)
LARGER_STEPS = (8 / 7, 9 / 7, 10 / 7, 11 / 7)  # sizes weighed beside the model's own (lite0 224): 256 to 352
FIXED_SECONDS = 20.0          # model and runtime set-up, report: a cost per run, not per image
DECODE_SECONDS = 0.004        # augmenting one view of a decoded image, beside the network (per view)
READ_SAMPLE = 8               # image files read to measure what reading one costs (large PNG/TIFF are slow to read)


@dataclass
class Costs:
    """Seconds per image on this machine, measured on a probe batch when the plan is made."""

    lower: float           # the frozen lower part, inference (once per cached view)
    top_train: float       # the top stages, forward + backward (per view per epoch)
    top_eval: float        # the top stages, inference (validation each epoch; pooled features once)
    head: float = 0.0      # the linear probe, per view per epoch (tiny)
    read: float = 0.0      # reading and decoding one image file (once per image in each pass over the files)
    augment: float = DECODE_SECONDS  # the input pipeline's work per training view beside the network


@dataclass
class Estimate:
    """What the plan will take, step by step, in seconds."""

    steps: list[tuple[str, float]] = field(default_factory=list)
    step: StepSettings | None = None  # an accelerator's training step, whose timing the estimate is made with

    @property
    def total(self) -> float:
        return sum(seconds for _, seconds in self.steps)

    @property
    def after_training(self) -> float:
        """Seconds the run needs once training ends: the final evaluation (the last step), then the report."""
        return self.steps[-1][1] + FIXED_SECONDS / 2 if self.steps else FIXED_SECONDS

    def lines(self) -> list[str]:
        return [f"  {what}: {_minutes(seconds)}" for what, seconds in self.steps]


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def estimate(costs: Costs, counts: dict[str, int], views: int, probe_epochs: int, tune_epochs: int,
             review_seconds: float = 0.0, spent: float = 0.0) -> Estimate:
    """Seconds of each step of the cut-and-cache plan for ``counts`` images per split (pure: testable);
    ``review_seconds``: the label review of the data check, when it runs; ``spent``: what the run took before
    planning (the data check reads every file). With no tune epochs the plan is the probe alone, on pooled
    features cached straight from the whole frozen network (the same cost per view)."""
    train, val, test = counts.get("train", 0), counts.get("val", 0), counts.get("test", 0)
    cached_views = train * views + val + test
    return Estimate([
        *([("data check, model set-up and measuring (done)", spent)] if spent else []),
        ("runtime set-up and report", FIXED_SECONDS),
        (f"caching {cached_views:,} image views", cached_views * (costs.lower + DECODE_SECONDS)
         + (train + val + test) * costs.read),
        ("pooled features for the probe", cached_views * costs.top_eval),
        *([("label review", review_seconds)] if review_seconds else []),
        (f"probe: {probe_epochs} epochs", probe_epochs * (train + val) * costs.head),
        *([(f"fine-tuning the top stages: {tune_epochs} epochs", tune_epochs * (train * costs.top_train
                                                                              + val * costs.top_eval))]
          if tune_epochs else []),
        ("final evaluation on val and test, and the familiarity score",
         (val + test + min(train, FAMILIARITY_IMAGES)) * (costs.lower + costs.top_eval + DECODE_SECONDS + costs.read)),
    ])


def choose(costs: Costs, counts: dict[str, int], budget: float, max_views: int,
           review_seconds: float = 0.0, spent: float = 0.0) -> tuple[int, int, int, Estimate]:
    """(views, probe epochs, tune epochs, estimate): the recipe, shrunk until it fits the budget (fewer tune
    epochs, then fewer views, then down to no fine-tuning: the probe alone, for data sets too large to fine-tune
    on in the budget), or grown while it fits with room to spare (more views, then more epochs)."""
    views, probe, tune = min(RECIPE["views"], max_views), RECIPE["probe_epochs"], RECIPE["tune_epochs"]
    cost = partial(estimate, review_seconds=review_seconds, spent=spent)
    while cost(costs, counts, views, probe, tune).total > budget:
        if tune > RECIPE["min_tune_epochs"]:
            tune -= 1
        elif views > 1:
            views -= 1
        elif tune > 0:
            tune -= 1
        else:
            break
    while True:
        bigger = [(v, t) for v, t in ((views + 2, tune + 1), (views, tune + 1))
                  if v <= min(RECIPE["max_views"], max_views) and t <= RECIPE["max_tune_epochs"]]
        fits = [(v, t) for v, t in bigger if cost(costs, counts, v, probe, t).total <= 0.9 * budget]
        if not fits:
            break
        views, tune = fits[0]
    return views, probe, tune, cost(costs, counts, views, probe, tune)


def larger_sizes(size: tuple[int, int]) -> list[tuple[int, int]]:
    """The input sizes the plan weighs, smallest first: ``size`` (the model's own), then it scaled by LARGER_STEPS
    in multiples of 16 pixels."""
    out = [size]
    for step in LARGER_STEPS:
        scaled = tuple(max(16, round(side * step / 16) * 16) for side in size)
        if scaled not in out:
            out.append(scaled)
    return out


def choose_size(costs_at_largest: Costs, sizes: list[tuple[int, int]], counts: dict[str, int], budget: float,
                max_views: int, review_seconds: float = 0.0, spent: float = 0.0):
    """(size, views, probe epochs, tune epochs, estimate): the largest input size at which the budget still holds
    the full recipe (the most views, and at least RECIPE's tune epochs), else the smallest. Costs are measured
    once at the largest size and scaled by the number of pixels for the others (the network's work is per pixel).

    A larger input helps most when there is time to spare, but bought with views and epochs it costs accuracy:
    it pays off only when the full recipe fits (docs/alternatives.md)."""
    for size in reversed(sizes):
        views, probe, tune, est = choose(scaled(costs_at_largest, sizes[-1], size), counts, budget, max_views,
                                         review_seconds, spent)
        if size == sizes[0] or (views >= min(RECIPE["max_views"], max_views) and tune >= RECIPE["tune_epochs"]):
            return size, views, probe, tune, est


def scaled(costs: Costs, measured_at: tuple[int, int], size: tuple[int, int]) -> Costs:
    """``costs`` measured at one input size, at another: the network's work is per pixel (the head's is not)."""
    scale = size[0] * size[1] / (measured_at[0] * measured_at[1])
    return replace(costs, lower=costs.lower * scale, top_train=costs.top_train * scale,
                   top_eval=costs.top_eval * scale)


def epochs_that_fit(done: int, planned: int, epoch_seconds: float, seconds_left: float,
                    most: int = RECIPE["max_tune_epochs"]) -> int:
    """The last phase's epochs, re-fitted once its first ``done`` epochs have taken ``epoch_seconds`` each and
    ``seconds_left`` of the budget remain after the final evaluation: as many as fit, at most ``most`` (the
    phase's own cap: most_epochs) and never below what is done. A measurement before the run cannot see everything
    (another job on the cores, batch effects); the run's own epochs can."""
    fit = done + int(max(0.0, seconds_left) // max(epoch_seconds, 1e-3))
    floor = max(done, min(planned, RECIPE["min_tune_epochs"]))
    return max(floor, min(fit, most))


def most_epochs(phase_name: str, accelerator: bool = False) -> int:
    """The most epochs a budget plan gives a phase: the tune phase's recipe, or the whole network's (on an
    accelerator, ACCELERATOR's)."""
    if accelerator and phase_name in ("full", "finetune"):
        return ACCELERATOR["epochs"]
    return {"full": WHOLE["scratch_epochs"], "finetune": WHOLE["epochs"]}.get(phase_name, RECIPE["max_tune_epochs"])


LONG_CALL = 2.0  # seconds: a measured call this long is timed once (the measuring must not eat a short budget)


def _per_image(fn, batch: torch.Tensor, repeats: int = 3) -> float:
    """Seconds per image: the best of ``repeats`` timed calls after a warm-up (other jobs only slow a call down),
    or of one where the warm-up took LONG_CALL or more (a slow network, or a busy machine: a long call averages out
    the moments another job takes the cores, and three more of them would take minutes of the budget)."""
    start = time.perf_counter()
    fn(batch)  # warm-up: kernels chosen, memory allocated
    if time.perf_counter() - start >= LONG_CALL:
        repeats = 1
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - start)
    return min(times) / len(batch)


def measure(model: nn.Module, cut: int, input_size, runtime: str, batch: int = 32) -> Costs:
    """Time the parts of the plan on random inputs of the real size and at the batch sizes the run uses
    (``batch`` for extraction and training, twice that for the pooled features), with the runtime extraction
    will use. Small batches would overstate the cost per image several times over on a CPU."""
    from ..models.parts import Lower, Upper
    from ..runtime.pytorch import fastest_runner

    model = copy.deepcopy(model)  # a timed training step moves batch-norm statistics: never on the run's model
    images = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(0))
    lower = Lower(model, cut).eval()
    runner = fastest_runner(lower, input_size, kind=runtime)
    with torch.inference_mode():
        activations = lower(images)
    upper = Upper(model, cut)

    def train_step(x):
        upper.train()
        upper(x).float().logsumexp(1).mean().backward()

    top_train = _per_image(train_step, activations.clone())
    upper.zero_grad(set_to_none=True)
    model.eval()
    with torch.inference_mode():
        top_eval = _per_image(upper, torch.cat([activations, activations]))
    return Costs(lower=_per_image(runner, images), top_train=top_train, top_eval=top_eval, head=top_eval / 50)


def reading_seconds(paths: list, draft_size: tuple[int, int], seed: int = 0, sample: int = READ_SAMPLE) -> float:
    """Mean seconds to read and decode one of ``paths`` (a random sample of them, at ``draft_size`` as caching
    reads them): next to nothing for a small JPEG, a large share of the run for big PNGs, which no
    measurement on random tensors sees. Unreadable files are left to the run's own warnings."""
    import random

    from ..data.images import ImageReadError, load_image

    chosen = random.Random(seed).sample(list(paths), min(sample, len(paths)))
    times = []
    for path in chosen:
        start = time.perf_counter()
        try:
            load_image(path, draft_size=draft_size)
        except (ImageReadError, OSError):
            continue
        times.append(time.perf_counter() - start)
    return sum(times) / len(times) if times else 0.0


def budget_plan(cfg: TrainConfig, model: nn.Module, preprocess: dict, counts: dict[str, int],
                device: torch.device, paths: list = (), spent: float = 0.0, amp: bool | str = False
                ) -> tuple[list[Phase], int, Estimate | None, tuple[int, int] | None]:
    """The default plan for this run: (phases, views to cache, estimate, input size) within cfg.budget, of which
    ``spent`` seconds are gone already; ``paths`` (the training images) are sampled for the cost of reading one;
    ``amp``: the autocast an accelerator trains under (runtime/device.accelerator_amp).
    The input size is the plan's to choose only when --imgsz is not given (None: keep the preprocessing's)."""
    from ..data.geometry import draft_size_for
    from ..models.factory import runs_at
    from ..models.parts import cut_into_tokens, cut_points, top_stages
    from .labels import REVIEW_SECONDS_PER_IMAGE, train_reviews_labels

    budget = parse_duration(cfg.budget)
    stages = cut_points(model)
    if device.type != "cpu" or stages < 3 or not cfg.pretrained:
        # an accelerator's probe only starts the head for fine-tuning (LP-FT): one view of each image is enough
        views = min(cfg.cache_views, 1 if device.type != "cpu" else RECIPE["views"])
        plan, est, size = whole_network_plan(cfg, model, preprocess, counts, device, paths, views, spent, amp)
        return plan, views, est, size
    cut = stages - top_stages(model, RECIPE["top_stages"])
    unit = "block" if cut_into_tokens(model) else "stage"
    t0 = time.time()

    def so_far() -> float:  # seconds the run has taken, this measurement included
        return spent + time.time() - t0

    sizes = larger_sizes(tuple(preprocess["input_size"][1:])) if cfg.imgsz is None else \
        [tuple(preprocess["input_size"][1:])]
    if len(sizes) > 1 and not runs_at(model, (3, *sizes[-1])):  # made for its own size (ViT, Swin): that one
        sizes = sizes[:1]
    read = reading_seconds(paths, draft_size_for(_at_size(preprocess, sizes[-1])), cfg.seed) if len(paths) else 0.0
    costs = replace(measure(model, cut, (3, *sizes[-1]), cfg.runtime, batch=cfg.batch_size), read=read)
    images = sum(counts.values())
    review = images * REVIEW_SECONDS_PER_IMAGE if train_reviews_labels(images) else 0.0
    size, views, probe, tune, est = choose_size(costs, sizes, counts, budget, RECIPE["max_views"], review, so_far())
    measured = "once"
    if size != sizes[-1]:
        # The input size is chosen once, before caching, for the whole run: a slow moment of the machine (another
        # job, a busy VM host) must not cost the larger input. Measure again and keep the quicker of each; a
        # machine that is really slow measures slow twice.
        again = replace(measure(model, cut, (3, *sizes[-1]), cfg.runtime, batch=cfg.batch_size), read=read)
        costs = Costs(*(min(a, b) for a, b in zip(astuple(costs), astuple(again))))
        measured = f"twice, as the first measurement allowed only {size[0]}x{size[1]}"
        size, views, probe, tune, est = choose_size(costs, sizes, counts, budget, RECIPE["max_views"], review,
                                                    so_far())
    log.info(f"Measured this machine {measured}, in {time.time() - t0:.1f}s at {sizes[-1][0]}x{sizes[-1][1]}: "
             f"{costs.lower * 1000:.1f} ms per image below {unit} {cut}, {costs.top_train * 1000:.1f} ms to train the "
             f"{unit}s above it, {costs.read * 1000:.1f} ms to read an image file")
    plan = [Phase("probe", probe, "head", "features", RECIPE["probe_lr"], RECIPE["probe_lr"])]
    if tune:
        plan.append(Phase("tune", tune, "top", "features", RECIPE["tune_lr"], RECIPE["tune_lr"], cut=cut))
    else:
        least = estimate(scaled(costs, sizes[-1], size), counts, 1, probe, 1, review, so_far()).total
        log.info(f"The budget is too short to fine-tune on {sum(counts.values()):,} images on this machine (one view "
                 f"and one epoch would take about {least / 60:.0f} min): the plan trains the linear probe alone. "
                 f"--budget {int(least / 60 / 0.9) + 1}m would fine-tune the top stages as well.")
    if est.total > budget:
        log.warning(f"WARNING: even the quickest plan (the probe on one view of each image) takes about "
                    f"{est.total / 60:.1f} min here, more than --budget {cfg.budget}; it runs anyway")
    return plan, views, est, size


def _at_size(preprocess: dict, size: tuple[int, int]) -> dict:
    return preprocess | {"input_size": [preprocess["input_size"][0], *size]}


def whole_estimate(costs: Costs, counts: dict[str, int], probe_epochs: int, epochs: int, views: int,
                   spent: float = 0.0, compile_seconds: float = 0.0) -> Estimate:
    """Seconds of each step of a plan that trains the whole network on images (pure: testable): ``costs.top_train``
    and ``costs.top_eval`` are the whole network's training step and inference per image; a probe first caches the
    pooled features of ``views`` views of each training image; ``compile_seconds``: torch.compile's, when it is on."""
    train, val, test = counts.get("train", 0), counts.get("val", 0), counts.get("test", 0)
    probe = [("pooled features for the probe", (train * views + val + test) * (costs.top_eval + DECODE_SECONDS)),
             (f"probe: {probe_epochs} epochs", probe_epochs * (train + val) * costs.head)] if probe_epochs else []
    return Estimate([
        *([("data check, model set-up and measuring (done)", spent)] if spent else []),
        ("runtime set-up and report", FIXED_SECONDS),
        (f"decoding {train + val + test:,} images once", (train + val + test) * costs.read),
        *probe,
        *([("compiling the network (torch.compile)", compile_seconds)] if compile_seconds else []),
        (f"all layers: {epochs} epochs", epochs * (train * (costs.top_train + costs.augment) + val * costs.top_eval)),
        ("final evaluation on val and test, and the familiarity score",
         (val + test + min(train, FAMILIARITY_IMAGES)) * (costs.top_eval + DECODE_SECONDS + costs.read)),
    ])


def fit_whole_epochs(costs: Costs, counts: dict[str, int], budget: float, probe_epochs: int, most: int,
                     views: int, spent: float = 0.0, compile_seconds: float = 0.0) -> tuple[int, Estimate]:
    """The most epochs of all layers (at most ``most``, at least one) whose plan fits ``budget`` seconds."""
    cost = partial(whole_estimate, spent=spent, compile_seconds=compile_seconds)
    epochs = most
    while epochs > 1 and cost(costs, counts, probe_epochs, epochs, views).total > budget:
        epochs -= 1
    return epochs, cost(costs, counts, probe_epochs, epochs, views)


def _device_sync(device: torch.device):
    """What waits for the device's queued work, so that a timing ends when the work does."""
    if device.type == "cuda":
        return torch.cuda.synchronize
    if device.type == "mps":
        return torch.mps.synchronize
    return lambda: None


def _timed_copy(model: nn.Module, input_size, device: torch.device, batch: int, channels_last: bool):
    """(a copy of ``model`` on ``device``, a random batch at ``input_size``), both in channels_last when asked: a
    timed step moves batch-norm statistics, never the run's model's."""
    model = copy.deepcopy(model).to(device)
    images = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(0)).to(device)
    if channels_last:
        model, images = model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
    return model, images


def _training_step(model: nn.Module, device: torch.device, amp: bool | str):
    """One training step (forward under autocast ``amp``, backward) of ``model`` on a batch, ended on the device."""
    from ..runtime.device import autocast

    sync = _device_sync(device)

    def train_step(x):
        model.train()
        with autocast(device, amp):
            loss = model(x).float().logsumexp(1).mean()
        loss.backward()
        sync()

    return train_step


def measure_whole(model: nn.Module, input_size, device: torch.device, batch: int = 32, amp: bool | str = False,
                  channels_last: bool | None = None) -> Costs:
    """The whole network's training step and inference per image, timed on random inputs of the real size on
    ``device`` under the autocast ``amp``, in channels_last when ``channels_last`` (None: on CUDA), on a copy."""
    from ..runtime.device import autocast

    model, images = _timed_copy(model, input_size, device, batch,
                                device.type == "cuda" if channels_last is None else channels_last)
    sync = _device_sync(device)

    def infer(x):
        model.eval()
        with torch.inference_mode(), autocast(device, amp):
            model(x)
        sync()

    top_train = _per_image(_training_step(model, device, amp), images)
    model.zero_grad(set_to_none=True)
    top_eval = _per_image(infer, images)
    return Costs(lower=0.0, top_train=top_train, top_eval=top_eval, head=top_eval / 50)


def measure_compiled(model: nn.Module, input_size, device: torch.device, batch: int = 32, amp: bool | str = False,
                     channels_last: bool = False) -> tuple[float, float]:
    """(seconds torch.compile took, seconds per image of a compiled training step): a copy of ``model`` compiled,
    its first step timed (the compile) and then its steps, under the settings the run trains with."""
    model, images = _timed_copy(model, input_size, device, batch, channels_last)
    step = _training_step(torch.compile(model), device, amp)
    start = time.perf_counter()
    step(images)
    first = time.perf_counter() - start
    per_image = _per_image(step, images)
    return max(0.0, first - per_image * batch), per_image


def measure_input(preprocess: dict, device: torch.device, batch: int = 32) -> float:
    """Seconds per image of the accelerator's input pipeline (data/device_batches): a uint8 batch at the working
    size moved to ``device`` and augmented there."""
    import numpy as np

    from ..data.device_batches import BatchAugment
    from ..data.geometry import working_size

    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (batch, *working_size(preprocess), 3),
                                                                dtype=np.uint8))
    augment = BatchAugment(preprocess, "strong", device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(x):
        augment(x.pin_memory() if device.type == "cuda" else x)
        sync()

    return _per_image(step, pixels)


def whole_network_plan(cfg: TrainConfig, model: nn.Module, preprocess: dict, counts: dict[str, int],
                       device: torch.device, paths: list, views: int, spent: float = 0.0, amp: bool | str = False
                       ) -> tuple[list[Phase], Estimate, tuple[int, int] | None]:
    """Where cutting does not apply (on an accelerator, for networks imgcls cannot cut, and from scratch): the whole
    network trains on images, after a linear probe when the weights are pretrained, for as many epochs as --budget
    holds at the speed measured here (up to WHOLE's on a CPU, ACCELERATOR's elsewhere); the last phase re-fits after
    its first epoch. On an accelerator the plan also picks the input size (the largest at which the budget holds
    ACCELERATOR["min_epochs"]), when the epochs are many strong augmentation and mixup/CutMix, and the training
    step's settings by timing them (engine/step.py; ``amp``: the device's autocast, runtime/device.accelerator_amp),
    which the estimate carries (``Estimate.step``). Returns (phases, estimate, the input size when the plan chose
    one)."""
    from ..data.geometry import draft_size_for

    t0 = time.time()
    accelerator = device.type != "cpu"
    own = tuple(preprocess["input_size"][1:])
    sizes = larger_sizes(own) if accelerator and cfg.imgsz is None and cfg.pretrained else [own]
    read = reading_seconds(paths, draft_size_for(_at_size(preprocess, sizes[-1])), cfg.seed) if len(paths) else 0.0
    first = Step(amp, uses_convolutions(model)) if accelerator else Step()  # on an accelerator the likely fastest
    costs, sizes = _measured_whole(model, preprocess, sizes, device, cfg.batch_size, amp, first.channels_last)
    step = None
    if accelerator:  # the other candidates, at the same size, beside the timing just made
        step, costs = _chosen_step(cfg, model, (3, *sizes[-1]), device, amp, first, costs)
    costs = replace(costs, read=read, **({"augment": measure_input(_at_size(preprocess, sizes[-1]), device,
                                                                     cfg.batch_size)} if accelerator else {}))
    probe = WHOLE["probe_epochs"] if cfg.pretrained else 0
    most = ACCELERATOR["epochs"] if accelerator else WHOLE["epochs"] if cfg.pretrained else WHOLE["scratch_epochs"]
    budget = parse_duration(cfg.budget)
    fitted = partial(fit_whole_epochs, counts=counts, budget=budget, probe_epochs=probe, most=most, views=views)
    for size in reversed(sizes):
        at_size = scaled(costs, sizes[-1], size)
        epochs, est = fitted(at_size, spent=spent + time.time() - t0)
        if epochs >= ACCELERATOR["min_epochs"] or size == sizes[0]:
            break
    if step is not None:
        step, timed = _compile_choice(cfg, model, device, size, step, at_size.top_train, epochs * counts.get("train", 0))
        if timed is not None:  # timing it took the compile's time: the epochs fitted again, at the compiled speed
            compiled = replace(at_size, top_train=timed[1]) if step.compile else at_size
            epochs, est = fitted(compiled, spent=spent + time.time() - t0, compile_seconds=timed[0] * step.compile)
        est.step = step
    log.info(f"Measured this machine in {time.time() - t0:.1f}s at {sizes[-1][0]}x{sizes[-1][1]} on {device.type}: "
             f"{costs.top_train * 1000:.2f} ms per image to train all layers, {costs.top_eval * 1000:.2f} ms to infer, "
             f"{costs.augment * 1000:.2f} ms to augment, {costs.read * 1000:.1f} ms to read an image file")
    if step is not None:
        log.info(step.line(device.type))
    if est.total > budget:
        log.warning(f"WARNING: even one epoch of the whole network takes about {est.total / 60:.1f} min here, more "
                    f"than --budget {cfg.budget}; it runs anyway")
    _say_unused(est, budget, epochs, most)
    return whole_phases(epochs, cfg.pretrained, accelerator), est, (size if size != own else None)


def whole_phases(epochs: int, pretrained: bool, accelerator: bool) -> list[Phase]:
    """The phases of a whole-network plan of ``epochs`` epochs: from pretrained weights a linear probe first (LP-FT),
    and on an accelerator, when the epochs are many, strong augmentation, mixup/CutMix and an EMA of the weights.
    An accelerator's fine-tuning is graded (its top layers learn near the head's lr, as the CPU plan's top stages do,
    its stem at the body's) and keeps the pretrained batch-norm statistics, which batches of a small data set would
    only blur: measured by replaying the plan on the CPU (docs/alternatives.md)."""
    strong = accelerator and epochs >= ACCELERATOR["strong_from"]
    extra = {"augment": "strong", "mix": True, "ema": True} if strong else {}
    if not pretrained:
        return [Phase("full", epochs, "all", "images", WHOLE["lr"], WHOLE["lr"], **extra)]
    return [Phase("probe", WHOLE["probe_epochs"], "head", "features", RECIPE["probe_lr"], RECIPE["probe_lr"]),
            Phase("finetune", epochs, "all", "images", WHOLE["lr"], WHOLE["body_lr"], graded=accelerator,
                  frozen_norm=accelerator, **extra)]


def _chosen_step(cfg: TrainConfig, model: nn.Module, input_size, device: torch.device, amp: bool | str, first: Step,
                 costs: Costs) -> tuple[StepSettings, Costs]:
    """(the training step's autocast and memory format, its costs): every candidate of engine/step.candidates timed
    at the plan's ``input_size`` beside ``first``, which the plan timed already (``costs``), and the fastest kept."""
    def timer(step: Step) -> Costs:
        return measure_whole(model, input_size, device, cfg.batch_size, step.amp, channels_last=step.channels_last)

    best, timing, seconds = choose_step(timer, candidates(amp, cfg.amp, first.channels_last), {first: costs})
    return StepSettings(best.amp, best.channels_last, seconds={s.label: t for s, t in seconds.items()}), timing


def _compile_choice(cfg: TrainConfig, model: nn.Module, device: torch.device, size: tuple[int, int],
                    step: StepSettings, eager: float, images: int) -> tuple[StepSettings, tuple[float, float] | None]:
    """(``step`` with torch.compile on or off, (compile seconds, compiled seconds per image) when it was timed): the
    rule of engine/step.decide_compile for ``images`` training images at ``eager`` seconds each, a copy of the
    network compiled and timed at the plan's input ``size`` only where it could pay."""
    def timer() -> tuple[float, float]:
        return measure_compiled(model, (3, *size), device, cfg.batch_size, step.amp, step.channels_last)

    on, note, timed = decide_compile(cfg.compile, eager, images, cfg.batch_size, timer)
    return replace(step, compile=on, compile_note=note), timed


def _measured_whole(model: nn.Module, preprocess: dict, sizes: list, device: torch.device, batch: int,
                    amp: bool | str, channels_last: bool = False) -> tuple[Costs, list]:
    """(costs at the largest of ``sizes`` the network takes, the sizes up to it): the network's work is per pixel,
    so one measurement at the largest size prices the others."""
    for largest in range(len(sizes) - 1, -1, -1):
        try:
            return measure_whole(model, (3, *sizes[largest]), device, batch, amp, channels_last=channels_last), \
                sizes[:largest + 1]
        except Exception:  # noqa: BLE001 - a network built for its own size only (a ViT's position embedding)
            if largest == 0:
                raise
    raise AssertionError("unreachable")


def _say_unused(est: Estimate, budget: float, epochs: int, most: int) -> None:
    """A plan that ends well inside the budget says so, and why: its epochs are at their useful maximum."""
    if epochs == most and est.total < 0.8 * budget:
        log.info(f"The plan ends about {(budget - est.total) / 60:.1f} min inside --budget: {most} epochs of every "
                 "layer is as many as help (a larger --model, or --imgsz, would use the time)")


def choose_backbone(cfg: TrainConfig, counts: dict[str, int], classes: int, device: torch.device,
                    amp: bool | str = False) -> tuple[str, str]:
    """(the timm name ``--model auto`` trains, why): on an accelerator with a budget plan from pretrained weights,
    the costliest backbone at hand (models/factory.backbones_at_hand: the packaged EfficientNet-Lites and whatever
    is in the local hub cache) at which --budget still holds ACCELERATOR["min_epochs"] epochs at its own input size,
    measured here; otherwise the default, whose CPU plan docs/benchmarks.md measures."""
    from ..models.factory import DEFAULT_MODEL, backbones_at_hand, create_model, pretrained_config

    if device.type == "cpu" or not cfg.planned or not cfg.pretrained or cfg.weights:
        return DEFAULT_MODEL, "the default"
    budget, fitting = parse_duration(cfg.budget), []
    for name in backbones_at_hand()[:MOST_CANDIDATES]:
        size = tuple(pretrained_config(name).get("input_size", (3, 224, 224))[1:])
        try:
            model = create_model(name, classes)[0]
            costs = replace(measure_whole(model, (3, *size), device, cfg.batch_size, amp), read=0.0, augment=0.0)
        except Exception as e:  # noqa: BLE001 - a cached file that does not load is one candidate less
            log.warning(f"WARNING: --model auto: left out {name} ({type(e).__name__}: {str(e)[:120]})")
            continue
        epochs = fit_whole_epochs(costs, counts, budget, WHOLE["probe_epochs"], ACCELERATOR["epochs"], 1)[0]
        fitting.append((costs.top_train, name, epochs, size))
    if not fitting:
        return DEFAULT_MODEL, "the default (no other backbone's weights are on this machine)"
    enough = [f for f in fitting if f[2] >= ACCELERATOR["min_epochs"]]
    cost, name, epochs, size = max(enough) if enough else min(fitting)
    others = ", ".join(n for _, n, _, _ in sorted(fitting) if n != name)
    return name, (f"the costliest of the {len(fitting)} backbones at hand for which --budget {cfg.budget} holds "
                  f"{ACCELERATOR['min_epochs']} epochs on this {device.type} ({epochs} at {size[0]}x{size[1]}, "
                  f"{cost * 1000:.2f} ms per training image); also at hand: {others or 'none'}")
