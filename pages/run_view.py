"""What the Training page shows of a run and of this machine: chart points from metrics.jsonl, the
progress bar's fraction and ETA, durations and device names in words."""

from __future__ import annotations

import math
from typing import Any

from models.device import device_info, resolved_device


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h} h {m:02d} min"
    if m:
        return f"{m} min {s:02d} s"
    return f"{s} s"


def describe_device(device: str) -> str:
    """The device a run with `--device device` uses here, in words."""
    info = device_info()
    d = resolved_device(device)
    if d == "cuda" and info["cuda"]:
        g = info["cuda"][0]
        return f"GPU {g['name']} ({g['memory_gib']:g} GiB)"
    if d == "mps":
        return "Apple GPU (MPS)"
    return f"CPU ({info['cpu_cores']} cores)"


def chart_rows(rows: list[dict[str, Any]], steps_per_epoch: int | None = None) -> list[dict[str, Any]]:
    """metrics.jsonl rows -> points for the charts: x in (fractional) epochs; a resumed run's
    redone steps replace the earlier ones, so each point appears once."""
    latest: dict[tuple, dict] = {}
    for r in rows:
        split = r.get("split")
        if split not in ("train", "val") or "epoch" not in r:
            continue
        step = int(r.get("step") or 0)
        latest[(split, int(r["epoch"]), step if split == "train" else 0)] = r
    points = []
    for (split, epoch, step), r in latest.items():
        spe = steps_per_epoch or r.get("steps_per_epoch")
        x = float(epoch) if split == "val" or not spe else (epoch - 1) + min(step, spe) / spe
        points.append({"split": split, "x": x, "epoch": epoch, "step": step, "loss": r.get("loss"),
                       "accuracy": r.get("accuracy"), "auc": r.get("auc"), "time": r.get("time")})
    return sorted(points, key=lambda p: (p["x"], p["split"] == "val"))


def progress(status: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Fraction done, images/s and an ETA from status.json and the metric rows' timestamps."""
    epochs = int(status.get("epochs") or 0)
    spe = int(status.get("steps_per_epoch") or 0)
    epoch = int(status.get("epoch") or 0)
    step = int(status.get("step") or 0)
    done_steps = 0
    if epochs and spe:
        # status 'epoch' is the epoch in progress (1-based) while training, the last finished one after it
        done_steps = (epoch - 1) * spe + step if 0 < step < spe else epoch * spe
        done_steps = max(0, min(done_steps, epochs * spe))
    fraction = done_steps / (epochs * spe) if epochs and spe else 0.0
    # Seconds per step from the latest stretch of train rows (a resume starts a new stretch).
    train = [r for r in rows if r.get("split") == "train" and "global_step" in r and "time" in r]
    stretch: list[dict] = []
    for r in train:
        if stretch and r["global_step"] <= stretch[-1]["global_step"]:
            stretch = []
        stretch.append(r)
    eta = None
    if len(stretch) >= 2 and epochs and spe:
        dt = stretch[-1]["time"] - stretch[0]["time"]
        dg = stretch[-1]["global_step"] - stretch[0]["global_step"]
        if dg > 0 and dt > 0:
            eta = (epochs * spe - done_steps) * dt / dg
    return {"fraction": fraction, "epoch": epoch, "epochs": epochs, "step": step, "steps_per_epoch": spe,
            "images_per_s": status.get("images_per_s"), "eta_s": eta}
