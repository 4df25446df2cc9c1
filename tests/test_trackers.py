"""--logger tensorboard / mlflow: the run, read back with each tool's own reader."""

from __future__ import annotations

import json
import sys

import pytest

from imgcls.config import make_config
from imgcls.errors import ImgclsError

from conftest import TINY


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """One tiny run sent to both trackers (the flag repeated, as a user types it), with ./mlruns in its folder."""
    import os

    from imagegen import make_split_folders

    from imgcls.cli import main

    base = tmp_path_factory.mktemp("tracked")
    data = make_split_folders(base / "data", counts=(8, 4, 0))
    cwd, uri = os.getcwd(), os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.chdir(base)
    try:
        code = main(["train", "--data", str(data), *TINY, "--epochs", "3", "--lr", "0.01", "--warmup-epochs", "0",
                     "--project", str(base / "runs"), "--logger", "tensorboard", "--logger", "mlflow"])
    finally:
        os.chdir(cwd)
        if uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = uri
    assert code == 0
    run = base / "runs" / "train"
    results = json.loads((run / "results.json").read_text())
    val_accuracy = [results[f"epoch:{e}"]["valid info"]["accuracy"] for e in (1, 2, 3)]
    return run, base / "mlruns", val_accuracy


def test_tensorboard_event_files_hold_every_epoch(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _, val_accuracy = tracked_run
    assert list(run.glob("events.out.tfevents.*"))  # in the run folder: `tensorboard --logdir runs` lists it
    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert [(e.step, round(e.value, 5)) for e in events.Scalars("val/accuracy")] == \
        [(epoch, round(acc, 5)) for epoch, acc in enumerate(val_accuracy, 1)]
    for tag in ("train/loss", "val/loss", "train/accuracy", "val/macro_f1", "lr", "val_f1/circle",
                "val_f1/square", "val_f1/triangle"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3], tag
    settings = events.Tensors("settings/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "model: simple_cnn" in settings and "epochs: 3" in settings
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams").values()
    starts = [plugin_data_pb2.HParamsPluginData.FromString(raw).session_start_info for raw in content]
    hparams = next(s.hparams for s in starts if s.hparams)
    assert hparams["model"].string_value == "simple_cnn" and hparams["epochs"].number_value == 3


def test_mlflow_run_holds_params_metrics_and_best_weights(tracked_run, tmp_path):
    from mlflow.tracking import MlflowClient

    run, mlruns, val_accuracy = tracked_run
    client = MlflowClient(tracking_uri=mlruns.as_uri())
    experiment = client.get_experiment_by_name("imgcls")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "train" and found.info.status == "FINISHED"
    assert json.loads((run / "mlflow.json").read_text())["run_id"] == found.info.run_id
    params = found.data.params
    assert params["model"] == "simple_cnn" and params["epochs"] == "3" and params["logger"] == "tensorboard,mlflow"
    history = client.get_metric_history(found.info.run_id, "val/accuracy")
    assert [(m.step, round(m.value, 5)) for m in history] == \
        [(epoch, round(acc, 5)) for epoch, acc in enumerate(val_accuracy, 1)]
    for key in ("train/loss", "val/loss", "lr", "val_f1/circle", "val/macro_f1"):
        assert len(client.get_metric_history(found.info.run_id, key)) == 3, key
    assert found.data.metrics["best_val_accuracy"] == max(val_accuracy)
    best = client.download_artifacts(found.info.run_id, "weights/best.pt", str(tmp_path))
    assert open(best, "rb").read() == (run / "weights" / "best.pt").read_bytes()
    top = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"report.html", "results.json", "plots", "weights"} <= top
    plots = {a.path for a in client.list_artifacts(found.info.run_id, "plots")}
    assert "plots/accuracy.png" in plots and "plots/confusion_matrix_val.png" in plots


def test_logger_flag_repeats_and_joins(tmp_path):
    from imgcls.cli import _train_settings, build_parser

    args = build_parser().parse_args(["train", "--data", "x", "--logger", "tensorboard", "--logger", "mlflow"])
    settings = _train_settings(args)
    assert settings["logger"] == "tensorboard,mlflow"
    assert make_config(**settings).logger == "tensorboard,mlflow"
    cfg = tmp_path / "run.yaml"
    cfg.write_text("logger: [mlflow, tensorboard]\n")
    assert make_config(cfg).logger == "mlflow,tensorboard"  # a list in a --cfg file means the same


def test_unknown_logger_is_one_line_error(cli, tmp_path):
    code, _, err = cli("train", "--data", tmp_path, "--logger", "wandb")
    assert code == 2
    assert err.strip() == "imgcls: error: --logger 'wandb': choose tensorboard or mlflow (repeat --logger for both)"


def test_missing_tracker_package_is_named_before_the_run_folder(cli, tmp_path, monkeypatch):
    from imagegen import make_class_folders

    data = make_class_folders(tmp_path / "data", per_class=4)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    code, _, err = cli("train", "--data", data, *TINY, "--epochs", "1", "--project", tmp_path / "runs",
                       "--logger", "mlflow")
    assert code == 2
    assert err.strip().splitlines()[-1] == ("imgcls: error: --logger mlflow: missing package mlflow: install it with "
                                            "`pip install mlflow` (or `pip install 'imgcls[mlflow]'`)")
    assert not (tmp_path / "runs").exists()


def test_a_failing_tracker_is_dropped_and_the_run_goes_on(tmp_path, monkeypatch):
    from imgcls.engine import trackers

    warnings = []
    monkeypatch.setattr(trackers.log, "warning", warnings.append)

    class Broken:
        name = "mlflow"

        def start(self, *args):
            raise ConnectionError("tracking server unreachable")

    group = trackers.Trackers([])
    group.active = [Broken()]
    group.start(tmp_path, {}, False)
    group.log_epoch(1, {"train": {"accuracy": 1.0}, "val": {"accuracy": 1.0, "macro_avg": {"f1": 1.0},
                                                           "per_class": {}}, "lr": 0.1}, [])
    group.finish(tmp_path, {"best_val_accuracy": 1.0})
    assert group.active == []
    assert warnings == ["WARNING: --logger mlflow stopped (ConnectionError: tracking server unreachable)"]


def test_metric_names_are_safe_for_mlflow():
    from imgcls.engine.trackers import epoch_metrics, metric_key

    record = {"train": {"loss": 0.5, "accuracy": 0.8},
              "val": {"loss": 0.6, "accuracy": 0.7, "macro_avg": {"f1": 0.65},
                      "per_class": {"crème brûlée: 1": {"f1": 0.5}}},
              "lr": 0.01}
    metrics = epoch_metrics(record, ["crème brûlée: 1"])
    assert metrics["val_f1/crème brûlée: 1"] == 0.5 and metrics["val/accuracy"] == 0.7
    assert metric_key("val_f1/crème brûlée: 1") == "val_f1/cr_me br_l_e_ 1"


def test_api_refuses_unknown_logger():
    with pytest.raises(ImgclsError, match="--logger 'neptune'"):
        make_config(data="x", logger="neptune")


def test_interrupted_run_ends_killed_in_mlflow_and_resume_continues_it(tmp_path, monkeypatch):
    from imagegen import make_class_folders
    from mlflow.tracking import MlflowClient

    from imgcls.engine.train import train

    monkeypatch.chdir(tmp_path)  # ./mlruns lands here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = make_class_folders(tmp_path / "data", per_class=6)

    def interrupt(epoch, valid_info):
        raise KeyboardInterrupt  # Ctrl-C right after epoch 1 was saved and logged

    with pytest.raises(KeyboardInterrupt):
        train(data=str(data), model="simple_cnn", pretrained=False, imgsz=32, batch_size=8, workers=0, epochs=2,
              project=str(tmp_path / "runs"), logger="mlflow", progress=False, on_epoch_end=interrupt)
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("imgcls").experiment_id
    (killed,) = client.search_runs([experiment])
    assert killed.info.status == "KILLED"

    train(resume=tmp_path / "runs" / "train", progress=False)
    (resumed,) = client.search_runs([experiment])  # the same MLflow run, not a second one
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(resumed.info.run_id, "val/accuracy")] == [1, 2]
