"""DenseNet anatomy: the structure of a live model, read from its modules, for the classroom page.

Nothing here hard-codes DenseNet161's configuration. Block sizes, growth rates and channel
counts are read from the modules (`features.denseblockN` / `features.transitionN` of the
torchvision model, each `_DenseLayer` with `norm1`/`conv1`/`norm2`/`conv2`); output sizes and
multiply-adds come from one forward pass with hooks. What the blocks see of one photo is
`models.inside`; the page's drawings and quiz live beside it (pages/densenet_*.py).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

BLOCK_RE = re.compile(r"^denseblock(\d+)$")
TRANSITION_RE = re.compile(r"^transition(\d+)$")

# ----------------------------------------------------------------------------- finding the parts


def _module_of(model: Any) -> nn.Module:
    """A classifier (has .model), a LesionNet, a torchvision DenseNet or its `features`."""
    return model.model if hasattr(model, "model") and isinstance(model.model, nn.Module) else model


def densenet_features(model: Any) -> nn.Module:
    """The `features` Sequential (the one holding denseblock1..N) inside any wrapper."""
    module = _module_of(model)
    if any(BLOCK_RE.match(n) for n, _ in module.named_children()):
        return module
    for _, sub in module.named_modules():
        if any(BLOCK_RE.match(n) for n, _ in sub.named_children()):
            return sub
    raise ValueError(f"{type(module).__name__} has no dense blocks (no child named denseblock1)")


def block_modules(model: Any) -> dict[str, nn.Module]:
    """'denseblock1' -> module, in network order."""
    feats = densenet_features(model)
    return {n: m for n, m in feats.named_children() if BLOCK_RE.match(n)}


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_parameters(model: Any) -> int:
    return _params(_module_of(model))


@dataclass
class DenseBlockInfo:
    name: str  # denseblock3
    index: int  # 3
    layers: int
    growth: int  # channels each layer adds (conv2.out_channels)
    bottleneck: int  # conv1.out_channels (the 1x1 "bottleneck" width)
    channels_in: int  # k0 of this block
    channels_out: int  # k0 + layers * growth
    layer_inputs: list[int]  # channels each layer receives (norm1.num_features)
    parameters: int


@dataclass
class TransitionInfo:
    name: str
    index: int
    channels_in: int
    channels_out: int
    parameters: int

    @property
    def compression(self) -> float:
        return self.channels_out / self.channels_in


def dense_blocks(model: Any) -> list[DenseBlockInfo]:
    """The configuration of every dense block, read from its layers."""
    out = []
    for name, block in block_modules(model).items():
        layers = list(block.children())
        inputs = [int(layer.norm1.num_features) for layer in layers]
        adds = [int(layer.conv2.out_channels) for layer in layers]
        growth = adds[0]
        if any(a != growth for a in adds):  # not DenseNet as torchvision builds it
            raise ValueError(f"{name}: layers add different numbers of channels {sorted(set(adds))}")
        out.append(DenseBlockInfo(
            name=name, index=int(BLOCK_RE.match(name).group(1)), layers=len(layers), growth=growth,
            bottleneck=int(layers[0].conv1.out_channels), channels_in=inputs[0],
            channels_out=inputs[0] + sum(adds), layer_inputs=inputs, parameters=_params(block)))
    return out


def transitions(model: Any) -> list[TransitionInfo]:
    feats = densenet_features(model)
    out = []
    for name, t in feats.named_children():
        m = TRANSITION_RE.match(name)
        if m:
            out.append(TransitionInfo(name, int(m.group(1)), int(t.conv.in_channels), int(t.conv.out_channels),
                                      _params(t)))
    return out


# ----------------------------------------------------------------------------- one probing forward


def _conv_linear_macs(module: nn.Module, inputs, output) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        per_output = (module.in_channels // module.groups) * kh * kw
        return int(output[0].numel()) * per_output  # batch of one
    if isinstance(module, nn.Linear):
        return int(output[0].numel()) * module.in_features
    return 0


@dataclass
class Probe:
    """What one forward pass on a blank image of `image_size` tells about a model."""
    image_size: int
    macs: int  # multiply-adds of all Conv2d and Linear layers
    macs_by_module: dict[str, int]  # qualified module name -> its multiply-adds
    shapes: dict[str, tuple[int, ...]]  # qualified module name -> output shape (without batch)


def _model_lock(model: Any):
    lock = getattr(model, "lock", None)
    return lock if lock is not None else contextlib.nullcontext()


def probe(model: Any, image_size: int, watch: Iterable[str] = ()) -> Probe:
    """One forward pass on a zero image with hooks on every Conv2d/Linear (and `watch` modules)."""
    module = _module_of(model)
    watch = set(watch)
    macs: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []

    def hook(name):
        def fn(mod, inputs, output):
            if isinstance(output, torch.Tensor):
                shapes[name] = tuple(output.shape[1:])
                n = _conv_linear_macs(mod, inputs, output)
                if n:
                    macs[name] = macs.get(name, 0) + n
        return fn

    first = next(module.parameters())
    x = torch.zeros(1, 3, int(image_size), int(image_size), device=first.device, dtype=first.dtype)
    with _model_lock(model):
        try:
            for name, mod in module.named_modules():
                if isinstance(mod, (nn.Conv2d, nn.Linear)) or name in watch:
                    handles.append(mod.register_forward_hook(hook(name)))
            was_training = module.training
            module.eval()
            with torch.no_grad():
                module(x)
            module.train(was_training)
        finally:
            for h in handles:
                h.remove()
    return Probe(int(image_size), sum(macs.values()), macs, shapes)


def count_macs(model: Any, image_size: int) -> int:
    """Multiply-adds of Conv2d and Linear layers for one image of image_size x image_size."""
    return probe(model, image_size).macs


# ----------------------------------------------------------------------------- section 2: the table


def _prefix(module: nn.Module, target: nn.Module) -> str:
    for name, m in module.named_modules():
        if m is target:
            return name
    raise ValueError("module not found")


def dense_block_table(model: Any, image_size: int) -> list[dict[str, Any]]:
    """One row per stage of the network, in order: stem, dense blocks, transitions, final norm, head.

    Every parameter of the model is in exactly one row, so the rows' parameters sum to the
    model's total; output sizes and multiply-adds come from one forward pass at `image_size`.
    """
    module = _module_of(model)
    feats = densenet_features(module)
    fprefix = _prefix(module, feats)
    q = (lambda n: f"{fprefix}.{n}") if fprefix else (lambda n: n)
    children = list(feats.named_children())
    pr = probe(model, image_size, watch=[q(n) for n, _ in children])
    blocks = {b.name: b for b in dense_blocks(feats)}
    trans = {t.name: t for t in transitions(feats)}

    def macs_under(prefix: str) -> int:
        return sum(v for k, v in pr.macs_by_module.items() if k == prefix or k.startswith(prefix + "."))

    # group the features' children into stages
    stages: list[tuple[str, list[tuple[str, nn.Module]]]] = []
    seen_block = False
    for name, child in children:
        if BLOCK_RE.match(name) or TRANSITION_RE.match(name):
            seen_block = True
            stages.append((name, [(name, child)]))
        else:
            label = "final norm" if seen_block else "stem"
            if stages and stages[-1][0] == label:
                stages[-1][1].append((name, child))
            else:
                stages.append((label, [(name, child)]))

    rows: list[dict[str, Any]] = []
    channels = 3
    for label, members in stages:
        params = sum(_params(m) for _, m in members)
        last = q(members[-1][0])
        shape = pr.shapes[last]
        row = {"stage": label, "kind": "", "layers": None, "growth_rate": None, "channels_in": channels,
               "channels_out": int(shape[0]), "parameters": params,
               "macs": sum(macs_under(q(n)) for n, _ in members),
               "output_size": f"{shape[1]}×{shape[2]}", "output_hw": (int(shape[1]), int(shape[2]))}
        if label in blocks:
            b = blocks[label]
            row.update(kind="dense block", layers=b.layers, growth_rate=b.growth, channels_in=b.channels_in)
            assert b.channels_out == row["channels_out"], (label, b.channels_out, shape)
        elif label in trans:
            t = trans[label]
            row.update(kind="transition", channels_in=t.channels_in)
        elif label == "stem":
            row["kind"] = "convolution + pooling"
        else:
            row["kind"] = "batch norm + ReLU"
        channels = row["channels_out"]
        rows.append(row)

    rest = _params(module) - _params(feats)
    if module is not feats:
        head_macs = pr.macs - macs_under(fprefix)
        rows.append({"stage": "head", "kind": "global pool + linear", "layers": None, "growth_rate": None,
                     "channels_in": channels, "channels_out": _out_features(module), "parameters": rest,
                     "macs": head_macs, "output_size": "1×1", "output_hw": (1, 1)})
    return rows


def _out_features(module: nn.Module) -> int:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return int(linears[-1].out_features) if linears else 0


# ----------------------------------------------------------------------------- comparing models


def state_dict_bytes(module: nn.Module) -> int:
    """Size of the fp32 state dict's tensors (what a checkpoint holds, without file overhead)."""
    total = 0
    for v in module.state_dict().values():
        total += v.numel() * (4 if v.is_floating_point() else v.element_size())
    return total


