"""A compact lesion segmenter: which pixels of the photo are the lesion.

A small U-Net (about 110k parameters) at 128 px, trained on the HAM10000 lesion masks with
`python -m training.segment`. Its stem has stride 2, so most of the work happens at 64 px and
below and the mask is upsampled back to 128 px: a lesion outline is a smooth curve, and the
segmenter runs beside every prediction, so it has to cost a few milliseconds.

It sees the same centre crop as the classifiers (`models.preprocess.to_model_size`), so its
mask lies on the classifier's heatmap pixel for pixel once resized to the model's size.
Shipped as `models/weights/segmenter.pt` with its card `segmenter.json`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .fastpath import FastRunner, example_input
from .registry import WEIGHTS_DIR, atomic_write_bytes, write_card

SEGMENTER_SIZE = 128
WIDTHS = (8, 16, 32, 64)


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _up(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class LesionUNet(nn.Module):
    """U-Net: a stride-2 stem, three down stages, a bottleneck, three skip-joined up stages; one
    logit per pixel at the input size."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        w = widths
        self.enc0 = nn.Sequential(_conv_bn_relu(3, w[0], 2), _conv_bn_relu(w[0], w[0]))
        self.enc1 = nn.Sequential(_conv_bn_relu(w[0], w[1]), _conv_bn_relu(w[1], w[1]))
        self.enc2 = nn.Sequential(_conv_bn_relu(w[1], w[2]), _conv_bn_relu(w[2], w[2]))
        self.mid = nn.Sequential(_conv_bn_relu(w[2], w[3]), _conv_bn_relu(w[3], w[3]))
        self.dec2 = _conv_bn_relu(w[3] + w[2], w[2])
        self.dec1 = _conv_bn_relu(w[2] + w[1], w[1])
        self.dec0 = _conv_bn_relu(w[1] + w[0], w[0])
        self.out = nn.Conv2d(w[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e0 = self.enc0(x)
        e1 = self.enc1(F.max_pool2d(e0, 2))
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d = self.dec2(torch.cat([_up(m, e2), e2], 1))
        d = self.dec1(torch.cat([_up(d, e1), e1], 1))
        d = self.dec0(torch.cat([_up(d, e0), e0], 1))
        return _up(self.out(d), x)


def fuse_for_inference(model: LesionUNet) -> LesionUNet:
    """Fold every BatchNorm into its convolution (eval mode): half the ops, same outputs."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = model.eval()
    for mod in model.modules():
        if isinstance(mod, nn.Sequential) and len(mod) == 3 and isinstance(mod[1], nn.BatchNorm2d):
            mod[0] = fuse_conv_bn_eval(mod[0], mod[1])
            mod[1] = nn.Identity()
    return model


def to_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC (numpy or torch) -> float NCHW in [-1, 1]."""
    x = torch.as_tensor(images)
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """A square HxWx3 uint8 (what a classifier saw) -> size x size, area-averaged when shrinking."""
    import cv2

    if image.shape[0] == size and image.shape[1] == size:
        return image
    interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


class Segmenter:
    """The trained U-Net with its card; `probabilities(image)` -> lesion probability per pixel."""

    def __init__(self, model: LesionUNet, card: dict[str, Any]):
        self.model = fuse_for_inference(model)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.card = card
        self.size = int(card.get("image_size", SEGMENTER_SIZE))
        self.threshold = float(card.get("threshold", 0.5))
        self.run = FastRunner(self.model, example_input(3, self.size))  # ONNX Runtime when it is there

    def logits(self, image: np.ndarray) -> np.ndarray:
        """A square HxWx3 uint8 image (any side) -> one logit per pixel, size x size float32."""
        return self.run(to_input(resize_square(np.ascontiguousarray(image), self.size)[None]))[0, 0]

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """A square HxWx3 uint8 image (any side) -> lesion probabilities, size x size float32."""
        return (1.0 / (1.0 + np.exp(-np.clip(self.logits(image), -50, 50)))).astype(np.float32)

    def mask(self, image: np.ndarray) -> np.ndarray:
        """probabilities >= threshold, compared as logits (the sigmoid is monotone)."""
        t = min(max(self.threshold, 1e-7), 1 - 1e-7)
        return self.logits(image) >= np.float32(np.log(t / (1 - t)))


def segmenter_paths(folder: str | os.PathLike | None = None) -> tuple[Path, Path]:
    folder = Path(folder) if folder else WEIGHTS_DIR
    return folder / "segmenter.pt", folder / "segmenter.json"


def save_segmenter(model: LesionUNet, card: dict[str, Any], path: str | os.PathLike) -> Path:
    """State dict in fp16 (half the size; the masks do not change) + card, each written atomically."""
    import io

    path = Path(path)
    state = {k: (v.half() if v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"model": state, "widths": list(card.get("widths", WIDTHS)), "format": 1}, buf)
    atomic_write_bytes(path, buf.getvalue())
    write_card(path.with_suffix(".json"), card)
    return path


def load_segmenter(path: str | os.PathLike | None = None) -> Segmenter | None:
    """The shipped (or given) segmenter, or None when there is none: the checks then skip the
    lesion outline and say so, they never fail a prediction."""
    ckpt = Path(path) if path else segmenter_paths()[0]
    card_file = ckpt.with_suffix(".json")
    if not ckpt.is_file() or not card_file.is_file():
        return None
    obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    card = json.loads(card_file.read_text(encoding="utf-8"))
    model = LesionUNet(tuple(obj.get("widths", WIDTHS)))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in obj["model"].items()})
    return Segmenter(model, card)
