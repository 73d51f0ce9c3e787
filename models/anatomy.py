"""DenseNet anatomy for the classroom page: everything the page shows, computed from live models.

Nothing here hard-codes DenseNet161's configuration. Block sizes, growth rates and channel
counts are read from the modules (`features.denseblockN` / `features.transitionN` of the
torchvision model, each `_DenseLayer` with `norm1`/`conv1`/`norm2`/`conv2`); output sizes and
multiply-adds come from one forward pass with hooks; feature maps and Grad-CAMs of the four
dense blocks come from one forward (and, for the CAMs, one backward) pass on the photo.

No Streamlit here; the page `pages/densenet.py` only lays these results out.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from PIL import Image
from torch import nn

from .classifier import Prediction, normalize_cam, overlay_image

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


def _keras_summary(image_size: int) -> dict[str, Any] | None:
    """Parameters and multiply-adds of the Keras CNN; None when models/keras_model.py is absent."""
    if not (Path(__file__).resolve().parent / "keras_model.py").is_file():
        return None
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
        if k is None:
            row["size_source"] = "Keras model not in this build"
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


# ----------------------------------------------------------------------------- section 1: drawings


def dense_layer_inputs(layers: int, growth: int, k0: int) -> list[int]:
    """Channels entering each layer of a dense block: k0 + l*k for l = 0..layers-1."""
    return [k0 + l * growth for l in range(layers)]


def dense_connections(layers: int) -> int:
    """Direct connections among the block input and its layers: layer l (1-based) has l inputs."""
    return layers * (layers + 1) // 2


_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf"]
# Left to right, at most 13.5 x 6 inches (graphviz scales larger drawings down, never up).
_GRAPH = ('  graph [rankdir=LR, nodesep=0.1, ranksep=0.4, bgcolor="transparent", fontname="Helvetica", '
          'size="13.5,6"];\n'
          '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=12, margin="0.1,0.06", '
          'color="#555555"];\n'
          '  edge [arrowsize=0.6, penwidth=1.1];\n')


def dense_block_dot(layers: int, growth: int, k0: int) -> str:
    """DOT text of a dense block: input x0, layers H1..HL, concatenated output; every node feeds
    every later one. Edges: L(L+1)/2 among input and layers, plus L+1 into the output.

    Drawn as a row: neighbours are joined by straight arrows, longer connections arc above
    (from even nodes) or below (from odd nodes) so that they stay readable."""
    layers, growth, k0 = int(layers), int(growth), int(k0)
    if layers < 1 or growth < 1 or k0 < 1:
        raise ValueError("layers, growth rate and input channels must be positive")
    ins = dense_layer_inputs(layers, growth, k0)
    lines = ["digraph dense_block {", _GRAPH]
    lines.append(f'  x0 [label="input x0\\n{k0} ch", fillcolor="#e8eef7"];')
    for l in range(1, layers + 1):
        lines.append(f'  h{l} [label="H{l}\\n{ins[l - 1]} → {growth}", fillcolor="#fde9d0"];')
    total = k0 + layers * growth
    lines.append(f'  out [label="concat\\n{total} ch", fillcolor="#dff1df"];')
    nodes = ["x0"] + [f"h{l}" for l in range(1, layers + 1)] + ["out"]
    for i, src in enumerate(nodes[:-1]):
        colour = _PALETTE[i % len(_PALETTE)]
        side = "n" if i % 2 == 0 else "s"
        for j in range(i + 1, len(nodes)):
            dst = nodes[j]
            if j == i + 1:  # heavy: keeps the nodes in one straight row
                lines.append(f'  {src} -> {dst} [color="{colour}", weight=100, penwidth=1.6];')
            else:
                lines.append(f'  {src}:{side} -> {dst}:{side} [color="{colour}"];')
    lines.append("}")
    return "\n".join(lines)


def chain_dot(layers: int, width: int, residual: bool = False, growth: int | None = None) -> str:
    """DOT text of a chain of the same depth. Plain: each layer sees only the previous output
    (k channels after the first layer when `growth` is given). Residual: after each layer a (+)
    node adds the layer's input back, through a dashed identity arc; the width stays `width`."""
    layers, width = int(layers), int(width)
    name = "residual_chain" if residual else "plain_chain"
    lines = [f"digraph {name} {{", _GRAPH]
    lines.append(f'  x0 [label="input x0\\n{width} ch", fillcolor="#e8eef7"];')
    for l in range(1, layers + 1):
        if residual or not growth:
            cin = cout = width
        else:
            cin, cout = (width if l == 1 else growth), growth
        lines.append(f'  h{l} [label="H{l}\\n{cin} → {cout}", fillcolor="#fde9d0"];')
    out_ch = width if residual or not growth else growth
    lines.append(f'  out [label="output\\n{out_ch} ch", fillcolor="#dff1df"];')
    if not residual:
        nodes = ["x0"] + [f"h{l}" for l in range(1, layers + 1)] + ["out"]
        for a, b in zip(nodes, nodes[1:]):
            lines.append(f"  {a} -> {b} [weight=100, penwidth=1.6];")
    else:
        for l in range(1, layers + 1):
            lines.append(f'  p{l} [label="+", shape=circle, width=0.25, fixedsize=true, fontsize=13, '
                         f'style=filled, fillcolor="#fbe3e3", color="#d62728"];')
        before = "x0"
        for l in range(1, layers + 1):
            lines.append(f"  {before} -> h{l} [weight=100, penwidth=1.6];")
            lines.append(f"  h{l} -> p{l} [weight=100, penwidth=1.6];")
            lines.append(f'  {before}:n -> p{l}:n [style=dashed, color="#d62728", '
                         f'tooltip="identity: the input of H{l} is added to its output"];')
            before = f"p{l}"
        lines.append(f"  {before} -> out [weight=100, penwidth=1.6];")
    lines.append("}")
    return "\n".join(lines)


