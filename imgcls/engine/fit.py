"""``fit``: run a plan's phases epoch by epoch: train, validate, keep the best, checkpoint, stop early."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..data.folders import DataSource
from ..metrics import (
    binary_cross_entropy,
    classification_report,
    confusion_matrix,
    cross_entropy,
    headline,
    multilabel_report,
    sigmoid,
)
from ..models.parts import Lower, MirroredTop, PreLogits, Upper, head, set_backbone_trainable, set_trainable
from ..record.card import ModelCard
from ..record.checkpoint import checkpoint_content, save_checkpoint
from ..record.files import write_yaml
from ..record.results import write_results
from ..runtime.inference import Logits, predict_logits
from ..runtime.device import channels_last_survives, compile_survives
from ..runtime.pytorch import torch_runner
from . import distributed as dist
from .loop import EpochOutput, Optimization, recompute_batch_norm, train_one_epoch
from .plan import Phase, phases_of
from .state import TrainState
from .step import StepSettings, uses_convolutions

log = logging.getLogger("imgcls")

OPTIMIZERS = {"SGD": partial(torch.optim.SGD, momentum=0.9, nesterov=True), "Adam": torch.optim.Adam,
              "AdamW": torch.optim.AdamW}
# Batch-norm's running statistics are an average over roughly the last 1/momentum steps (10 by default) that
# starts from mean 0 and variance 1. Until a phase has taken a couple of hundred steps they mostly describe the
# networks of its fast-moving first steps, not the one it validates and saves: on a few images (a handful of
# steps an epoch) that network can predict one class in eval mode. Below this many steps of the phase they are
# recomputed after each epoch; one pass over the training images costs about a third of an epoch, so a phase
# pays at most about this many forward batches in all, and nothing once one epoch alone has this many steps.
PRECISE_BN_STEPS = 200


@dataclass
class Run:
    """A prepared run: resolved settings, data, model and the plan; ``fit`` advances its ``state``."""

    cfg: TrainConfig                 # resolved: every default filled in, exactly what args.yaml records
    run_dir: Path
    source: DataSource
    model: nn.Module
    preprocess: dict
    device: torch.device
    plan: list[Phase]
    results: dict                    # the header blocks of results.json
    card: ModelCard                  # what every checkpoint of the run describes its model with
    checkpoint_extra: dict           # and the run with: its settings ("args"), "plan" and "label review"
    state: TrainState = field(default_factory=TrainState)
    workers: int = 0
    main: bool = True                # rank 0 (or the only process): the one that writes and speaks
    progress: bool = True
    distiller: object | None = None
    amp: bool | str = False
    step: StepSettings | None = None  # an accelerator's measured training step (autocast, channels_last, compile)
    started: float = field(default_factory=time.time)   # when this process began the run (or resumed it)
    elapsed_before: float = 0.0                           # wall time the run had taken before a resume
    budget: float | None = None      # seconds: a fresh budget plan re-fits its last phase to the time left
    reserve: float = 0.0             # seconds of the budget kept for the final evaluation and the report

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started


def fit(run: Run, on_epoch_end=None) -> TrainState:
    """Train every phase of ``run.plan`` that is not done yet (a resumed run continues mid-phase)."""
    inputs = PhaseInputs(run)
    first = run.plan[0]
    if run.state.epoch == 0 and run.main and run.cfg.pretrained and first.trains == "head" \
            and first.inputs == "features" and first.cut is None and not run.source.multi_label:
        _review_labels(run, inputs)
    for phase, before in phases_of(run.plan):
        if run.state.finished:
            break
        if run.state.epoch < before + phase.epochs:
            _fit_phase(run, phase, before, inputs, on_epoch_end)
    return run.state


def _review_labels(run: Run, inputs: "PhaseInputs") -> None:
    """The label review of train's data check, on the pooled features the first phase trains on anyway."""
    from .labels import review_training_labels

    section = review_training_labels(inputs.features(None), run.source, run.run_dir,
                                     relabelled=bool(run.cfg.relabel))
    if section is not None:
        run.results["label review"] = run.checkpoint_extra["label review"] = section


