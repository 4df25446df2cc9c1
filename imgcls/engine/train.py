"""``imgcls.train``: from class folders to a run folder with weights, metrics, plots and a report.

``train`` = ``prepare`` (settings resolved and recorded once, data checked, model built, run folder made)
-> ``fit`` (the plan's phases) -> ``finish`` (the best weights evaluated through the same path as
``imgcls val``, then plots and the report).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import TrainConfig, make_config, parse_duration
from ..console import setup_logging
from ..errors import ImgclsError
from ..record.card import ModelCard
from ..record.checkpoint import card_of, load_checkpoint
from ..record.files import is_inside, new_run_dir, write_json, write_yaml
from ..record.results import write_results
from ..runtime.device import select_device
from . import distributed as dist
from .evaluate import store_rejection, store_thresholds
from .fit import Run, fit, trained_parameters
from .plan import explicit_plan, plan_from_records
from .seeds import seed_everything
from .state import TrainState
from .trackers import open_trackers

log = logging.getLogger("imgcls")


@dataclass
class TrainResult:
    """What a finished run produced; every path is inside ``run_dir``."""

    run_dir: Path
    class_names: list[str]
    best_epoch: int
    epochs_run: int
    best: dict = field(default_factory=dict)   # the best epoch's validation report (metrics.classification_report)
    test: dict | None = None                   # "test" block of results.json (the metrics.json schema)

    @property
    def best_weights(self) -> Path:
        return self.run_dir / "weights" / "best.pt"

    @property
    def last_weights(self) -> Path:
        return self.run_dir / "weights" / "last.pt"


def train(cfg: TrainConfig | None = None, *, cfg_file: str | None = None, resume: str | os.PathLike | None = None,
          progress: bool = True, on_epoch_end=None, **settings) -> TrainResult:
    """Train a classifier exactly as ``imgcls train`` does and return the run's summary.

    ``imgcls.train(data="photos/", model="resnet18", epochs=10)``; any TrainConfig key is accepted.
    ``resume=RUN_DIR`` continues an interrupted run from its last.pt. ``on_epoch_end(epoch, valid_info)``
    is called after each epoch is recorded (hyperparameter search uses it to prune).
    """
    setup_logging()
    started = time.time()
    cfg, last = _settings(cfg, cfg_file, resume, settings)
    trackers = open_trackers(cfg.logger if dist.is_main() else None)  # a missing package: named before any work
    run = prepare(cfg, last, progress=progress)
    run.started = started
    trackers.start(run.run_dir, run.cfg.to_dict(), resumed=last is not None)
    try:
        fit(run, _tracked(run, trackers, on_epoch_end))
        result = finish(run)
    except BaseException as e:
        trackers.close("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    trackers.finish(run.run_dir, {"best_val_accuracy": (result.best or {}).get("accuracy"),
                                  "test_accuracy": (result.test or {}).get("accuracy")})
    return result


def _tracked(run: Run, trackers, on_epoch_end):
    """The epoch callback: the trackers get each epoch's record after its checkpoint is saved, then the caller's."""
    def epoch_end(epoch: int, valid_info: dict) -> None:
        trackers.log_epoch(epoch, run.state.history[-1], run.source.class_names)
        if on_epoch_end is not None:
            on_epoch_end(epoch, valid_info)

    return epoch_end


def _settings(cfg, cfg_file, resume, settings) -> tuple[TrainConfig, dict | None]:
    """The run's settings and, when resuming, its last.pt."""
    if resume is None:
        if cfg is not None and (settings or cfg_file):
            raise TypeError("pass either a TrainConfig or keyword settings, not both")
        cfg = cfg or make_config(cfg_file, **settings)
        if not cfg.data:
            raise ImgclsError("--data is required: a folder with one sub-folder of images per class, or a label file "
                              "(CSV/TSV/TXT) of image paths and labels")
        check_project_outside_data(cfg.project, cfg.data)
        return cfg, None
    extra = sorted(k for k, v in settings.items() if v is not None) + (["--cfg"] if cfg_file else [])
    if extra or cfg is not None:
        raise ImgclsError(f"--resume continues a run with its saved settings; drop {extra or ['the settings']}")
    run_dir = Path(resume)
    last = run_dir / "weights" / "last.pt" if run_dir.is_dir() else run_dir
    if not last.exists():
        raise ImgclsError(f"--resume {resume}: no weights/last.pt there to resume from")
    checkpoint = load_checkpoint(last)
    if "optimizer" not in checkpoint:
        raise ImgclsError(f"--resume {resume}: {last} holds no training state to resume from")
    cfg = TrainConfig(**checkpoint["args"])
    if checkpoint["epoch"] >= cfg.epochs or checkpoint.get("finished"):
        raise ImgclsError(f"--resume {resume}: this run already finished ({checkpoint['epoch']} epochs); "
                          "start a new run")
    return cfg, checkpoint


