"""What the Training page shows of runs and of this machine: progress and ETA, chart points,
durations, the devices (models/device.py) and the CPU time estimate (training/cpu_estimate.py)."""

from __future__ import annotations

import math
import time

import pytest

from models import device
from pages import run_view
from training import cpu_estimate


# ------------------------------------------------------------------ progress, charts, estimates

def test_progress_and_eta_from_status_and_rows():
    rows = [{"split": "train", "epoch": 1, "step": s, "global_step": s, "time": 100.0 + 2 * s} for s in (1, 2, 3, 4)]
    p = run_view.progress({"epoch": 1, "epochs": 3, "step": 4, "steps_per_epoch": 10, "images_per_s": 5.0}, rows)
    assert p["fraction"] == pytest.approx(4 / 30)
    assert p["eta_s"] == pytest.approx(26 * 2.0)
    done = run_view.progress({"epoch": 3, "epochs": 3, "step": 10, "steps_per_epoch": 10}, rows)
    assert done["fraction"] == 1.0 and done["eta_s"] == 0
    # a resume starts a new stretch: its pace is what counts
    resumed = rows + [{"split": "train", "epoch": 1, "step": s, "global_step": s, "time": 500.0 + 0.5 * s}
                      for s in (1, 2, 3)]
    p = run_view.progress({"epoch": 1, "epochs": 1, "step": 3, "steps_per_epoch": 10}, resumed)
    assert p["eta_s"] == pytest.approx(7 * 0.5)
    assert run_view.progress({}, [])["fraction"] == 0.0


def test_chart_rows_keep_the_latest_of_a_redone_step():
    rows = [{"split": "train", "epoch": 1, "step": 5, "loss": 1.0}, {"split": "val", "epoch": 1, "loss": 0.9},
            {"split": "train", "epoch": 1, "step": 5, "loss": 0.5}, {"split": "train", "epoch": 2, "step": 10, "loss": 0.4},
            {"note": "not a metric row"}]
    pts = run_view.chart_rows(rows, steps_per_epoch=10)
    assert [(p["split"], p["x"], p["loss"]) for p in pts] == [("train", 0.5, 0.5), ("val", 1.0, 0.9),
                                                              ("train", 2.0, 0.4)]


def test_cpu_estimate_times_real_steps_and_is_cached():
    cpu_estimate._seconds_per_step.cache_clear()
    t0 = time.perf_counter()
    est = cpu_estimate.estimate_cpu_epoch_time("torch_cnn", 32, 8, 100)
    first = time.perf_counter() - t0
    assert est["steps_per_epoch"] == 11 and 0 < est["seconds_per_step"] < 60
    assert est["seconds_per_epoch"] > est["seconds_per_step"] * 11
    t0 = time.perf_counter()
    again = cpu_estimate.estimate_cpu_epoch_time("torch_cnn", 32, 8, 1000)
    assert time.perf_counter() - t0 < first / 2 + 0.05  # cached: no new timing
    assert again["seconds_per_step"] == est["seconds_per_step"] and again["steps_per_epoch"] == 107
    with pytest.raises(ValueError, match="PyTorch models"):
        cpu_estimate.estimate_cpu_epoch_time("keras_cnn", 128, 8, 100)
    assert cpu_estimate.is_heavy("densenet161", 224) and cpu_estimate.is_heavy("efficientnet_lite0", 224)
    assert not cpu_estimate.is_heavy("torch_cnn", 224) and not cpu_estimate.is_heavy("densenet161", 64)


def test_format_duration():
    assert [run_view.format_duration(s) for s in (4.4, 75, 3725, None, math.inf)] == ["4 s", "1 min 15 s", "1 h 02 min",
                                                                             "–", "–"]


def test_device_info_names_what_is_there():
    import torch

    info = device.device_info()
    assert info["cpu_cores"] >= 1 and len(info["cuda"]) == torch.cuda.device_count()
    assert device.available_devices()[:2] == ["auto", "cpu"]
    assert ("GPU" if torch.cuda.is_available() else "CPU") in run_view.describe_device("auto")
    assert run_view.describe_device("cpu").startswith("CPU (")
