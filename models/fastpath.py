"""Batch-1 inference of the two small check networks (the gate's features, the lesion segmenter)
through ONNX Runtime, with eager PyTorch as the fallback.

Why: at batch 1 on a CPU these networks are dozens of tiny convolutions, and eager PyTorch pays a
fixed ~0.1-0.2 ms per convolution (oneDNN re-lays the weights out on every call), which is most of
their cost: the gate took ~12 ms for ~0.07 GFLOP. ONNX Runtime plans the graph once, with its
weights pre-packed, and runs the same network 3-4x faster (`bench/latency.py` measures it).

    run = FastRunner(module, example)    # module in eval mode, example: one input batch
    out = run(x)                         # float32 NCHW numpy or tensor -> numpy (first output)

The graph is exported in memory (`torch.onnx`, no file) the first time it is called, and its output
is compared with PyTorch's on `example`; when ONNX Runtime or the exporter is missing, the export
fails, or the outputs differ by more than `TOLERANCE`, the runner stays on PyTorch (`backend` says
which runs). `LESION_LENS_ONNX=0` keeps every runner on PyTorch. The batch axis is free; the other
axes are fixed by `example`. One thread by default: at batch 1 a second one buys nothing, and
`models.trust.Checks.photo` runs the two networks side by side, one core each; a batch job (fitting
the gate) asks for more.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import warnings
import numpy as np
import torch
from torch import nn

TOLERANCE = 1e-3  # largest |ONNX - PyTorch| accepted, relative to the output's largest magnitude
ENV = "LESION_LENS_ONNX"
log = logging.getLogger(__name__)
_EXPORT_LOCK = threading.Lock()  # the TorchScript exporter traces with global state: one at a time


def onnx_wanted() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _export(module: nn.Module, example: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    with _EXPORT_LOCK, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(module, (example,), buf, dynamo=False, input_names=["x"], output_names=["y"],
                          opset_version=17, dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return buf.getvalue()


def _session(model: bytes, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # no busy-waiting between calls: the classifier (PyTorch or TensorFlow) runs next on the same cores
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


class FastRunner:
    """`module` on ONNX Runtime when it can be, on PyTorch otherwise; thread-safe, built lazily."""

    def __init__(self, module: nn.Module, example: torch.Tensor, threads: int = 1, onnx: bool = True):
        self.module = module.eval()
        self.example = example.detach().float().cpu()
        self.threads = threads
        self.onnx = onnx  # False: always PyTorch (the benchmark's baseline)
        self.backend: str | None = None  # "onnxruntime" or "torch" once built
        self.reason = ""  # why PyTorch, when it is
        self._session = None
        self._lock = threading.Lock()

    def _torch(self, x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return self.module(x).float().numpy()

    def build(self) -> str:
        with self._lock:
            if self.backend is None:
                self._session, self.reason = self._try_onnx()
                self.backend = "onnxruntime" if self._session is not None else "torch"
                if self.reason:
                    log.info("%s runs on PyTorch: %s", type(self.module).__name__, self.reason)
            return self.backend

    def _try_onnx(self):
        if not self.onnx:
            return None, "asked for PyTorch"
        if not onnx_wanted():
            return None, f"{ENV}=0"
        if next(self.module.parameters(), torch.zeros(0)).device.type != "cpu":
            return None, "the module is not on the CPU"
        try:
            session = _session(_export(self.module, self.example), self.threads)
            got = session.run(None, {"x": self.example.numpy()})[0]
        except Exception as e:  # no onnxruntime/onnx, an op the exporter lacks, ...: PyTorch still works
            return None, f"{type(e).__name__}: {e}"
        want = self._torch(self.example)
        err = float(np.abs(got - want).max()) / max(float(np.abs(want).max()), 1e-6)
        if got.shape != want.shape or not err <= TOLERANCE:
            return None, f"ONNX Runtime's output differs from PyTorch's (relative error {err:.2g})"
        return session, ""

    def __call__(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        if self.backend is None:
            self.build()
        if self._session is None:
            return self._torch(torch.as_tensor(x, dtype=torch.float32))
        arr = x.numpy() if isinstance(x, torch.Tensor) else x
        return self._session.run(None, {"x": np.ascontiguousarray(arr, np.float32)})[0]


def example_input(channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """One random batch of the networks' input range ([-1, 1]) to export and verify with."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, channels, size, size, generator=gen) * 2 - 1
