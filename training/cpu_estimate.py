"""How long an epoch takes on this CPU: a micro-benchmark of a few real training steps, for the
Training page's warning before a heavy model starts on the CPU."""

from __future__ import annotations

import functools
import math
import time

from models.registry import spec

HEAVY_MODELS = ("densenet161", "efficientnet_lite0")
HEAVY_MIN_SIZE = 160


def is_heavy(model: str, image_size: int) -> bool:
    """Slow enough on a CPU that the page times it and asks before starting."""
    return model in HEAVY_MODELS and image_size >= HEAVY_MIN_SIZE


@functools.lru_cache(maxsize=32)
def _seconds_per_step(model: str, image_size: int, batch: int) -> float:
    """Median time of 2 timed forward+backward+AdamW steps (after one warm-up) on the CPU, with the
    precision and memory format the training loop picks there (`--amp auto`)."""
    import torch

    from models.architectures import build_torch

    from .torch_loop import amp_settings, uses_channels_last

    cpu = torch.device("cpu")
    amp = amp_settings(cpu, "auto", model)
    fmt = torch.channels_last if uses_channels_last(cpu) else torch.contiguous_format
    net, _ = build_torch(model, None)
    net = net.to(memory_format=fmt).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, image_size, image_size).contiguous(memory_format=fmt)
    y = torch.arange(batch) % 2
    times = []
    for i in range(3):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=amp[1], enabled=amp[0]):
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return float(sorted(times)[len(times) // 2])


def estimate_cpu_epoch_time(model: str, image_size: int, batch_size: int, n_images: int,
                            val_fraction: float = 0.15, probe_batch: int = 4) -> dict[str, float]:
    """Rough CPU time per epoch from timing a few real training steps of `model` here.
    Steps are timed at a batch of at most `probe_batch` and scaled linearly (cached per shape);
    validation is counted as a third of a training pass over its images."""
    if spec(model).framework != "torch":
        raise ValueError(f"{spec(model).display}: the CPU estimate covers the PyTorch models")
    b = max(1, min(int(batch_size), probe_batch))
    per_image = _seconds_per_step(model, int(image_size), b) / b
    n_train = n_images * (1 - val_fraction)
    steps = max(1, math.ceil(n_train / batch_size))
    epoch = per_image * (steps * batch_size + n_images * val_fraction / 3)
    return {"seconds_per_step": per_image * batch_size, "steps_per_epoch": steps, "seconds_per_epoch": epoch}