def count_edges(dot: str) -> int:
    return sum(1 for line in dot.splitlines() if "->" in line)


# ----------------------------------------------------------------------------- section 3: inside


def _viridis(values: np.ndarray) -> np.ndarray:
    """A viridis-like colour map (dark purple -> blue -> green -> yellow), uint8 RGB."""
    anchors = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float32)
    v = np.clip(values, 0.0, 1.0) * (len(anchors) - 1)
    lo = np.floor(v).astype(int).clip(0, len(anchors) - 2)
    t = (v - lo)[..., None]
    return ((1 - t) * anchors[lo] + t * anchors[lo + 1]).astype(np.uint8)


def feature_grid(activation: np.ndarray, channels: Iterable[int], columns: int = 4, tile: int = 64,
                 gap: int = 2) -> np.ndarray:
    """Tile the chosen channels of a CxHxW activation, each min-max scaled, into one RGB image."""
    channels = list(channels)
    h, w = activation.shape[1:]
    scale = max(1, round(tile / h))
    th, tw = h * scale, w * scale
    rows = math.ceil(len(channels) / columns)
    grid = np.full((rows * th + (rows - 1) * gap, columns * tw + (columns - 1) * gap, 3), 255, np.uint8)
    for i, c in enumerate(channels):
        m, _ = normalize_cam(activation[c])
        img = np.kron(_viridis(m), np.ones((scale, scale, 1), np.uint8))  # nearest: show the real grid
        r, col = divmod(i, columns)
        grid[r * (th + gap): r * (th + gap) + th, col * (tw + gap): col * (tw + gap) + tw] = img
    return grid


def top_channels(activation: np.ndarray, n: int = 16) -> list[int]:
    """The n channels with the highest mean positive activation (what a ReLU would pass on)."""
    score = np.maximum(activation, 0).mean(axis=(1, 2))
    return [int(i) for i in np.argsort(-score, kind="stable")[:n]]


def heat_area(heatmap: np.ndarray, mass: float = 0.5) -> float:
    """Smallest fraction of the image that holds `mass` of the heatmap's total heat."""
    flat = np.sort(np.asarray(heatmap, np.float64).ravel())[::-1]
    total = flat.sum()
    if total <= 0:
        return 1.0
    k = int(np.searchsorted(np.cumsum(flat), mass * total)) + 1
    return min(k, flat.size) / flat.size


