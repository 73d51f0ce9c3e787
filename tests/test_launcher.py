"""training/launcher.py: commands, guard rails, real processes (datasets: tests/test_datasets.py).

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


def test_finalize_waits_for_a_just_stopped_process_to_exit(base, tmp_path):
    """The loop writes 'stopped' a moment before its process exits; Finalize, offered at once, waits
    for the exit instead of answering 'still shutting down' (the run here has no best checkpoint, so
    what it answers after the wait is that)."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    try:
        run = fake_active_run(tmp_path / "runs", proc.pid)
        (run / "status.json").write_text(json.dumps({"state": "stopped", "pid": proc.pid, "updated": time.time()}))
        with pytest.raises(LaunchError, match="no best checkpoint"):
            L.Launcher().finalize_run(run.name)
        assert proc.poll() is not None
    finally:
        proc.kill()
        proc.wait()
