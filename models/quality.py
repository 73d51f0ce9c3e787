"""Photo quality: short, specific hints on how to retake a photo. Never a refusal.

Measured on the centre crop the classifier sees (HxWx3 uint8):
- blur: variance of the Laplacian of the grey image at 112 px (HAM10000 photos are 150 px high:
  measured finer, every one of them would read as blurred);
- exposure: brightness of the middle of the frame (a dermatoscope's dark rim is not
  under-exposure) and the share of clipped highlights;
- framing, from the segmenter's mask: a lesion too small in the frame, one cut off at the edge,
  or no distinct lesion in view.

The limits were set on the training photos (Kaggle + HAM10000 train images): each hint fires on
a small share of them (numbers in QUALITY_LIMITS' comments), so an ordinary dermoscopy photo
gets no hint and a blurred, dark, blown-out or badly framed one does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

WORK_SIZE = 112

QUALITY_LIMITS = {
    "blur_laplacian_var": 10.0,  # at 112 px, below: blurred (HAM10000 ~0.5 %, Kaggle < 0.5 % of photos)
    "dark_median": 45.0,  # median brightness of the middle below this: under-exposed
    "bright_median": 235.0,  # above: over-exposed
    "clipped_share": 0.20,  # share of the middle at >= 250 in every channel: blown highlights
    "small_lesion_area": 0.02,  # lesion covers less of the frame: too small (Kaggle train ~1 %)
    "edge_contact": 0.30,  # share of the frame's border the lesion touches: cut off (training photos 4-7 %)
    "no_lesion_area": 0.003,  # below this the segmenter found no lesion
}

HINTS = {
    "blurred": "The photo is blurred: hold the camera still, let it focus on the lesion (tap it on a phone), "
               "and retake it.",
    "under_exposed": "The photo is too dark: add light (daylight or the dermatoscope's light) and retake it.",
    "over_exposed": "The photo is over-exposed: part of it is blown out to white. Avoid direct flash and "
                    "reflections, or lower the exposure, and retake it.",
    "lesion_too_small": "The lesion is small in the frame: move closer (or zoom) so it fills about a third "
                        "of the photo, centred.",
    "lesion_cut_off": "The lesion is cut off at the edge of the photo: centre it and keep a margin of skin "
                      "all around it.",
    "no_lesion_found": "No distinct lesion was found in the middle of the photo: centre the lesion in the frame.",
}


@dataclass
class QualityHint:
    code: str
    message: str
    value: float

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "value": round(float(self.value), 4)}


def _grey(image: np.ndarray) -> np.ndarray:
    import cv2

    img = np.ascontiguousarray(image)
    if img.shape[0] != WORK_SIZE:
        interp = cv2.INTER_AREA if img.shape[0] > WORK_SIZE else cv2.INTER_LINEAR
        img = cv2.resize(img, (WORK_SIZE, WORK_SIZE), interpolation=interp)
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), img


_MIDDLE: dict[int, np.ndarray] = {}


def _middle(size: int) -> np.ndarray:
    """The disc of radius 0.35 x side at the centre: inside any dermatoscope's rim."""
    if size not in _MIDDLE:
        yy, xx = np.mgrid[:size, :size]
        c = (size - 1) / 2
        _MIDDLE[size] = (xx - c) ** 2 + (yy - c) ** 2 <= (0.35 * size) ** 2
    return _MIDDLE[size]


def measure(image: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """The raw numbers behind the hints."""
    import cv2

    grey, rgb = _grey(image)
    mid = _middle(WORK_SIZE)
    out = {"blur_laplacian_var": float(cv2.Laplacian(grey, cv2.CV_32F).var()),
           "middle_median": float(np.median(grey[mid])),
           # every channel >= 250 (cv2.inRange: a tenth of numpy's time on a 3-channel mask)
           "clipped_share": float(np.count_nonzero(cv2.inRange(rgb, (250,) * 3, (255,) * 3)[mid]) / mid.sum())}
    if mask is not None:
        m = np.asarray(mask, bool)
        border = np.concatenate([m[0], m[-1], m[:, 0], m[:, -1]])
        out["lesion_area"] = float(m.mean())
        out["edge_contact"] = float(border.mean())
    return out


def hints(image: np.ndarray, mask: np.ndarray | None = None,
          limits: dict[str, float] = QUALITY_LIMITS) -> list[QualityHint]:
    """What to fix before retaking the photo (empty when nothing)."""
    m = measure(image, mask)
    out: list[QualityHint] = []

    def add(code, value):
        out.append(QualityHint(code, HINTS[code], value))

    if m["blur_laplacian_var"] < limits["blur_laplacian_var"]:
        add("blurred", m["blur_laplacian_var"])
    if m["middle_median"] < limits["dark_median"]:
        add("under_exposed", m["middle_median"])
    elif m["middle_median"] > limits["bright_median"] or m["clipped_share"] > limits["clipped_share"]:
        add("over_exposed", max(m["clipped_share"], m["middle_median"] / 255))
    if mask is not None:
        if m["lesion_area"] < limits["no_lesion_area"]:
            add("no_lesion_found", m["lesion_area"])
        elif m["lesion_area"] < limits["small_lesion_area"]:
            add("lesion_too_small", m["lesion_area"])
        if m["edge_contact"] > limits["edge_contact"] and m["lesion_area"] < 0.85:
            add("lesion_cut_off", m["edge_contact"])
    return out
