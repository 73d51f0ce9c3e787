"""Patient view: several lesions of one person; which one is the "ugly duckling"?"""

from __future__ import annotations

import numpy as np
import streamlit as st

from models import ImageError
from models import patient as pt
from pages import _ui as ui

st.title("Patient view: the ugly duckling")
st.markdown("Dermatologists look for the lesion that does not look like the person's other lesions. Upload "
            f"photos of up to {pt.MAX_LESIONS} lesions of **one person**: each gets its probability of malignant "
            "and an outlier score, and the gallery is sorted by both.")
st.warning("This ranking is a teaching aid. It has **not been validated** on patients and must not be used to "
           "decide which lesion to show a doctor: show them all.", icon=":material/science:")

available = ui.models_with_weights()
left, right = st.columns([3, 2], gap="large")
with left:
    files = st.file_uploader(f"Photos of one person's lesions (up to {pt.MAX_LESIONS})", type=ui.UPLOAD_TYPES,
                             accept_multiple_files=True, key="pat_upload",
                             help="The photos stay in memory for this session; they are never saved or logged.")
    use_examples = st.toggle("Use the example photos instead", key="pat_examples", disabled=bool(files))
with right:
    if available:
        st.session_state.setdefault("pat_models", [ui.default_model(available)])
        chosen = st.multiselect("Models", available, key="pat_models", format_func=ui.display,
                                help="Outlier scores are z-scored per model, then averaged.")
    else:
        chosen = []
        st.warning("No model has trained weights yet. Train one with `python -m training --model torch_cnn "
                   "--data DIR` (or on the Training page) and promote the run.")

photos: list[ui.Photo] = []
if files:
    if len(files) > pt.MAX_LESIONS:
        st.warning(f"{len(files)} photos uploaded; only the first {pt.MAX_LESIONS} are used.")
    photos = [ui.uploaded_photo(f) for f in files[: pt.MAX_LESIONS]]
elif use_examples:
    examples, about = ui.list_examples()
    photos = [ui.example_photo(e) for e in examples[: pt.MAX_LESIONS]]
    st.caption(about)

if not photos:
    st.info("Upload photos, or switch on the example photos, to begin.")
    st.stop()
if not chosen:
    st.info("Choose at least one model.")
    st.stop()

# Decode every photo first; a bad one is reported and left out, the rest go on.
good: list[ui.Photo] = []
crops: list[np.ndarray] = []
seen: dict[str, int] = {}
for ph in photos:
    try:
        crop = ui.display_crop(ph, 160)
    except ImageError as exc:
        st.error(ui.image_error(ph, exc), icon=":material/broken_image:")
        continue
    n = seen.get(ph.name, 0)
    seen[ph.name] = n + 1
    if n:  # two files of the same name stay apart
        ph = ui.Photo(f"{ph.name} ({n + 1})", ph.data, ph.source, ph.note, ph.synthetic)
    good.append(ph)
    crops.append(crop)
if not good:
    st.stop()

probs: dict[str, list[float]] = {}
embs: dict[str, np.ndarray] = {}
with st.spinner(f"Looking at {len(good)} photos…"):
    for name in chosen:
        clf = ui.try_classifier(name)
        if clf is None:
            continue
        rows = [ui.memo(("prob+embed", ui.model_key(clf), ph.digest),
                        lambda clf=clf, ph=ph: (clf.predict(ph.data).prob_malignant, clf.embed(ph.data)))
                for ph in good]
        probs[name] = [r[0] for r in rows]
        embs[name] = np.stack([r[1] for r in rows])
if not probs:
    st.stop()

rank = pt.rank_lesions([ph.name for ph in good], probs, embs)
st.divider()
st.caption(pt.OUTLIER_SENTENCE)
st.caption(pt.COMBINED_SENTENCE)
if not rank.outlier_defined:
    st.info(f"Outlier scores need at least {pt.MIN_FOR_OUTLIER} photos; with fewer, every outlier score is 0 "
            "and the order follows the probability alone.")

st.subheader("Gallery, most striking first")
per_row = 5
for start in range(0, len(rank.order), per_row):
    cols = st.columns(per_row)
    for col, i in zip(cols, rank.order[start:start + per_row]):
        pos = rank.order.index(i) + 1
        col.image(crops[i], width="stretch",
                  caption=f"#{pos} {good[i].name} · P(malignant) {rank.mean_prob[i]:.0%} · "
                          f"outlier {rank.mean_outlier[i]:+.1f} · score {rank.combined[i]:.2f}")

with st.expander("The numbers, per model"):
    table = {"rank": [rank.order.index(i) + 1 for i in range(len(good))], "photo": rank.names}
    for name in probs:
        table[f"P(malignant) {ui.display(name)}"] = [round(float(v), 3) for v in rank.prob[name]]
        table[f"outlier {ui.display(name)}"] = [round(float(v), 2) for v in rank.outlier[name]]
    table["combined score"] = [round(float(v), 3) for v in rank.combined]
    order = rank.order
    st.dataframe({k: [v[i] for i in order] for k, v in table.items()}, hide_index=True)

st.subheader("Map of the lesions")
st.caption("Each photo placed by the two main directions (PCA) of the model's features: lesions that look alike "
           "to the model sit together, the odd one sits apart. Hover a point for its name and scores.")
thumbs = [ui.thumbnail_uri(c) for c in crops]
tabs = st.tabs([ui.display(n) for n in probs])
for tab, name in zip(tabs, probs):
    with tab:
        import plotly.graph_objects as go

        xy = rank.coords[name]
        span = float(max(np.ptp(xy[:, 0]) if len(xy) else 0, np.ptp(xy[:, 1]) if len(xy) else 0, 1e-6))
        size = span * 0.14
        custom = np.array([[good[i].name, rank.prob[name][i], rank.outlier[name][i], rank.combined[i]]
                           for i in range(len(good))], dtype=object)
        fig = go.Figure(go.Scatter(
            x=xy[:, 0], y=xy[:, 1], mode="markers+text", text=[f"#{rank.order.index(i) + 1}" for i in range(len(good))],
            textposition="bottom center", customdata=custom,
            marker=dict(size=11, color=rank.outlier[name], colorscale="RdBu_r", cmid=0, showscale=True,
                        colorbar=dict(title="outlier"), line=dict(width=1, color="#333")),
            hovertemplate="<b>%{customdata[0]}</b><br>P(malignant) %{customdata[1]:.1%}<br>"
                          "outlier %{customdata[2]:+.2f}<br>combined %{customdata[3]:.2f}<extra></extra>"))
        fig.update_layout(
            images=[dict(source=thumbs[i], x=float(xy[i, 0]), y=float(xy[i, 1]), xref="x", yref="y",
                         sizex=size, sizey=size, xanchor="center", yanchor="bottom", layer="below", opacity=0.95)
                    for i in range(len(good))],
            height=520, margin=dict(l=10, r=10, t=30, b=10),
            xaxis=dict(title=f"PC1 ({100 * rank.explained[name][0]:.0f}% of the variance)", zeroline=False,
                       range=[float(xy[:, 0].min()) - size, float(xy[:, 0].max()) + size]),
            yaxis=dict(title=f"PC2 ({100 * rank.explained[name][1]:.0f}%)", zeroline=False, scaleanchor="x",
                       range=[float(xy[:, 1].min()) - 0.5 * size, float(xy[:, 1].max()) + 1.2 * size]))
        st.plotly_chart(fig, key=f"pat_map_{name}", config={"displaylogo": False})
if any(ph.synthetic for ph in good):
    st.caption(f"The example photos are {ui.SYNTHETIC_NOTE}.")
