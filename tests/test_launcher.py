"""training/launcher.py: commands, guard rails, datasets under LESION_LENS_DATA, real processes.

The processes started here end fast on purpose (a dataset too small to split, a SIGKILL), so
the file runs in seconds; tests/test_train_page.py trains for real through the page.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from training import launcher as L
from training.launcher import LaunchError
from training.rundir import read_run
from training.synthetic import write_dataset


@pytest.fixture
def base(tmp_path, monkeypatch):
    """LESION_LENS_DATA with: one/ (a dataset), nested/train + nested/test, notdata/, and runs/ elsewhere."""
    data = tmp_path / "data"
    write_dataset(data / "one", per_class=3, size=32)
    write_dataset(data / "nested" / "train", per_class=3, size=32, seed=1)
    write_dataset(data / "nested" / "test", per_class=2, size=32, seed=2)
    (data / "notdata" / "benign").mkdir(parents=True)
    monkeypatch.setenv("LESION_LENS_DATA", str(data))
    monkeypatch.setenv("LESION_LENS_RUNS", str(tmp_path / "runs"))
    return data


def wait_for(cond, timeout: float = 60.0, every: float = 0.2):
    end = time.time() + timeout
    while time.time() < end:
        value = cond()
        if value:
            return value
        time.sleep(every)
    return cond()


# ------------------------------------------------------------------ commands and bounds

def test_build_command_is_an_argument_list_for_python_m_training(tmp_path):
    cmd = L.build_command("densenet161", tmp_path / "d", tmp_path / "out", 3, 224, 16, 1e-3, "imagenet", "cpu",
                          seed=7, log_every=2)
    assert cmd[:3] == [sys.executable, "-m", "training"]
    args = dict(zip(cmd[3::2], cmd[4::2]))
    assert args == {"--model": "densenet161", "--data": str(tmp_path / "d"), "--out": str(tmp_path / "out"),
                    "--epochs": "3", "--image-size": "224", "--batch-size": "16", "--lr": "0.001",
                    "--weights": "imagenet", "--device": "cpu", "--seed": "7", "--log-every": "2"}
    # the training CLI accepts exactly this
    from training.train import get_args_parser

    ns = get_args_parser().parse_args(cmd[3:])
    assert ns.model == "densenet161" and ns.epochs == 3 and ns.lr == 1e-3


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, "epochs"), ({"epochs": 1001}, "epochs"), ({"image_size": 16}, "image size"),
    ({"image_size": 1024}, "image size"), ({"batch_size": 0}, "batch size"), ({"lr": 2.0}, "lr"),
    ({"lr": math.nan}, "lr"), ({"lr": 0.0}, "lr"), ({"epochs": True}, "epochs"), ({"epochs": 2.5}, "whole"),
    ({"model": "resnet50"}, "unknown model"), ({"weights": "/etc/passwd"}, "initial weights"),
    ({"weights": "imagenet"}, "ImageNet"), ({"device": "tpu"}, "device"),
])
def test_build_command_refuses_out_of_bounds_values(tmp_path, kwargs, message):
    args = {"model": "torch_cnn", "data": tmp_path, "out": tmp_path / "o", "epochs": 2, "image_size": 32,
            "batch_size": 8, "lr": 1e-3, "weights": "none", "device": "auto"} | kwargs
    with pytest.raises(LaunchError, match=message):
        L.build_command(**args)


def test_limits_are_the_training_clis():
    from training.train import LIMITS

    for key, (lo, hi) in LIMITS.items():
        assert L.check_value(key, lo) == lo and L.check_value(key, hi) == hi
        with pytest.raises(LaunchError):
            L.check_value(key, hi * 1.5 + 1)


def test_resume_command():
    assert L.resume_command("runs/x") == [sys.executable, "-m", "training", "--resume", "runs/x"]
    assert L.resume_command("runs/x", "cpu")[-2:] == ["--device", "cpu"]
    with pytest.raises(LaunchError):
        L.resume_command("runs/x", "; rm -rf /")


def test_log_every_gives_about_twenty_rows_per_epoch():
    assert L.log_every_for(40, 8) == 1
    assert L.log_every_for(2637, 32) == 3
    assert L.log_every_for(100_000, 32) == 132


@pytest.mark.parametrize("value, enabled", [(None, True), ("on", True), ("1", True), ("off", False),
                                            ("OFF", False), ("0", False), ("false", False), ("no", False)])
def test_training_switch(monkeypatch, value, enabled):
    if value is None:
        monkeypatch.delenv("LESION_LENS_TRAINING", raising=False)
    else:
        monkeypatch.setenv("LESION_LENS_TRAINING", value)
    assert L.training_enabled() is enabled


# ------------------------------------------------------------------ datasets under LESION_LENS_DATA

def test_list_and_resolve_datasets(base):
    assert L.list_datasets() == ["nested/test", "nested/train", "one"]
    assert L.resolve_dataset("one") == (base / "one").resolve()
    assert L.resolve_dataset("nested/test") == (base / "nested" / "test").resolve()
    assert L.count_images(base / "nested" / "test") == {"benign": 2, "malignant": 2}


@pytest.mark.parametrize("rel, message", [("../x", "outside"), ("/etc", "inside"), ("", "inside"),
                                          ("nested", "several datasets"), ("notdata", "not a dataset"),
                                          ("missing", "no such folder"), ("one/benign", "not a dataset")])
def test_resolve_dataset_refuses(base, rel, message):
    with pytest.raises(LaunchError, match=message):
        L.resolve_dataset(rel)


def test_symlinks_out_of_the_data_folder_are_refused(base, tmp_path):
    outside = write_dataset(tmp_path / "outside", per_class=2, size=32)
    (base / "linked").symlink_to(outside, target_is_directory=True)
    (base / "half").mkdir()
    (base / "half" / "benign").symlink_to(outside / "benign", target_is_directory=True)
    (base / "half" / "malignant").mkdir()
    write_dataset(base / "files", per_class=2, size=32)
    (base / "files" / "malignant" / "zz.png").symlink_to(outside / "malignant" / "000.png")
    assert L.list_datasets() == ["nested/test", "nested/train", "one"]
    for rel in ("linked", "half", "files"):
        with pytest.raises(LaunchError):
            L.resolve_dataset(rel)
        assert not L.allowed_data(base / rel)
    # a symlink inside the folder that stays inside it is fine
    (base / "one" / "benign" / "alias.png").symlink_to(base / "one" / "benign" / "000.png")
    assert L.resolve_dataset("one") == (base / "one").resolve()


def test_without_lesion_lens_data_nothing_but_the_synthetic_set(monkeypatch, tmp_path):
    monkeypatch.delenv("LESION_LENS_DATA", raising=False)
    monkeypatch.setenv("LESION_LENS_RUNS", str(tmp_path / "runs"))
    assert L.data_base() is None and L.list_datasets() == []
    with pytest.raises(LaunchError, match="LESION_LENS_DATA"):
        L.resolve_dataset("one")
    demo = L.synthetic_demo()
    assert demo == tmp_path / "runs" / L.SYNTHETIC_DIR_NAME
    for split, n in L.SYNTHETIC_PER_CLASS.items():
        assert "SYNTHETIC" in (demo / split / "SYNTHETIC.txt").read_text()
        assert L.count_images(demo / split) == {"benign": n, "malignant": n}
    stamp = (demo / "train" / "benign" / "000.png").stat().st_mtime_ns
    assert L.synthetic_demo() == demo and (demo / "train" / "benign" / "000.png").stat().st_mtime_ns == stamp
    assert L.allowed_data(demo / "train") and not L.allowed_data(tmp_path)
    from training.rundir import list_runs

    assert list_runs() == []


# ------------------------------------------------------------------ processes

def fake_active_run(root: Path, pid: int) -> Path:
    run = root / "20990101-000000-torch_cnn-aaaaaa"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": "torch_cnn", "created": time.time()}))
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": pid, "updated": time.time()}))
    return run


def test_start_refuses_data_outside_and_a_second_run(base, tmp_path):
    launcher = L.Launcher()
    with pytest.raises(LaunchError, match="refused"):
        launcher.start_run("torch_cnn", tmp_path, 1, 32, 8, 1e-3)
    runs = tmp_path / "runs"
    fake_active_run(runs, os.getpid())
    with pytest.raises(LaunchError, match="still running"):
        launcher.start_run("torch_cnn", base / "one", 1, 32, 8, 1e-3)
    with pytest.raises(LaunchError, match="epochs"):
        launcher.start_run("torch_cnn", base / "one", 0, 32, 8, 1e-3, allow_concurrent=True)
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == ["20990101-000000-torch_cnn-aaaaaa"]
    assert launcher.running() == []


def test_a_run_that_cannot_train_fails_with_its_reason(base, tmp_path):
    """Two images per class cannot be split: the child reports failed, the Popen is reaped."""
    tiny = write_dataset(base / "tiny", per_class=1, size=32)
    launcher = L.Launcher()
    rid = launcher.start_run("torch_cnn", tiny, 1, 32, 8, 1e-3)
    run = tmp_path / "runs" / rid
    launch = json.loads((run / "launch.json").read_text())
    assert launch["command"][:3] == [sys.executable, "-m", "training"] and "--out" in launch["command"]
    assert launcher.wait(rid, timeout=120) == 2
    assert launcher.running() == [] and launcher.procs == {}
    info = read_run(run)
    assert info.state == "failed" and "at least 2" in info.message
    assert "error:" in L.tail_output(run)
    # a failed run may be resumed (`python -m training --resume`); this one fails the same way again
    assert launcher.resume_run(rid) == rid
    assert launcher.running() == [rid]
    assert launcher.wait(rid, timeout=120) == 2
    assert read_run(run).state == "failed"
    assert open(run / "stdout.txt").read().count("at least 2") == 2


def test_a_killed_run_is_reaped_and_marked_failed(base, tmp_path):
    launcher = L.Launcher()
    rid = launcher.start_run("torch_cnn", base / "one", 1, 32, 8, 1e-3)
    run = tmp_path / "runs" / rid
    pid = json.loads((run / "status.json").read_text())["pid"]
    assert pid and launcher.running() == [rid]
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: launcher.reap(), 30) == [(rid, -signal.SIGKILL)]
    info = read_run(run)
    assert info.state == "failed" and "exited with code -9" in info.message
    assert not launcher.stop_run(rid)  # nothing left to stop


def test_stop_a_starting_run(base, tmp_path):
    launcher = L.Launcher()
    rid = launcher.start_run("torch_cnn", base / "one", 1, 32, 8, 1e-3)
    assert launcher.stop_run(rid)
    assert (tmp_path / "runs" / rid / "STOP").exists() or read_run(tmp_path / "runs" / rid).state == "stopped"
    assert launcher.wait(rid, timeout=180) is not None
    assert read_run(tmp_path / "runs" / rid).state == "stopped"


@pytest.mark.parametrize("run_id", ["../x", "/etc", "a/b", "..", ".hidden", ""])
def test_run_ids_that_could_escape_are_refused(base, run_id):
    launcher = L.Launcher()
    for call in (launcher.stop_run, launcher.resume_run):
        with pytest.raises(LaunchError):
            call(run_id)


def test_resume_refuses_active_and_finished_runs(base, tmp_path):
    runs = tmp_path / "runs"
    active = fake_active_run(runs, os.getpid())
    with pytest.raises(LaunchError, match="running"):
        L.Launcher().resume_run(active.name)
    (active / "status.json").write_text(json.dumps({"state": "finished", "pid": 1}))
    with pytest.raises(LaunchError, match="finished"):
        L.Launcher().resume_run(active.name)


def test_stop_never_signals_a_process_that_is_not_the_run(base, tmp_path):
    run = fake_active_run(tmp_path / "runs", os.getpid())  # "its" pid is this test process
    assert L.Launcher().stop_run(run.name)  # STOP file written, no SIGTERM to us
    assert (run / "STOP").exists()


# ------------------------------------------------------------------ progress, charts, estimates

def test_progress_and_eta_from_status_and_rows():
    rows = [{"split": "train", "epoch": 1, "step": s, "global_step": s, "time": 100.0 + 2 * s} for s in (1, 2, 3, 4)]
    p = L.progress({"epoch": 1, "epochs": 3, "step": 4, "steps_per_epoch": 10, "images_per_s": 5.0}, rows)
    assert p["fraction"] == pytest.approx(4 / 30)
    assert p["eta_s"] == pytest.approx(26 * 2.0)
    done = L.progress({"epoch": 3, "epochs": 3, "step": 10, "steps_per_epoch": 10}, rows)
    assert done["fraction"] == 1.0 and done["eta_s"] == 0
    # a resume starts a new stretch: its pace is what counts
    resumed = rows + [{"split": "train", "epoch": 1, "step": s, "global_step": s, "time": 500.0 + 0.5 * s}
                      for s in (1, 2, 3)]
    p = L.progress({"epoch": 1, "epochs": 1, "step": 3, "steps_per_epoch": 10}, resumed)
    assert p["eta_s"] == pytest.approx(7 * 0.5)
    assert L.progress({}, [])["fraction"] == 0.0


def test_chart_rows_keep_the_latest_of_a_redone_step():
    rows = [{"split": "train", "epoch": 1, "step": 5, "loss": 1.0}, {"split": "val", "epoch": 1, "loss": 0.9},
            {"split": "train", "epoch": 1, "step": 5, "loss": 0.5}, {"split": "train", "epoch": 2, "step": 10, "loss": 0.4},
            {"note": "not a metric row"}]
    pts = L.chart_rows(rows, steps_per_epoch=10)
    assert [(p["split"], p["x"], p["loss"]) for p in pts] == [("train", 0.5, 0.5), ("val", 1.0, 0.9),
                                                              ("train", 2.0, 0.4)]


def test_cpu_estimate_times_real_steps_and_is_cached():
    L._seconds_per_step.cache_clear()
    t0 = time.perf_counter()
    est = L.estimate_cpu_epoch_time("torch_cnn", 32, 8, 100)
    first = time.perf_counter() - t0
    assert est["steps_per_epoch"] == 11 and 0 < est["seconds_per_step"] < 60
    assert est["seconds_per_epoch"] > est["seconds_per_step"] * 11
    t0 = time.perf_counter()
    again = L.estimate_cpu_epoch_time("torch_cnn", 32, 8, 1000)
    assert time.perf_counter() - t0 < first / 2 + 0.05  # cached: no new timing
    assert again["seconds_per_step"] == est["seconds_per_step"] and again["steps_per_epoch"] == 107
    with pytest.raises(LaunchError):
        L.estimate_cpu_epoch_time("keras_cnn", 128, 8, 100)
    assert L.is_heavy("densenet161", 224) and L.is_heavy("efficientnet_lite0", 224)
    assert not L.is_heavy("torch_cnn", 224) and not L.is_heavy("densenet161", 64)


def test_format_duration():
    assert [L.format_duration(s) for s in (4.4, 75, 3725, None, math.inf)] == ["4 s", "1 min 15 s", "1 h 02 min",
                                                                             "–", "–"]


def test_device_info_names_what_is_there():
    import torch

    info = L.device_info()
    assert info["cpu_cores"] >= 1 and len(info["cuda"]) == torch.cuda.device_count()
    assert L.available_devices()[:2] == ["auto", "cpu"]
    assert ("GPU" if torch.cuda.is_available() else "CPU") in L.describe("auto")
    assert L.describe("cpu").startswith("CPU (")
