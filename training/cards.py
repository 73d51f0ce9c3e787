"""From validation outputs to a model card: temperature, threshold, metrics.

Every run, of either framework, and `training.finalize` build their cards here, so a card
has the same fields whoever wrote it."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import numpy as np

from models.registry import DATA_LICENCE_NOTE, default_card, git_commit

from .data import preprocessing_settings
from .metrics import THRESHOLD_RULE, choose_threshold, fit_temperature, softmax, summarize

# The run settings a card records under "training" (with what the run measured).
TRAINING_KEYS = ("epochs", "batch_size", "lr", "weights", "seed", "val_fraction", "label_smoothing", "weight_decay",
                 "warmup_epochs", "clip_grad", "patience", "min_epochs", "time_limit", "image_size", "device")


def calibrate(val_logits: np.ndarray, val_y: np.ndarray) -> dict[str, Any]:
    """Temperature on validation NLL, then the threshold rule on calibrated probabilities."""
    t = fit_temperature(val_logits, val_y)
    raw = softmax(val_logits)[:, 1]
    p = softmax(val_logits, t)[:, 1]
    thr = choose_threshold(val_y, p)
    metrics = summarize(val_y, p, thr)
    metrics["ece_uncalibrated"] = summarize(val_y, raw, 0.5)["ece"]
    return {"temperature": t, "threshold": thr, "validation": metrics}


def run_card(cfg: dict[str, Any], init: str) -> dict[str, Any]:
    """The uncalibrated card of a run's model: defaults, the run's size and its preprocessing
    (what a backend's classifier needs to prepare pixels as inference will)."""
    card = default_card(cfg["model"], cfg.get("image_size"), init)
    card["preprocessing"] = preprocessing_settings(cfg)
    return card


def interim_card(cfg: dict[str, Any], init: str, epoch: int) -> dict[str, Any]:
    """The card beside a best checkpoint while the run goes on."""
    return run_card(cfg, init) | {"epochs": int(epoch), "note": "best so far; final card at the end"}


def build_card(cfg: dict[str, Any], data_info: dict[str, Any], calibration: dict[str, Any], *, init: str,
               best_epoch: int | None, epochs_run: int, seconds_per_epoch: float | None, device: str | None,
               precision: str, world_size: int, notes: str) -> dict[str, Any]:
    card = run_card(cfg, init)
    synthetic = bool(data_info.get("synthetic"))
    card.update({
        "threshold": round(float(calibration["threshold"]), 6),
        "threshold_rule": THRESHOLD_RULE,
        "temperature": round(float(calibration["temperature"]), 4),
        "data": data_info,
        "epochs": int(best_epoch or 0),
        "best_epoch": best_epoch,
        "epochs_run": int(epochs_run),
        "validation": calibration["validation"],
        "trained_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "licence": ("SYNTHETIC data: generated images, not a real lesion; for trying the pipeline only."
                    if synthetic else DATA_LICENCE_NOTE),
        "synthetic": synthetic,
        "training": {k: cfg.get(k) for k in TRAINING_KEYS} | {
            "seconds_per_epoch": seconds_per_epoch, "device_used": device, "precision": precision,
            "world_size": int(world_size), "framework_specific": notes},
    })
    if cfg.get("distillation"):
        card["training"]["distillation"] = cfg["distillation"]
    return card
