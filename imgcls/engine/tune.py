"""``imgcls tune``: hyperparameter search with Optuna (TPE sampler, median pruner, resumable SQLite study)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import FIELDS, make_config, parse_duration
from ..errors import ImgclsError
from ..record.files import new_run_dir, write_json, write_yaml
from .plan import EXPLICIT_EPOCHS

log = logging.getLogger("imgcls")

# Each entry: an Optuna distribution written as data, so a --space YAML file uses the same form.
DEFAULT_SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "weight_decay": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "optim": {"type": "categorical", "choices": ["SGD", "Adam", "AdamW"]},
    "batch_size": {"type": "categorical", "choices": [16, 32, 64]},
    "label_smoothing": {"type": "float", "low": 0.0, "high": 0.2},
    "augment": {"type": "categorical", "choices": ["none", "light", "strong"]},
    "unfreeze_at": {"type": "categorical", "choices": [None, "half"]},  # "half": from the middle epoch on
}
STUDY_FILE = "study.db"


@dataclass
class TuneResult:
    tune_dir: Path
    best_params: dict
    best_value: float
    best_trial: int
    trials_done: int


def load_space(path: str | Path | None) -> dict:
    """The search space: the default, or a YAML file mapping setting -> distribution."""
    if path is None:
        return dict(DEFAULT_SPACE)
    path = Path(path)
    if not path.exists():
        raise ImgclsError(f"--space {path}: file not found")
    try:
        space = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ImgclsError(f"--space {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(space, dict) or not space:
        raise ImgclsError(f"--space {path}: expected a mapping such as  lr: {{type: float, low: 1e-4, high: 0.1, log: true}}")
    for key, spec in space.items():
        if key not in FIELDS:
            raise ImgclsError(f"--space {path}: {key!r} is not a training setting")
        if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "categorical"):
            raise ImgclsError(f"--space {path}: {key!r} needs type float, int or categorical")
        if spec["type"] == "categorical" and not spec.get("choices"):
            raise ImgclsError(f"--space {path}: {key!r} needs a list of choices")
        if spec["type"] != "categorical" and not ("low" in spec and "high" in spec and spec["low"] < spec["high"]):
            raise ImgclsError(f"--space {path}: {key!r} needs low < high")
    return space


def suggest(trial, space: dict, epochs: int) -> dict:
    """Draw one set of settings from the space for an Optuna trial."""
    params = {}
    for key, spec in space.items():
        if spec["type"] == "float":
            params[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
        elif spec["type"] == "int":
            params[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        else:
            params[key] = trial.suggest_categorical(key, list(spec["choices"]))
    if params.get("unfreeze_at") == "half":
        params["unfreeze_at"] = max(1, math.ceil(epochs / 2))
    return params


def _without_password(url: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db, for what imgcls writes to disk."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def _signature(data: str, model: str, space: dict, fixed: dict, study_name: str | None, storage: str | None) -> dict:
    """What a tune folder holds. The study itself is part of it: another --study-name or --storage gets its own
    folder, so its trials.csv and best.yaml never replace those of an earlier study."""
    return {"data": str(Path(data).resolve()), "model": model, "space": space,
            "fixed": {k: v for k, v in sorted(fixed.items())}, "study_name": study_name or "imgcls",
            "storage": _without_password(storage) if storage else STUDY_FILE}


def _study_dir(project: str, name: str, signature: dict) -> Path:
    """Reuse the folder whose study has the same data, model, space, study name and storage (so a rerun
    resumes), else a new one (tune, tune2, ...)."""
    project_path = Path(project)
    n = 1
    while True:
        candidate = project_path / (name if n == 1 else f"{name}{n}")
        marker = candidate / "tune.json"
        if not candidate.exists():
            return new_run_dir(project_path, candidate.name)
        if marker.exists() and json.loads(marker.read_text())["signature"] == signature:
            return candidate
        n += 1


def _base_settings(data: str, model: str, seed: int, fixed: dict):
    """The settings every trial shares, checked: a wrong folder or unobtainable weights is one error line
    before any study or folder is made."""
    from ..data.folders import discover
    from ..models.factory import create_model

    if not data:
        raise ImgclsError("--data is required: a folder with one sub-folder of images per class")
    base = make_config(data=data, model=model, seed=seed, **fixed)
    if base.epochs is None:  # trials need a fixed length to be compared and pruned
        base = dataclasses.replace(base, epochs=EXPLICIT_EPOCHS)
    source = discover(base.data, base.split, base.seed, images=base.images, columns=base.columns,
                      multi_label=base.multi_label)
    create_model(base.model, len(source.class_names), pretrained=base.pretrained, weights=base.weights, se=base.se)
    return base


def tune(data: str, model: str = "tf_efficientnet_lite0", *, trials: int = 20, timeout: str | float | None = None,
         space: str | Path | None = None, storage: str | None = None, study_name: str | None = None,
         project: str = "runs", name: str = "tune", seed: int = 0, progress: bool = False,
         **fixed) -> TuneResult:
    """Search training settings with Optuna; trials are normal runs under TUNE_DIR/trials/.

    The study lives in TUNE_DIR/study.db (SQLite) unless ``storage`` (e.g. postgresql://...) is given, so
    running the same search again resumes it. Writes best.yaml (usable with ``imgcls train --cfg``).
    """
    try:
        import optuna
    except ImportError:
        raise ImgclsError("imgcls tune needs Optuna: pip install 'imgcls[tune]'") from None
    from ..console import setup_logging
    from .train import check_project_outside_data, train

    setup_logging()
    search_space = load_space(space)
    base = _base_settings(data, model, seed, fixed)
    if trials < 1:
        raise ImgclsError(f"--trials {trials}: must be at least 1")
    seconds = parse_duration(timeout, "--timeout") if not isinstance(timeout, (int, float)) else float(timeout)
    check_project_outside_data(project, data)
    signature = _signature(data, model, search_space, fixed, study_name, storage)
    tune_dir = _study_dir(project, name, signature)
    write_json(tune_dir / "tune.json", {"signature": signature})
    storage_url = storage or f"sqlite:///{(tune_dir / STUDY_FILE).resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name or "imgcls", storage=storage_url, load_if_exists=True, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    finished_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = sum(t.state in finished_states for t in study.trials)
    remaining = max(0, trials - done)
    if done:
        log.info(f"Resuming study in {tune_dir}: {done} trial(s) done, {remaining} to go")
    else:
        log.info(f"Tuning {model} on {data}: {trials} trials; study in {_without_password(storage_url)}")

    def objective(trial):
        params = suggest(trial, search_space, base.epochs)
        settings = base.to_dict() | params | {"project": str(tune_dir / "trials"), "name": f"trial{trial.number}",
                                              "exist_ok": True}

        def report(epoch, valid_info):
            trial.report(valid_info["accuracy"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        result = train(progress=progress, on_epoch_end=report, **settings)
        trial.set_user_attr("run_dir", str(result.run_dir))
        log.info(f"Trial {trial.number}: val accuracy {result.best['accuracy']:.4f} with {params}")
        return result.best["accuracy"]

    if remaining:
        study.optimize(objective, n_trials=remaining, timeout=seconds)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise ImgclsError(f"tune: no trial completed in {tune_dir}; see the trial logs above")
    best = study.best_trial
    best_settings = base.to_dict() | suggest(optuna.trial.FixedTrial(best.params), search_space, base.epochs)
    best_settings = {k: v for k, v in best_settings.items() if k not in ("project", "name", "exist_ok")}
    write_yaml(tune_dir / "best.yaml", best_settings)
    _write_summary(study, tune_dir)
    log.info(f"Best trial {best.number}: val accuracy {best.value:.4f}; settings in {tune_dir / 'best.yaml'}")
    log.info(f"Train with them: imgcls train --cfg {tune_dir / 'best.yaml'}")
    return TuneResult(tune_dir, dict(best.params), float(best.value), best.number,
                      sum(t.state in finished_states for t in study.trials))


def _write_summary(study, tune_dir: Path) -> None:
    """trials.csv: every trial; summary.png: optimization history and parameter importances."""
    import warnings

    import optuna

    from ..record.files import write_csv
    from ..reporting.tune import plot_tune_summary

    keys = sorted({k for t in study.trials for k in t.params})
    write_csv(tune_dir / "trials.csv", ["number", "state", "value", *keys],
              [[t.number, t.state.name, "" if t.value is None else f"{t.value:.6f}",
                *[t.params.get(k, "") for k in keys]] for t in study.trials])
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna warns when too few trials differ to rank parameters
            importances = optuna.importance.get_param_importances(study) if len(trials) >= 2 else {}
    except (RuntimeError, ValueError):
        importances = {}
    plot_tune_summary([t.number for t in trials], [t.value for t in trials], importances, tune_dir / "summary.png")
