"""Evaluate: a model (shipped, or a run's checkpoint) on a labelled test folder.

Accuracy, ROC AUC, sensitivity and specificity; the ROC curve with the operating point and a
confusion matrix that both follow a threshold slider; a reliability diagram; the misclassified
images with their heatmaps; per-image results as CSV. Results are cached per (checkpoint and
its modification time, folder, test-time augmentation).
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from models import MODEL_NAMES
from models.registry import checkpoint_stamp, default_model, file_stamp, read_card, shipped_card, shipped_checkpoint
from pages import classifiers, common
from training import datasets, launcher
from training.datasets import DatasetChoiceError
from training import labelled_zip
from training.evaluate import evaluate_images
from training.labelled_zip import LabelledZip, ZipRefused
from training.metrics import THRESHOLD_RULE, binary_metrics, choose_threshold
from training.rundir import list_runs

SYNTHETIC = common.SYNTHETIC_OPTION
ZIP_TYPES = ["application/zip", "application/x-zip-compressed", "application/x-zip", "multipart/x-zip"]
SOURCES = {"folder": "a test folder on this server", "zip": "a zip file I upload"}
GALLERY = 12
PROGRESS_UPDATES = 20


# ------------------------------------------------------------------ choices

def model_choices() -> dict[str, dict]:
    """Choice key -> {name, checkpoint, label, card}: the shipped models, then finished runs."""
    out: dict[str, dict] = {}
    for name in MODEL_NAMES:
        card = shipped_card(name)
        if card is None:
            continue
        auc = (card.get("validation") or {}).get("auc")
        out[f"shipped:{name}"] = {"name": name, "checkpoint": shipped_checkpoint(name), "card": card,
                                  "label": f"{common.display(name)}: the app's model (validation AUC {common.fmt_metric(auc, 3)})"}
    for r in list_runs():
        ckpt = launcher.run_checkpoint(r.path)
        if ckpt is None:
            continue
        try:
            card = read_card(r.path / "card.json")
        except (OSError, ValueError):
            continue
        auc = (card.get("validation") or {}).get("auc")
        synth = ", SYNTHETIC data" if card.get("synthetic") else ""
        out[f"run:{r.id}"] = {"name": card["name"], "checkpoint": ckpt, "card": card,
                              "label": f"{common.display(card['name'])}: run {r.id} (validation AUC "
                                       f"{common.fmt_metric(auc, 3)}{synth})"}
    return out


def folder_label(opt: str, base: Path | None) -> str:
    return common.dataset_label(opt, base, "SYNTHETIC demo test set (generated cartoons, not real lesions)")


def default_folder(options: list[str]) -> int:
    for i, o in enumerate(options):  # a held-out split is the honest choice
        if Path(o).name.lower() in ("test", "testing", "holdout", "val", "valid", "validation"):
            return i
    return 0


def folder_stamp(folder: Path) -> tuple:
    return tuple(file_stamp(folder / c) for c in ("benign", "malignant"))


@st.cache_data(max_entries=16, show_spinner=False)
def evaluation(name: str, checkpoint: str, ckpt_stamp: tuple, folder: str, data_stamp: tuple, tta: bool, _clf):
    """evaluate_folder once per (checkpoint+mtime, folder, tta); the bar is part of the cached output."""
    from training.evaluate import evaluate_folder

    bar = st.progress(0.0, text="Reading the images…")
    last = [-1]

    def progress(done: int, total: int) -> None:
        tick = int(PROGRESS_UPDATES * done / max(total, 1))
        if tick != last[0]:
            last[0] = tick
            bar.progress(done / max(total, 1), text=f"Predicting {done}/{total} images"
                         + (" × 8 views" if tta else ""))

    result = evaluate_folder(_clf, folder, tta=tta, progress=progress)
    bar.empty()
    return result


# ------------------------------------------------------------------ charts

def roc_figure(result: dict, op: tuple[float, float], thr: float, model_thr: float, model_op) -> go.Figure:
    roc = result["roc"]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dot", "color": "#999"},
                             hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=roc["fpr"], y=roc["tpr"], mode="lines", name=f"ROC (AUC {common.fmt_metric(result['auc'], 3)})",
                             line={"color": "#2471a3", "width": 2.5, "shape": "hv"},
                             customdata=roc["thresholds"],
                             hovertemplate="threshold %{customdata:.3f}<br>1 − specificity %{x:.3f}"
                                           "<br>sensitivity %{y:.3f}<extra></extra>"))
    if model_op is not None:  # the card's operating point, when the slider has left it
        fig.add_trace(go.Scatter(x=[1 - model_op[1]], y=[model_op[0]], mode="markers", name=f"card threshold {model_thr:.3f}",
                                 marker={"size": 11, "color": "white", "line": {"color": "#555", "width": 2}}))
    fig.add_trace(go.Scatter(x=[1 - op[1]], y=[op[0]], mode="markers", name=f"threshold {thr:.3f}",
                             marker={"size": 14, "color": "#b03a2e", "symbol": "diamond",
                                     "line": {"color": "white", "width": 1}}))
    fig.update_layout(title={"text": "ROC curve", "font": {"size": 15}}, height=420,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis={"title": "1 − specificity (benign called malignant)", "range": [-0.01, 1.01]},
                      yaxis={"title": "sensitivity (malignant found)", "range": [-0.01, 1.01], "scaleanchor": "x"},
                      legend={"orientation": "h", "y": -0.25}, uirevision="roc")
    return fig


def confusion_figure(c: dict) -> go.Figure:
    z = [[c["tn"], c["fp"]], [c["fn"], c["tp"]]]
    names = [["true negative", "false positive"], ["false negative", "true positive"]]
    text = [[f"<b>{z[i][j]}</b><br>{names[i][j]}" for j in range(2)] for i in range(2)]
    fig = go.Figure(go.Heatmap(z=z, x=["benign", "malignant"], y=["benign", "malignant"], text=text,
                               texttemplate="%{text}", textfont={"size": 15}, colorscale="Blues", showscale=False,
                               hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))
    fig.update_layout(title={"text": "Confusion matrix", "font": {"size": 15}}, height=420,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis={"title": "predicted", "side": "bottom"},
                      yaxis={"title": "true", "autorange": "reversed"})
    return fig


def reliability_figure(cal: dict) -> go.Figure:
    edges = cal["edges"]
    mids = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    keep = [i for i, n in enumerate(cal["count"]) if n]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                             line={"dash": "dot", "color": "#999"}, hoverinfo="skip"))
    fig.add_trace(go.Bar(x=[mids[i] for i in keep], y=[cal["frac_malignant"][i] for i in keep],
                         width=[(edges[1] - edges[0]) * 0.9] * len(keep), name="share malignant in the bin",
                         marker={"color": "#5dade2"}, customdata=[cal["count"][i] for i in keep],
                         hovertemplate="p in bin %{x:.2f}: %{y:.2f} malignant (%{customdata} images)<extra></extra>"))
    fig.add_trace(go.Scatter(x=[cal["mean_prob"][i] for i in keep], y=[cal["frac_malignant"][i] for i in keep],
                             mode="markers", name="mean predicted probability in the bin",
                             marker={"color": "#1a5276", "size": 9}))
    fig.update_layout(title={"text": f"Reliability (ECE {common.fmt_metric(cal['ece'], 3)})", "font": {"size": 15}},
                      height=380, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis={"title": "predicted probability of malignant", "range": [0, 1]},
                      yaxis={"title": "share actually malignant", "range": [0, 1.02]},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def per_image_csv(result: dict, thr: float, base: Path | None) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["file", "true_label", "prob_malignant", f"predicted_at_{thr:.3f}", "correct"])
    for r in result["per_image"]:
        p = Path(r["path"])
        name = r["path"] if base is None else p.relative_to(base).as_posix() if p.is_relative_to(base) else p.name
        pred = int(r["prob_malignant"] >= thr)
        w.writerow([name, ["benign", "malignant"][r["label"]], f"{r['prob_malignant']:.6f}",
                    ["benign", "malignant"][pred], int(pred == r["label"])])
    return buf.getvalue().encode()


def zip_evaluation(clf, zip_set: LabelledZip, tta: bool) -> dict:
    """The evaluation of an uploaded zip's photos (decoded in memory), with a progress bar."""
    bar = st.progress(0.0, text=f"Reading the {len(zip_set.photos)} photos of {zip_set.name}…")
    images, labels, paths, skipped = labelled_zip.decode(zip_set, clf.image_size)

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Predicting {done}/{total} images" + (" × 8 views" if tta else ""))

    result = evaluate_images(clf, images, labels, paths, tta, progress=progress, skipped=skipped,
                             data=f"zip:{zip_set.name}")
    bar.empty()
    return result