def check_project_outside_data(project: str, data: str) -> None:
    """A run folder inside the data folder would be read as a class folder by the next run."""
    if Path(data).is_dir() and is_inside(project, data):
        raise ImgclsError(f"--project {project}: is inside --data {data}, where the next run would read it as a "
                          "class folder; choose a --project outside the data folder")


def prepare(cfg: TrainConfig, last: dict | None = None, *, progress: bool = True) -> Run:
    """Everything before the first epoch: device, checked data, model, resolved settings, run folder."""
    from ..models.parts import set_backbone_trainable

    begun = time.time()
    seed_everything(cfg.seed)
    device = dist.setup(cfg.device) if dist.enabled() else select_device(cfg.device)
    main = dist.is_main()  # with torchrun, rank 0 alone writes files and speaks; every rank computes
    from ..data.cores import default_workers

    workers = default_workers() if cfg.workers is None else cfg.workers
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.world_size()))
    source = _source(cfg, last)
    if cfg.model == "auto":
        cfg = _backbone(cfg, source, device, main)
    model, pretrained_cfg, weights_desc, preprocess, model_kwargs = _model(cfg, source, last)
    if last is None and source.multi_label:
        _prior_bias(model, source)
    distiller = _distiller(cfg, source, preprocess, device)
    if last is None:
        source = _checked(source, preprocess, workers, main, cfg)
    plan, views, estimate, size = _plan(cfg, last, model, preprocess, source, device, main, time.time() - begun)
    if size is not None and list(size) != preprocess["input_size"][1:]:
        preprocess = _preprocess(pretrained_cfg, dataclasses.replace(cfg, imgsz=f"{size[0]},{size[1]}"))
        log.info(f"Input size {size[0]}x{size[1]}: the budget holds the full plan at this larger size, which "
                 "sees more detail (--imgsz sets it yourself)")
    resolved = dataclasses.replace(
        cfg, data=str(Path(cfg.data).resolve()), relabel=str(Path(cfg.relabel).resolve()) if cfg.relabel else None,
        images=str(source.root.resolve()) if source.listed else None,
        epochs=sum(p.epochs for p in plan), cache_views=views,
        freeze=None if cfg.planned else cfg.frozen_backbone, lr=None if cfg.planned else cfg.base_lr,
        workers=workers, imgsz=_imgsz(preprocess), device=str(device),
        teacher=distiller.description["teacher"] if distiller else None)
    run_dir = Path(last["path"]).parent.parent if last else \
        dist.broadcast(new_run_dir(cfg.project, cfg.name, cfg.exist_ok) if main else None)
    card = ModelCard(cfg.model, tuple(source.class_names), preprocess, model_kwargs, weights_source=weights_desc,
                     thresholds=(0.5,) * len(source.class_names) if source.multi_label else None)
    run = Run(cfg=resolved, run_dir=run_dir, source=source, model=model.to(device), preprocess=preprocess,
              device=device, plan=plan, results={}, card=card, workers=workers, main=main,
              checkpoint_extra={"args": resolved.to_dict(), "plan": [p.to_dict() for p in plan]},
              progress=progress and main, distiller=distiller)
    if estimate is not None:  # a fresh budget plan: its last phase re-fits to the time left after its first epoch
        run.budget, run.reserve = parse_duration(cfg.budget), estimate.after_training
    set_backbone_trainable(model, run.plan[0].trains == "all")  # as the first phase trains it
    run.results = _results_header(run, weights_desc)
    run.step = _step(estimate, last, device)
    if run.step is not None:  # recorded beside the plan, so that a resumed run trains its steps the same way
        run.results["training step"] = run.checkpoint_extra["training step"] = run.step.to_dict()
    if last is not None and last.get("label review"):  # reviewed before the first epoch; kept across resumes
        run.results["label review"] = run.checkpoint_extra["label review"] = last["label review"]
    if last is not None:
        model.load_state_dict(last.get("trained_state_dict") or last["state_dict"])  # not the EMA (fit._save_epoch)
        run.state = TrainState.from_checkpoint(last)
        run.elapsed_before = run.state.elapsed
        log.info(f"Resuming {run_dir} from epoch {run.state.epoch + 1}/{cfg.epochs}")
    else:
        run.state.phase_ends = cfg.planned  # the budget plan keeps the best of its phases' ends (TrainState)
        if main:
            _write_run_header(run)
    run.amp = _amp(run)
    _log_start(run, weights_desc, estimate)
    return run


