"""About: model cards, the data and its terms, the limits, what a heatmap means."""

from __future__ import annotations

import streamlit as st

from models import MODEL_NAMES, spec
from pages import _ui as ui

st.title("About Lesion Lens")
st.markdown("Lesion Lens is a **research and teaching demo**, not a medical device. It shows how four neural "
            "networks sort photos of skin lesions into *benign* and *malignant*, how sure they are, how well they "
            "did on held-out photos, and which parts of a photo moved their answer.")

st.header("The models")


def _data(card: dict) -> str:
    d = card.get("data")
    if not d:
        return "–"
    if not isinstance(d, dict):
        return str(d)
    text = str(d.get("name") or d.get("root") or "dataset")
    counts = d.get("counts") or {}
    parts = []
    for split in ("train", "val"):
        c = counts.get(split)
        if isinstance(c, dict):
            parts.append(f"{sum(int(v) for v in c.values())} {split}")
        elif c is not None:
            parts.append(f"{c} {split}")
    if parts:
        text += ": " + " + ".join(parts) + " photos"
    if d.get("synthetic"):
        text += f" · {ui.SYNTHETIC_NOTE}"
    return text


def _training(card: dict) -> str:
    t = card.get("training") or {}
    bits = [f"{card.get('epochs', 0)} epochs"]
    if card.get("best_epoch"):
        bits.append(f"best epoch {card['best_epoch']}")
    for key, label in (("batch_size", "batch"), ("lr", "lr"), ("device_used", "on")):
        if t.get(key) not in (None, ""):
            bits.append(f"{label} {t[key]}")
    if card.get("trained_at"):
        bits.append(str(card["trained_at"])[:10])
    return ", ".join(bits)


rows = ["framework", "initialisation", "input", "data", "training", "validation accuracy", "validation AUC",
        "sensitivity", "specificity", "threshold", "calibration (ECE)", "temperature"]
table: dict[str, list[str]] = {"": rows}
no_weights = []
for name in MODEL_NAMES:
    card = ui.shipped_card(name)
    s = spec(name)
    if card is None:
        no_weights.append(s.display)
        table[s.display] = [s.framework, s.init, f"{s.image_size} px"] + ["no weights yet"] + ["–"] * (len(rows) - 4)
        continue
    v = card.get("validation") or {}
    table[s.display] = [
        str(card.get("framework", s.framework)), str(card.get("init", "–")), f"{card.get('image_size')} px",
        _data(card), _training(card), ui.fmt_metric(v.get("accuracy"), 3), ui.fmt_metric(v.get("auc"), 3),
        ui.fmt_metric(v.get("sensitivity"), 3), ui.fmt_metric(v.get("specificity"), 3),
        ui.fmt_metric(card.get("threshold"), 3), ui.fmt_metric(v.get("ece"), 3),
        ui.fmt_metric(card.get("temperature"), 2),
    ]
st.table(table)
st.caption("Validation metrics come from each model card: photos held out from training (a stratified split), "
           "probabilities calibrated by temperature scaling. The threshold is the highest one whose validation "
           "sensitivity is at least 0.90 where possible: missing a melanoma costs more than a second look at a "
           "benign mole. Initialisation: *imagenet* means the network started from weights learnt on everyday "
           "photos (ImageNet), *scratch* from random numbers.")
if no_weights:
    st.caption(f"No weights yet: {', '.join(no_weights)}. `python -m training --model NAME --data DIR` trains one.")

st.header("The data and its terms")
st.markdown(
    "- The models are trained on the Kaggle dataset **“Skin Cancer: Malignant vs. Benign”**, a selection of "
    "dermoscopic images from the **ISIC Archive** (International Skin Imaging Collaboration), about 3,300 photos "
    "labelled benign or malignant.\n"
    "- The ISIC images carry **CC-0, CC-BY or CC-BY-NC** licences depending on the collection they come from. "
    "Use them, and these models, for **non-commercial research and teaching** only, and credit the ISIC Archive "
    "and the Kaggle dataset.\n"
    "- The data is not part of this app. The example photos shipped with it are synthetic drawings, marked "
    f"{ui.SYNTHETIC_NOTE}.\n"
    "- Your photos are processed in memory for your session only: never saved, never logged.")

st.header("What the models cannot do")
st.markdown(
    "- **They are not a diagnosis.** No model here has been clinically validated or approved; a dermatologist "
    "with a dermatoscope, the patient's history and, when needed, a biopsy makes the diagnosis.\n"
    "- **They know two classes.** Every photo is forced into *benign* or *malignant*, even a photo of a scar, a "
    "rash, a tattoo or a cat.\n"
    "- **They learnt from dermoscopic images.** Phone photos (different light, distance, focus) are far from "
    "what they saw in training and their answers on them mean less.\n"
    "- **They learnt from a few thousand images of mostly light skin.** Performance on darker skin, rare "
    "lesion types, children, nails, mucosa or scalp is unknown.\n"
    "- **The validation numbers are from the same archive.** Sensitivity and specificity on another clinic's "
    "photos will be lower; a probability is calibrated only on data like the validation set.\n"
    "- **A low probability does not rule anything out.** A lesion that changes, bleeds, itches or looks "
    "different from the person's others needs a doctor, whatever any model says.")

st.header("What the heatmap does and does not mean")
st.markdown(
    "The heatmap (Grad-CAM and its relatives) colours the regions of the photo whose features moved **this "
    "model's** answer most, computed at the model's last convolutional layer and scaled up to the photo.\n\n"
    "- It **does** show what the model relied on: if it lights up a ruler, a hair, an ink mark or the dark "
    "corner of a dermoscope, the model is using a shortcut rather than the lesion.\n"
    "- It **does not** show where the disease is. It is not a segmentation, it is coarse (a grid of 7×7 to 20×20 "
    "cells, scaled up), and it is normalised per photo: red means “strongest in *this* photo”, not “strong”.\n"
    "- Different methods (Grad-CAM, Grad-CAM++, XGrad-CAM, Eigen-CAM, Layer-CAM) can disagree on the same photo: "
    "each answers a slightly different question. Eigen-CAM ignores the answer altogether.\n"
    "- A **flat** map (no spatial evidence) is reported as such rather than drawn: stretching a map with no "
    "variation would paint noise.")

st.header("How it is built")
st.markdown(
    "Four networks share one interface: a Keras CNN and a PyTorch CNN trained from scratch, and DenseNet161 and "
    "EfficientNet-Lite0, which can start from ImageNet weights (the table's *initialisation* row says whether "
    "the shipped ones did). Preprocessing (a centre crop, resize and normalisation "
    "read from the model card) is the same code in training and in the app. See the repository's README for "
    "training, evaluation and the command-line tools.")
