"""A user's first session: train from class folders and find every promised file in the run folder."""

from __future__ import annotations

import csv
import json

import torch
import yaml

from conftest import TINY, run_cli

PLOTS = ["loss.png", "accuracy.png", "lr.png", "confusion_matrix_train.png", "confusion_matrix_val.png",
         "roc_val.png"]


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_train_on_class_tree_writes_complete_run(cli, flat_data, tmp_path):
    code, out, err = cli("train", "--data", flat_data, "--epochs", "2", *TINY, "--project", tmp_path / "runs")
    assert code == 0, err
    run = tmp_path / "runs" / "train"
    assert f"Results saved to {run}" in err
    assert "Best epoch" in err

    for name in ["args.yaml", "class_indices.json", "split.csv", "results.json", "results.csv",
                 "weights/best.pt", "weights/last.pt", *PLOTS, "confusion_matrix_test.png", "roc_test.png"]:
        assert (run / name).exists(), name
    for name in [*PLOTS, "confusion_matrix_test.png", "roc_test.png"]:
        assert _is_png(run / name), name

    assert json.loads((run / "class_indices.json").read_text()) == {"0": "circle", "1": "square", "2": "triangle"}
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["model"] == "simple_cnn" and args["epochs"] == 2 and args["imgsz"] == 32
    assert args["lr"] > 0 and args["freeze"] is False and args["device"] == "cpu"

    results = json.loads((run / "results.json").read_text())
    assert results["train parameters"]["batch_size"] == 8
    dataset = results["dataset"]
    assert dataset["num_classes"] == 3 and dataset["class_names"] == ["circle", "square", "triangle"]
    assert sum(dataset[s]["total"] for s in ("train", "val", "test")) == 36
    model = results["model"]
    assert model["total parameters"] > model["trainable parameters"] * 0.99 > 0
    assert model["FLOPs per image"] > 1e6
    for epoch in (1, 2):  # the seeds' per-epoch keys, exactly and in order: users' scripts read them
        record = results[f"epoch:{epoch}"]
        assert list(record) == ["train info", "valid info", "lr", "seconds", "phase", "throughput", "elapsed"]
        assert record["throughput"]["images per second"] > 0 and 0 <= record["throughput"]["busy"] <= 1
        for key in ("train info", "valid info"):
            info = record[key]
            assert list(info) == ["loss", "accuracy", "circle", "square", "triangle", "mean Precision", "mean Recall",
                                  "mean Specificity", "mean F1 score", "confusion matrix"]
            assert 0 <= info["accuracy"] <= 1 and info["loss"] > 0
            for cls in ("circle", "square", "triangle"):
                assert list(info[cls]) == ["Precision", "Recall", "Specificity", "F1 score"]
            for mean in ("mean Precision", "mean Recall", "mean Specificity", "mean F1 score"):
                assert 0 <= info[mean] <= 1
    assert "epoch:3" not in results
    assert results["test"]["accuracy"] >= 0 and set(results["test"]["per_class"]) == {"circle", "square", "triangle"}

    rows = list(csv.DictReader(open(run / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "seconds"}

    # Checkpoints describe themselves and load without unpickling code.
    ckpt = torch.load(run / "weights" / "best.pt", weights_only=True)
    assert ckpt["model_name"] == "simple_cnn"
    assert ckpt["class_names"] == ["circle", "square", "triangle"]
    assert ckpt["preprocess"]["input_size"] == [3, 32, 32]
    assert ckpt["args"]["epochs"] == 2 and "val_accuracy" in ckpt["metrics"]
    last = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and "optimizer" in last

    # A second run never overwrites the first.
    code, _, err = cli("train", "--data", flat_data, "--epochs", "1", *TINY, "--project", tmp_path / "runs")
    assert code == 0, err
    assert (tmp_path / "runs" / "train2" / "weights" / "best.pt").exists()
    assert json.loads((run / "results.json").read_text())["train parameters"]["epochs"] == 2


def test_train_with_split_folders_and_valid_alias(cli, tmp_path):
    from imagegen import make_class_folders

    root = tmp_path / "data"
    make_class_folders(root / "train", per_class=6)
    make_class_folders(root / "valid", per_class=3, seed=1)
    code, _, err = cli("train", "--data", root, "--epochs", "1", *TINY, "--project", tmp_path / "runs")
    assert code == 0, err
    run = tmp_path / "runs" / "train"
    assert not (run / "split.csv").exists()  # the user's own split is used as is
    results = json.loads((run / "results.json").read_text())
    assert results["dataset"]["train"]["total"] == 18 and results["dataset"]["val"]["total"] == 9
    assert "test" not in results and not (run / "confusion_matrix_test.png").exists()


def test_python_api_matches_cli(cli, flat_data, tmp_path):
    """imgcls.train(...) and `imgcls train ...` with the same settings make the same run."""
    import imgcls

    result = imgcls.train(data=str(flat_data), model="simple_cnn", pretrained=False, imgsz=32, epochs=2,
                          batch_size=8, workers=0, project=str(tmp_path / "api"), progress=False)
    code, _, err = cli("train", "--data", flat_data, "--epochs", "2", *TINY, "--project", tmp_path / "cli")
    assert code == 0, err
    from_cli = tmp_path / "cli" / "train"
    assert result.run_dir == tmp_path / "api" / "train"
    assert result.class_names == ["circle", "square", "triangle"]
    assert result.best_weights.exists() and result.epochs_run == 2
    assert (result.run_dir / "split.csv").read_text() == (from_cli / "split.csv").read_text()
    api_args, cli_args = (yaml.safe_load((run / "args.yaml").read_text()) for run in (result.run_dir, from_cli))
    assert api_args.pop("project") != cli_args.pop("project")
    assert api_args == cli_args  # every resolved setting, defaults included
    cli_results = json.loads((from_cli / "results.json").read_text())
    for epoch in (1, 2):  # the same seed trains the same network
        expected = cli_results[f"epoch:{epoch}"]["valid info"]
        got = json.loads((result.run_dir / "results.json").read_text())[f"epoch:{epoch}"]["valid info"]
        assert got["accuracy"] == expected["accuracy"] and abs(got["loss"] - expected["loss"]) < 1e-4
    best = cli_results[f"epoch:{result.best_epoch}"]["valid info"]
    assert result.best["accuracy"] == best["accuracy"] and result.best["macro_avg"]["f1"] == best["mean F1 score"]
    assert result.test == cli_results["test"] | {"weights": result.test["weights"], "data": result.test["data"]}


def test_cfg_file_with_cli_override(cli, flat_data, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"data: {flat_data}\nmodel: simple_cnn\npretrained: false\nimgsz: 32\nepochs: 3\n"
                   "batch_size: 8\nworkers: 0\noptim: SGD\n")
    code, _, err = cli("train", "--cfg", cfg, "--epochs", "1", "--project", tmp_path / "runs")
    assert code == 0, err
    args = yaml.safe_load((tmp_path / "runs" / "train" / "args.yaml").read_text())
    assert args["epochs"] == 1 and args["optim"] == "SGD" and args["imgsz"] == 32


def test_cfg_unknown_key_is_an_error(cli, flat_data, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"data: {flat_data}\nepocs: 3\n")
    code, _, err = cli("train", "--cfg", cfg, "--project", tmp_path / "runs")
    assert code == 2
    assert "unknown setting 'epocs'" in err and "did you mean 'epochs'" in err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


def test_bad_flags_give_one_line(cli, flat_data, tmp_path):
    for flags, expected in [
        (["--optim", "Adamm"], "--optim 'Adamm'"),
        (["--epochs", "0"], "--epochs 0"),
        (["--split", "0.5,0.2"], "add up to 0.7"),
        (["--model", "resnet_9000"], "--model 'resnet_9000': unknown model"),
        (["--device", "tpu"], "--device 'tpu'"),
        (["--device", "cuda"], "--device cuda: no CUDA GPU is available here; use --device cpu or auto"),
    ]:
        code, _, err = cli("train", "--data", flat_data, *TINY, *flags, "--project", tmp_path / "runs")
        assert code == 2, flags
        assert expected in err, (flags, err)
        assert "Traceback" not in err
    code, _, err = cli("train", "--data", flat_data, "--epochs", "many")
    assert code == 2 and "invalid int value: 'many'" in err


def test_models_command_lists_names(cli):
    code, out, _ = cli("models", "resnet1*")
    names = out.split()
    assert code == 0 and "resnet18" in names and "resnet152" in names
    code, out, _ = cli("models", "simple")
    assert "simple_cnn" in out.split()
    code, _, err = cli("models", "no_such_model_xyz")
    assert code == 2 and "no model name matches" in err


def test_entry_point_runs_in_a_real_process(flat_data, tmp_path):
    proc = run_cli("train", "--data", flat_data, "--epochs", "1", *TINY, "--project", tmp_path / "runs",
                   "--name", "my run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "runs" / "my run" / "weights" / "best.pt").exists()
    proc = run_cli("train", "--data", tmp_path / "missing", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"imgcls: error: --data {tmp_path / 'missing'}: folder not found"]
