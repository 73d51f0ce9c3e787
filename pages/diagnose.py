"""Diagnose: one photo, one model: probability of malignant, threshold, heatmap."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from PIL import Image

from models import ImageError, spec
from pages import _ui as ui

st.title("Diagnose")
st.markdown("Upload a photo of a skin lesion, or pick an example. The model gives the probability that the "
            "lesion is malignant, and a heatmap of the regions of the photo that drove its answer.")

left, right = st.columns([3, 2], gap="large")
with left:
    photo = ui.photo_picker("diag", preselect=False)
with right:
    name = ui.model_select("diag")
    methods = list(spec(name).cam_methods)
    method = st.selectbox("Heatmap method (CAM)", methods, key=f"diag_cam_{name}",
                          help=" ".join(ui.CAM_HELP.get(m, m) for m in methods))
    alpha = st.slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="diag_alpha")
    tta = st.toggle("Test-time augmentation (8 flips and rotations)", key="diag_tta",
                    help="Predict on the 8 flips/rotations of the photo: how much does the answer move?")

if not ui.has_weights(name):  # say so (and how to train it) before anything else
    ui.try_classifier(name)
    st.stop()
if photo is None:
    st.info("Upload a photo or pick an example to begin.")
    st.stop()

try:
    crop = ui.display_crop(photo)  # decodes the photo: a bad file is reported before any model runs
except ImageError as exc:
    st.error(ui.image_error(photo, exc), icon=":material/broken_image:")
    st.stop()

clf = ui.try_classifier(name)
if clf is None:
    st.stop()
card = clf.card
expl = ui.memo(("explain", ui.model_key(clf), photo.digest, method), lambda: clf.explain(photo.data, method))

st.divider()
ui.card_warnings(card)
p = expl.prediction.prob_malignant
model_thr = clf.threshold

res_left, res_right = st.columns([1, 1], gap="large")
with res_left:
    st.subheader(f"{ui.display(name)} says")
    st.metric("Probability of malignant", f"{p:.1%}")
    thr, at_model_thr = ui.threshold_slider(
        model_thr, key=f"diag_thr_{name}",
        help="A photo is called malignant when its probability is at least the threshold. "
             "The model's own threshold was chosen on validation data.")
    ui.prob_bar(p, thr)
    label = ui.label_at(p, thr)
    st.markdown(f"At threshold {thr:.3f}: {ui.label_badge(label)}", unsafe_allow_html=True)
with res_right:
    st.subheader("How good is this model?")
    st.markdown(ui.validation_sentence(card))
    if not at_model_thr:
        op = ui.operating_point(card.get("validation"), thr)
        if op is None:
            st.markdown(f"The model card has no validation ROC, so what threshold {thr:.3f} would give on "
                        "validation is unknown.")
        else:
            st.markdown(f"At threshold **{thr:.3f}** instead: sensitivity **{op[0]:.2f}**, specificity "
                        f"**{op[1]:.2f}** on validation (read off the validation ROC).")
    else:
        st.caption("Move the threshold to see the sensitivity and specificity it gives on validation.")
    st.caption("Sensitivity: the share of malignant lesions called malignant. Specificity: the share of benign "
               "lesions called benign. A lower threshold buys sensitivity with specificity.")

if tta:
    with st.spinner("Predicting 8 views…"):
        tta_pred, probs = ui.memo(("tta", ui.model_key(clf), photo.digest), lambda: clf.predict_tta(photo.data))
    st.markdown(f"**Test-time augmentation**: mean over 8 flips/rotations {tta_pred.prob_malignant:.1%} "
                f"(range {probs.min():.1%} to {probs.max():.1%}, spread SD {100 * probs.std():.1f} points); "
                f"{ui.label_badge(ui.label_at(tta_pred.prob_malignant, thr))} at threshold {thr:.3f}.",
                unsafe_allow_html=True)
    ui.prob_bar(float(tta_pred.prob_malignant), thr, ticks=[float(x) for x in probs])

st.subheader("Where the model looked")
img_cols = st.columns(3)
if expl.flat:
    img_cols[0].image(Image.fromarray(crop), caption="The photo (centre crop the model sees)", width="stretch")
    with img_cols[1]:
        st.info(f"No spatial evidence: the {method} map is flat for this photo, so there is nothing to draw. "
                "The answer did not depend on where things are in the picture, as far as this method can tell.",
                icon=":material/blur_off:")
else:
    orig, heat, overlay = ui.heatmap_views(photo, expl.heatmap, alpha)
    # Shown as JPEG (a fraction of PNG's encoding time and bytes); the download is a PNG, made on click.
    img_cols[0].image(orig, caption="The photo (centre crop the model sees)", width="stretch", output_format="JPEG")
    img_cols[1].image(heat, caption=f"Heatmap ({method}): red = strongest evidence for “{expl.prediction.label}”",
                      width="stretch", output_format="JPEG")
    img_cols[2].image(overlay, caption=f"Overlay, opacity {alpha:.2f}", width="stretch", output_format="JPEG")
    stem = Path(photo.name).stem[:40] or "photo"
    st.download_button("Download the overlay (PNG)", lambda: ui.png_bytes(overlay),
                       file_name=f"{stem}_{name}_{method}_overlay.png", mime="image/png",
                       icon=":material/download:", on_click="ignore")
if photo.note:
    st.caption(photo.note)
st.caption(f"{ui.CAM_HELP.get(method, method)} The heatmap shows what moved this model's answer, not where "
           "the disease is; see About.")
if card.get("data"):
    data = card["data"]
    st.caption(f"{ui.display(name)} was trained for {card.get('epochs')} epochs on "
               f"{data.get('name', 'its dataset') if isinstance(data, dict) else data}.")
