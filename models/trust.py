"""Every check around one answer, in one call: `assess(classifier, image, method)`.

    a = assess(clf, photo)            # gate, prediction + heatmap, familiarity, quality, outline
    a.lesion_photo                     # False: no verdict, a.message says why
    a.prediction, a.explanation        # None when the gate refused the photo
    a.familiarity.familiar             # False: the answer comes with UNFAMILIAR_WARNING
    a.quality                          # hints on how to retake the photo (never a refusal)
    a.lesion_mask, a.on_lesion_share   # the segmenter's outline and the heatmap's share on it

Order and cost: the gate runs first on the classifier's centre crop (a photo it refuses costs no
classifier forward at all); the prediction, heatmap and embedding come from one forward pass; the
familiarity score is a small matrix product on that embedding; the gate and the segmenter run
side by side on ONNX Runtime (`Checks.photo`; the gate stops after half its network for most lesion
photos, its early exit), and the quality measures add under a millisecond.
The pages and `python -m models.predict` both call this.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .classifier import Classifier, Explanation, Prediction
from .familiarity import UNFAMILIAR_WARNING, Familiarity, FamiliarityResult
from .gate import NOT_A_LESION, Gate, GateResult, load_gate
from .preprocess import ImageSource
from .quality import QUALITY_LIMITS, QualityHint, hints
from .segmenter import Segmenter, load_segmenter

OFF_LESION_SHARE = 0.5  # below: most of the heatmap lies off the lesion
OFF_LESION_WARNING = ("The model's evidence is mostly outside the lesion: its answer may rest on the photo, "
                      "not the lesion")
NOT_A_LESION_MESSAGE = NOT_A_LESION


class Checks:
    """The shared, model-independent parts: the gate and the segmenter (loaded once).
    Either may be missing (not shipped): that check is then skipped, never failed."""

    def __init__(self, gate: Gate | None = None, segmenter: Segmenter | None = None):
        self.gate = gate
        self.segmenter = segmenter
        self._familiarity: dict[int, tuple[dict, Familiarity | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls) -> "Checks":
        return cls(load_gate(), load_segmenter())

    def backends(self) -> list[str | None]:
        """What runs the gate's and the segmenter's networks: "onnxruntime" or "torch" (built on first
        ask), None where there is no such part or it has no runner."""
        out = []
        for part in (getattr(self.gate, "features", None), self.segmenter):
            run = getattr(part, "run", None)
            out.append(run.build() if hasattr(run, "build") else None)
        return out

    def warm(self) -> "Checks":
        """Ready both networks now (an ONNX export and a session each, about a second) rather than on the
        first photo."""
        self.backends()
        return self

    def photo(self, image: np.ndarray, outline_image: np.ndarray | None = None
              ) -> tuple[GateResult | None, np.ndarray | None]:
        """The two per-photo checks, side by side: the gate's verdict on `image` and the segmenter's
        mask of `outline_image` (default: the same crop). Either is None when it is not shipped.

        At batch 1 neither network fills two cores, so when both run on ONNX Runtime (which lets go
        of the GIL) the outline is made on a helper thread while the gate runs here."""
        outline_image = image if outline_image is None else outline_image
        if self.backends() != ["onnxruntime", "onnxruntime"]:  # in turn (a part missing, or on PyTorch)
            return (None if self.gate is None else self.gate.check(image),
                    None if self.segmenter is None else self.segmenter.mask(outline_image))
        pending = _helper().submit(self.segmenter.mask, outline_image)
        try:
            verdict = self.gate.check(image)
        finally:
            mask = pending.result()
        return verdict, mask

    def familiarity(self, clf: Classifier) -> Familiarity | None:
        """The classifier's familiarity model, decoded from its card once per card."""
        with self._lock:
            cached = self._familiarity.get(id(clf))
            if cached is None or cached[0] is not clf.card:
                cached = (clf.card, Familiarity.from_card(clf.card))
                self._familiarity[id(clf)] = cached
            return cached[1]


_DEFAULT: Checks | None = None
_DEFAULT_LOCK = threading.Lock()
_HELPER: ThreadPoolExecutor | None = None


def _helper() -> ThreadPoolExecutor:
    global _HELPER
    with _DEFAULT_LOCK:
        if _HELPER is None:
            _HELPER = ThreadPoolExecutor(1, thread_name_prefix="lesion-outline")
        return _HELPER


def default_checks() -> Checks:
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Checks.load()
        return _DEFAULT


