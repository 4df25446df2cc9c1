"""imgcls distill: a student trained from a teacher's soft targets, recorded as a normal run."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from torch import nn

from imgcls.models.distill import Distiller, kd_loss
from imgcls.engine.loop import Optimization, train_one_epoch
from imgcls.record.checkpoint import save_checkpoint, load_checkpoint


def _teacher_data(trained_run):
    return yaml.safe_load((trained_run / "args.yaml").read_text())["data"]


def test_distill_produces_a_normal_run_that_records_the_teacher(cli, trained_run, tmp_path):
    teacher = trained_run / "weights" / "best.pt"
    code, _, err = cli("distill", "--teacher", teacher, "--data", _teacher_data(trained_run), "--model", "simple_cnn",
                       "--no-pretrained", "--imgsz", "24", "--batch-size", "12", "--workers", "0", "--epochs", "1",
                       "--kd-temperature", "3", "--kd-alpha", "0.8", "--project", tmp_path / "runs")
    assert code == 0, err
    run = tmp_path / "runs" / "distill"
    assert "Distilling from teacher simple_cnn" in err
    for name in ("results.json", "results.csv", "predictions_val.csv", "loss.png", "accuracy.png",
                 "confusion_matrix_val.png", "weights/best.pt", "weights/last.pt"):
        assert (run / name).exists(), name
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["teacher"] == str(teacher.resolve()) and args["kd_temperature"] == 3.0 and args["kd_alpha"] == 0.8
    results = json.loads((run / "results.json").read_text())
    assert results["distillation"]["teacher model"] == "simple_cnn"
    assert results["model"]["input size"] == [3, 24, 24]  # the student keeps its own size; the teacher sees 32
    assert load_checkpoint(run / "weights" / "best.pt")["class_names"] == ["circle", "square", "triangle"]


def test_teacher_with_other_classes_is_refused_before_training(cli, trained_run, tmp_path):
    checkpoint = load_checkpoint(trained_run / "weights" / "best.pt")
    checkpoint.pop("path")
    checkpoint["class_names"] = ["cat", "dog", "fish"]
    other = tmp_path / "other.pt"
    save_checkpoint(other, checkpoint)
    code, _, err = cli("distill", "--teacher", other, "--data", _teacher_data(trained_run), "--model", "simple_cnn",
                       "--no-pretrained", "--project", tmp_path / "runs")
    assert code == 2 and "was trained on classes ['cat', 'dog', 'fish']" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, message", [
    ([], "distill needs --teacher"),
    (["--teacher", "nowhere.pt"], "--teacher nowhere.pt: file not found"),
    (["--teacher", "t.pt", "--kd-alpha", "1.5"], "--kd-alpha 1.5: must be in [0, 1]"),
    (["--teacher", "t.pt", "--kd-temperature", "0"], "--kd-temperature 0.0: must be positive"),
])
def test_bad_distill_options_are_one_line_errors(cli, flat_data, tmp_path, args, message):
    code, _, err = cli("distill", "--data", flat_data, "--model", "simple_cnn", "--no-pretrained",
                       "--project", tmp_path / "runs", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_kd_loss_is_temperature_scaled_kl():
    student, teacher = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.0, 2.0, 0.0]])
    assert kd_loss(teacher, teacher, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    p_t = torch.softmax(teacher / 2.0, 1)
    manual = (p_t * (p_t.log() - torch.log_softmax(student / 2.0, 1))).sum() * 4.0
    assert kd_loss(student, teacher, 2.0).item() == pytest.approx(manual.item(), rel=1e-5)


def _distiller(teacher, alpha, student_pre=None, teacher_pre=None):
    pre = {"input_size": [3, 4, 4], "mean": [0.5] * 3, "std": [0.5] * 3}
    return Distiller(teacher.eval(), 2.0, alpha, student_pre or pre, teacher_pre or pre, {})


def test_student_follows_the_teacher_when_alpha_is_one():
    """With alpha=1 the (deliberately wrong) labels are ignored and the student learns the teacher's answers."""
    torch.manual_seed(0)

    class Linear(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(48, 3)

        def forward(self, x):
            return self.fc(x.flatten(1))

        def get_classifier(self):
            return self.fc

    teacher, student = Linear(), Linear()
    images = torch.randn(64, 3, 4, 4)
    wrong_labels = torch.zeros(64, dtype=torch.long)
    loader = [(images, wrong_labels, torch.arange(64))] * 60
    optimizer = torch.optim.Adam([{"params": student.parameters(), "initial_lr": 0.05}])
    opt = Optimization(optimizer, nn.CrossEntropyLoss(), total_steps=60, warmup_steps=0, lrf=1.0,
                       distiller=_distiller(teacher, alpha=1.0))
    train_one_epoch(student, loader, opt, device=torch.device("cpu"), step=0, progress=False)
    with torch.no_grad():
        agreement = (student(images).argmax(1) == teacher(images).argmax(1)).float().mean().item()
    assert agreement >= 0.9


def test_alpha_zero_is_plain_cross_entropy_and_teacher_sees_its_own_normalisation():
    teacher = nn.Identity()
    hard = torch.tensor(1.25)
    assert _distiller(teacher, 0.0).loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3), hard).item() == 1.25
    student_pre = {"input_size": [3, 4, 4], "mean": [0.5] * 3, "std": [0.5] * 3}
    teacher_pre = {"input_size": [3, 8, 8], "mean": [0.0] * 3, "std": [1.0] * 3}
    view = _distiller(teacher, 0.5, student_pre, teacher_pre)._teacher_view(torch.zeros(2, 3, 4, 4))
    assert view.shape == (2, 3, 8, 8)
    assert torch.allclose(view, torch.full_like(view, 0.5))  # a student 0 is pixel value 0.5
