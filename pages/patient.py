"""Patient view: several lesions of one person; which one is the "ugly duckling"?"""

from __future__ import annotations

import html

import numpy as np
import streamlit as st

from models import ImageError
from models import patient as pt
from models.classifier import label_at
from models.registry import default_model, models_with_weights
from pages import classifiers, common, photos, trust_view

st.title("Patient view: the ugly duckling")
st.markdown("Dermatologists look for the lesion that does not look like the person's other lesions. Upload "
            f"photos of up to {pt.MAX_LESIONS} lesions of **one person**: each gets its probability of malignant "
            "and an outlier score, and the gallery is sorted by both.")
st.warning("This ranking is a teaching aid. It has **not been validated** on patients and must not be used to "
           "decide which lesion to show a doctor: show them all.", icon=":material/science:")

available = models_with_weights()


def clear_all() -> None:
    """Empty the uploader, switch the examples off and forget this page's answers."""
    photos.empty_widget("pat", "upload")
    st.session_state["pat_examples"] = False


files = st.file_uploader(f"Photos of one person's lesions (up to {pt.MAX_LESIONS})", type=photos.UPLOAD_TYPES,
                         accept_multiple_files=True, key=photos.widget_key("pat", "upload"),
                         help="The photos stay in memory for this session; they are never saved or logged.")
c1, c2 = st.columns([3, 1], vertical_alignment="center")
use_examples = c1.toggle("Use the example photos instead", key="pat_examples", disabled=bool(files))
c2.button("Clear all", key="pat_clear", icon=":material/delete_sweep:", on_click=clear_all, width="stretch",
          disabled=not (files or use_examples), help="Remove every photo from this page.")
if available:
    # Full width, so every model's chip shows its whole name.
    st.session_state.setdefault("pat_models", [default_model(available)])
    chosen = st.multiselect("Models", available, key="pat_models", format_func=common.display,
                            help="Outlier scores are z-scored per model, then averaged. Where the models disagree "
                                 "on a photo, each model's answer is shown.")
else:
    chosen = []
    st.warning("No model has trained weights yet. Train one with `python -m training --model torch_cnn "
               "--data DIR` (or on the Training page) and promote the run.")

picked: list[photos.Photo] = []
if files:
    if len(files) > pt.MAX_LESIONS:
        st.warning(f"{len(files)} photos uploaded; only the first {pt.MAX_LESIONS} are used.")
    picked = [photos.uploaded_photo(f) for f in files[: pt.MAX_LESIONS]]
elif use_examples:
    # A made-up "patient" from the credited HAM10000 photos: the benign lesions and one melanoma.
    ham, _ = photos.list_examples(("ham10000",))
    benign = [e for e in ham if e.truth == "benign"]
    odd = [e for e in ham if e.label.startswith("melanoma ")][:1]
    picked = [photos.example_photo(e) for e in (benign + odd)[: pt.MAX_LESIONS]]
    if picked:
        st.caption(f"A made-up patient: {len(benign)} benign lesions and {len(odd)} melanoma from HAM10000 "
                   f"({photos.HAM_CREDIT.removeprefix('Photo: ')}). They come from different people, so this "
                   "only shows how the ranking works.")

if not picked:
    st.info("Upload photos, or switch on the example photos, to begin.")
    st.stop()
if not chosen:
    st.info("Choose at least one model.")
    st.stop()

# Decode every photo first; a bad one is reported and left out, the rest go on.
good: list[photos.Photo] = []
crops: list[np.ndarray] = []
seen: dict[str, int] = {}
for ph in picked:
    try:
        crop = photos.display_crop(ph, 160)
    except ImageError as exc:
        st.error(photos.image_error(ph, exc), icon=":material/broken_image:")
        continue
    n = seen.get(ph.name, 0)
    seen[ph.name] = n + 1
    if n:  # two files of the same name stay apart
        ph = photos.Photo(f"{ph.name} ({n + 1})", ph.data, ph.source, ph.note, ph.synthetic)
    if trust_view.refused(ph):  # not a skin-lesion photo: no probability, left out of the ranking
        st.warning(f"{ph.name}: {trust_view.NOT_A_LESION_MESSAGE}. It gets no verdict and is left out of the "
                   "ranking.", icon=":material/hide_image:")
        continue
    good.append(ph)
    crops.append(crop)
if not good:
    st.stop()

