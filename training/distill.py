"""Knowledge distillation: a trained model's calibrated P(malignant) as part of each training target.

`--distill TEACHER` (a model name, for its shipped weights, or a checkpoint with its card) runs the
teacher once over the training photos, unaugmented, and trains towards
`(1 - w) * label + w * teacher` (`--distill-weight w`). The teacher sees the clean photo while the
student sees the augmented one, so the target also says "a dark rim or a blue cast changes nothing".
A teacher of another image size answers each training file decoded again at its own size, as the app
sizes an upload for it (not the student's smaller photo scaled up); a file that can no longer be read
falls back to the student's photo. The probabilities are kept in the run directory (`teacher.npz`), so
a resumed run does not recompute them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from models.loader import find_card, load_classifier
from models.preprocess import ImageError, prepare, to_model_size
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


def at_size(images: np.ndarray, size: int, paths: list[str] | None = None) -> tuple[np.ndarray, int]:
    """The photos at `size` px: each file decoded again at that size when the photos in memory have
    another (`paths`, one per photo), else the photo itself resized. Also how many came from their files."""
    if images.shape[1:3] == (size, size) or not paths:
        return resize_batch(images, size), 0
    out, decoded = [], 0
    for im, path in zip(images, paths):
        try:
            out.append(prepare(Path(path).read_bytes(), size))
            decoded += 1
        except (ImageError, OSError):
            out.append(resize_batch(im[None], size)[0])
    return np.stack(out), decoded


def teacher_probs(teacher: str, images: np.ndarray, log: Callable[[str], None] = print,
                  paths: list[str] | None = None) -> tuple[np.ndarray, dict]:
    """The teacher's calibrated P(malignant) for each uint8 photo (N,), and what the card records of it.
    `paths` (the photos' files, in order) let a teacher of another size read each file at its own size."""
    name, checkpoint = resolve_teacher(teacher)
    try:
        clf = load_classifier(name, checkpoint)
    except (FileNotFoundError, ValueError) as exc:
        raise DistillError(f"--distill {teacher}: {exc}") from None
    size = clf.image_size
    log(f"distillation: {name} ({checkpoint or 'shipped weights'}) over {len(images)} training photos at {size} px")
    probs, decoded = [], 0
    for i in range(0, len(images), BATCH):
        batch, n = at_size(images[i:i + BATCH], size, None if paths is None else paths[i:i + BATCH])
        probs.append(clf.predict_batch(batch))
        decoded += n
    probs = np.concatenate(probs) if probs else np.zeros(0)
    val = clf.card.get("validation") or {}
    info = {"teacher": name, "checkpoint": checkpoint or "shipped", "teacher_image_size": int(size),
            "teacher_threshold": float(clf.threshold),
            "teacher_val_auc": val.get("auc"), "teacher_trained_at": clf.card.get("trained_at"),
            "teacher_input": (f"{decoded} of {len(images)} training files decoded at {size} px" if decoded
                              else f"the training photos at {size} px")}
    return probs.astype(np.float32), info


def soft_targets(labels: np.ndarray, probs: np.ndarray, weight: float) -> np.ndarray:
    """(N, 2) float targets: the one-hot label mixed with the teacher's [P(benign), P(malignant)]."""
    onehot = np.eye(2, dtype=np.float32)[labels]
    teacher = np.stack([1.0 - probs, probs], axis=1).astype(np.float32)
    return (1.0 - weight) * onehot + weight * teacher


def run_targets(cfg: dict, images: np.ndarray, labels: np.ndarray, log: Callable[[str], None] = print,
                paths: list[str] | None = None) -> tuple[np.ndarray | None, dict | None]:
    """The run's soft targets (None without --distill), read from the run directory when a resumed
    run already computed them for the same photos. `paths`: the photos' files (see `teacher_probs`)."""
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
        probs, info = teacher_probs(teacher, images, log, paths)
        np.savez(cache, probs=probs, teacher=str(teacher), info=json.dumps(info))
    weight = float(cfg.get("distill_weight", 0.5))
    thr = float(info.get("teacher_threshold", 0.5))
    agree = float(((probs >= thr) == (labels == 1)).mean()) if len(labels) else float("nan")
    info = dict(info, weight=weight, teacher_train_agreement=round(agree, 4))
    log(f"distillation: weight {weight}; at its threshold the teacher agrees with {agree:.1%} of the training labels")
    return soft_targets(labels, probs, weight), info