def _plan(cfg: TrainConfig, last: dict | None, model, preprocess: dict, source, device, main: bool,
          spent: float = 0.0):
    """(phases, views to cache, estimate, input size or None): the recorded plan when resuming, the budget plan
    by default (within what is left of the budget after ``spent`` seconds), or the plan that explicit flags spell
    out. Rank 0 measures; every rank runs the same plan."""
    if last is not None:
        records = last.get("plan") or [p.to_dict() for p in explicit_plan(cfg)]  # runs from before plans
        return plan_from_records(records), cfg.cache_views, None, None
    if not cfg.planned:
        return explicit_plan(cfg), cfg.cache_views, None, None
    from .budget import budget_plan

    counts = {split: len(items) for split, items in source.items.items()}
    from ..runtime.device import accelerator_amp

    made = budget_plan(cfg, model, preprocess, counts, device, source.paths("train"), spent,
                       accelerator_amp(device, cfg.amp)) if main else None
    return dist.broadcast(made)


def _backbone(cfg: TrainConfig, source, device: torch.device, main: bool) -> TrainConfig:
    """--model auto resolved (engine/budget.choose_backbone), by rank 0 for every rank, and said with its reason."""
    from ..runtime.device import accelerator_amp
    from .budget import choose_backbone

    counts = {split: len(items) for split, items in source.items.items()}
    name, why = dist.broadcast(choose_backbone(cfg, counts, len(source.class_names), device,
                                               accelerator_amp(device, cfg.amp)) if main else None)
    if main and why != "the default":
        log.info(f"--model auto: {name}, {why}")
    return dataclasses.replace(cfg, model=name)


def _model(cfg: TrainConfig, source, last: dict | None):
    """(model, its pretrained config, where its weights came from, preprocessing, the arguments that build it
    again): from --model and its weights at the input size asked (an architecture made for one size is built for
    another where its weights allow: models/factory.at_input_size); on resume, as the run built it."""
    from ..models.factory import at_input_size, build_model, create_model, pretrained_config

    classes = len(source.class_names)
    if last is not None:
        card = card_of(last)
        return (build_model(cfg.model, classes, **card.model_kwargs), pretrained_config(cfg.model),
                card.weights_source, card.preprocess, card.model_kwargs)
    model, pretrained_cfg, weights_desc = create_model(cfg.model, classes, pretrained=cfg.pretrained,
                                                       weights=cfg.weights, se=cfg.se)
    preprocess = _preprocess(pretrained_cfg, cfg)
    model, kwargs = at_input_size(model, cfg.model, classes, preprocess["input_size"],
                                  pretrained=bool(cfg.pretrained or cfg.weights), se=cfg.se)
    return model, pretrained_cfg, weights_desc, preprocess, kwargs


def _prior_bias(model: nn.Module, source) -> None:
    """A multi-label head's outputs start at the log-odds of each label's share of the training images (the prior
    of Lin et al., 2017), not at 0 (every label half likely): on many labels, few of them on each image, the first
    steps then learn the images rather than that most labels are absent."""
    import numpy as np

    from ..models.parts import head

    layers = [m for m in head(model).modules() if isinstance(m, nn.Linear)]
    if not layers or layers[-1].bias is None or layers[-1].out_features != len(source.class_names):
        return
    share = np.clip(np.stack(source.labels("train")).mean(0), 1e-3, 1 - 1e-3)
    with torch.no_grad():
        layers[-1].bias.copy_(torch.from_numpy(np.log(share / (1 - share))).to(layers[-1].bias))


def _imgsz(preprocess: dict) -> int | str:
    """The input size as --imgsz takes it: one number when square, else "H,W"."""
    _, height, width = preprocess["input_size"]
    return height if height == width else f"{height},{width}"


def _preprocess(pretrained_cfg: dict, cfg: TrainConfig) -> dict:
    from ..data.transforms import make_preprocess

    return make_preprocess(pretrained_cfg, cfg.imgsz, cfg.resize)