@st.cache_data(max_entries=256, show_spinner=False)
def folder_overlay(checkpoint: str, ckpt_stamp: tuple, path: str, stamp: tuple, said: str, _thr: float, _clf):
    """The mistakes gallery's overlay of one folder photo: the heatmap of the label `said` (any threshold
    that gives that label gives the same map, so `_thr` is not part of the key). Shared by sessions, so a
    reopened result shows its gallery at once: these are the server's dataset files, not uploads."""
    return _clf.explain(Path(path).read_bytes(), threshold=_thr).overlay(0.45, size=220)


# ------------------------------------------------------------------ page

st.title("Evaluate")
st.markdown("Measure a model on a folder of labelled photos it was not trained on: how many malignant lesions it "
            "finds (sensitivity), how many benign ones it leaves alone (specificity), and where it goes wrong.")

choices = model_choices()
if not choices:
    st.warning("No trained model here yet: promote a run on the Training page, or put weights in models/weights/.",
               icon=":material/school:")
    st.stop()
base = datasets.data_base()
folders = datasets.list_datasets(base) + [SYNTHETIC]

c1, c2 = st.columns([3, 2])
keys = list(choices)
default_key = f"shipped:{default_model([c['name'] for c in choices.values()])}"
if st.session_state.get("eval_model") not in keys:
    st.session_state["eval_model"] = default_key if default_key in keys else keys[0]
