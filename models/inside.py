"""What the dense blocks of a DenseNet see of one photo: the most active feature maps after each
block and Grad-CAM at each block's output, all from one forward pass (plus one backward pass for
the CAMs). The structure itself is `models.anatomy`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch

from .anatomy import block_modules
from .classifier import Prediction, colour_map, normalize_cam, overlay_image, resize_heatmap


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
        img = np.kron(colour_map(m, "viridis"), np.ones((scale, scale, 1), np.uint8))  # nearest: show the real grid
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
    from .torch_classifier import _cut_graph_here, _LogOddsTarget

    x_img, x = _prepare(classifier, image)
    model = classifier.model
    blocks = block_modules(model)
    names = list(blocks)
    acts: dict[str, torch.Tensor] = {}
    prediction = None
    raw_cams: list[np.ndarray] = []
    with classifier.lock:
        if cams:
            # The first block's output becomes a leaf that requires grad (before GradCAM's hooks), so
            # autograd records only what lies between the target layers and the logits.
            cut = blocks[names[0]].register_forward_hook(_cut_graph_here)
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
            v.heatmap = resize_heatmap(heat, size)
            v.overlay = np.asarray(overlay_image(x_img, v.heatmap, flat=flat))
        views.append(v)
    return InsideView(model=classifier.name, trained=bool(classifier.trained), image=x_img,
                      prediction=prediction, blocks=views)