def _source(cfg: TrainConfig, last: dict | None):
    """The data: found and split from --data, or, on resume, exactly the images the run started with."""
    from ..data.folders import DataSource, discover

    if last is None:
        source = discover(cfg.data, cfg.split, cfg.seed, images=cfg.images, columns=cfg.columns,
                          multi_label=cfg.multi_label)
        if source.multi_label and (cfg.relabel or cfg.teacher):
            raise ImgclsError(f"--{'relabel' if cfg.relabel else 'teacher'}: works on single-label data; "
                              f"{cfg.data} has several labels per image: drop the flag")
        if cfg.asl and not source.multi_label:
            raise ImgclsError(f"--asl: the asymmetric loss is for multi-label data; {cfg.data} has one label per "
                              "image (cross-entropy): drop --asl")
        return _relabelled(source, cfg.relabel) if cfg.relabel else source
    data = last["data"]
    several = bool(data.get("multi_label"))
    return DataSource(root=Path(data["root"]), class_names=list(card_of(last).class_names),
                      split_made=data["split_made"], multi_label=several,
                      items={k: [(rel, tuple(label) if several else label) for rel, label in v]
                             for k, v in data["items"].items()})


def _relabelled(source, relabel_file: str):
    """The data with an edited relabel CSV applied (recorded in the run's split.csv); the folders stay as they are."""
    from ..data.relabel import apply_to_source, read_relabel_csv, source_classes

    relabel = read_relabel_csv(relabel_file, source_classes(source))
    log.info(f"Relabel file: {relabel.describe()}")
    return apply_to_source(source, relabel)


