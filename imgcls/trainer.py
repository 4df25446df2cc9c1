"""``imgcls.train``: from class folders to a run folder with weights, metrics, plots and a report."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import data as data_mod
from . import distributed as dist
from .config import TrainConfig, make_config
from .console import setup_logging
from .engine import EpochOutput, evaluate, train_one_epoch
from .errors import ImgclsError
from .metrics import confusion_matrix, summary
from .plots import write_predictions_csv
from .models import count_flops, count_parameters, create_model, head_and_backbone_params, set_backbone_trainable
from .runs import (CHECKPOINT_FORMAT, atomic_write_text, load_checkpoint, new_run_dir, save_checkpoint,
                   write_json, write_yaml)
from .cache import DecodedDataset, DecodedImages, HeadOnFeatures, draft_size_for
from .transforms import eval_transform, make_preprocess, normalize_transform, train_transform

log = logging.getLogger("imgcls")

CSV_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "seconds"]


@dataclass
class TrainResult:
    """What a finished run produced; every path is inside ``run_dir``."""

    run_dir: Path
    class_names: list[str]
    best_epoch: int
    epochs_run: int
    best: dict = field(default_factory=dict)   # the best epoch's "valid info"
    test: dict | None = None                   # "test" section of results.json, when a test split exists

    @property
    def best_weights(self) -> Path:
        return self.run_dir / "weights" / "best.pt"

    @property
    def last_weights(self) -> Path:
        return self.run_dir / "weights" / "last.pt"


def select_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ImgclsError(f"--device {name}: no CUDA GPU is available here; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ImgclsError("--device mps: Apple MPS is not available here; use --device cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    np_state = np.random.get_state()
    state["numpy"] = [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))


def _dataset_table(source) -> dict:
    counts = source.counts()
    table = {"num_classes": len(source.class_names), "class_names": source.class_names, "root": str(source.root)}
    for split, per_class in counts.items():
        table[split] = dict(per_class, total=sum(per_class.values()))
    if source.skipped:
        table["skipped files"] = [{"path": rel, "reason": reason} for rel, reason in source.skipped]
    return table


def _make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    head, backbone = head_and_backbone_params(model)
    groups = [
        {"params": head, "lr": cfg.base_lr, "initial_lr": cfg.base_lr},
        {"params": backbone, "lr": cfg.base_lr * cfg.backbone_lr_mult,
         "initial_lr": cfg.base_lr * cfg.backbone_lr_mult},
    ]
    if cfg.optim == "SGD":
        return torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    if cfg.optim == "Adam":
        return torch.optim.Adam(groups, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def _class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = counts.sum() / (num_classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)


def _is_better(val: dict, best: dict | None) -> bool:
    if best is None:
        return True
    if val["accuracy"] != best["accuracy"]:
        return val["accuracy"] > best["accuracy"]
    return val["loss"] < best["loss"]


def train(cfg: TrainConfig | None = None, *, cfg_file: str | None = None, resume: str | os.PathLike | None = None,
          progress: bool = True, on_epoch_end=None, **settings) -> TrainResult:
    """Train a classifier exactly as ``imgcls train`` does and return the run's summary.

    ``imgcls.train(data="photos/", model="resnet18", epochs=10)``; any TrainConfig key is accepted.
    ``resume=RUN_DIR`` continues an interrupted run from its last.pt. ``on_epoch_end(epoch, valid_info)``
    is called after each epoch is recorded (hyperparameter search uses it to prune).
    """
    setup_logging()
    state = None
    if resume is not None:
        run_dir = Path(resume)
        last = run_dir / "weights" / "last.pt" if run_dir.is_dir() else run_dir
        if not last.exists():
            raise ImgclsError(f"--resume {resume}: no weights/last.pt there to resume from")
        state = load_checkpoint(last)
        if "optimizer" not in state:
            raise ImgclsError(f"--resume {resume}: {last} holds no training state to resume from")
        run_dir = last.parent.parent
        cfg = TrainConfig(**state["args"])
        if state["epoch"] >= cfg.epochs or state.get("finished"):
            raise ImgclsError(f"--resume {resume}: this run already finished ({state['epoch']} epochs); start a new run")
        log.info(f"Resuming {run_dir} from epoch {state['epoch'] + 1}/{cfg.epochs}")
    elif cfg is None:
        cfg = make_config(cfg_file, **settings)
    elif settings or cfg_file:
        raise TypeError("pass either a TrainConfig or keyword settings, not both")
    if not cfg.data:
        raise ImgclsError("--data is required: a folder with one sub-folder of images per class")

    seed_everything(cfg.seed)
    device = dist.setup(cfg.device) if dist.enabled() else select_device(cfg.device)
    main = dist.is_main()  # with torchrun, rank 0 alone writes files and speaks; every rank computes
    progress = progress and main
    workers = data_mod.default_workers() if cfg.workers is None else cfg.workers
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.world_size()))

    # Data: find, split, verify every image before the first epoch.
    if state is not None:
        source = data_mod.DataSource(
            root=Path(state["data"]["root"]), class_names=state["class_names"],
            items={k: [tuple(x) for x in v] for k, v in state["data"]["items"].items()},
            split_made=state["data"]["split_made"],
        )
    else:
        source = data_mod.discover(cfg.data, cfg.split, cfg.seed)
    num_classes = len(source.class_names)

    model, pretrained_cfg, weights_desc = create_model(
        cfg.model, num_classes, pretrained=cfg.pretrained and state is None,
        weights=cfg.weights if state is None else None, se=cfg.se,
    )
    preprocess = make_preprocess(pretrained_cfg, cfg.imgsz) if state is None else state["preprocess"]
    distiller = None
    if cfg.teacher:
        from .distill import make_distiller

        distiller = make_distiller(cfg.teacher, source.class_names, preprocess, cfg.kd_temperature, cfg.kd_alpha,
                                   device)
    input_side = min(preprocess["input_size"][1:])
    if state is None and main:
        t0 = time.time()
        # The fast part of `imgcls check`: bad files are skipped, duplicates/leakage named, in one block.
        from .check import quick_check

        source, findings_block = quick_check(source, min_side=max(1, input_side // 4), workers=max(2, workers))
        if findings_block:
            log.warning(findings_block)
        data_mod.check_trainable(source)
        log.info(f"Checked {sum(len(v) for v in source.items.values())} images in {time.time() - t0:.1f}s")
    source = dist.broadcast(source)  # every rank trains on exactly the images rank 0 checked

    if state is None:
        run_dir = dist.broadcast(new_run_dir(cfg.project, cfg.name, cfg.exist_ok) if main else None)
    frozen = cfg.frozen_backbone
    resolved = cfg.to_dict() | {
        "data": str(Path(cfg.data).resolve()), "freeze": frozen, "lr": cfg.base_lr, "imgsz": input_side,
        "workers": workers, "device": str(device),
    } | ({"teacher": distiller.description["teacher"]} if distiller else {})

    counts = source.counts()
    log.info(
        f"Data: {num_classes} classes ({', '.join(source.class_names[:8])}{', ...' if num_classes > 8 else ''}); "
        + ", ".join(f"{s} {sum(c.values())}" for s, c in counts.items())
        + (" (split made with seed %d)" % cfg.seed if source.split_made and state is None else "")
    )
    log.info(f"Model: {cfg.model}, {weights_desc}; input {preprocess['input_size'][1]}x{preprocess['input_size'][2]}"
             f"{'; backbone frozen, training the head' if frozen else '; training all layers'}"
             + (f" until epoch {cfg.unfreeze_at}" if frozen and cfg.unfreeze_at else ""))

    if state is None and main:
        write_yaml(run_dir / "args.yaml", resolved)
        write_json(run_dir / "class_indices.json", {str(i): c for i, c in enumerate(source.class_names)})
        if source.split_made:
            data_mod.write_split_csv(source, run_dir / "split.csv")

    model.to(device)
    set_backbone_trainable(model, not frozen)
    if state is not None:
        model.load_state_dict(state["model"])
    total_params, trainable_params = count_parameters(model)
    flops = count_flops(model, preprocess["input_size"])

    draft_size = draft_size_for(preprocess)  # large JPEGs decode at reduced DCT scale, cached or not
    train_ds = data_mod.ImageDataset(source.paths("train"), source.labels("train"),
                                     train_transform(preprocess, cfg.augment), draft_size=draft_size)
    eval_tf = eval_transform(preprocess)
    val_paths = [str(p) for p in source.paths("val")]
    val_ds = data_mod.ImageDataset(val_paths, source.labels("val"), eval_tf, draft_size=draft_size)
    eval_loader = data_mod.make_loader(val_ds, batch_size=cfg.batch_size, shuffle=False, workers=workers,
                                       sampler=dist.eval_sampler(val_ds))

    # Speed: a frozen backbone runs once per image (feature cache); training on images uses the
    # decoded-image cache, channels_last, optional torch.compile and the fastest autocast.
    features = _cached_features(cfg, model, preprocess, source, device, frozen, start_epoch=1 if state is None
                                else state["epoch"] + 1, workers=workers, progress=progress)
    features_val_loader = (data_mod.make_loader(features.eval_dataset("val"), batch_size=cfg.batch_size,
                                                shuffle=False, workers=0, sampler=dist.eval_sampler(
                                                    features.eval_dataset("val")))
                           if features is not None else None)
    images_decoded = False
    channels_last = _uses_convolutions(model)
    amp = cfg.amp if cfg.amp is not None else device.type == "cuda"
    trains_backbone = not frozen or bool(cfg.unfreeze_at and cfg.unfreeze_at <= cfg.epochs)
    if trains_backbone and channels_last:
        model.to(memory_format=torch.channels_last)
    net = model
    if trains_backbone and cfg.compile:
        net = torch.compile(model)
        log.info("torch.compile: on (the first steps compile the network)")
    if trains_backbone and device.type == "cpu" and not amp and cfg.amp is None:
        from .runtime import cpu_bf16_is_faster

        # IMGCLS_CPU_BF16=0/1 pins the choice (reproducible runs); otherwise it is measured once here.
        pinned = os.environ.get("IMGCLS_CPU_BF16")
        faster = pinned == "1" if pinned in ("0", "1") else cpu_bf16_is_faster(model, preprocess["input_size"])
        if dist.broadcast(faster):  # one decision for all ranks
            amp = "bf16"
            log.info("bf16 autocast: on for training (measured faster than float32 on this CPU)")

    weight = _class_weights(source.labels("train"), num_classes).to(device) if cfg.balance else None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    eval_criterion = nn.CrossEntropyLoss()
    optimizer = _make_optimizer(cfg, model)
    scaler = torch.amp.GradScaler("cuda") if amp is True and device.type == "cuda" else None
    if cfg.amp and device.type != "cuda":
        log.warning("WARNING: --amp only applies on CUDA; training in float32")

    per_rank = -(-len(train_ds) // dist.world_size())  # a DistributedSampler gives each rank this many
    steps_per_epoch = max(1, -(-per_rank // cfg.batch_size))
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))

    history: list[dict] = []
    start_epoch, step, best_val, best_epoch, stale = 1, 0, None, 0, 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history = list(state["history"])
        start_epoch, step = state["epoch"] + 1, state["step"]
        best_epoch, stale = state["best_epoch"], state["stale"]
        best_val = history[best_epoch - 1]["valid info"] if best_epoch else None
        _set_rng_state(state["rng"])

    results = {
        "train parameters": resolved,
        "dataset": _dataset_table(source),
        "model": {
            "name": cfg.model, "weights": weights_desc if state is None else state["weights_source"],
            "total parameters": total_params, "trainable parameters": trainable_params,
            "FLOPs per image": flops, "input size": preprocess["input_size"], "preprocess": preprocess,
        },
    }
    if distiller:
        results["distillation"] = distiller.description
    log.info(f"Parameters: {total_params:,} ({trainable_params:,} trainable); {flops / 1e9:.2f} GFLOPs per image")
    ddp = dist.Wrapper(model, net, device)  # DistributedDataParallel under torchrun, plain modules otherwise

    items_payload = {k: [list(x) for x in v] for k, v in source.items.items()}
    best_val_out: EpochOutput | None = None
    stopped_early = False
    checkpoint_base = {
        "format": CHECKPOINT_FORMAT, "version": 1, "model_name": cfg.model, "model_kwargs": {"se": cfg.se},
        "class_names": source.class_names, "preprocess": preprocess, "args": cfg.to_dict(),
        "weights_source": results["model"]["weights"],
    }

    t_start = time.time()
    prior_seconds = state.get("train_seconds", 0.0) if state is not None else 0.0
    for epoch in range(start_epoch, cfg.epochs + 1):
        if frozen and cfg.unfreeze_at and epoch >= cfg.unfreeze_at:
            if epoch == cfg.unfreeze_at or start_epoch == epoch:
                log.info(f"Epoch {epoch}: unfreezing the backbone (lr x{cfg.backbone_lr_mult})")
            frozen = False
            set_backbone_trainable(model, True)
        t0 = time.time()
        on_features = features is not None and frozen
        if not on_features and cfg.cache and not images_decoded:
            train_ds, eval_loader = _decoded_datasets(cfg, preprocess, source, val_paths, workers, progress)
            images_decoded = True
        if on_features:  # same loop and batch order as on images; the backbone already ran
            epoch_train = features.train_dataset(epoch)
            train_loader = data_mod.make_loader(epoch_train, batch_size=cfg.batch_size, shuffle=True, workers=0,
                                                seed=cfg.seed, epoch=epoch,
                                                sampler=dist.train_sampler(epoch_train, cfg.seed, epoch))
            epoch_net, epoch_eval_loader = HeadOnFeatures(model), features_val_loader
        else:
            train_loader = data_mod.make_loader(train_ds, batch_size=cfg.batch_size, shuffle=True, workers=workers,
                                                seed=cfg.seed, epoch=epoch,
                                                sampler=dist.train_sampler(train_ds, cfg.seed, epoch))
            epoch_net, epoch_eval_loader = net, eval_loader
        images_in = channels_last and not on_features
        with _single_thread(on_features and device.type == "cpu"):
            tr = train_one_epoch(
                epoch_net, train_loader, optimizer, criterion, device=device, frozen_backbone=frozen, step=step,
                total_steps=total_steps, warmup_steps=warmup_steps, lrf=cfg.lrf, clip_grad=cfg.clip_grad,
                scaler=scaler, amp=amp, desc=f"epoch {epoch}/{cfg.epochs} train", progress=progress,
                channels_last=images_in, distiller=distiller, head=ddp.head(), network=ddp.network(frozen),
            )
            step += tr.steps
            dist.sync_buffers(model)
            # Validation in float32 on the CPU, so results.json agrees with `imgcls val` on the same weights.
            va = evaluate(epoch_net, epoch_eval_loader, eval_criterion, device=device, amp=amp is True,
                          desc=f"epoch {epoch}/{cfg.epochs} val", progress=progress, channels_last=images_in)
        tr, va = dist.gather_train(tr), dist.gather_eval(va)  # whole-data-set metrics on every rank
        seconds = time.time() - t0
        cm_train = confusion_matrix(tr.targets, tr.predictions, num_classes)
        cm_val = confusion_matrix(va.targets, va.predictions, num_classes)
        train_info = summary(cm_train, source.class_names, tr.loss) | {"confusion matrix": cm_train.tolist()}
        valid_info = summary(cm_val, source.class_names, va.loss) | {"confusion matrix": cm_val.tolist()}
        lr_now = optimizer.param_groups[0]["lr"]
        record = {"train info": train_info, "valid info": valid_info, "lr": lr_now, "seconds": round(seconds, 2)}
        history.append(record)

        improved = _is_better(valid_info, best_val)
        if improved:
            best_val, best_epoch, stale, best_val_out = valid_info, epoch, 0, va
        else:
            stale += 1
        stopped_early = bool(cfg.patience and stale >= cfg.patience and epoch < cfg.epochs)

        metrics = {"epoch": epoch, "val_accuracy": valid_info["accuracy"], "val_loss": valid_info["loss"],
                   "val_macro_f1": valid_info["mean F1 score"]}
        if main:
            weights_only_ckpt = checkpoint_base | {"state_dict": _cpu_state(model), "epoch": epoch,
                                                   "metrics": metrics}
            if improved:
                save_checkpoint(run_dir / "weights" / "best.pt", weights_only_ckpt)
            save_checkpoint(run_dir / "weights" / "last.pt", weights_only_ckpt | {
                "model": _cpu_state(model), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, "step": step, "history": history,
                "best_epoch": best_epoch, "stale": stale, "rng": _rng_state(),
                "data": {"root": str(source.root), "items": items_payload, "split_made": source.split_made},
                "train_seconds": prior_seconds + time.time() - t_start,
                "finished": stopped_early or epoch == cfg.epochs,
            })
            _write_results(run_dir, results, history, best_epoch)
        log.info(
            f"epoch {epoch}/{cfg.epochs}  lr {lr_now:.2e}  train loss {tr.loss:.4f} acc {train_info['accuracy']:.3f}"
            f"  val loss {va.loss:.4f} acc {valid_info['accuracy']:.3f} F1 {valid_info['mean F1 score']:.3f}"
            f"  {seconds:.1f}s{'  *best*' if improved else ''}"
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch, valid_info)
        if stopped_early:
            log.info(f"Early stopping: no improvement in validation accuracy for {cfg.patience} epochs")
            break

    train_seconds = time.time() - t_start
    if not main:  # rank 0 alone evaluates the best weights on the test split and draws the plots
        dist.barrier()
        best_info = history[best_epoch - 1]["valid info"]
        return TrainResult(run_dir=run_dir, class_names=source.class_names, best_epoch=best_epoch,
                           epochs_run=len(history), best=best_info, test=None)
    # Final evaluation with the best weights: predictions, test split, plots.
    best_ckpt = load_checkpoint(run_dir / "weights" / "best.pt")
    model.load_state_dict(best_ckpt["state_dict"])
    if best_val_out is None:  # resumed after the best epoch: predict val again, on rank 0 alone
        best_val_out = evaluate(model, data_mod.make_loader(val_ds, batch_size=cfg.batch_size, shuffle=False,
                                                            workers=workers),
                                eval_criterion, device=device, desc="val (best)", progress=progress)
    still_frozen = features is not None and frozen
    write_predictions_csv(run_dir / "predictions_val.csv",
                          [_rel(val_paths[i], source.root) for i in best_val_out.indices],
                          best_val_out.targets, best_val_out.probs, source.class_names)
    test_info = None
    if source.items.get("test"):
        test_paths = [str(p) for p in source.paths("test")]
        if still_frozen:
            te = evaluate(HeadOnFeatures(model), data_mod.make_loader(
                features.eval_dataset("test"), batch_size=cfg.batch_size, shuffle=False, workers=0),
                eval_criterion, device=device, desc="test", progress=progress)
        else:
            test_ds = data_mod.ImageDataset(test_paths, source.labels("test"), eval_tf, draft_size=draft_size)
            te = evaluate(model, data_mod.make_loader(test_ds, batch_size=cfg.batch_size, shuffle=False,
                                                      workers=workers),
                          eval_criterion, device=device, desc="test", progress=progress, channels_last=channels_last)
        cm_test = confusion_matrix(te.targets, te.predictions, num_classes)
        test_info = summary(cm_test, source.class_names, te.loss) | {"confusion matrix": cm_test.tolist(),
                                                                     "epoch": best_epoch}
        write_predictions_csv(run_dir / "predictions_test.csv",
                              [_rel(test_paths[i], source.root) for i in te.indices], te.targets, te.probs,
                              source.class_names)
        results["test"] = test_info
    results["train seconds"] = round(train_seconds + prior_seconds, 1)
    _write_results(run_dir, results, history, best_epoch)

    from .plots import plot_run

    plot_run(run_dir)
    _write_error_analysis_and_report(run_dir, model, device)

    best_info = history[best_epoch - 1]["valid info"]
    log.info(
        f"Best epoch {best_epoch}/{len(history)}: val accuracy {best_info['accuracy']:.4f}, "
        f"macro-F1 {best_info['mean F1 score']:.4f}, loss {best_info['loss']:.4f}"
        + (f"; test accuracy {test_info['accuracy']:.4f}" if test_info else "")
    )
    log.info(f"Results saved to {run_dir}")
    dist.barrier()
    return TrainResult(run_dir=run_dir, class_names=source.class_names, best_epoch=best_epoch,
                       epochs_run=len(history), best=best_info, test=test_info)


def _write_error_analysis_and_report(run_dir: Path, model: nn.Module, device: torch.device) -> None:
    """errors_val.png (Grad-CAM on the best weights' worst val mistakes), then report.html."""
    from .val import analyze_training_run
    from .report import write_report

    try:
        analyze_training_run(run_dir, model, device)
        write_report(run_dir)
    except Exception as e:  # the weights and results are already saved; a drawing problem must not fail the run
        log.warning(f"WARNING: report not written ({type(e).__name__}: {e}); `imgcls report {run_dir}` retries")


def _cached_features(cfg: TrainConfig, model: nn.Module, preprocess: dict, source, device: torch.device,
                     frozen: bool, *, start_epoch: int, workers: int, progress: bool):
    """Cached backbone features when the head trains on a frozen backbone for at least one epoch, else None.

    Off with --no-cache, and with a distillation teacher, which needs the images themselves.
    """
    frozen_epochs = (cfg.unfreeze_at or cfg.epochs + 1) - start_epoch
    if not (cfg.cache and frozen and frozen_epochs > 0) or getattr(cfg, "teacher", None):
        return None
    from .cache import split_features

    views = max(1, min(cfg.cache_views, frozen_epochs))
    return split_features(model, cfg.model, preprocess, source, augment=cfg.augment, views=views, device=device,
                          runtime=cfg.runtime, batch_size=cfg.batch_size, workers=min(1, workers),
                          progress=progress)


def _decoded_datasets(cfg: TrainConfig, preprocess: dict, source, val_paths: list[str], workers: int,
                      progress: bool):
    """Train and val data decoded once to uint8 at the working resolution, for epochs that train on images."""
    train_images = DecodedImages(source.paths("train"), preprocess, square=True, workers=max(2, workers),
                                 progress=progress)
    val_images = DecodedImages(val_paths, preprocess, square=False, workers=max(2, workers), progress=progress)
    train_ds = DecodedDataset(train_images, source.labels("train"), train_transform(preprocess, cfg.augment))
    val_ds = DecodedDataset(val_images, source.labels("val"), normalize_transform(preprocess))
    return train_ds, data_mod.make_loader(val_ds, batch_size=cfg.batch_size, shuffle=False, workers=workers,
                                          sampler=dist.eval_sampler(val_ds))


@contextlib.contextmanager
def _single_thread(enabled: bool):
    """A head on cached features is a few tiny matmuls per batch: extra threads only add sync
    overhead (20-50x slower on a busy 2-core machine), so use one while training it."""
    threads = torch.get_num_threads()
    if enabled:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _uses_convolutions(model: nn.Module) -> bool:
    """channels_last only pays off for convolutional networks."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _rel(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _write_results(run_dir: Path, results: dict, history: list[dict], best_epoch: int) -> None:
    """results.json (the full record) and results.csv (one row per epoch)."""
    body = {k: v for k, v in results.items() if k not in ("test", "train seconds")}
    for i, record in enumerate(history, start=1):
        body[f"epoch:{i}"] = record
    body["best epoch"] = best_epoch
    for key in ("test", "train seconds"):
        if key in results:
            body[key] = results[key]
    write_json(run_dir / "results.json", body)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for i, r in enumerate(history, start=1):
        writer.writerow([i, f"{r['lr']:.6g}", f"{r['train info']['loss']:.6f}", f"{r['train info']['accuracy']:.6f}",
                         f"{r['valid info']['loss']:.6f}", f"{r['valid info']['accuracy']:.6f}",
                         f"{r['valid info']['mean F1 score']:.6f}", f"{r['seconds']:.2f}"])
    atomic_write_text(run_dir / "results.csv", buffer.getvalue())
