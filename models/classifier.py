"""One interface for every model: predict, explain, embed, card.

A `Classifier` is shared by all users of the app (Streamlit threads), so every call takes
the instance's lock: CAM objects keep per-call state in hooks, and one lock makes eight
concurrent calls return exactly what eight sequential ones would.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .preprocess import ImageSource, load_image, to_model_size

# Below this spread a CAM carries no spatial information and is reported as flat.
FLAT_EPS = 1e-6


@dataclass
class Prediction:
    model: str
    prob_malignant: float
    label: str
    threshold: float
    logits: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "prob_malignant": self.prob_malignant, "label": self.label,
                "threshold": self.threshold}


@dataclass
class Explanation:
    prediction: Prediction
    method: str
    heatmap: np.ndarray  # HxW float32 in [0, 1], at model input size
    flat: bool  # True when the raw map had no spatial variation: nothing to show
    image: np.ndarray  # HxWx3 uint8, what the model saw
    embedding: np.ndarray | None = None  # penultimate features of the same forward pass

    def overlay(self, alpha: float = 0.45, size: int | None = None) -> Image.Image:
        return overlay_image(self.image, self.heatmap, alpha=alpha, flat=self.flat, size=size)


def label_at(prob: float, threshold: float, classes=("benign", "malignant")) -> str:
    """The decision rule: malignant when the probability is at least the threshold."""
    return classes[int(prob >= threshold)]


def resize_heatmap(heatmap: np.ndarray, size: int) -> np.ndarray:
    """A [0, 1] heatmap resized (bilinear) to size x size, still in [0, 1]."""
    if heatmap.shape == (size, size):
        return heatmap.astype(np.float32)
    img = Image.fromarray(heatmap.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR)
    return np.clip(np.asarray(img, np.float32), 0.0, 1.0)


def colour_map(values: np.ndarray, name: str = "jet") -> np.ndarray:
    """HxW values in [0, 1] -> HxWx3 uint8 RGB through OpenCV's colour map `name`: "jet" is the map
    pytorch-grad-cam draws its heatmaps with (0 blue, 1 red), "viridis" the feature maps' one."""
    import cv2  # OpenCV comes with pytorch-grad-cam; imported when a first map is drawn

    code = {"jet": cv2.COLORMAP_JET, "viridis": cv2.COLORMAP_VIRIDIS}[name]
    v = np.uint8(255 * np.clip(np.asarray(values, np.float32), 0.0, 1.0))
    return cv2.cvtColor(cv2.applyColorMap(v, code), cv2.COLOR_BGR2RGB)


def heatmap_image(heatmap: np.ndarray) -> Image.Image:
    return Image.fromarray(colour_map(heatmap))


def overlay_image(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45, flat: bool = False,
                  size: int | None = None) -> Image.Image:
    """Blend the colour-mapped heatmap over the image; a flat map leaves the image as is.

    Not pytorch-grad-cam's show_cam_on_image: that one divides the blend by its maximum, which
    brightens every photo whose blend stays below white (most), so the photo would not look like
    itself at any opacity, and it has no notion of a flat map."""
    base = image.astype(np.float32)
    if not flat:
        base = (1.0 - alpha) * base + alpha * colour_map(heatmap).astype(np.float32)
    img = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    if size and size != img.size[0]:
        img = img.resize((size, size), Image.BILINEAR)
    return img