def _checked(source, preprocess: dict, workers: int, main: bool, cfg: TrainConfig):
    """The fast part of `imgcls check` on rank 0 (bad files skipped, a split imgcls made is made again without
    them, duplicates and leakage named in one block), then every rank trains on exactly the images rank 0 kept."""
    from ..data.check import quick_check
    from ..data.folders import check_trainable

    if main:
        t0 = time.time()
        source, findings_block = quick_check(source, min_side=max(1, min(preprocess["input_size"][1:]) // 4),
                                             workers=max(2, workers), split=cfg.split, seed=cfg.seed)
        if findings_block:
            log.warning(findings_block)
        for rel, reason in source.skipped if source.rows else ():
            log.warning(f"WARNING: --data {cfg.data}: row {source.rows.get(rel, '?')}: {rel} cannot be used "
                        f"({reason}); training goes on without it")
        check_trainable(source)
        log.info(f"Checked {sum(len(v) for v in source.items.values())} images in {time.time() - t0:.1f}s")
    return dist.broadcast(source)


def _distiller(cfg: TrainConfig, source, preprocess: dict, device: torch.device):
    if not cfg.teacher:
        return None
    from ..models.distill import make_distiller

    return make_distiller(cfg.teacher, source.class_names, preprocess, cfg.kd_temperature, cfg.kd_alpha, device)


def _step(estimate, last: dict | None, device: torch.device):
    """The training step's settings an accelerator's budget plan measured (engine/step.StepSettings), or those a
    resumed run recorded (on an accelerator: a run resumed on a CPU takes the CPU's own choices); None where there
    are none (a CPU, an explicit plan), and fit's own rules apply."""
    from .step import StepSettings

    if last is not None:
        recorded = last.get("training step") if device.type != "cpu" else None
        return StepSettings.from_dict(recorded) if recorded else None
    return estimate.step if estimate is not None else None


def _amp(run: Run) -> bool | str:
    """On an accelerator the measured step's autocast (engine/step.py); without a measured step, the device's
    autocast on CUDA (unless --no-amp); on CPU bf16 autocast for phases that train on images, only where one timed
    step shows it is faster (IMGCLS_CPU_BF16=0/1 pins the choice for reproducible runs)."""
    from ..runtime.device import accelerator_amp

    cfg = run.cfg
    if run.step is not None:
        return run.step.amp
    if run.device.type == "cuda":
        return accelerator_amp(run.device, cfg.amp)
    if cfg.amp:
        log.warning("WARNING: --amp only applies on CUDA; training in float32")
        return False
    if run.device.type != "cpu" or cfg.amp is False or not any(p.trains == "all" for p in run.plan):
        return False
    from ..runtime.device import cpu_bf16_is_faster

    pinned = os.environ.get("IMGCLS_CPU_BF16")
    faster = pinned == "1" if pinned in ("0", "1") else cpu_bf16_is_faster(run.model, run.preprocess["input_size"])
    if dist.broadcast(faster):  # one decision for all ranks
        log.info("bf16 autocast: on for training (measured faster than float32 on this CPU)")
        return "bf16"
    return False


def _results_header(run: Run, weights_desc: str) -> dict:
    from ..models.parts import count_flops, count_parameters

    source = run.source
    table = {"num_classes": len(source.class_names), "class_names": source.class_names, "root": str(source.root)}
    if source.multi_label:
        table["multi_label"] = True
    for split, per_class in source.counts().items():  # multi-label: images per label, and images in all
        table[split] = dict(per_class, total=len(source.items[split]) if source.multi_label else sum(per_class.values()))
    if source.skipped:
        table["skipped files"] = [{"path": rel, "reason": reason} for rel, reason in source.skipped]
    total, _ = count_parameters(run.model)
    per_phase = {phase.name: trained_parameters(run.model, phase) for phase in run.plan}
    header = {"train parameters": run.cfg.to_dict(), "dataset": table, "model": {
        "name": run.cfg.model, "weights": weights_desc, "total parameters": total,
        "trainable parameters": max(per_phase.values()), "trainable parameters per phase": per_phase,
        "FLOPs per image": count_flops(_trained_network(run), run.preprocess["input_size"]),
        "input size": run.preprocess["input_size"], "preprocess": run.preprocess}}
    if run.distiller:
        header["distillation"] = run.distiller.description
    header["phases"] = [p.to_dict() for p in run.plan]
    return header


def _trained_network(run: Run) -> nn.Module:
    """The network the plan leaves, as predict runs it (models.factory.model_from_checkpoint): a plan that tunes on
    cached activation maps leaves one that runs its top stages on the maps and on their mirror image."""
    from ..models.parts import Mirrored

    mirrored = [p for p in run.plan if p.mirrors]
    return Mirrored(run.model, mirrored[-1].cut).train(run.model.training) if mirrored else run.model


def _write_run_header(run: Run) -> None:
    from ..data.folders import write_split_csv

    write_yaml(run.run_dir / "args.yaml", run.cfg.to_dict())
    write_json(run.run_dir / "class_indices.json", {str(i): c for i, c in enumerate(run.source.class_names)})
    if run.source.split_made or run.source.listed:  # a label file's split too: later commands read it from there
        write_split_csv(run.source, run.run_dir / "split.csv")


def _log_start(run: Run, weights_desc: str, estimate) -> None:
    names, counts, cfg = run.source.class_names, run.source.counts(), run.cfg
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    log.info(f"Data: {len(names)} {'labels, several per image' if run.source.multi_label else 'classes'} ({shown}); "
             + ", ".join(f"{s} {len(run.source.items[s])}" for s in counts)  # images (multi-label: not labels)
             + (f" (split made with seed {cfg.seed})" if run.source.split_made else ""))
    side = run.preprocess["input_size"]
    model = run.results["model"]
    log.info(f"Model: {cfg.model}, {weights_desc}; input {side[1]}x{side[2]}; {model['total parameters']:,} "
             f"parameters, {model['FLOPs per image'] / 1e9:.2f} GFLOPs per image")
    if estimate is None:
        log.info("Plan: " + "; then ".join(p.describe() for p in run.plan))
        return
    views = run.cfg.cache_views
    cached = any(p.inputs == "features" for p in run.plan) and \
        f"; {views} augmented view{'s' if views != 1 else ''} per training image"
    log.info(f"Plan for --budget {run.cfg.budget} (estimated {estimate.total / 60:.1f} min on this machine"
             f"{cached or ''}):\n"
             + "\n".join(f"  {i}. {p.describe()}" for i, p in enumerate(run.plan, 1)) + "\nEstimated time:\n"
             + "\n".join(estimate.lines()))


def finish(run: Run) -> TrainResult:
    """The best weights evaluated on val and test through ``imgcls val``'s own path; plots; the report."""
    state = run.state
    result = TrainResult(run_dir=run.run_dir, class_names=run.source.class_names, best_epoch=state.best_epoch,
                         epochs_run=state.epoch, best=state.best or {})
    if not run.main:  # rank 0 alone evaluates the best weights and draws
        dist.barrier()
        return result
    from ..record.predictions import write_predictions_csv
    from ..runtime.cards import embed_export
    from .evaluate import evaluate_checkpoint_on, fit_checkpoint_familiarity

    best = load_checkpoint(run.run_dir / "weights" / "best.pt")
    # --reject's familiarity score: fitted on training images, then val calibrates its threshold
    best["familiarity"] = fit_checkpoint_familiarity(best, run.source.root, run.source.items.get("train") or [],
                                                     device=run.device, runtime=run.cfg.runtime,
                                                     batch_size=run.cfg.batch_size, workers=run.workers)
    evaluations = {}
    for split in ("val", "test"):
        if run.source.items.get(split):
            evaluations[split] = evaluate_checkpoint_on(best, run.source.root, run.source.items[split], split,
                                                        device=run.device, runtime=run.cfg.runtime,
                                                        batch_size=run.cfg.batch_size, workers=run.workers,
                                                        progress=run.progress)
            e = evaluations[split]
            if split == "val" and run.source.multi_label:  # each label's threshold, before test is scored with it
                best |= store_thresholds(run.run_dir / "weights" / "best.pt", e, best).to_dict()
            write_predictions_csv(run.run_dir / f"predictions_{split}.csv", e.paths, e.y_true, e.probs,
                                  e.class_names, thresholds=card_of(best).thresholds)
            if split == "val":  # --reject's threshold, before test is scored with it
                best |= store_rejection(run.run_dir / "weights" / "best.pt", e.logits, e.familiarity,
                                        best["familiarity"]).to_dict()
    if "test" in evaluations:
        result.test = evaluations["test"].metrics
    results = run.results | {"best epoch": state.best_epoch, "train seconds": round(state.train_seconds, 1),
                             "wall seconds": round(run.elapsed(), 1)}
    if run.source.multi_label:  # as best.pt's card holds them, with the validation numbers at them
        results |= {"thresholds": dict(zip(run.source.class_names, card_of(best).thresholds)),
                    "val at thresholds": evaluations["val"].metrics}
    write_results(run.run_dir, results | ({"test": result.test} if result.test else {}), state.history)
    _draw(run)
    # predict and serve then start on the export the evaluation checked, without PyTorch, here or anywhere
    embed_export(load_checkpoint(run.run_dir / "weights" / "best.pt"), run.run_dir / "weights" / "best.pt")
    best_info = result.best
    if run.source.multi_label:
        log.info(f"Best epoch {state.best_epoch}/{state.epoch}: val mAP {best_info['mAP']:.4f}, loss "
                 f"{best_info['loss']:.4f}" + (f"; test mAP {result.test['mAP']:.4f}, sample-F1 "
                                               f"{result.test['sample_f1']:.4f} at the tuned thresholds"
                                               if result.test else ""))
    else:
        log.info(f"Best epoch {state.best_epoch}/{state.epoch}: val accuracy {best_info['accuracy']:.4f}, "
                 f"macro-F1 {best_info['macro_avg']['f1']:.4f}, loss {best_info['loss']:.4f}"
                 + (f"; test accuracy {result.test['accuracy']:.4f}" if result.test else ""))
    log.info(f"Results saved to {run.run_dir}")
    dist.barrier()
    return result


def _draw(run: Run) -> None:
    """errors_val.png (Grad-CAM on the best weights' worst val mistakes), then the plots and report.html."""
    from ..reporting.gallery import draw_run_errors
    from ..reporting.report import write_report

    not_drawn = {}
    try:
        if not run.source.multi_label:  # the gallery pictures a single label's mistakes
            draw_run_errors(run.run_dir, run.device)
    except Exception as e:  # noqa: BLE001 - the gallery is one figure: the report goes on without it
        not_drawn["errors_val.png"] = f"{type(e).__name__}: {str(e).strip()[:160]}"
        log.warning(f"WARNING: errors_val.png not drawn ({not_drawn['errors_val.png']})")
    try:
        write_report(run.run_dir, not_drawn)
    except Exception as e:  # noqa: BLE001 - weights and results are saved; a drawing problem must not fail the run
        log.warning(f"WARNING: report not written ({type(e).__name__}: {e}); `imgcls report {run.run_dir}` retries")


def distill(teacher: str | os.PathLike | None = None, *, cfg_file: str | None = None,
            resume: str | os.PathLike | None = None, progress: bool = True, **settings) -> TrainResult:
    """``imgcls distill``: train a (smaller) student as ``train`` does, with a trained teacher's soft targets
    in the loss; the run folder is a normal run (named distill, distill2, ...) that records the teacher."""
    if resume is not None:
        return train(resume=resume, progress=progress, **({"teacher": teacher} if teacher else {}), **settings)
    if not teacher and not (cfg_file and make_config(cfg_file).teacher):
        raise ImgclsError("distill needs --teacher RUN/weights/best.pt, a trained model on the same classes")
    settings.setdefault("name", "distill")
    return train(cfg_file=cfg_file, progress=progress, **({"teacher": str(teacher)} if teacher else {}), **settings)