def architecture(name: str) -> nn.Module:
    """The app's torch architecture for `name`, built on the meta device: no memory, no weights."""
    from .torch_classifier import build_for_inference

    with torch.device("meta"):
        return build_for_inference(name)


def _keras_summary(image_size: int) -> dict[str, Any]:
    """Parameters and multiply-adds of the Keras CNN."""
    from .keras_model import build_keras_cnn  # imports TensorFlow: only here, only when asked

    model = build_keras_cnn(image_size)
    macs = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("Conv2D", "Dense"):
            kernel = layer.kernel.shape  # (kh, kw, cin, cout) or (cin, cout)
            out = layer.output.shape
            positions = int(np.prod([d for d in out[1:-1]])) if len(out) > 2 else 1
            macs += positions * int(np.prod(kernel))
    params = int(model.count_params())
    return {"parameters": params, "macs": macs, "fp32_bytes": params * 4}


def model_summary(name: str, image_size: int | None = None) -> dict[str, Any]:
    """Parameters, multiply-adds for one image, and checkpoint size for one of the app's models."""
    from .registry import shipped_checkpoint, spec

    s = spec(name)
    size = int(image_size or s.image_size)
    row: dict[str, Any] = {"model": name, "display": s.display, "image_size": size,
                           "parameters": None, "macs": None, "size_bytes": None, "size_source": None}
    if s.framework == "keras":
        try:
            k = _keras_summary(size)
        except ImportError as exc:  # TensorFlow missing from this install
            row["size_source"] = f"Keras not available ({exc.name})"
            return row
        row.update(parameters=k["parameters"], macs=k["macs"])
        fp32 = k["fp32_bytes"]
    else:
        model = architecture(name)
        pr = probe(model, size)
        row.update(parameters=count_parameters(model), macs=pr.macs)
        fp32 = state_dict_bytes(model)
    ckpt = shipped_checkpoint(name)
    if ckpt.is_file():
        row.update(size_bytes=ckpt.stat().st_size, size_source="shipped checkpoint")
    else:
        row.update(size_bytes=fp32, size_source="fp32 weights (no checkpoint shipped)")
    return row