@dataclass
class Assessment:
    model: str
    lesion_photo: bool
    gate: GateResult | None = None
    prediction: Prediction | None = None
    explanation: Explanation | None = None
    familiarity: FamiliarityResult | None = None
    quality: list[QualityHint] = field(default_factory=list)
    lesion_mask: np.ndarray | None = None  # bool, at the model's input size, aligned with the heatmap
    on_lesion_share: float | None = None  # share of the heatmap's mass inside the lesion mask
    image: np.ndarray | None = None  # what the model saw

    @property
    def verdict(self) -> bool:
        return self.lesion_photo and self.prediction is not None

    @property
    def unfamiliar(self) -> bool:
        return self.familiarity is not None and not self.familiarity.familiar

    @property
    def evidence_off_lesion(self) -> bool:
        return self.on_lesion_share is not None and self.on_lesion_share < OFF_LESION_SHARE

    def warnings(self) -> list[str]:
        """Plain sentences to show next to the answer."""
        if not self.lesion_photo:
            return [NOT_A_LESION_MESSAGE]
        out = []
        if self.unfamiliar:
            out.append(UNFAMILIAR_WARNING)
        if self.evidence_off_lesion:
            out.append(OFF_LESION_WARNING)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The CLI's JSON (without `file`): no probability when the gate refused the photo."""
        out: dict[str, Any] = {"model": self.model, "lesion_photo": self.lesion_photo}
        if self.gate is not None:
            out.update({k: v for k, v in self.gate.to_dict().items() if k != "lesion_photo"})
        if not self.lesion_photo:
            out["message"] = NOT_A_LESION_MESSAGE
            return out
        if self.prediction is not None:
            out.update(self.prediction.to_dict())
        if self.familiarity is not None:
            out.update(self.familiarity.to_dict())
        else:
            out.update({"familiarity": None, "familiar": None})
        out["quality"] = [h.to_dict() for h in self.quality]
        out["on_lesion_share"] = None if self.on_lesion_share is None else round(self.on_lesion_share, 4)
        out["warnings"] = self.warnings()
        return out

    def outline_overlay(self, size: int | None = None, alpha: float = 0.45,
                        colour: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
        """The heatmap overlay (or the photo) with the lesion's outline drawn on it."""
        if self.explanation is not None:
            base = self.explanation.overlay(alpha, size=size)
        else:
            base = Image.fromarray(self.image)
            if size and size != base.size[0]:
                base = base.resize((size, size), Image.BILINEAR)
        if self.lesion_mask is None:
            return base
        return draw_outline(base, self.lesion_mask, colour)


def draw_outline(image: Image.Image, mask: np.ndarray, colour=(255, 255, 255)) -> Image.Image:
    """The mask's contours, 2 px wide at 224 px, drawn over `image` (any size)."""
    import cv2

    w, h = image.size
    m = cv2.resize(np.asarray(mask, np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    arr = np.array(image.convert("RGB"))
    cv2.drawContours(arr, contours, -1, tuple(int(c) for c in colour), max(1, round(2 * w / 224)))
    return Image.fromarray(arr)


def mask_at(mask: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if mask.shape[0] == size:
        return mask.astype(bool)
    return cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)


def on_lesion_share(heatmap: np.ndarray, mask: np.ndarray) -> float | None:
    """Share of the heatmap's mass inside the mask (both at the model's input size); None when the
    segmenter found no lesion (the quality check's no-lesion area) or the heatmap is empty."""
    total = float(heatmap.sum())
    if total <= 0 or mask.mean() < QUALITY_LIMITS["no_lesion_area"]:
        return None
    return float(heatmap[mask].sum() / total)


def assess(clf: Classifier, image: ImageSource | np.ndarray, method: str | None = "default",
           threshold: float | None = None, checks: Checks | None = None, gate: GateResult | None = None,
           explanation: Explanation | None = None, lesion_mask: np.ndarray | None = None) -> Assessment:
    """Gate, then prediction (+ heatmap when `method`), familiarity, quality and lesion outline.

    `method`: the heatmap method, "default" for the model's own, None for no heatmap;
    `gate`: a verdict already made for this photo (a page asks once per photo, whatever the model);
    `explanation`: this classifier's explanation of the photo, already computed (its embedding is used);
    `lesion_mask`: the segmenter's mask of this photo's centre crop (any size), already made (a page makes
    it once per photo, like the gate's verdict)."""
    checks = checks or default_checks()
    if method == "default":
        method = clf.default_cam
    x = clf.prepare(image)
    if gate is None and checks.gate is not None:
        if lesion_mask is None and checks.segmenter is not None:
            gate, lesion_mask = checks.photo(x)  # side by side; a refused photo's mask goes unused
        else:
            gate = checks.gate.check(x)
    if gate is not None and not gate.lesion_photo:
        return Assessment(clf.name, False, gate=gate, image=x)
    expl = explanation
    if expl is None and method:
        expl = clf.explain(x, method, threshold=threshold)
    if expl is not None:
        pred, emb = expl.prediction, expl.embedding
    else:
        pred, emb = clf.predict_embed(x, threshold=threshold)
    fam_model = checks.familiarity(clf)
    fam = fam_model.score(emb) if fam_model is not None and emb is not None else None
    mask = None
    share = None
    if lesion_mask is not None or checks.segmenter is not None:
        mask = mask_at(checks.segmenter.mask(x) if lesion_mask is None else lesion_mask, x.shape[0])
        if expl is not None and not expl.flat:
            share = on_lesion_share(expl.heatmap, mask)
    return Assessment(clf.name, True, gate=gate, prediction=pred, explanation=expl, familiarity=fam,
                      quality=hints(x, mask), lesion_mask=mask, on_lesion_share=share, image=x)
