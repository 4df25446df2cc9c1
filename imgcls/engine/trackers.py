"""Experiment trackers users already run: ``--logger tensorboard`` and ``--logger mlflow`` (both may be given).

Each tracker gets the run's settings when it starts, every epoch's metrics (train/val loss and accuracy,
val macro-F1, val F1 of every class, learning rate) right after the epoch's checkpoint is saved, and the
finished run. Only rank 0 tracks under torchrun. The packages are optional and imported here only when
asked for; a missing one is named before the run folder is made.

- TensorBoard: event files in the run folder itself, so ``tensorboard --logdir runs`` lists each run by
  its folder name. The settings go in as hparams (with the best val accuracy) and as text.
- MLflow: a run in experiment "imgcls" ($MLFLOW_EXPERIMENT_NAME), in the store $MLFLOW_TRACKING_URI names,
  else a local ``./mlruns`` file store. Settings become params; best.pt, report.html, results.json,
  args.yaml and the plots become artifacts. The run id is kept in RUN/mlflow.json so ``--resume``
  continues the same MLflow run.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import sys
import time
import types
from pathlib import Path

from ..config import parse_loggers
from ..errors import ImgclsError
from ..record.files import write_json

log = logging.getLogger("imgcls")

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}   # --logger name -> pip package
EXPERIMENT = "imgcls"


def epoch_metrics(record: dict, class_names: list[str]) -> dict[str, float]:
    """One epoch (record/results.py's one schema) as flat metric names, the same for every tracker."""
    train, val = record["train"], record["val"]
    if val.get("multi_label"):  # several labels per image: mAP and sample-based F1 where others have accuracy
        metrics = {"train/loss": train.get("loss"), "train/mAP": train["mAP"], "val/loss": val.get("loss"),
                   "val/mAP": val["mAP"], "val/sample_f1": val["sample_f1"], "lr": record["lr"]}
        return {key: float(value) for key, value in metrics.items() if value is not None}
    metrics = {"train/loss": train.get("loss"), "train/accuracy": train["accuracy"],
               "val/loss": val.get("loss"), "val/accuracy": val["accuracy"], "val/macro_f1": val["macro_avg"]["f1"],
               "lr": record["lr"]}
    metrics |= {f"val_f1/{name}": val["per_class"][name]["f1"] for name in class_names if name in val["per_class"]}
    return {key: float(value) for key, value in metrics.items() if value is not None}


def flat_settings(settings: dict) -> dict[str, str | int | float | bool]:
    """Settings as scalars (None and lists become text), which both trackers accept."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in settings.items()}


class TensorBoardTracker:
    name = "tensorboard"

    def start(self, run_dir: Path, settings: dict, resumed: bool) -> None:
        # tensorboard imports TensorFlow when it is installed; TensorFlow followed by torch's triton crashes the
        # process. An empty tensorboard.compat.notf makes it use its own TF stub instead.
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
        from torch.utils.tensorboard import SummaryWriter

        self.settings = settings
        self.writer = SummaryWriter(log_dir=str(run_dir))
        if not resumed:
            text = "\n".join(f"    {k}: {v}" for k, v in settings.items())  # indented: a code block in Markdown
            self.writer.add_text("settings", text, 0)

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def finish(self, run_dir: Path, summary: dict) -> None:
        # run_name="." keeps the hparams in the run folder instead of a new timestamped sub-folder
        self.writer.add_hparams(flat_settings(self.settings), {f"hparam/{k}": v for k, v in summary.items()},
                                run_name=".")

    def close(self, status: str) -> None:
        self.writer.close()


class MLflowTracker:
    name = "mlflow"

    def start(self, run_dir: Path, settings: dict, resumed: bool) -> None:
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            # MLflow 3 refuses its file store unless this is set, and would otherwise default to ./mlflow.db
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = Path("mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        record = run_dir / "mlflow.json"
        previous = json.loads(record.read_text()) if resumed and record.exists() else {}
        if previous.get("tracking_uri") == uri:
            self.run_id = previous["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
            self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name,
                                                 tags={"imgcls.run_dir": str(run_dir.resolve())}).info.run_id
            self._log_params(settings)
            write_json(record, {"run_id": self.run_id, "tracking_uri": uri, "experiment_id": experiment_id})
        log.info(f"MLflow: run {self.run_id} in {uri}")

    def _log_params(self, settings: dict) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in settings.items()]  # MLflow refuses longer values
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(metric_key(k), v, now, epoch) for k, v in metrics.items()])

    def finish(self, run_dir: Path, summary: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(metric_key(k), v, now, 0) for k, v in summary.items()])
        for path, folder in run_artifacts(run_dir):
            self.client.log_artifact(self.run_id, str(path), folder)

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


def metric_key(name: str) -> str:
    """MLflow accepts letters, digits, _ - . space and / in metric names; class names may hold anything."""
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", name)


def run_artifacts(run_dir: Path) -> list[tuple[Path, str | None]]:
    """(file, artifact folder) of what a finished run shows: best weights, report, results, plots."""
    files = [(run_dir / "weights" / "best.pt", "weights")]
    files += [(run_dir / name, None) for name in ("report.html", "results.json", "results.csv", "args.yaml")]
    files += [(png, "plots") for png in sorted(run_dir.glob("*.png"))]
    return [(path, folder) for path, folder in files if path.is_file()]


TRACKERS = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker}   # one per name in config.LOGGERS


class Trackers:
    """The trackers of one run; a tracker that fails mid-run is dropped with a warning, never the run."""

    def __init__(self, names: list[str]):
        self.active = [TRACKERS[name]() for name in names]

    def _each(self, method: str, *args) -> None:
        for tracker in list(self.active):
            try:
                getattr(tracker, method)(*args)
            except Exception as e:  # noqa: BLE001 - a tracker server down must not stop the training
                log.warning(f"WARNING: --logger {tracker.name} stopped ({type(e).__name__}: {str(e)[:200]})")
                self.active.remove(tracker)

    def start(self, run_dir: Path, settings: dict, resumed: bool) -> None:
        self._each("start", run_dir, settings, resumed)

    def log_epoch(self, epoch: int, record: dict, class_names: list[str]) -> None:
        self._each("log_epoch", epoch, epoch_metrics(record, class_names))

    def finish(self, run_dir: Path, summary: dict) -> None:
        self._each("finish", run_dir, {k: float(v) for k, v in summary.items() if v is not None})
        self.close("FINISHED")

    def close(self, status: str) -> None:
        """Always called: FINISHED, FAILED or KILLED (interrupted)."""
        self._each("close", status)
        self.active = []


def open_trackers(spec: str | None) -> Trackers:
    """The trackers --logger names, after checking that each one's package is installed."""
    names = parse_loggers(spec)
    for name in names:
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise ImgclsError(f"--logger {name}: missing package {PACKAGES[name]}: install it with "
                              f"`pip install {PACKAGES[name]}` (or `pip install 'imgcls[{name}]'`)")
    return Trackers(names)
