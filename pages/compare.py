"""Compare: one photo, every model with weights side by side, and where they disagree."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import streamlit as st
from PIL import Image

from models import MODEL_NAMES, ImageError, spec
from models.classifier import label_at
from models.registry import models_with_weights
from pages import classifiers, common, photos, report, trust_view

st.title("Compare models")
st.markdown("The same photo through every model that has weights: probability of malignant, the label at "
            "each model's threshold (its own until you move it), and its heatmap.")

available = models_with_weights()
missing = [n for n in MODEL_NAMES if n not in available]

left, right = st.columns([3, 2], gap="large")
with left:
    photo = photos.photo_picker("cmp", preselect=False)
with right:
    alpha = st.slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="cmp_alpha")
    tta = st.toggle("Test-time augmentation (8 flips and rotations)", key="cmp_tta",
                    help="Each model also predicts on the 8 flips/rotations of the photo: how much does its answer move?")
    if missing:
        st.caption("Not shown, no trained weights yet: " + ", ".join(common.display(n) for n in missing)
                   + ". Train them on the Training page or with `python -m training --model NAME --data DIR`.")

if not available:
    st.warning("No model has trained weights yet, so there is nothing to compare. Train one with "
               "`python -m training --model torch_cnn --data DIR` (or on the Training page) and promote the run.")
    st.stop()
if photo is None:
    st.info("Upload a photo or pick an example to begin.")
    st.stop()

try:
    crop = photos.display_crop(photo)
except ImageError as exc:
    st.error(photos.image_error(photo, exc), icon=":material/broken_image:")
    st.stop()

st.divider()
if trust_view.refused(photo):  # not a skin-lesion photo: no model gives a percentage
    trust_view.show_refusal()
    st.image(Image.fromarray(crop), caption="The photo (centre crop the models would see)", width=240)
    if photo.note:  # what an example is (a drawing, a dataset label), refused or not
        st.caption(photo.note)
    st.stop()
st.image(Image.fromarray(crop), caption=f"{photo.name}: the centre crop the models see", width=240)
summary = st.container()

# One row of columns per kind of content, so each row starts level across the models however long
# the text above it wraps: the model and its settings, the answer, the heatmap, the checks.
n = len(available)
clfs, methods, thresholds, own = {}, {}, {}, {}
for col, name in zip(st.columns(n, gap="medium"), available):
    with col:
        st.subheader(common.display(name))
        clfs[name] = clf = classifiers.try_classifier(name)
        if clf is None:
            continue
        options = list(spec(name).cam_methods)
        methods[name] = st.selectbox("Heatmap method (CAM)", options, key=f"cmp_cam_{name}",
                                     help=" ".join(common.CAM_HELP.get(m, m) for m in options))
        thresholds[name], own[name] = common.threshold_slider(
            clf.threshold, key=f"cmp_thr_{name}",
            help="A photo is called malignant when its probability is at least the threshold; it starts at the "
                 "model's own, chosen on its validation data.")
shown = [name for name in available if clfs[name] is not None]

results: dict[str, report.ModelResult] = {}
checked, expls = {}, {}
for col, name in zip(st.columns(n, gap="medium"), available):
    if name not in shown:
        continue
    clf, method, thr = clfs[name], methods[name], thresholds[name]
    with col:
        with st.spinner(f"{common.display(name)} is looking…"):
            expl = classifiers.explain(clf, photo, method)
            checked[name] = trust_view.assessment(clf, photo, method, expl)
            expls[name] = classifiers.explain(clf, photo, method, thr)  # the heatmap explains the label shown
        p = expl.prediction.prob_malignant
        st.metric("Probability of malignant", f"{p:.1%}")
        common.prob_bar(p, thr)
        st.markdown(f"{common.label_badge(label_at(p, thr))} at {'its' if own[name] else 'your'} threshold {thr:.3f}",
                    unsafe_allow_html=True)
        notes = []
        if tta:
            with st.spinner("Predicting 8 views…"):
                tta_pred, probs = common.memo(("tta", classifiers.model_key(clf), photo.digest),
                                              lambda: clf.predict_tta(photo.data))
            notes.append(report.tta_sentence(tta_pred.prob_malignant, probs, thr))
            st.markdown(report.tta_sentence(tta_pred.prob_malignant, probs, thr, badge=common.label_badge),
                        unsafe_allow_html=True)
            common.prob_bar(float(tta_pred.prob_malignant), thr, ticks=[float(x) for x in probs])
        if not clf.trained:
            st.caption(":material/warning: untrained weights (0 epochs): noise")
        trust_view.show_unfamiliar(checked[name])
        results[name] = report.ModelResult(common.display(name), p, thr, clf.card, method, None, notes=notes)

for col, name in zip(st.columns(n, gap="medium"), available):
    if name not in results:
        continue
    expl, method = expls[name], methods[name]
    with col:
        if expl.flat:
            st.info(f"No spatial evidence: the {method} map is flat for this photo.", icon=":material/blur_off:")
        else:
            _, _, overlay = photos.heatmap_views(photo, expl.heatmap, alpha)
            results[name].overlay = trust_view.outline(overlay, checked[name])
            results[name].outlined = trust_view.has_outline(checked[name])
            st.image(results[name].overlay, caption=f"{method}: evidence for “{expl.prediction.label}”",
                     width="stretch" if n >= 3 else photos.DISPLAY_SIZE, output_format="JPEG")
        results[name].checks = report.check_lines(checked[name], None if expl.flat else expl.heatmap)

for col, name in zip(st.columns(n, gap="medium"), available):
    if name in results:
        col.caption(common.validation_sentence(clfs[name].card))

with summary:
    said = {name: r.label for name, r in results.items()}
    if len(results) >= 2:
        probs = [r.prob for r in results.values()]
        spread = f"Their probabilities range from {min(probs):.1%} to {max(probs):.1%}."
        where = "each at its own threshold" if all(own[name] for name in results) else "at the thresholds below"
        if len(set(said.values())) > 1:
            says = {lab: [common.display(n) for n, lb in said.items() if lb == lab] for lab in sorted(set(said.values()))}
            verdict = ("**The models disagree.** " + "; ".join(f"{' and '.join(v)} say{'s' if len(v) == 1 else ''} "
                                                               f"**{k}**" for k, v in says.items())
                       + f" ({where}). {spread} When models disagree, no answer here should be trusted on its own.")
            st.warning(verdict, icon=":material/call_split:")
        else:
            verdict = (f"All {len(results)} models say **{set(said.values()).pop()}**, {where}. {spread} "
                       "Agreement is not proof: the models learnt from the same images.")
            st.success(verdict, icon=":material/done_all:")
    elif len(results) == 1:
        verdict = ""
        st.info("Only one model could give an answer, so there is nothing to compare.")

if results:
    stem = Path(photo.name).stem[:40] or "photo"
    downloads = st.container(horizontal=True, vertical_alignment="bottom")
    fmt = downloads.radio("Report as", list(report.FORMATS), horizontal=True, key="cmp_report_format",
                          help="The photo and every model's answer, heatmap, validation numbers and checks, with "
                               "the date: made in memory, never stored.")
    downloads.download_button(
        f"Download the report ({fmt})",
        lambda: report.FORMATS[fmt](report.Report(photo.name, Image.fromarray(crop), list(results.values()),
                                                  datetime.now().astimezone(), photo.note or "", verdict)),
        file_name=f"{stem}_compare_report.{fmt.lower()}", mime=report.MIME[fmt], icon=":material/download:",
        on_click="ignore", key="cmp_report")
if photo.note:
    st.caption(photo.note)