def _fit_phase(run: Run, phase: Phase, before: int, inputs: "PhaseInputs", on_epoch_end) -> None:
    state, cfg = run.state, run.cfg
    resumed = state.epoch > before
    if not resumed:
        log.info(f"Phase {phase.describe()}")
    lower, upper = phase_network(run.model, phase)
    images = phase.inputs == "images"
    channels_last = images and _channels_last(run)
    if channels_last:
        run.model.to(memory_format=torch.channels_last)
    opt = _optimization(run, phase, upper, len(inputs.train_dataset(phase, 1)))
    if resumed and state.optimizer is not None:
        opt.optimizer.load_state_dict(state.optimizer)
        if opt.scaler is not None and state.scaler:
            opt.scaler.load_state_dict(state.scaler)
    else:
        state.step, state.stale = 0, 0  # a new phase gets its own lr schedule and its own patience
    trained = dist.wrap(upper, run.device)
    one_off = int(phase.trains == "all" and _compiles(run))  # its first epoch compiles: no measure of its speed
    if one_off:
        trained = torch.compile(trained)
    ema = _ema(run.model, phase)
    evaluated = ema.module if ema is not None else evaluated_network(run.model, phase, lower, upper)
    last_epoch = sum(p.epochs for p in run.plan)
    epoch = state.epoch
    while epoch < before + phase.epochs:  # the last phase of a budget plan may re-fit its length
        epoch += 1
        t0 = time.time()
        with _single_thread(phase.trains == "head" and not images and run.device.type == "cpu"):
            tr = train_one_epoch(trained, inputs.train_loader(phase, epoch), opt, device=run.device, step=state.step,
                                 lower=lower, channels_last=channels_last, desc=f"epoch {epoch}/{last_epoch} train",
                                 progress=run.progress,
                                 after_step=(lambda step: ema.update(run.model, step)) if ema is not None else None)
            state.step += tr.steps
            if images and phase.trains != "head" and state.step < PRECISE_BN_STEPS and not phase.frozen_norm:
                _recompute_batch_norm(run, phase, epoch, inputs, lower, upper, channels_last)
            dist.sync_buffers(run.model)
            runner = torch_runner(evaluated, run.device, channels_last=channels_last,
                                  amp=run.amp if run.device.type == "cuda" else False)
            va = dist.gather_logits(predict_logits(runner, inputs.val_loader(phase), progress=run.progress,
                                                   desc=f"epoch {epoch}/{last_epoch} val"))
        record = _epoch_record(run, phase, dist.gather_train(tr), va, opt, time.time() - t0)
        state.add_epoch(record, record["seconds"])
        state.elapsed = record["elapsed"] = round(run.elapsed(), 1)
        if not resumed and run.budget is not None and phase == run.plan[-1] and phase.trains != "head" \
                and epoch - before > one_off:  # a probe's epochs take a blink: its planned length stands
            steps_per_epoch = opt.total_steps // phase.epochs
            phase = _refit_last_phase(run, phase, record["seconds"], epoch - before, one_off)
            opt.total_steps, last_epoch = steps_per_epoch * phase.epochs, sum(p.epochs for p in run.plan)
        stop = bool(cfg.patience and state.stale >= cfg.patience and epoch < last_epoch)
        state.finished = stop or epoch == last_epoch
        improved = state.keep_if_best(ends_phase=stop or epoch == before + phase.epochs)
        if run.main:
            _save_epoch(run, phase, opt, improved, ema)
        _log_epoch(run, epoch, last_epoch, record, improved)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record["val"])
        if stop:
            log.info(f"Early stopping: no improvement in validation {'mAP' if run.source.multi_label else 'accuracy'} "
                     f"for {cfg.patience} epochs")
            return


def _recompute_batch_norm(run: Run, phase: Phase, epoch: int, inputs: "PhaseInputs", lower, upper,
                          channels_last: bool) -> None:
    """Batch-norm statistics of the layers the phase trains, over the training images (PRECISE_BN_STEPS): each
    rank over its share, then their mean on every rank, so the ranks validate and rank 0 saves the same network."""
    norms = recompute_batch_norm(upper, inputs.train_loader(phase, epoch), device=run.device, lower=lower,
                                 channels_last=channels_last, amp=run.amp, progress=run.progress)
    dist.average_buffers([b for m in norms for b in (m.running_mean, m.running_var)])


