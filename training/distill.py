"""Knowledge distillation: a trained model's calibrated P(malignant) as part of each training target.

`--distill TEACHER` (a model name, for its shipped weights, or a checkpoint with its card) runs the
teacher once over the training photos, unaugmented, and trains towards
`(1 - w) * label + w * teacher` (`--distill-weight w`). The teacher sees the clean photo while the
student sees the augmented one, so the target also says "a dark rim or a blue cast changes nothing".
The probabilities are kept in the run directory (`teacher.npz`), so a resumed run does not recompute them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from models.loader import find_card, load_classifier
from models.preprocess import to_model_size
from models.registry import MODEL_NAMES

TEACHER_FILE = "teacher.npz"
BATCH = 64


class DistillError(ValueError):
    """The teacher cannot be used (unknown name, no weights, no card); the message says why."""


def resolve_teacher(teacher: str) -> tuple[str, str | None]:
    """`--distill`'s argument -> (model name, checkpoint path or None for the shipped weights)."""
    if teacher in MODEL_NAMES:
        return teacher, None
    path = Path(teacher)
    if not path.is_file():
        raise DistillError(f"--distill {teacher}: neither a model ({', '.join(MODEL_NAMES)}) nor a checkpoint file")
    try:
        card = find_card(path)
    except (FileNotFoundError, ValueError) as exc:
        raise DistillError(f"--distill {teacher}: {exc}") from None
    name = card.get("name")
    if name not in MODEL_NAMES:
        raise DistillError(f"--distill {teacher}: its card names no known model ({name!r})")
    return name, str(path)


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 NxHxWx3 -> NxSxSx3 as inference sizes a photo (`to_model_size`), unchanged when already that size."""
    if images.shape[1:3] == (size, size):
        return images
    from PIL import Image

    return np.stack([to_model_size(Image.fromarray(im), size) for im in images])


def teacher_probs(teacher: str, images: np.ndarray, log: Callable[[str], None] = print) -> tuple[np.ndarray, dict]:
    """The teacher's calibrated P(malignant) for each uint8 photo (N,), and what the card records of it."""
    name, checkpoint = resolve_teacher(teacher)
    try:
        clf = load_classifier(name, checkpoint)
    except (FileNotFoundError, ValueError) as exc:
        raise DistillError(f"--distill {teacher}: {exc}") from None
    size = clf.image_size
    log(f"distillation: {name} ({checkpoint or 'shipped weights'}) over {len(images)} training photos at {size} px")
    probs = np.concatenate([clf.predict_batch(resize_batch(images[i:i + BATCH], size))
                            for i in range(0, len(images), BATCH)]) if len(images) else np.zeros(0)
    val = clf.card.get("validation") or {}
    info = {"teacher": name, "checkpoint": checkpoint or "shipped", "teacher_image_size": int(size),
            "teacher_threshold": float(clf.threshold),
            "teacher_val_auc": val.get("auc"), "teacher_trained_at": clf.card.get("trained_at")}
    return probs.astype(np.float32), info


def soft_targets(labels: np.ndarray, probs: np.ndarray, weight: float) -> np.ndarray:
    """(N, 2) float targets: the one-hot label mixed with the teacher's [P(benign), P(malignant)]."""
    onehot = np.eye(2, dtype=np.float32)[labels]
    teacher = np.stack([1.0 - probs, probs], axis=1).astype(np.float32)
    return (1.0 - weight) * onehot + weight * teacher


def run_targets(cfg: dict, images: np.ndarray, labels: np.ndarray, log: Callable[[str], None] = print
                ) -> tuple[np.ndarray | None, dict | None]:
    """The run's soft targets (None without --distill), read from the run directory when a resumed
    run already computed them for the same photos."""
    teacher = cfg.get("distill")
    if not teacher:
        return None, None
    cache = Path(cfg["out"]) / TEACHER_FILE
    probs = info = None
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if len(z["probs"]) == len(images) and str(z["teacher"]) == str(teacher):
                    probs, info = z["probs"], json.loads(str(z["info"]))
        except (OSError, ValueError, KeyError):
            probs = None
    if probs is None:
        probs, info = teacher_probs(teacher, images, log)
        np.savez(cache, probs=probs, teacher=str(teacher), info=json.dumps(info))
    weight = float(cfg.get("distill_weight", 0.5))
    thr = float(info.get("teacher_threshold", 0.5))
    agree = float(((probs >= thr) == (labels == 1)).mean()) if len(labels) else float("nan")
    info = dict(info, weight=weight, teacher_train_agreement=round(agree, 4))
    log(f"distillation: weight {weight}; at its threshold the teacher agrees with {agree:.1%} of the training labels")
    return soft_targets(labels, probs, weight), info