probs: dict[str, list[float]] = {}
embs: dict[str, np.ndarray] = {}
thresholds: dict[str, float] = {}
unfamiliar: dict[str, list[str]] = {}
with st.spinner(f"Looking at {len(good)} photos…"):
    for name in chosen:
        clf = classifiers.try_classifier(name)
        if clf is None:
            continue
        rows = [common.memo(("prob+embed", classifiers.model_key(clf), ph.digest),
                        lambda clf=clf, ph=ph: (clf.predict(ph.data).prob_malignant, clf.embed(ph.data)))
                for ph in good]
        probs[name] = [r[0] for r in rows]
        embs[name] = np.stack([r[1] for r in rows])
        thresholds[name] = clf.threshold
        flags = trust_view.familiar_flags(clf, embs[name])
        if flags is not None:
            unfamiliar[name] = [good[i].name for i, f in enumerate(flags) if not f]
if not probs:
    st.stop()
for name, names in unfamiliar.items():
    if names:
        st.warning(f"{', '.join(names)}: {'this photo differs' if len(names) == 1 else 'these photos differ'} from "
                   f"the photos {common.display(name)} learned from; its answer is less reliable.",
                   icon=":material/help:")

rank = pt.rank_lesions([ph.name for ph in good], probs, embs)
st.divider()
st.caption(pt.OUTLIER_SENTENCE)
st.caption(pt.COMBINED_SENTENCE)
if not rank.outlier_defined:
    st.info(f"Outlier scores need at least {pt.MIN_FOR_OUTLIER} photos; with fewer, every outlier score is 0 "
            "and the order follows the probability alone.")

# Each model's label at its own threshold: where they differ, the mean probability would hide it.
labels = {name: [label_at(float(p), thresholds[name]) for p in rank.prob[name]] for name in probs}
split = [i for i in range(len(good)) if len({labels[n][i] for n in probs}) > 1]
if split:
    st.warning(f"**The models disagree on {len(split)} of {len(good)} photos** ("
               + ", ".join(good[i].name for i in split[:6]) + (", …" if len(split) > 6 else "")
               + "): one calls it malignant, another benign, each at its own threshold. Their answers are shown "
               "one by one there; the ranking uses their mean, which hides the disagreement.",
               icon=":material/call_split:")


def answers(i: int) -> str:
    if len(probs) == 1:
        return f"P(malignant) {rank.mean_prob[i]:.0%}"
    each = " · ".join(f"{common.display(n)} {rank.prob[n][i]:.0%}" for n in probs)
    if i in split:
        return f":material/call_split: **models disagree**: {each}"
    return f"P(malignant) {each}"


st.subheader("Gallery, most striking first")
per_row = 5
for start in range(0, len(rank.order), per_row):
    cols = st.columns(per_row)
    for col, i in zip(cols, rank.order[start:start + per_row]):
        pos = rank.order.index(i) + 1
        col.image(crops[i], width="stretch")
        # The whole file name (long names wrap instead of being cut), then each model's answer.
        col.markdown(f'<div style="overflow-wrap:anywhere;font-size:.85rem;line-height:1.3">'
                     f'<b>#{pos} {html.escape(good[i].name)}</b></div>', unsafe_allow_html=True)
        col.caption(f"{answers(i)} · outlier {rank.mean_outlier[i]:+.1f} · score {rank.combined[i]:.2f}")

with st.expander("The numbers, per model"):
    table = {"rank": [rank.order.index(i) + 1 for i in range(len(good))], "photo": rank.names}
    for name in probs:
        table[f"P(malignant) {common.display(name)}"] = [round(float(v), 3) for v in rank.prob[name]]
        table[f"outlier {common.display(name)}"] = [round(float(v), 2) for v in rank.outlier[name]]
    if len(probs) > 1:
        table["models disagree"] = [i in split for i in range(len(good))]
    table["combined score"] = [round(float(v), 3) for v in rank.combined]
    order = rank.order
    st.dataframe({k: [v[i] for i in order] for k, v in table.items()}, hide_index=True,
                 column_config={"photo": st.column_config.TextColumn(width="large")})

st.subheader("Map of the lesions")
st.caption("Each photo placed by the two main directions (PCA) of the model's features: lesions that look alike "
           "to the model sit together, the odd one sits apart. Hover a point for its name and scores.")
thumbs = [photos.thumbnail_uri(c) for c in crops]
tabs = st.tabs([common.display(n) for n in probs])
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
    st.caption(f"The example photos are {common.SYNTHETIC_NOTE}.")
