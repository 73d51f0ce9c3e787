"""Terminal progress: a bar when stdout is a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    """Per-epoch progress with loss, accuracy and images/s. Without a terminal the epoch
    summary line printed by the loop is all that appears, so logs stay readable."""

    def __init__(self, epoch: int, epochs: int, steps: int, images_per_step: int, enabled: bool = True):
        self.images_per_step = images_per_step
        self.start = time.perf_counter()
        self.bar = None
        if enabled and sys.stdout.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", unit="step", dynamic_ncols=True)

    def update(self, step: int, loss: float, acc: float) -> None:
        if self.bar is None:
            return
        ips = step * self.images_per_step / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"loss {loss:.4f}, acc {acc:.3f}, {ips:.1f} img/s", refresh=False)
        self.bar.update(step - self.bar.n)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
