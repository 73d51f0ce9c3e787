"""From validation outputs to a model card: temperature, threshold, metrics."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import numpy as np

from models.registry import DATA_LICENCE_NOTE, default_card, git_commit

from .metrics import THRESHOLD_RULE, choose_threshold, fit_temperature, softmax, summarize


def calibrate(val_logits: np.ndarray, val_y: np.ndarray) -> dict[str, Any]:
    """Temperature on validation NLL, then the threshold rule on calibrated probabilities."""
    t = fit_temperature(val_logits, val_y)
    raw = softmax(val_logits)[:, 1]
    p = softmax(val_logits, t)[:, 1]
    thr = choose_threshold(val_y, p)
    metrics = summarize(val_y, p, thr)
    metrics["ece_uncalibrated"] = summarize(val_y, raw, 0.5)["ece"]
    return {"temperature": t, "threshold": thr, "validation": metrics}


def build_card(name: str, args: dict[str, Any], data_info: dict[str, Any], init: str, epochs: int,
               calibration: dict[str, Any], seconds_per_epoch: float | None = None,
               device: str | None = None, best_epoch: int | None = None) -> dict[str, Any]:
    card = default_card(name, args.get("image_size"), init)
    card.update({
        "threshold": round(float(calibration["threshold"]), 6),
        "threshold_rule": THRESHOLD_RULE,
        "temperature": round(float(calibration["temperature"]), 4),
        "data": data_info,
        "epochs": int(epochs),
        "best_epoch": best_epoch,
        "validation": calibration["validation"],
        "trained_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "licence": None if data_info.get("synthetic") else DATA_LICENCE_NOTE,
        "synthetic": bool(data_info.get("synthetic")),
        "training": {k: args.get(k) for k in ("epochs", "batch_size", "lr", "weights", "seed", "val_fraction",
                                              "label_smoothing", "image_size", "device")}
                    | {"seconds_per_epoch": seconds_per_epoch, "device_used": device},
    })
    if card["synthetic"]:
        card["licence"] = "SYNTHETIC data: generated images, not a real lesion; for trying the pipeline only."
    return card
