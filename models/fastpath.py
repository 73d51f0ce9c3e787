"""Batch-1 inference of the two small check networks (the gate's features, the lesion segmenter)
through ONNX Runtime, with eager PyTorch as the fallback.

Why: at batch 1 on a CPU these networks are dozens of tiny convolutions, and eager PyTorch pays a
fixed cost of about 0.1-0.3 ms on each call whatever its size (measured here: a 3x3 depthwise
convolution over a 1152 x 3 x 3 map took 0.12 ms), which is most of their cost: the gate took 12-17
ms for 0.07 GFLOP. ONNX Runtime plans the graph once and runs the same network 3-4x faster
(`bench/latency.py` measures both side by side).

    run = FastRunner(module, example)    # module in eval mode, example: one input batch
    out = run(x)                         # float32 NCHW numpy or tensor -> numpy (first output)

The graph is exported (`torch.onnx`) the first time it is called and kept in a cache folder
(`LESION_LENS_CACHE`, default `~/.cache/lesion-lens`; named by a hash of the weights, the source file
of the module's class and the versions), so a restarted server skips the export and the `onnx`
import (about 1.5 s here); the folder keeps the four most recently used graphs of each network class.
Before use, its output is compared with PyTorch's on `example`; a cached graph that disagrees is
exported afresh. When ONNX Runtime or the exporter is missing, the export fails, or the outputs
differ by more than `TOLERANCE`, the runner stays on PyTorch (`backend` says
which runs). `LESION_LENS_ONNX=0` keeps every runner on PyTorch. The batch axis is free; the other
axes are fixed by `example`. One thread by default: at batch 1 a second one buys nothing, and
`models.trust.Checks.photo` runs the two networks side by side, one core each; a batch job (fitting
the gate) asks for more.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import itertools
import logging
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

KEEP = 4  # cached graphs kept per network class, the most recently used (old weights' graphs go)
TOLERANCE = 1e-3  # largest |ONNX - PyTorch| accepted, relative to the output's largest magnitude
ENV = "LESION_LENS_ONNX"
CACHE_ENV = "LESION_LENS_CACHE"
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


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lesion-lens") / "onnx"


def graph_key(module: nn.Module, example: torch.Tensor) -> str:
    """What the exported graph depends on: weights, the module's code, input shape, library versions."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    try:  # the whole file that defines the class: its helpers (fused layers, blocks) shape the graph too
        h.update(inspect.getsource(inspect.getmodule(type(module))).encode())
    except (OSError, TypeError):
        h.update(type(module).__qualname__.encode())
    h.update(repr((tuple(example.shape[1:]), torch.__version__, TOLERANCE)).encode())
    return f"{type(module).__name__}-{h.hexdigest()[:24]}"


def _read_cache(key: str) -> bytes | None:
    path = cache_dir() / f"{key}.onnx"
    try:
        model = path.read_bytes()
    except OSError:
        return None
    try:
        os.utime(path)  # used now: the pruning below keeps the most recently used
    except OSError:
        pass
    return model


def _prune_cache(key: str) -> None:
    """Keep the KEEP most recently used graphs of this key's network class, delete the rest (the
    graphs of weights and code since replaced); best effort."""
    prefix = key.rsplit("-", 1)[0] + "-"
    try:
        found = [(p.stat().st_mtime, p) for p in cache_dir().glob(f"{prefix}*.onnx")
                 if p.stem[len(prefix):].isalnum()]
    except OSError:
        return
    for _, path in sorted(found, key=lambda t: t[0], reverse=True)[KEEP:]:
        try:
            path.unlink()
        except OSError:
            pass


def _write_cache(key: str, model: bytes) -> None:
    """Best effort (a read-only home is fine): written whole or not at all."""
    path = cache_dir() / f"{key}.onnx"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_bytes(model)
        os.replace(tmp, path)
    except OSError as e:
        log.info("ONNX graph not cached (%s)", e)
        return
    _prune_cache(key)


