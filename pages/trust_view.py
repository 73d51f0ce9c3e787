"""What the checks of `models.trust` say, shown next to an answer on every page that predicts.

- the gate, once per photo whatever the model: a photo that is not a skin lesion gets the gate's
  sentence and no percentage (the lesion's outline, too, is made once per photo);
- familiarity, per model: an unfamiliar photo gets its answer with a plain warning;
- photo quality: short hints on how to retake the photo;
- the lesion outline over the heatmap, and the share of the heatmap that lies on the lesion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import streamlit as st
from PIL import Image

from models.familiarity import UNFAMILIAR_WARNING, Familiarity
from models.preprocess import load_image, to_model_size
from pages import classifiers, common, photos

if TYPE_CHECKING:  # models.trust and models.gate import torch: not before the first page is up
    from models.gate import GateResult
    from models.trust import Assessment, Checks

# The gate's sentence, models.gate.NOT_A_LESION (tests/test_issue15_start.py checks they agree).
NOT_A_LESION_MESSAGE = "This does not look like a photo of a skin lesion"

GATE_VIEW = 224  # the crop size the gate was fitted on


@st.cache_resource(show_spinner=False)
def checks() -> Checks:
    from models.trust import Checks

    return Checks.load()


def photo_checks(photo) -> tuple[GateResult | None, np.ndarray | None]:
    """The gate's verdict and the segmenter's mask of the photo's centre crop, made side by side
    (`Checks.photo`) once per photo and session, whatever the model; either is None when not shipped.
    The outline reads the display crop the page decodes anyway (`photos.display_crop`)."""
    c = checks()
    return common.memo(("photo_checks", photo.digest),
                       lambda: c.photo(to_model_size(load_image(photo.data), GATE_VIEW), photos.display_crop(photo)))


def gate(photo) -> GateResult | None:
    """The gate's verdict on a photo (None when no gate is shipped)."""
    return photo_checks(photo)[0]


def lesion_mask(photo) -> np.ndarray | None:
    """The segmenter's mask of the photo's centre crop (None without a segmenter)."""
    return photo_checks(photo)[1]


def refused(photo) -> bool:
    g = gate(photo)
    return g is not None and not g.lesion_photo


def show_refusal(name: str | None = None) -> None:
    st.warning(f"**{NOT_A_LESION_MESSAGE}.** No verdict is given: the models only know close-ups of skin "
               "lesions, and any percentage for this photo would mean nothing. Upload a close-up of one lesion.",
               icon=":material/hide_image:")


def assessment(clf, photo, method: str, explanation=None) -> Assessment:
    """All checks for `clf` on `photo` (reusing `explanation` when the page has it), once per session."""
    from models.trust import assess

    return common.memo(("assess", classifiers.model_key(clf), photo.digest, method),
                       lambda: assess(clf, photo.data, method, checks=checks(), gate=gate(photo),
                                      explanation=explanation, lesion_mask=lesion_mask(photo)))


def show_unfamiliar(a: Assessment) -> None:
    if a.unfamiliar:
        st.warning(f"{UNFAMILIAR_WARNING}. (Familiarity {a.familiarity.familiarity:.0%}: the share of its "
                   "validation photos that looked less like its training photos than this one.)",
                   icon=":material/help:")


def show_quality(a: Assessment) -> None:
    if a.quality:
        st.info("**How to take a better photo:**\n" + "\n".join(f"- {h.message}" for h in a.quality),
                icon=":material/photo_camera:")


def outline(image: Image.Image | np.ndarray, a: Assessment) -> Image.Image:
    """`image` (any size) with the lesion's outline drawn in white; unchanged without a mask."""
    from models.trust import draw_outline

    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    if not has_outline(a):
        return img
    return draw_outline(img, a.lesion_mask)


def has_outline(a: Assessment) -> bool:
    """Whether `outline` draws the lesion's outline for this assessment (a mask holding a lesion)."""
    return a.lesion_mask is not None and bool(a.lesion_mask.any())


def show_on_lesion(a: Assessment, heatmap: np.ndarray) -> None:
    """The share of this heatmap on the lesion, and the warning when most of it lies outside."""
    from models.trust import OFF_LESION_SHARE, OFF_LESION_WARNING, on_lesion_share

    if a.lesion_mask is None:
        return
    share = on_lesion_share(heatmap, a.lesion_mask)
    if share is None:
        st.caption("No lesion outline could be drawn for this photo, so the heatmap's share on the lesion is unknown.")
        return
    st.markdown(f"**{share:.0%} of the heatmap lies on the lesion** (white outline, drawn by the lesion "
                f"segmenter; the lesion covers {a.lesion_mask.mean():.0%} of the photo).")
    if share < OFF_LESION_SHARE:
        st.warning(f"{OFF_LESION_WARNING}.", icon=":material/center_focus_weak:")


def familiar_flags(clf, embeddings: np.ndarray) -> list[bool] | None:
    """Per photo: familiar to `clf` (None when the model has no familiarity fitted)."""
    fam = Familiarity.from_card(clf.card)
    if fam is None or not len(embeddings):
        return None
    return [r.familiar for r in fam.score_batch(np.asarray(embeddings))]
