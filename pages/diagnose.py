"""Diagnose: one photo, one model: probability of malignant, threshold, heatmap."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import streamlit as st
from PIL import Image

from models import ImageError, spec
from models.classifier import label_at
from models.registry import has_weights
from pages import classifiers, common, photos, report, trust_view
from training.metrics import operating_point

st.title("Diagnose")
st.markdown("Upload a photo of a skin lesion, or pick an example. The model gives the probability that the "
            "lesion is malignant, and a heatmap of the regions of the photo that drove its answer.")

left, right = st.columns([3, 2], gap="large")
with left:
    photo = photos.photo_picker("diag", preselect=False, camera=True)
with right:
    name = common.model_select("diag")
    methods = list(spec(name).cam_methods)
    # One key for every model: the method chosen last is kept when the next model has it, else its default.
    wanted = st.session_state.get("diag_cam_wanted", methods[0])
    st.session_state["diag_cam"] = wanted if wanted in methods else methods[0]
    method = st.selectbox("Heatmap method (CAM)", methods, key="diag_cam",
                          help=" ".join(common.CAM_HELP.get(m, m) for m in methods),
                          on_change=lambda: st.session_state.update(diag_cam_wanted=st.session_state["diag_cam"]))
    alpha = st.slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="diag_alpha")
    tta = st.toggle("Test-time augmentation (8 flips and rotations)", key="diag_tta",
                    help="Predict on the 8 flips/rotations of the photo: how much does the answer move?")

if not has_weights(name):  # say so (and how to train it) before anything else
    classifiers.try_classifier(name)
    st.stop()
if photo is None:
    st.info("Upload a photo or pick an example to begin.")
    st.stop()

try:
    crop = photos.display_crop(photo)  # decodes the photo: a bad file is reported before any model runs
except ImageError as exc:
    st.error(photos.image_error(photo, exc), icon=":material/broken_image:")
    st.stop()

clf = classifiers.try_classifier(name)
if clf is None:
    st.stop()
card = clf.card
if trust_view.refused(photo):  # not a skin-lesion photo: the gate's sentence, no percentage
    st.divider()
    trust_view.show_refusal()
    st.image(Image.fromarray(crop), caption="The photo (centre crop the model would see)", width=photos.DISPLAY_SIZE)
    if photo.note:  # what an example is (a drawing, a dataset label), refused or not
        st.caption(photo.note)
    st.stop()
expl = classifiers.explain(clf, photo, method)
checked = trust_view.assessment(clf, photo, method, expl)

st.divider()
common.card_warnings(card)
p = expl.prediction.prob_malignant
model_thr = clf.threshold

res_left, res_right = st.columns([1, 1], gap="large")
with res_left:
    st.subheader(f"{common.display(name)} says")
    st.caption(f"About **{report.escape_markdown(photo.name)}**")
    st.metric("Probability of malignant", f"{p:.1%}")
    thr, at_model_thr = common.threshold_slider(
        model_thr, key=f"diag_thr_{name}",
        help="A photo is called malignant when its probability is at least the threshold. "
             "The model's own threshold was chosen on validation data.")
    common.prob_bar(p, thr)
    label = label_at(p, thr)
    st.markdown(f"At threshold {thr:.3f}: {common.label_badge(label)}", unsafe_allow_html=True)
    tta_line = None
    if tta:  # right under the answer, so both bars have the same width and the ticks line up with it
        with st.spinner("Predicting 8 views…"):
            tta_pred, probs = common.memo(("tta", classifiers.model_key(clf), photo.digest),
                                          lambda: clf.predict_tta(photo.data))
        tta_line = report.tta_sentence(tta_pred.prob_malignant, probs, thr)
        st.markdown(report.tta_sentence(tta_pred.prob_malignant, probs, thr, badge=common.label_badge),
                    unsafe_allow_html=True)
        common.prob_bar(float(tta_pred.prob_malignant), thr, ticks=[float(x) for x in probs])
    trust_view.show_unfamiliar(checked)
    trust_view.show_quality(checked)
with res_right:
    st.subheader("How good is this model?")
    st.markdown(common.validation_sentence(card))
    op_line = None
    if not at_model_thr:
        op = operating_point(card.get("validation"), thr)
        if op is None:
            op_line = (f"The model card has no validation ROC, so what threshold {thr:.3f} would give on "
                       "validation is unknown.")
        else:
            op_line = (f"At threshold **{thr:.3f}** instead: sensitivity **{op[0]:.2f}**, specificity "
                       f"**{op[1]:.2f}** on validation (read off the validation ROC).")
        st.markdown(op_line)
    else:
        st.caption("Move the threshold to see the sensitivity and specificity it gives on validation.")
    st.caption("Sensitivity: the share of malignant lesions called malignant. Specificity: the share of benign "
               "lesions called benign. A lower threshold buys sensitivity with specificity.")

st.subheader("Where the model looked")
expl = classifiers.explain(clf, photo, method, thr)  # the heatmap explains the label shown above
img_cols = st.columns(3)
overlay = None
if expl.flat:
    img_cols[0].image(Image.fromarray(crop), caption="The photo (centre crop the model sees)", width="stretch")
    with img_cols[1]:
        st.info(f"No spatial evidence: the {method} map is flat for this photo, so there is nothing to draw. "
                "The answer did not depend on where things are in the picture, as far as this method can tell.",
                icon=":material/blur_off:")
else:
    orig, heat, overlay = photos.heatmap_views(photo, expl.heatmap, alpha)
    overlay = trust_view.outline(overlay, checked)
    # Shown as JPEG (a fraction of PNG's encoding time and bytes); the downloads are made on click.
    img_cols[0].image(orig, caption="The photo (centre crop the model sees)", width="stretch", output_format="JPEG")
    img_cols[1].image(heat, caption=f"Heatmap ({method}): red = strongest evidence for “{expl.prediction.label}”",
                      width="stretch", output_format="JPEG")
    img_cols[2].image(overlay, caption=f"Overlay, opacity {alpha:.2f}; white: the lesion's outline", width="stretch",
                      output_format="JPEG")
    trust_view.show_on_lesion(checked, expl.heatmap)


def make_report() -> report.Report:  # on click: the time is the download's
    result = report.ModelResult(common.display(name), p, thr, card, method, overlay, trust_view.has_outline(checked),
                                checks=report.check_lines(checked, None if expl.flat else expl.heatmap),
                                notes=[line for line in (op_line, tta_line) if line])
    return report.Report(photo.name, Image.fromarray(crop), [result], datetime.now().astimezone(), photo.note or "")


stem = Path(photo.name).stem[:40] or "photo"
downloads = st.container(horizontal=True, vertical_alignment="bottom")
fmt = downloads.radio("Report as", list(report.FORMATS), horizontal=True, key="diag_report_format",
                      help="The photo, the heatmap, the answer at your threshold, the model's validation "
                           "numbers and the checks, with the date: made in memory, never stored.")
downloads.download_button(f"Download the report ({fmt})", lambda: report.FORMATS[fmt](make_report()),
                          file_name=f"{stem}_{name}_report.{fmt.lower()}", mime=report.MIME[fmt],
                          icon=":material/download:", on_click="ignore", key="diag_report")
if overlay is not None:
    downloads.download_button("Download the overlay (PNG)", lambda: photos.png_bytes(overlay),
                              file_name=f"{stem}_{name}_{method}_overlay.png", mime="image/png",
                              icon=":material/download:", on_click="ignore")
if photo.note:
    st.caption(photo.note)
st.caption(f"{common.CAM_HELP.get(method, method)} The heatmap shows what moved this model's answer, not where "
           "the disease is; see About.")
if card.get("data"):
    data = card["data"]
    n = card.get("epochs")
    how = "; About has the whole story of how it was made" if card.get("notes") else ""
    st.caption(f"{common.display(name)}'s weights are epoch {n} of its last training run on "
               f"{data.get('name', 'its dataset') if isinstance(data, dict) else data}{how}.")