choice = c1.selectbox("Model", keys, key="eval_model", format_func=lambda k: choices[k]["label"])
with c2:
    source = st.radio("Photos", list(SOURCES), key="eval_source", format_func=SOURCES.get, horizontal=True)
    if source == "folder":
        if st.session_state.get("eval_folder") not in folders:
            st.session_state["eval_folder"] = folders[default_folder(folders)]
        folder_opt = st.selectbox("Test folder", folders, key="eval_folder", format_func=lambda o: folder_label(o, base),
                                  help="Folders with benign/ and malignant/ inside LESION_LENS_DATA"
                                       + (f" ({base})" if base else " (not set here)") + ", or a generated SYNTHETIC set.")
    else:
        lim = labelled_zip.LIMITS
        upload = st.file_uploader(
            "A zip of photos in benign/ and malignant/ folders", type=ZIP_TYPES, key="eval_zip",
            help=f"Folders named benign and malignant at any depth. At most {lim['max_photos']:,} photos and "
                 f"{lim['max_total_bytes'] // 2**20} MB unpacked. The zip stays in memory for this session; it "
                 "is never saved or logged.")
tta = st.toggle("Test-time augmentation (average the 8 flips and rotations of each photo; 8× slower)", key="eval_tta")
picked = choices[choice]
name = picked["name"]
common.card_warnings(picked["card"])
train_data = picked["card"].get("data") or {}
if source == "folder" and isinstance(train_data, dict) and train_data.get("root") and folder_opt != SYNTHETIC and base:
    if Path(train_data["root"]).resolve() == (base / folder_opt).resolve():
        st.warning("This model was trained on this very folder (its validation images come from it too): the "
                   "numbers below are optimistic. Choose a held-out test folder.", icon=":material/warning:")

zip_set: LabelledZip | None = None
folder: Path | None = None
if source == "folder":
    try:
        folder = (datasets.synthetic_demo() / "test" if folder_opt == SYNTHETIC
                  else datasets.resolve_dataset(folder_opt, base))
    except (DatasetChoiceError, OSError) as exc:
        st.error(str(exc), icon=":material/block:")
        st.stop()
    if folder_opt == SYNTHETIC:
        st.caption(f"{common.SYNTHETIC_NOTE}: numbers on cartoons say nothing about real lesions.")
    data_key, about, csv_stem = str(folder), folder_label(folder_opt, base), folder.name