def _upsample(heat: np.ndarray, size: int) -> np.ndarray:
    if heat.shape == (size, size):
        return heat.astype(np.float32)
    img = Image.fromarray(heat.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR)
    return np.clip(np.asarray(img, np.float32), 0.0, 1.0)


@dataclass
class BlockView:
    name: str
    channels: int
    height: int
    width: int
    top: list[int]  # channels shown, most active first
    top_means: list[float]
    grid: np.ndarray  # RGB uint8 tiles of the top channels
    cam: np.ndarray | None = None  # HxW 0..1 at the block's own resolution
    cam_flat: bool = True
    heatmap: np.ndarray | None = None  # cam upsampled to the model's input size
    overlay: np.ndarray | None = None  # photo with heatmap, RGB uint8

    @property
    def cam_area(self) -> float | None:
        return None if self.heatmap is None or self.cam_flat else heat_area(self.heatmap)


@dataclass
class InsideView:
    model: str
    trained: bool
    image: np.ndarray  # what the model saw, HxWx3 uint8
    prediction: Prediction | None
    blocks: list[BlockView] = field(default_factory=list)


def _cut_graph(module, inputs, output):
    """Forward hook: the first block's output becomes a leaf that requires grad, so autograd
    records only what lies between the target layers and the logits."""
    return output.detach().requires_grad_(True)


def _per_layer_gradcam():
    from pytorch_grad_cam import GradCAM

    class PerLayerGradCAM(GradCAM):
        """GradCAM that returns one map per target layer, each at that layer's own resolution."""

        def get_target_width_height(self, input_tensor):
            return None  # scale_cam_image then only min-max scales

        def aggregate_multi_layers(self, cam_per_target_layer):
            return [c[:, 0] for c in cam_per_target_layer]

    return PerLayerGradCAM


def _prepare(classifier: Any, image: Any) -> tuple[np.ndarray, torch.Tensor]:
    x = classifier.prepare(image)
    return x, classifier._tensor(x[None])


def look_inside(classifier: Any, image: Any, top: int = 16, cams: bool = True) -> InsideView:
    """Feature maps after every dense block and (if `cams`) Grad-CAM at each block's output,
    all from ONE forward pass (plus one backward pass for the CAMs)."""
    from .torch_classifier import _LogOddsTarget

    x_img, x = _prepare(classifier, image)
    model = classifier.model
    blocks = block_modules(model)
    names = list(blocks)
    acts: dict[str, torch.Tensor] = {}
    prediction = None
    raw_cams: list[np.ndarray] = []
    with classifier.lock:
        if cams:
            cut = blocks[names[0]].register_forward_hook(_cut_graph)  # before GradCAM's hooks
            cam = _per_layer_gradcam()(model=model, target_layers=list(blocks.values()))
            try:
                target = _LogOddsTarget(classifier.threshold, classifier.temperature)
                with torch.enable_grad():
                    raw_cams = [c[0] for c in cam(input_tensor=x, targets=[target])]
                logits = cam.outputs.detach().float().cpu().numpy()[0]
                for n, a in zip(names, cam.activations_and_grads.activations):
                    acts[n] = a[0]
            finally:
                cam.activations_and_grads.release()
                cut.remove()
            prediction = classifier._prediction(logits)
        else:
            handles = [m.register_forward_hook(lambda mod, i, o, n=n: acts.__setitem__(n, o[0].detach()))
                       for n, m in blocks.items()]
            try:
                with torch.inference_mode():
                    logits = model(x).float().cpu().numpy()[0]
            finally:
                for h in handles:
                    h.remove()
            prediction = classifier._prediction(logits)
    views = []
    size = x_img.shape[0]
    for i, n in enumerate(names):
        a = acts[n].float().cpu().numpy()
        chosen = top_channels(a, top)
        means = np.maximum(a, 0).mean(axis=(1, 2))
        v = BlockView(name=n, channels=a.shape[0], height=a.shape[1], width=a.shape[2], top=chosen,
                      top_means=[float(means[c]) for c in chosen], grid=feature_grid(a, chosen))
        if cams:
            heat, flat = normalize_cam(raw_cams[i])
            v.cam, v.cam_flat = heat, flat
            v.heatmap = _upsample(heat, size)
            v.overlay = np.asarray(overlay_image(x_img, v.heatmap, flat=flat))
        views.append(v)
    return InsideView(model=classifier.name, trained=bool(classifier.trained), image=x_img,
                      prediction=prediction, blocks=views)