def compare_models(names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    from .registry import MODEL_NAMES

    return [model_summary(n) for n in (names or MODEL_NAMES)]


# ImageNet networks of similar accuracy, for the parameter-efficiency argument.
REFERENCE_NETWORKS = ("densenet161", "resnet50", "resnet101", "resnet152")


def imagenet_reference(image_size: int = 224) -> list[dict[str, Any]]:
    """Torchvision's ImageNet versions (1000 classes): parameters and multiply-adds counted here
    on the meta device; top-1 accuracy as torchvision's weight metadata reports it."""
    import torchvision.models as tvm

    rows = []
    for name in REFERENCE_NETWORKS:
        with torch.device("meta"):
            net = getattr(tvm, name)(weights=None)
        weights = tvm.get_model_weights(name).IMAGENET1K_V1
        rows.append({"network": name, "parameters": count_parameters(net), "macs": count_macs(net, image_size),
                     "imagenet_top1": float(weights.meta["_metrics"]["ImageNet-1K"]["acc@1"])})
    return rows


# ----------------------------------------------------------------------------- a dense block in numbers


def dense_layer_inputs(layers: int, growth: int, k0: int) -> list[int]:
    """Channels entering each layer of a dense block: k0 + l*k for l = 0..layers-1."""
    return [k0 + l * growth for l in range(layers)]


def dense_connections(layers: int) -> int:
    """Direct connections among the block input and its layers: layer l (1-based) has l inputs."""
    return layers * (layers + 1) // 2