else:
    if upload is None:
        st.session_state.pop("eval_last", None)
        st.info("Upload a zip whose photos sit in benign/ and malignant/ folders, then press Evaluate.",
                icon=":material/folder_zip:")
        st.stop()
    blob = upload.getvalue()  # in memory only
    digest = hashlib.sha256(blob).hexdigest()[:32]
    try:
        zip_set = common.memo(("eval_zip", digest), lambda: labelled_zip.read_labelled_zip(blob, upload.name))
    except ZipRefused as exc:
        st.session_state.pop("eval_last", None)  # no earlier answer stays on screen under a refused file
        st.error(str(exc), icon=":material/folder_off:")
        st.stop()
    n = zip_set.counts()
    about = f"{upload.name} ({n['benign']} benign, {n['malignant']} malignant)"
    st.caption(f"{about}, in memory for this session only."
               + (f" {len(zip_set.skipped)} files skipped (first: {zip_set.skipped[0][0]}: {zip_set.skipped[0][1]})."
                  if zip_set.skipped else ""))
    data_key, csv_stem = f"zip:{digest}", Path(upload.name).stem

ckpt_stamp = checkpoint_stamp(picked["checkpoint"])
run_key = (choice, str(picked["checkpoint"]), ckpt_stamp, data_key, bool(tta))
go_now = st.button("Evaluate", key="eval_run", type="primary", icon=":material/analytics:")
if go_now:
    st.session_state["eval_last"] = run_key
if st.session_state.get("eval_last") != run_key:
    st.info("Choose a model and the photos, then press Evaluate.", icon=":material/analytics:")
    st.stop()

clf = classifiers.try_classifier(name, None if choice.startswith("shipped:") else picked["checkpoint"])
if clf is None:
    st.stop()

try:
    if zip_set is None:
        result = evaluation(name, str(picked["checkpoint"]), ckpt_stamp, str(folder),
                            folder_stamp(folder), bool(tta), clf)
    else:  # per session: an uploaded zip is the visitor's data
        result = common.memo(("eval_zip_result",) + run_key, lambda: zip_evaluation(clf, zip_set, bool(tta)))
except ZipRefused as exc:
    st.session_state.pop("eval_last", None)
    st.error(str(exc), icon=":material/folder_off:")
    st.stop()
except ValueError as exc:  # DatasetError, unreadable folder
    st.error(f"{folder_opt}: {exc}", icon=":material/folder_off:")
    st.stop()

y = np.array([r["label"] for r in result["per_image"]], dtype=int)
p = np.array([r["prob_malignant"] for r in result["per_image"]], dtype=float)
model_thr = float(result["threshold"])
if result["skipped"]:
    st.warning(f"{len(result['skipped'])} files could not be read and were skipped (first: "
               f"{Path(result['skipped'][0]['path']).name}: {result['skipped'][0]['reason']}).")

st.divider()
thr, at_card = common.threshold_slider(
    model_thr, key=f"eval_thr_{choice}",
    help="Malignant when the probability is at least the threshold. It starts at the model card's "
         "threshold, chosen on validation data.")
m = binary_metrics(y, p, thr)
cols = st.columns(5)
cols[0].metric("Images", f"{m['n']}")
cols[1].metric("Accuracy", common.fmt_metric(m["accuracy"], 3))
cols[2].metric("ROC AUC", common.fmt_metric(result["auc"], 3))
cols[3].metric("Sensitivity", common.fmt_metric(m["sensitivity"], 3))
cols[4].metric("Specificity", common.fmt_metric(m["specificity"], 3))
familiar = [r.get("familiar") for r in result["per_image"]]
if familiar and all(f is not None for f in familiar):  # the model's familiarity score, from the same pass
    fam = np.array(familiar, dtype=bool)
    correct = (p >= thr).astype(int) == y
    acc = {k: (f"{correct[sel].mean():.1%}" if sel.any() else "n/a") for k, sel in (("f", fam), ("u", ~fam))}
    st.markdown(f"**{int((~fam).sum())} of {len(fam)} photos unfamiliar** to {common.display(name)} (unlike the "
                f"photos it learned from); accuracy on familiar photos **{acc['f']}**, on unfamiliar ones "
                f"**{acc['u']}** (threshold {thr:.3f}).")
else:
    st.caption(f"{common.display(name)} has no familiarity score fitted (`python -m training.familiarity "
               f"--model {name}`), so unfamiliar photos are not counted.")
st.caption(f"{common.display(name)} on {result['n']} images of {about}"
           f"{' with test-time augmentation' if result['tta'] else ''}; threshold {thr:.3f}"
           f"{' (the card’s)' if at_card else f' (the card says {model_thr:.3f})'}. "
           "Sensitivity: malignant photos called malignant; specificity: benign photos called benign. "
           "ROC AUC does not depend on the threshold.")

