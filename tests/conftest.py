"""Shared fixtures: synthetic images and throwaway weights, so tests never need ../shared."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def page(server):
    """One Chromium page for a browser-test module, on the module's own `server` fixture."""
    from bench.serve import browser

    with browser() as p:
        yield p
