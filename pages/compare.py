"""Compare: one photo, every model with weights side by side, and where they disagree."""

from __future__ import annotations

import streamlit as st

from models import MODEL_NAMES, ImageError, spec
from pages import _ui as ui

st.title("Compare models")
st.markdown("The same photo through every model that has weights: probability of malignant, the label at "
            "each model's own threshold, and its heatmap.")

available = ui.models_with_weights()
missing = [n for n in MODEL_NAMES if n not in available]

left, right = st.columns([3, 2], gap="large")
with left:
    photo = ui.photo_picker("cmp", preselect=False)
with right:
    common = [m for m in spec("torch_cnn").cam_methods if all(m in spec(n).cam_methods for n in available)]
    method = st.selectbox("Heatmap method (CAM)", common or ["gradcam"], key="cmp_cam",
                          help="Only the methods every shown model supports (the Keras model: Grad-CAM).")
    alpha = st.slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="cmp_alpha")
    if missing:
        st.caption("Not shown, no trained weights yet: " + ", ".join(ui.display(n) for n in missing)
                   + ". Train them on the Training page or with `python -m training --model NAME --data DIR`.")

if not available:
    st.warning("No model has trained weights yet, so there is nothing to compare. Train one with "
               "`python -m training --model torch_cnn --data DIR` (or on the Training page) and promote the run.")
    st.stop()
if photo is None:
    st.info("Upload a photo or pick an example to begin.")
    st.stop()

try:
    ui.display_crop(photo)
except ImageError as exc:
    st.error(ui.image_error(photo, exc), icon=":material/broken_image:")
    st.stop()

st.divider()
summary = st.container()
results: dict[str, tuple[float, str, float]] = {}
for col, name in zip(st.columns(len(available), gap="medium"), available):
    with col:
        st.subheader(ui.display(name))
        clf = ui.try_classifier(name)
        if clf is None:
            continue
        with st.spinner(f"{ui.display(name)} is looking…"):
            expl = ui.memo(("explain", ui.model_key(clf), photo.digest, method),
                           lambda clf=clf: clf.explain(photo.data, method))
        pred = expl.prediction
        results[name] = (pred.prob_malignant, pred.label, pred.threshold)
        st.metric("Probability of malignant", f"{pred.prob_malignant:.1%}")
        ui.prob_bar(pred.prob_malignant, pred.threshold)
        st.markdown(f"{ui.label_badge(pred.label)} at its threshold {pred.threshold:.3f}", unsafe_allow_html=True)
        if not clf.trained:
            st.caption(":material/warning: untrained weights (0 epochs): noise")
        if expl.flat:
            st.info(f"No spatial evidence: the {method} map is flat for this photo.", icon=":material/blur_off:")
        else:
            _, _, overlay = ui.heatmap_views(photo, expl.heatmap, alpha)
            st.image(overlay, caption=f"{method}: evidence for “{pred.label}”",
                     width="stretch" if len(available) >= 3 else ui.DISPLAY_SIZE)
        st.caption(ui.validation_sentence(clf.card))

with summary:
    if len(results) >= 2:
        labels = {lab for _, lab, _ in results.values()}
        probs = [p for p, _, _ in results.values()]
        spread = f"Their probabilities range from {min(probs):.1%} to {max(probs):.1%}."
        if len(labels) > 1:
            says = {lab: [ui.display(n) for n, (_, lb, _) in results.items() if lb == lab] for lab in sorted(labels)}
            st.warning("**The models disagree.** " + "; ".join(f"{' and '.join(v)} say{'s' if len(v) == 1 else ''} "
                                                               f"**{k}**" for k, v in says.items())
                       + f". {spread} When models disagree, no answer here should be trusted on its own.",
                       icon=":material/call_split:")
        else:
            st.success(f"All {len(results)} models say **{labels.pop()}**, each at its own threshold. {spread} "
                       "Agreement is not proof: the models learnt from the same images.", icon=":material/done_all:")
    elif len(results) == 1:
        st.info("Only one model could give an answer, so there is nothing to compare.")
if photo.note:
    st.caption(photo.note)
