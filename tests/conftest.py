"""Shared fixtures: synthetic images and throwaway weights, so tests never need ../shared."""

from __future__ import annotations

import builtins
import contextlib
import os
from pathlib import Path

import numpy as np
import pytest
import torchvision.ops  # noqa: F401  before any TensorFlow import (see models/keras_model.py)

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = ROOT.parent / "shared" / "data" / "skin-cancer-malignant-vs-benign" / "train"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def rgb_image():
    rng = np.random.default_rng(0)
    return (rng.random((96, 80, 3)) * 255).astype(np.uint8)


@pytest.fixture
def real_data():
    if not REAL_DATA.is_dir():
        pytest.skip(f"real dataset not present at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture
def base(tmp_path, monkeypatch):
    from training.synthetic import write_dataset

    """LESION_LENS_DATA with: one/ (a dataset), nested/train + nested/test, notdata/, and runs/ elsewhere."""
    data = tmp_path / "data"
    write_dataset(data / "one", per_class=3, size=32)
    write_dataset(data / "nested" / "train", per_class=3, size=32, seed=1)
    write_dataset(data / "nested" / "test", per_class=2, size=32, seed=2)
    (data / "notdata" / "benign").mkdir(parents=True)
    monkeypatch.setenv("LESION_LENS_DATA", str(data))
    monkeypatch.setenv("LESION_LENS_RUNS", str(tmp_path / "runs"))
    return data


@pytest.fixture(scope="module")
def page(server):
    """One Chromium page for a browser-test module, on the module's own `server` fixture."""
    from harness import browser

    with browser() as p:
        yield p


@contextlib.contextmanager
def files_written():
    """Inside the block, every file opened for writing (by this process) is recorded in the list it gives."""
    writes: list[str] = []
    real_open = builtins.open

    def watching_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            writes.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    builtins.open = watching_open
    try:
        yield writes
    finally:
        builtins.open = real_open