def _refit_last_phase(run: Run, phase: Phase, epoch_seconds: float, done: int, one_off: int = 0) -> Phase:
    """After each epoch of a budget plan's last phase (``done`` of them so far, the last taking ``epoch_seconds``):
    after the first, as many epochs as the rest of the budget holds; after a later one, fewer when the epochs have
    become slower than that (another job on the cores) and the planned ones would run past the budget. The first
    ``one_off`` epochs (a compiled phase's first, which compiles) are no measure of its speed: the re-fit waits for
    the one after them. Decided by rank 0 for every rank, and recorded wherever the plan is (results.json,
    checkpoints, args)."""
    from .budget import epochs_that_fit, most_epochs

    left = run.budget - run.elapsed() - run.reserve
    if done == 1 + one_off:
        wanted = epochs_that_fit(done, phase.epochs, epoch_seconds, left,
                                 most_epochs(phase.name, run.device.type != "cpu"))
    else:  # the mean of its last few epochs: one slow epoch alone does not cut the phase
        recent = [e["seconds"] for e in run.state.history if e["phase"] == phase.name][one_off:][-3:] or \
            [epoch_seconds]
        wanted = max(done, min(phase.epochs, done + int(max(0.0, left) // max(sum(recent) / len(recent), 1e-3))))
    epochs = dist.broadcast(wanted if run.main else None)
    if epochs == phase.epochs:
        return phase
    log.info(f"Re-planned with this run's own speed ({epoch_seconds:.1f}s per epoch, {max(left, 0) / 60:.1f} min "
             f"of the budget left): phase {phase.name} trains {epochs} epochs instead of {phase.epochs}")
    refitted = dataclasses.replace(phase, epochs=epochs)
    run.plan[-1] = refitted
    run.cfg = dataclasses.replace(run.cfg, epochs=sum(p.epochs for p in run.plan))
    records = [p.to_dict() for p in run.plan]
    run.results["phases"], run.checkpoint_extra["plan"] = records, records
    run.results["train parameters"] = run.checkpoint_extra["args"] = run.cfg.to_dict()
    if run.main:
        write_yaml(run.run_dir / "args.yaml", run.cfg.to_dict())
    return refitted


def phase_network(model: nn.Module, phase: Phase) -> tuple[nn.Module | None, nn.Module]:
    """(lower, upper) with upper(lower(x)) the network's output: ``lower`` is frozen (eval mode, no
    gradients), ``upper`` is what trains. On cached inputs ``lower`` holds only the frozen part above the
    cache (None when there is none)."""
    if phase.trains == "all":
        set_backbone_trainable(model, True)
        model.train()
        return None, model
    model.eval()  # frozen batch-norm statistics and no dropout in the frozen part
    cached = phase.inputs == "features"
    if phase.trains == "head":
        set_backbone_trainable(model, False)
        if phase.cut is None:
            return (None if cached else PreLogits(model)), head(model)
        above = Upper(model, phase.cut, pre_logits=True)
        return (above if cached else nn.Sequential(Lower(model, phase.cut), above)), head(model)
    upper = Upper(model, phase.cut)
    set_trainable(model, upper)
    upper.train()
    return (None if cached else Lower(model, phase.cut)), upper


def evaluated_network(model: nn.Module, phase: Phase, lower: nn.Module | None, upper: nn.Module) -> nn.Module:
    """What validates a phase: the network the phase's checkpoints describe (models.factory.model_from_checkpoint),
    on the phase's inputs."""
    if phase.mirrors:
        return MirroredTop(model, phase.cut)
    return nn.Sequential(lower, upper) if lower is not None else upper


def trained_parameters(model: nn.Module, phase: Phase) -> int:
    """How many parameters ``phase`` trains: those ``phase_network`` unfreezes."""
    part = {"all": lambda: model, "head": lambda: head(model), "top": lambda: Upper(model, phase.cut)}[phase.trains]()
    return sum(p.numel() for p in part.parameters())


def _optimization(run: Run, phase: Phase, upper: nn.Module, train_images: int) -> Optimization:
    cfg = run.cfg
    head_ids = {id(p) for p in head(run.model).parameters()}
    params = [p for p in upper.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) in head_ids], "lr": phase.lr, "initial_lr": phase.lr},
              *(graded_groups(upper, phase.lr, phase.body_lr, head_ids) if phase.graded and phase.trains == "all"
                else [{"params": [p for p in params if id(p) not in head_ids], "lr": phase.body_lr,
                       "initial_lr": phase.body_lr}])]
    optimizer = OPTIMIZERS[cfg.optim]([g for g in groups if g["params"]], weight_decay=cfg.weight_decay)
    per_rank = -(-train_images // dist.world_size())  # a DistributedSampler gives each rank this many
    steps_per_epoch = max(1, -(-per_rank // cfg.batch_size))
    amp = run.amp if phase.inputs == "images" else False
    mix = None
    if phase.mix and phase.inputs == "images":
        mix = torch.Generator(device=run.device)
        mix.manual_seed(cfg.seed)
    return Optimization(
        optimizer=optimizer, criterion=_criterion(run),
        total_steps=steps_per_epoch * phase.epochs,
        warmup_steps=int(round(min(cfg.warmup_epochs, phase.epochs) * steps_per_epoch)), lrf=cfg.lrf,
        scaler=torch.amp.GradScaler("cuda") if amp is True and run.device.type == "cuda" else None, amp=amp,
        clip_grad=cfg.clip_grad, distiller=run.distiller, mix=mix, classes=len(run.source.class_names),
        frozen_norm=phase.frozen_norm and phase.trains == "all")


def graded_groups(model: nn.Module, lr: float, body_lr: float, head_ids: set[int]) -> list[dict]:
    """The trainable parameters outside the head in groups whose lr rises geometrically from ``body_lr`` at the
    stem to just below ``lr`` (the head's) at the top layer, along the layers of timm's group_matcher (layer-wise lr
    decay: the lower layers' general features move least); one group at ``body_lr`` where the model has no
    group_matcher."""
    from timm.models import group_parameters

    named = {name: p for name, p in model.named_parameters() if p.requires_grad and id(p) not in head_ids}
    matcher = getattr(model, "group_matcher", None)
    layers = group_parameters(model, matcher(coarse=False)) if callable(matcher) else {}
    layers = [[named[n] for n in names if n in named] for _, names in sorted(layers.items())]
    layers = [ps for ps in layers if ps]
    if sum(map(len, layers)) != len(named):  # names the matcher misses: no grading rather than a partial one
        layers = [list(named.values())] if named else []
    depth = len(layers)
    return [{"params": ps, "lr": (lr_i := body_lr * (lr / body_lr) ** (i / depth)), "initial_lr": lr_i}
            for i, ps in enumerate(layers)]


def _criterion(run: Run) -> nn.Module:
    """Cross-entropy over the classes; for multi-label data a sigmoid per label (BCEWithLogitsLoss, or with --asl
    timm's asymmetric loss at its paper's settings, averaged as BCE is so that the learning rates hold), whose
    --balance weighs each label's positives by its negatives-to-positives ratio in the training split."""
    cfg, source = run.cfg, run.source
    if source.multi_label:
        weight = positive_weights(np.stack(source.labels("train"))).to(run.device) if cfg.balance else None
        if cfg.asl:
            from timm.loss import AsymmetricLossMultiLabel

            return AsymmetricLossMultiLabel(reduction="mean", pos_weight=weight)
        return nn.BCEWithLogitsLoss(pos_weight=weight)
    weight = class_weights(source.labels("train"), len(source.class_names)).to(run.device) if cfg.balance else None
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)


def positive_weights(targets: np.ndarray) -> torch.Tensor:
    """Each label's negatives per positive in (N, labels) multi-hot targets (1 where it has no positive)."""
    positives = targets.sum(0)
    return torch.tensor(np.where(positives > 0, (len(targets) - positives) / np.maximum(positives, 1), 1.0),
                        dtype=torch.float32)


def class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """Inverse class frequency, scaled so that a balanced data set gets weight 1 everywhere."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return torch.tensor(counts.sum() / (num_classes * np.maximum(counts, 1)), dtype=torch.float32)


def _epoch_record(run: Run, phase: Phase, tr: EpochOutput, va: Logits, opt: Optimization, seconds: float) -> dict:
    """One epoch in the one metrics schema (record/results.py renders it as results.json's "epoch:N")."""
    names = run.source.class_names
    if run.source.multi_label:  # per-label numbers at 0.5 here: the thresholds are tuned on val after training
        shaped = (lambda a: np.asarray(a).reshape(-1, len(names)))
        return {"train": multilabel_report(shaped(tr.targets), sigmoid(shaped(tr.predictions)), names, loss=tr.loss),
                "val": multilabel_report(shaped(va.labels), sigmoid(shaped(va.logits)), names,
                                         loss=binary_cross_entropy(shaped(va.logits), shaped(va.labels))),
                "lr": opt.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 2), "phase": phase.name,
                "throughput": throughput(tr)}
    cm_train = confusion_matrix(tr.targets, tr.predictions, len(names))
    cm_val = confusion_matrix(va.labels, va.logits.argmax(1) if len(va) else va.labels, len(names))
    return {"train": classification_report(cm_train, names, tr.loss),
            "val": classification_report(cm_val, names, cross_entropy(va.logits, va.labels)),
            "lr": opt.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 2), "phase": phase.name,
            "throughput": throughput(tr)}


def throughput(tr: EpochOutput) -> dict:
    """The training pass's images per second, and the share of it the device was busy rather than waiting for the
    input pipeline's next batch (each step ends by reading the loss back, so the device has no work queued while
    the loop waits)."""
    seconds = max(tr.seconds, 1e-9)
    return {"images per second": round(len(tr.targets) / seconds, 1),
            "busy": round(max(0.0, 1.0 - tr.input_wait / seconds), 3)}


def _save_epoch(run: Run, phase: Phase, opt: Optimization, improved: bool, ema=None) -> None:
    """best.pt when the epoch is the best so far, last.pt (with everything to resume) always, results. With an EMA
    the checkpoints' weights are the average, the network validated; last.pt keeps the trained weights beside it."""
    state = run.state
    state.optimizer = opt.optimizer.state_dict()
    state.scaler = opt.scaler.state_dict() if opt.scaler is not None else None
    val = state.history[-1]["val"]
    metrics = {"epoch": state.epoch, "val_mAP": val["mAP"], "val_loss": val["loss"],
               "val_sample_f1": val["sample_f1"]} if run.source.multi_label else \
        {"epoch": state.epoch, "val_accuracy": val["accuracy"], "val_loss": val["loss"],
         "val_macro_f1": val["macro_avg"]["f1"]}
    card = run.card.replace(mirrored_at=phase.cut if phase.mirrors else None, metrics=metrics)
    saved = ema.module if ema is not None else run.model
    weights = checkpoint_content(card, **run.checkpoint_extra, epoch=state.epoch, state_dict=_on_cpu(saved))
    if improved:
        save_checkpoint(run.run_dir / "weights" / "best.pt", weights)
    source = run.source
    save_checkpoint(run.run_dir / "weights" / "last.pt", weights | state.to_checkpoint() | {
        "phase": phase.name, "data": {"root": str(source.root), "split_made": source.split_made,
                                      "multi_label": source.multi_label,
                                      "items": {k: [[rel, list(label) if source.multi_label else label]
                                                    for rel, label in v] for k, v in source.items.items()}}}
        | ({"trained_state_dict": _on_cpu(run.model)} if ema is not None else {}))
    write_results(run.run_dir, run.results | {"best epoch": state.best_epoch}, state.history)


def _on_cpu(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _ema(model: nn.Module, phase: Phase):
    """The phase's exponential moving average of the weights (buffers included), or None. Its decay warms up with
    the steps (timm's schedule: about 0.97 after 100 steps, 0.995 after 1,000), so a short phase's average follows
    its weights closely instead of remembering the pretrained ones. A resumed phase starts its average again from
    the trained weights."""
    if not phase.ema or phase.trains != "all":
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=0.9998, use_warmup=True)


def _log_epoch(run: Run, epoch: int, last_epoch: int, record: dict, improved: bool) -> None:
    tr, va = record["train"], record["val"]
    speed = record["throughput"]
    if va.get("multi_label"):
        log.info(f"epoch {epoch}/{last_epoch}  lr {record['lr']:.2e}  train loss {tr['loss']:.4f} mAP "
                 f"{headline(tr):.3f}  val loss {va['loss']:.4f} mAP {va['mAP']:.3f} sample-F1 {va['sample_f1']:.3f}"
                 f"  {record['seconds']:.1f}s  {speed['images per second']:.0f} img/s{'  *best*' if improved else ''}")
        return
    log.info(f"epoch {epoch}/{last_epoch}  lr {record['lr']:.2e}  train loss {tr['loss']:.4f} acc {tr['accuracy']:.3f}"
             f"  val loss {va['loss']:.4f} acc {va['accuracy']:.3f} F1 {va['macro_avg']['f1']:.3f}"
             f"  {record['seconds']:.1f}s  {speed['images per second']:.0f} img/s, {run.device.type} busy "
             f"{speed['busy']:.0%}{'  *best*' if improved else ''}")


@contextlib.contextmanager
def _single_thread(enabled: bool):
    """A head on cached features is a few tiny matmuls per batch: extra threads only add sync
    overhead (many times slower on a busy CPU), so use one while training it."""
    threads = torch.get_num_threads()
    if enabled:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _channels_last(run: Run) -> bool:
    """Whether images train in channels_last: as an accelerator's measured step says (engine/step.py); without one
    (a CPU, an explicit plan) for convolutional networks on an accelerator, and on a CPU where it does not crash."""
    if run.step is not None:
        return run.step.channels_last
    return uses_convolutions(run.model) and (run.device.type != "cpu" or channels_last_survives(
        run.model, run.preprocess["input_size"], train=True, subject=run.cfg.model))


def _compiles(run: Run) -> bool:
    """Whether the whole network trains compiled: as an accelerator's measured step says; without one only with
    --compile, and on a CPU where a compiled step does not crash."""
    if run.step is not None:
        return run.step.compile
    return bool(run.cfg.compile) and (run.device.type != "cpu" or compile_survives(
        run.model, run.preprocess["input_size"], subject=run.cfg.model))


class PhaseInputs:
    """What each kind of phase trains and validates on, built on first use and then kept: the cached
    backbone features, or the images (decoded once into a uint8 cache unless --no-cache)."""

    def __init__(self, run: Run):
        self.run = run
        self._features = {}   # cut -> SplitFeatures
        self._images = {}     # augmentation level -> (train dataset, val dataset)
        self._decoded = None  # (train, val) DecodedImages, shared by every level

    def train_dataset(self, phase: Phase, epoch: int):
        if phase.inputs == "features":
            return self.features(phase.cut).train_dataset(epoch)
        return self.images(phase)[0]

    def train_loader(self, phase: Phase, epoch: int):
        from ..data.loaders import make_loader

        cfg, dataset = self.run.cfg, self.train_dataset(phase, epoch)
        sampler = dist.train_sampler(dataset, cfg.seed, epoch)
        if phase.inputs == "images" and self.on_device:
            return self._device_batches(dataset, self._augment(phase), epoch, sampler)
        workers = 0 if phase.inputs == "features" else self.run.workers
        return make_loader(dataset, batch_size=cfg.batch_size, shuffle=True, workers=workers, seed=cfg.seed,
                           epoch=epoch, sampler=sampler)

    def val_loader(self, phase: Phase):
        from ..data.loaders import make_loader

        dataset = self.features(phase.cut).eval_dataset("val") if phase.inputs == "features" else \
            self.images(phase)[1]
        sampler = dist.eval_sampler(dataset)
        if phase.inputs == "images" and self.on_device:
            return self._device_batches(dataset, "none", 0, sampler)
        workers = 0 if phase.inputs == "features" else self.run.workers
        return make_loader(dataset, batch_size=self.run.cfg.batch_size, shuffle=False, workers=workers,
                           sampler=sampler)

    @property
    def on_device(self) -> bool:
        """Whether images reach the network through data/device_batches (decoded once, augmented on the device)."""
        return uses_device_batches(self.run)

    def _augment(self, phase: Phase) -> str:
        return phase.augment or self.run.cfg.augment

    def _device_batches(self, dataset, level: str, epoch: int, sampler):
        from ..data.device_batches import BatchAugment, DeviceBatches

        run = self.run
        augment = BatchAugment(run.preprocess, level, run.device, seed=run.cfg.seed * 1000 + epoch)
        return DeviceBatches(dataset.images, dataset.labels, augment, batch_size=run.cfg.batch_size,
                             order=list(sampler) if sampler is not None else None, shuffle=level != "none",
                             seed=run.cfg.seed, epoch=epoch)

    def features(self, cut: int | None):
        """The cache at ``cut``: as many augmented views per training image as the epochs on it (at most
        --cache-views), cycled over those epochs. Pooled features (cut None) are derived from a cache of
        activations when the plan has one, rather than computed from the images again."""
        if cut not in self._features:
            from .features import split_features

            run, cfg = self.run, self.run.cfg
            deeper = [p.cut for p in run.plan if p.inputs == "features" and p.cut is not None]
            if cut is None and deeper:
                self._features[None] = self.features(deeper[0]).through(
                    Upper(run.model, deeper[0], pre_logits=True), run.device)
                return self._features[None]
            epochs = sum(p.epochs for p in run.plan if p.inputs == "features" and p.cut == cut)
            self._features[cut] = split_features(
                run.model, cfg.model, run.preprocess, run.source, augment=cfg.augment,
                views=max(1, min(cfg.cache_views, epochs)), device=run.device, runtime=cfg.runtime,
                batch_size=cfg.batch_size, workers=min(1, run.workers), progress=run.progress, cut=cut)
        return self._features[cut]

    def images(self, phase: Phase):
        """(train dataset, val dataset) of images, augmented for training as ``phase`` asks and plain for
        validation; decoded once for every phase (the decoded-image cache)."""
        level = self._augment(phase)
        if level not in self._images:
            self._images[level] = image_datasets(self.run.source, self.run.preprocess, self.run.cfg, self.run.workers,
                                                 self.run.progress, augment=level, decoded=self._decoded)
            self._decoded = tuple(d.images for d in self._images[level]) if self.run.cfg.cache else None
        return self._images[level]


def uses_device_batches(run: Run) -> bool:
    """Images reach an accelerator through data/device_batches: decoded once, sliced into batches and augmented on
    the device, so that it does not wait for CPU processes transforming one image at a time. A CPU trains on its
    cores' own pipeline (the loaders' worker processes), and without the decoded cache (--no-cache) there is
    nothing to slice."""
    return run.device.type != "cpu" and run.cfg.cache


def image_datasets(source: DataSource, preprocess: dict, cfg: TrainConfig, workers: int, progress: bool,
                   augment: str | None = None, decoded: tuple | None = None):
    """(train, val) datasets of images: the training images augmented at ``augment`` (--augment's by default),
    decoded once into the uint8 cache unless --no-cache (``decoded``: caches made already)."""
    from ..data.decoded import DecodedDataset, DecodedImages
    from ..data.geometry import draft_size_for
    from ..data.loaders import ImageDataset
    from ..data.transforms import eval_transform, normalize_transform, train_transform

    train_tf = train_transform(preprocess, augment or cfg.augment)
    if not cfg.cache:
        draft = draft_size_for(preprocess)
        return (ImageDataset(source.paths("train"), source.labels("train"), train_tf, draft_size=draft),
                ImageDataset(source.paths("val"), source.labels("val"), eval_transform(preprocess), draft_size=draft))
    decode = partial(DecodedImages, preprocess=preprocess, workers=max(2, workers), progress=progress)
    train, val = decoded or (decode(source.paths("train"), training=True), decode(source.paths("val"), training=False))
    return (DecodedDataset(train, source.labels("train"), train_tf),
            DecodedDataset(val, source.labels("val"), normalize_transform(preprocess)))
