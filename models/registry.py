"""The four model names, their defaults, and model cards.

A model card is a plain dict stored as JSON next to the checkpoint. `default_card` gives
the fields every card has, so a checkpoint made by any path is readable by every other.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CLASSES = ["benign", "malignant"]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
DATA_LICENCE_NOTE = (
    "Trained on the Kaggle dataset 'Skin Cancer: Malignant vs. Benign' (images from the ISIC Archive, "
    "CC-0/CC-BY/CC-BY-NC by collection). Non-commercial research and teaching use only; credit the ISIC "
    "Archive and the Kaggle dataset. Not a medical device."
)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    display: str
    framework: str  # "torch" or "keras"
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    init: str  # default init: "scratch" or "imagenet"
    checkpoint_ext: str
    cam_methods: tuple[str, ...]


# The first is each model's default heatmap. Layer-CAM (at `LesionNet.fine_layer`) measured more often on
# the lesion and more faithful than Grad-CAM for the PyTorch models (README: "Which heatmap").
TORCH_CAM_METHODS = ("layercam", "gradcam", "gradcam++", "xgradcam", "eigencam")

SPECS: dict[str, ModelSpec] = {
    "keras_cnn": ModelSpec("keras_cnn", "Keras CNN", "keras", 128, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
                           "scratch", ".keras", ("gradcam",)),
    "torch_cnn": ModelSpec("torch_cnn", "PyTorch CNN", "torch", 128, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
                           "scratch", ".pt", TORCH_CAM_METHODS),
    "densenet161": ModelSpec("densenet161", "DenseNet161", "torch", 224, tuple(IMAGENET_MEAN),
                             tuple(IMAGENET_STD), "imagenet", ".pt", TORCH_CAM_METHODS),
    # The Lite0 weights were converted from TensorFlow, which scales inputs to [-1, 1].
    "efficientnet_lite0": ModelSpec("efficientnet_lite0", "EfficientNet-Lite0", "torch", 224, (0.5, 0.5, 0.5),
                                    (0.5, 0.5, 0.5), "imagenet", ".pt", TORCH_CAM_METHODS),
}
MODEL_NAMES = list(SPECS)


def spec(name: str) -> ModelSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(SPECS)}") from None


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def default_card(name: str, image_size: int | None = None, init: str | None = None) -> dict[str, Any]:
    s = spec(name)
    return {
        "name": s.name,
        "display": s.display,
        "architecture": s.name,
        "framework": s.framework,
        "image_size": int(image_size or s.image_size),
        "mean": list(s.mean),
        "std": list(s.std),
        "classes": list(CLASSES),
        "threshold": 0.5,
        "threshold_rule": "default 0.5 (no validation run)",
        "temperature": 1.0,
        "init": init or s.init,
        "data": None,
        "epochs": 0,
        "validation": None,
        "trained_at": None,
        "git_commit": None,
        "licence": None,
        "synthetic": False,
    }


def card_path(checkpoint: str | os.PathLike) -> Path:
    p = Path(checkpoint)
    return p.with_suffix(".json")


def read_card(path: str | os.PathLike) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        card = json.load(f)
    if card.get("name") not in SPECS:
        raise ValueError(f"{path}: model card names an unknown model {card.get('name')!r}")
    merged = default_card(card["name"], card.get("image_size"), card.get("init"))
    merged.update(card)
    return merged


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_card(path: str | os.PathLike, card: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(card, indent=2, sort_keys=False) + "\n").encode())


def weights_dir() -> Path:
    """Shipped weights; LESION_LENS_WEIGHTS_DIR points elsewhere (tests, a hosted volume)."""
    return Path(os.environ.get("LESION_LENS_WEIGHTS_DIR") or WEIGHTS_DIR)


def shipped_checkpoint(name: str) -> Path:
    return weights_dir() / f"{name}{spec(name).checkpoint_ext}"


# ------------------------------------------------------------------ shipped weights, file stamps

def file_stamp(path: str | os.PathLike) -> int:
    """The file's modification time in ns (0 when it is missing): the part of a cache key that
    changes when a checkpoint, its card or a data folder is replaced."""
    try:
        return Path(path).stat().st_mtime_ns
    except OSError:
        return 0


def checkpoint_stamp(checkpoint: str | os.PathLike) -> tuple[int, int]:
    """(checkpoint, model card) modification times: a retrained or promoted model is another key."""
    return file_stamp(checkpoint), file_stamp(card_path(checkpoint))


def shipped_card(name: str) -> dict[str, Any] | None:
    """The model card of the shipped checkpoint (read from JSON: no framework import), or None
    when the checkpoint or its card is missing or unreadable."""
    ckpt = shipped_checkpoint(name)
    path = card_path(ckpt)
    if not (ckpt.exists() and path.is_file()):
        return None
    try:
        return read_card(path)
    except (OSError, ValueError):
        return None


def has_weights(name: str) -> bool:
    return shipped_card(name) is not None


def models_with_weights() -> list[str]:
    return [n for n in MODEL_NAMES if has_weights(n)]


def default_model(names: Sequence[str] | None = None) -> str:
    """The best available model by validation AUC, PyTorch first (the Keras one imports TensorFlow),
    trained before untrained."""
    avail = list(names) if names is not None else models_with_weights()
    if not avail:
        return "torch_cnn"

    def key(n: str):
        card = shipped_card(n) or {}
        auc = (card.get("validation") or {}).get("auc")
        auc = float(auc) if isinstance(auc, (int, float)) and math.isfinite(auc) else -1.0
        return (spec(n).framework != "keras", bool(card.get("epochs")), auc)

    return max(avail, key=key)