def _session(model: bytes, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # no busy-waiting between calls: the classifier (PyTorch or TensorFlow) runs next on the same cores
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def quantize_int8(model: bytes, calibration, fp32_prefixes: tuple[str, ...] = ()) -> bytes:
    """`model` (an fp32 graph with input "x") as a static int8 graph for ONNX Runtime on a CPU: weights
    int8 per channel, activations uint8 with ranges from `calibration` (float32 NCHW batches); nodes whose
    names start with one of `fp32_prefixes` stay fp32.

    U8S8 with `reduce_range` (7-bit weights): without VNNI (this machine's CPU, most AVX2 ones) ONNX
    Runtime multiplies u8 by s8 with an instruction whose 16-bit sums saturate; at full range the gate's
    features then kept a median cosine of 0.85 with the fp32 ones, at reduced range 0.95 (U8U8, exact
    but without a fast kernel, ran 4x slower than fp32). Most of what is left comes from the first
    layers (3 colour channels in, the full resolution): with the stem and the first three blocks in fp32
    the cosine is 0.99 and the graph as fast (the gate's network on 600 photos; see the README)."""
    import tempfile

    import onnx

    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration)

        def get_next(self):
            x = next(self.batches, None)
            return None if x is None else {"x": np.ascontiguousarray(x, np.float32)}

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(model)
        quant_pre_process(str(src), str(pre))
        keep = [n.name for n in onnx.load(str(pre)).graph.node if n.name.startswith(tuple(fp32_prefixes))]
        if fp32_prefixes and not keep:
            raise ValueError(f"no node of the graph starts with {fp32_prefixes}")
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=keep)
        return out.read_bytes()


def export(module: nn.Module, example: torch.Tensor) -> bytes:
    """`module`'s fp32 ONNX graph (input "x", output "y", free batch axis)."""
    return _export(module.eval(), example.detach().float().cpu())


class FastRunner:
    """`module` on ONNX Runtime when it can be, on PyTorch otherwise; thread-safe, built lazily.

    `graph`: a ready ONNX graph of `module` to run instead of exporting one (an int8 graph: its output
    differs from PyTorch's by design, so only its shape is checked; the caller vouches for its content);
    when it cannot run, the runner stays on PyTorch's fp32 module."""

    def __init__(self, module: nn.Module, example: torch.Tensor, threads: int = 1, onnx: bool = True,
                 graph: bytes | None = None):
        self.module = module.eval()
        self.example = example.detach().float().cpu()
        self.threads = threads
        self.onnx = onnx  # False: always PyTorch (the benchmark's baseline)
        self.graph = graph
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
        if any(t.device.type != "cpu" for t in itertools.chain(self.module.parameters(), self.module.buffers())):
            return None, "the module is not on the CPU"
        want = self._torch(self.example)
        if self.graph is not None:
            return self._verified(self.graph, want, exact=False)
        key = graph_key(self.module, self.example)
        cached = _read_cache(key)
        if cached is not None:
            session, _ = self._verified(cached, want)
            if session is not None:
                return session, ""
        try:
            model = _export(self.module, self.example)
        except Exception as e:  # no onnx, an op the exporter lacks, ...: PyTorch still works
            return None, f"{type(e).__name__}: {e}"
        session, reason = self._verified(model, want)
        if session is not None:
            _write_cache(key, model)
        return session, reason

    def _verified(self, model: bytes, want: np.ndarray, exact: bool = True):
        """An ONNX Runtime session of `model` if its output on the example matches PyTorch's (`exact`:
        to TOLERANCE; otherwise in shape, and finite)."""
        try:
            session = _session(model, self.threads)
            got = session.run(None, {"x": self.example.numpy()})[0]
        except Exception as e:  # no onnxruntime, a damaged graph, ...
            return None, f"{type(e).__name__}: {e}"
        if not exact:
            if got.shape != want.shape or not np.isfinite(got).all():
                return None, f"the given graph's output has shape {got.shape}, not {want.shape}, or is not finite"
            return session, ""
        if got.shape != want.shape:  # e.g. a cached graph of the same weights whose forward has changed
            return None, f"ONNX Runtime's output has shape {got.shape}, PyTorch's {want.shape}"
        err = float(np.abs(got - want).max()) / max(float(np.abs(want).max()), 1e-6)
        if not err <= TOLERANCE:
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
