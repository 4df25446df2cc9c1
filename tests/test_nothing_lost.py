"""imgcls never deletes or overwrites what it did not create: clean copies, reports, exports, tune folders."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import pytest

from conftest import TINY
from imagegen import make_class_folders
from imgcls.errors import ImgclsError
from imgcls.record.files import STAGING_MARKER, remove_staging_dir, staged_dir


def digest(root: Path) -> dict[str, str]:
    """Every file under root (hidden ones too) with its content hash."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def photos(tmp_path) -> Path:
    return make_class_folders(tmp_path / "photos", per_class=6, size=64)


def test_export_clean_from_a_folder_named_like_its_staging_folder(cli, tmp_path):
    """The case that deleted a user's photos: --data photos.partial --export-clean photos."""
    source = make_class_folders(tmp_path / "photos.partial", per_class=6, size=64)
    before = digest(source)
    code, out, err = cli("check", "--data", source, "--export-clean", tmp_path / "photos", "--out", tmp_path / "r")
    assert code == 0, err
    assert digest(source) == before
    assert digest(tmp_path / "photos") == before  # nothing to drop in clean data: a full copy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "photos.partial", "r"]  # no staging left


def test_a_folder_without_the_marker_is_never_removed(tmp_path):
    mine = tmp_path / ".photos.partial-abc"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    assert remove_staging_dir(mine) is False and (mine / "holiday.jpg").read_bytes() == b"precious"
    (mine / STAGING_MARKER).write_text("")
    assert remove_staging_dir(mine) is True and not mine.exists()


def test_an_interrupted_clean_copy_leaves_nothing_and_never_looks_finished(cli, photos, tmp_path, monkeypatch):
    from imgcls.data import check

    before = digest(photos)
    copied = []

    def copy_then_fail(src, dst):
        if len(copied) == 5:
            raise OSError(28, "No space left on device")
        copied.append(shutil.copyfile(src, dst))

    monkeypatch.setattr(check.shutil, "copy2", copy_then_fail)
    with pytest.raises(OSError, match="No space left"):
        check.run_check(photos, export_clean=tmp_path / "clean", out=tmp_path / "r", near=False)
    assert not (tmp_path / "clean").exists() and digest(photos) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # no staging folder, no report


def test_staged_dir_never_renames_over_a_folder_that_filled_up(tmp_path):
    dest = tmp_path / "dest"
    with pytest.raises(OSError):
        with staged_dir(dest) as staging:
            (staging / "a.txt").write_text("new")
            dest.mkdir()
            (dest / "theirs.txt").write_text("someone else's")
    assert (dest / "theirs.txt").read_text() == "someone else's" and [p.name for p in tmp_path.iterdir()] == ["dest"]


@pytest.mark.parametrize("where", ["equal", "inside"])
def test_check_out_inside_the_data_is_refused(cli, photos, tmp_path, where):
    out = photos if where == "equal" else photos / "circle" / "report"
    before = digest(photos)
    code, _, err = cli("check", "--data", photos, "--out", out)
    assert code == 2 and err.strip().splitlines() == [
        f"imgcls: error: --out {out}: is inside --data {photos}, so the report would land among the images; "
        "choose a folder outside it"]
    assert digest(photos) == before and not (photos / "circle" / "report").exists()


def test_check_out_never_replaces_files_imgcls_did_not_write(cli, photos, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    (out / "check.html").write_text("my own page")
    code, _, err = cli("check", "--data", photos, "--out", out)
    assert code == 2 and "already holds check.html, which imgcls check did not write" in err
    assert (out / "check.html").read_text() == "my own page" and len(list(out.iterdir())) == 1
    # A folder holding an earlier imgcls report is refreshed: the report is imgcls's own.
    assert cli("check", "--data", photos, "--out", tmp_path / "r")[0] == 0
    assert cli("check", "--data", photos, "--out", tmp_path / "r", "--no-near")[0] == 0


def test_default_report_folder_inside_the_data_is_refused(cli, photos, monkeypatch):
    monkeypatch.chdir(photos)
    code, _, err = cli("check", "--data", ".")
    assert code == 2 and "the report (runs/check) would land among the images; pass --out DIR" in err
    assert not (photos / "runs").exists()


def test_train_project_inside_the_data_is_refused(cli, photos):
    code, _, err = cli("train", "--data", photos, *TINY, "--project", photos / "runs")
    assert code == 2 and f"--project {photos / 'runs'}: is inside --data {photos}" in err
    assert not (photos / "runs").exists()


@pytest.fixture
def run(trained_run, tmp_path):
    return shutil.copytree(trained_run, tmp_path / "run")


def test_export_out_onto_an_existing_file_needs_force(cli, run, tmp_path):
    pytest.importorskip("onnxruntime")
    mine = tmp_path / "model.onnx"
    mine.write_bytes(b"my own model")
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt", "--out", mine)
    assert code == 2 and err.strip().splitlines() == [
        f"imgcls: error: --out {mine}: already exists; pass --force to replace it, or choose another --out FILE"]
    assert mine.read_bytes() == b"my own model"
    assert cli("export", "--weights", run / "weights" / "best.pt", "--out", mine, "--force")[0] == 0
    assert mine.read_bytes()[:20] != b"my own model" and mine.stat().st_size > 1000

    # The default output is protected the same way.
    assert cli("export", "--weights", run / "weights" / "best.pt")[0] == 0
    first = (run / "weights" / "best.onnx").read_bytes()
    code, _, err = cli("export", "--weights", run / "weights" / "best.pt")
    assert code == 2 and "best.onnx already exists (an earlier export?); pass --force" in err
    assert (run / "weights" / "best.onnx").read_bytes() == first
    assert [p.name for p in (run / "weights").iterdir() if p.name.startswith(".")] == []  # no staging left


def test_export_api_refuses_like_the_cli(run, tmp_path):
    import imgcls

    taken = tmp_path / "taken.onnx"
    taken.write_bytes(b"x")
    with pytest.raises(ImgclsError, match="already exists; pass --force"):
        imgcls.export(run / "weights" / "best.pt", out=taken)


def test_tune_with_another_study_name_gets_its_own_folder(cli, photos, tmp_path):
    pytest.importorskip("optuna")
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 0.001, high: 0.05, log: true}\n")
    common = ["tune", "--data", photos, *TINY, "--epochs", "1", "--space", space, "--trials", "1",
              "--project", tmp_path / "runs"]
    assert cli(*common)[0] == 0
    first = digest(tmp_path / "runs" / "tune")
    code, _, err = cli(*common, "--study-name", "other")
    assert code == 0, err
    assert digest(tmp_path / "runs" / "tune") == first  # the earlier study's trials and best.yaml are intact
    second = tmp_path / "runs" / "tune2"
    assert (second / "best.yaml").exists() and "Resuming" not in err
    rows = list(csv.DictReader(open(second / "trials.csv")))
    assert [r["number"] for r in rows] == ["0"]
    # The same study name again resumes in its own folder.
    code, _, err = cli(*common, "--study-name", "other")
    assert code == 0 and f"Resuming study in {second}: 1 trial(s) done, 0 to go" in err
    assert not (tmp_path / "runs" / "tune3").exists()
