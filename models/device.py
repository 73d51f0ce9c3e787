"""Device choice, one rule for every torch user (training, the pages, the benchmarks): what `auto`
means, which devices this machine has, and what they are."""

from __future__ import annotations

import functools
import os
from typing import Any

DEVICES = ("auto", "cpu", "cuda", "mps")


def _mps_available(torch) -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def pick_device(name: str = "auto"):
    """A torch.device for auto|cpu|cuda|mps: auto is the current CUDA GPU, else Apple MPS, else the
    CPU. Raises ValueError, with a message for the user, for a device this machine does not have."""
    import torch

    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps" if _mps_available(torch) else "cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but no CUDA GPU is available")
        return torch.device("cuda", torch.cuda.current_device())
    if name == "mps" and not _mps_available(torch):
        raise ValueError("--device mps was asked for, but MPS is not available")
    return torch.device(name)


@functools.lru_cache(maxsize=1)
def device_info() -> dict[str, Any]:
    """What this machine can train on: CUDA GPUs (name, memory), MPS, CPU cores."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1)})
    return {"cuda": gpus, "mps": _mps_available(torch), "cpu_cores": os.cpu_count() or 1,
            "torch_threads": torch.get_num_threads()}


def available_devices() -> list[str]:
    info = device_info()
    return ["auto", "cpu"] + (["cuda"] if info["cuda"] else []) + (["mps"] if info["mps"] else [])


def resolved_device(name: str) -> str:
    """The kind of device `name` stands for here: what `auto` picks (cuda, mps or cpu), else `name`."""
    return pick_device("auto").type if name == "auto" else name