def block_feature_maps(classifier: Any, image: Any, top: int = 16) -> list[BlockView]:
    """Feature maps after each dense block, from one forward pass with hooks (no gradients)."""
    return look_inside(classifier, image, top=top, cams=False).blocks


def blockwise_cams(classifier: Any, image: Any) -> list[BlockView]:
    """Grad-CAM at every dense block's output (features.denseblock1..N), one forward + one backward."""
    return look_inside(classifier, image, cams=True).blocks


def depth_sentence(view: InsideView) -> str:
    """What changes from the first dense block to the last, in numbers from this photo."""
    a, b = view.blocks[0], view.blocks[-1]
    text = (f"From {a.name} to {b.name} the grid shrinks from {a.height}×{a.width} to {b.height}×{b.width} "
            f"positions while the channels grow from {a.channels} to {b.channels}: early blocks keep fine "
            f"detail (edges, colour, texture) at many positions, late blocks describe larger regions with many "
            f"more features, which is what the classifier reads.")
    if a.cam_area is not None and b.cam_area is not None:
        text += (f" Half of the Grad-CAM heat covers {a.cam_area:.0%} of the photo at {a.name} "
                 f"and {b.cam_area:.0%} at {b.name}.")
    return text


# ----------------------------------------------------------------------------- section 4: quiz


def quiz_questions(model: Any, image_size: int = 224, table: list[dict[str, Any]] | None = None
                   ) -> list[dict[str, Any]]:
    """Questions whose answers are read from the model: key, question, answer (int), explanation."""
    blocks = dense_blocks(model)
    trans = transitions(model)
    table = table if table is not None else dense_block_table(model, image_size)
    qs = []
    b3 = blocks[2] if len(blocks) >= 3 else blocks[-1]
    last_in = b3.layer_inputs[-1]
    qs.append({
        "key": "last_layer_inputs",
        "question": f"How many input channels does the last layer of dense block {b3.index} receive?",
        "answer": last_in,
        "explanation": (f"{b3.channels_in} channels enter block {b3.index}; each of the {b3.layers - 1} layers "
                        f"before the last adds k = {b3.growth}: {b3.channels_in} + {b3.layers - 1}·{b3.growth} "
                        f"= {last_in} (read from that layer's norm1.num_features)."),
    })
    t = trans[1] if len(trans) >= 2 else trans[0]
    qs.append({
        "key": "transition_out",
        "question": f"Dense block {t.index} ends with {t.channels_in} channels. How many leave transition {t.index}?",
        "answer": t.channels_out,
        "explanation": (f"The transition's 1×1 convolution compresses {t.channels_in} to {t.channels_out} "
                        f"channels (θ = {t.compression:g}), then a 2×2 average pool halves the grid."),
    })
    b1 = blocks[0]
    qs.append({
        "key": "connections",
        "question": (f"Dense block {b1.index} has {b1.layers} layers. How many direct connections link its input "
                     f"and its layers (layer l receives one from each of the l nodes before it)?"),
        "answer": dense_connections(b1.layers),
        "explanation": (f"1 + 2 + … + {b1.layers} = {b1.layers}·{b1.layers + 1}/2 = "
                        f"{dense_connections(b1.layers)}; a plain chain of the same depth has {b1.layers}."),
    })
    last = [r for r in table if r["kind"] == "dense block"][-1]
    first_block = [r for r in table if r["kind"] == "dense block"][0]
    qs.append({
        "key": "last_block_side",
        "question": (f"For a {image_size}×{image_size} photo, what is the side length of the feature maps "
                     f"after {last['stage']}?"),
        "answer": last["output_hw"][0],
        "explanation": (f"The stem shrinks {image_size} px to {first_block['output_hw'][0]} "
                        f"({first_block['output_size']} after {first_block['stage']}); each transition's "
                        f"pooling halves the side again, giving {last['output_size']} after {last['stage']}."),
    })
    return qs


def check_answer(question: dict[str, Any], value: float | int | None) -> bool:
    return value is not None and int(round(float(value))) == int(question["answer"])
