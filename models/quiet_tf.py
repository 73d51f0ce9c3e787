"""Import TensorFlow without its start-up chatter.

TensorFlow's C++ side prints to the process's stderr before its logging is set up, so
TF_CPP_MIN_LOG_LEVEL does not hide it: a oneDNN notice, the CPU instructions it was not built
for and, on a machine without a CUDA GPU, "Could not find cuda drivers" and an error-level
"failed call to cuInit". In the app's log those read like a fault. `tensorflow_quietly()` runs the
import (and TensorFlow's device probe) with stderr going to a temporary file, then writes back
every line that is not one of those known notices, so a real error still reaches the log.
The CUDA lines are dropped only when PyTorch finds no CUDA GPU either: on a GPU machine a failed
cuInit is a real problem and stays.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator

ALWAYS_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "cpu_feature_guard.cc",
    "rebuild TensorFlow with the appropriate compiler flags",
)
NO_GPU_NOISE = ("Could not find cuda drivers on your machine", "failed call to cuInit")


def has_cuda_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - no torch or a broken driver: treat as no GPU
        return False


def noise(gpu: bool) -> tuple[str, ...]:
    return ALWAYS_NOISE + (() if gpu else NO_GPU_NOISE)


def filtered(text: str, patterns: tuple[str, ...]) -> str:
    """`text` without the lines that contain one of `patterns` (and the line that continues the
    cpu_feature_guard notice)."""
    out = [line for line in text.splitlines(keepends=True) if not any(p in line for p in patterns)]
    return "".join(out)


@contextlib.contextmanager
def tensorflow_quietly() -> Iterator[None]:
    """Inside: file descriptor 2 goes to a temporary file. After: the non-noise lines are written to
    the real stderr. Everything else the process writes to stderr meanwhile is kept too."""
    patterns = noise(has_cuda_gpu())
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = filtered(tmp.read().decode(errors="replace"), patterns)
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