def normalize_cam(raw: np.ndarray) -> tuple[np.ndarray, bool]:
    """Min-max a raw CAM into [0, 1]; flat (or non-finite) maps become zeros and flat=True."""
    raw = np.nan_to_num(raw.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(raw.min()), float(raw.max())
    if hi - lo <= FLAT_EPS * max(1.0, abs(hi)):
        return np.zeros_like(raw, dtype=np.float32), True
    return (raw - lo) / (hi - lo), False


def softmax_np(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / max(float(temperature), 1e-6)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# The eight symmetries of the square: rotations by 90° with and without a flip. A lesion
# photo has no "up", so each is an equally valid view for test-time augmentation.
def dihedral(image: np.ndarray) -> list[np.ndarray]:
    views = []
    for flip in (False, True):
        base = image[:, ::-1] if flip else image
        for k in range(4):
            views.append(np.ascontiguousarray(np.rot90(base, k)))
    return views


def dihedral_views(images: np.ndarray) -> np.ndarray:
    """uint8 NxHxWx3 -> (N*8)xHxWx3: each image's 8 dihedral views in turn (view 0 is the image)."""
    return np.stack([v for img in images for v in dihedral(img)])


class Classifier:
    """Base class: subclasses implement `_logits`, `_embed` and `_explain` on uint8 batches."""

    name: str
    card: dict[str, Any]
    cam_methods: tuple[str, ...] = ("gradcam",)

    def __init__(self, card: dict[str, Any]):
        self.card = card
        self.name = card["name"]
        self.lock = threading.RLock()

    # --- properties from the card ---
    @property
    def image_size(self) -> int:
        return int(self.card["image_size"])

    @property
    def threshold(self) -> float:
        return float(self.card.get("threshold", 0.5))

    @property
    def temperature(self) -> float:
        return float(self.card.get("temperature", 1.0) or 1.0)

    @property
    def default_cam(self) -> str:
        """The heatmap method used when none is named."""
        return self.cam_methods[0]

    @property
    def trained(self) -> bool:
        return bool(self.card.get("epochs"))

    def prepare(self, image: ImageSource | np.ndarray) -> np.ndarray:
        """Any accepted input -> HxWx3 uint8 at the model's size."""
        if isinstance(image, np.ndarray):
            if image.shape == (self.image_size, self.image_size, 3) and image.dtype == np.uint8:
                return image
            image = Image.fromarray(np.asarray(image, dtype=np.uint8))
        if not isinstance(image, Image.Image) or image.mode != "RGB":
            image = load_image(image)
        return to_model_size(image, self.image_size)

    def _prediction(self, logits: np.ndarray, threshold: float | None = None) -> Prediction:
        thr = self.threshold if threshold is None else float(threshold)
        p = float(softmax_np(logits, self.temperature)[1])
        return Prediction(self.name, p, label_at(p, thr, self.card["classes"]), thr, [float(v) for v in logits])

    # --- public interface ---
    def predict(self, image: ImageSource | np.ndarray, threshold: float | None = None) -> Prediction:
        x = self.prepare(image)
        with self.lock:
            logits = self._logits(x[None])[0]
        return self._prediction(logits, threshold)

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """uint8 NxHxWx3 at model size -> calibrated probabilities of malignant (N,)."""
        with self.lock:
            logits = self._logits(images)
        return softmax_np(logits, self.temperature)[:, 1]

    def predict_views(self, images: np.ndarray) -> np.ndarray:
        """Test-time augmentation: P(malignant) of each of the 8 dihedral views of each uint8
        NxHxWx3 image at model size, (N, 8); their mean is the image's TTA probability."""
        return self.predict_batch(dihedral_views(images)).reshape(len(images), 8)

    def predict_tta(self, image: ImageSource | np.ndarray, threshold: float | None = None) -> tuple[Prediction, np.ndarray]:
        """Mean prediction over the 8 dihedral views, and the 8 probabilities (their spread)."""
        probs = self.predict_views(self.prepare(image)[None])[0]
        thr = self.threshold if threshold is None else float(threshold)
        p = float(probs.mean())
        return Prediction(self.name, p, label_at(p, thr, self.card["classes"]), thr), probs

    def explain(self, image: ImageSource | np.ndarray, method: str | None = None,
                threshold: float | None = None) -> Explanation:
        method = method or self.default_cam
        if method not in self.cam_methods:
            raise ValueError(f"{self.name} supports CAM methods {', '.join(self.cam_methods)}, not {method!r}")
        thr = self.threshold if threshold is None else float(threshold)
        x = self.prepare(image)
        with self.lock:  # the heatmap explains the label at `thr`, the one the prediction carries
            logits, raw, emb = self._explain_embed(x[None], method, thr)
        heatmap, flat = normalize_cam(raw)
        return Explanation(self._prediction(logits, thr), method, heatmap, flat, x,
                           np.asarray(emb, dtype=np.float32))

    def embed(self, image: ImageSource | np.ndarray) -> np.ndarray:
        x = self.prepare(image)
        with self.lock:
            return np.asarray(self._embed(x[None])[0], dtype=np.float32)

    def predict_embed(self, image: ImageSource | np.ndarray,
                      threshold: float | None = None) -> tuple[Prediction, np.ndarray]:
        """The prediction and the embedding of the same forward pass."""
        x = self.prepare(image)
        with self.lock:
            logits, emb = self._logits_embed(x[None])
        return self._prediction(logits[0], threshold), np.asarray(emb[0], dtype=np.float32)

    def logits_embed_batch(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 NxHxWx3 at model size -> (logits (N, 2), embeddings (N, D)) from one forward pass."""
        with self.lock:
            return self._logits_embed(images)

    # --- for subclasses ---
    def _logits(self, batch: np.ndarray) -> np.ndarray:  # uint8 NHWC -> (N, 2)
        raise NotImplementedError

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _explain(self, batch: np.ndarray, method: str, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """uint8 1xHxWx3 -> (logits (2,), raw CAM HxW at input size, unnormalised): the evidence for
        the label at `threshold` (default: the card's)."""
        raise NotImplementedError

    # Subclasses override these two to share one forward pass; the defaults take two.
    def _logits_embed(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._logits(batch), self._embed(batch)

    def _explain_embed(self, batch: np.ndarray, method: str, threshold: float | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 1xHxWx3 -> (logits (2,), raw CAM, embedding (D,))."""
        logits, raw = self._explain(batch, method, threshold)
        return logits, raw, self._embed(batch)[0]