if at_card:
    model_op = None
else:
    mt = binary_metrics(y, p, model_thr)
    model_op = (mt["sensitivity"], mt["specificity"])
left, right = st.columns(2)
with left:
    st.plotly_chart(roc_figure(result, (m["sensitivity"], m["specificity"]), thr, model_thr, model_op),
                    key="eval_roc", config={"displayModeBar": False})
with right:
    st.plotly_chart(confusion_figure(m["confusion"]), key="eval_confusion", config={"displayModeBar": False})

left, right = st.columns(2)
with left:
    st.plotly_chart(reliability_figure(result["calibration"]), key="eval_calibration", config={"displayModeBar": False})
with right:
    st.markdown("**Reading the reliability diagram.** Photos are grouped by the probability the model gave. In a "
                "well calibrated model, of the photos given about 30 %, about 30 % are malignant: the bars "
                "follow the diagonal. Bars below it mean the model is over-confident about malignancy, above it "
                "under-confident. The expected calibration error (ECE) is the average gap, weighted by the "
                "number of photos in each bin.")
    st.download_button("Download per-image results (CSV)", per_image_csv(result, thr, folder),
                       file_name=f"{name}_{csv_stem}_evaluation.csv", mime="text/csv",
                       icon=":material/download:", key="eval_csv", on_click="ignore")

st.subheader("Fit the threshold to these photos")
if len(set(y.tolist())) < 2:
    st.caption("These photos hold only one class, so no threshold can be fitted to them.")
else:
    fitted = choose_threshold(y, p)
    fm, cm = binary_metrics(y, p, fitted), binary_metrics(y, p, model_thr)
    st.markdown(f"The model card's threshold **{model_thr:.3f}** was chosen on its validation photos by one rule: "
                f"{THRESHOLD_RULE}. The same rule applied to **these** photos gives **{fitted:.3f}**.")
    st.dataframe({"threshold": [f"{model_thr:.3f}: the model card's (chosen on validation)",
                                f"{fitted:.3f}: fitted on these photos"],
                  "sensitivity": [cm["sensitivity"], fm["sensitivity"]],
                  "specificity": [cm["specificity"], fm["specificity"]],
                  "accuracy": [cm["accuracy"], fm["accuracy"]]}, hide_index=True,
                 column_config={k: st.column_config.NumberColumn(format="%.3f")
                                for k in ("sensitivity", "specificity", "accuracy")})
    st.caption("Fitted on these same photos, so its numbers are optimistic for them: a threshold chosen on a "
               "set and measured on it always looks better than it will on new photos. It is shown only here; "
               "the shipped model card and its threshold stay as they are, and Diagnose and Compare keep "
               "using the card's. To judge a threshold fitted here, measure it on other photos.")

st.subheader("Mistakes at this threshold")
wrong = [r for r in result["per_image"] if int(r["prob_malignant"] >= thr) != r["label"]]
if not wrong:
    st.success("No photo is misclassified at this threshold.", icon=":material/check_circle:")
else:
    wrong.sort(key=lambda r: -abs(r["prob_malignant"] - thr))  # the most confident mistakes first
    shown = wrong[:GALLERY]
    st.caption(f"{len(wrong)} of {len(y)} photos are misclassified; the {len(shown)} most confident mistakes are "
               "shown with the heatmap of the wrong answer (what the model looked at when it got it wrong).")
    grid = st.columns(4)
    for i, r in enumerate(shown):
        path = Path(r["path"])
        truth = ["benign", "malignant"][r["label"]]
        said = ["benign", "malignant"][1 - r["label"]]
        try:
            if zip_set is None:
                img = folder_overlay(str(picked["checkpoint"]), ckpt_stamp, str(path), file_stamp(path), said, thr, clf)
            else:  # an uploaded photo: remembered for this session only
                img = common.memo(("eval_explain", classifiers.model_key(clf), data_key, r["path"], said),
                                  lambda: clf.explain(zip_set.data(r["path"]), threshold=thr)
                                  .overlay(0.45, size=220))
        except (OSError, ValueError) as exc:
            grid[i % 4].caption(f"{path.name}: {exc}")
            continue
        grid[i % 4].image(img, caption=f"{path.name}: truly {truth}, p = {r['prob_malignant']:.3f} → {said}",
                          width="stretch")
