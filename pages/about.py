"""About: model cards, the data and its terms, the limits, what a heatmap means."""

from __future__ import annotations

import streamlit as st

from models import MODEL_NAMES, spec
from models.registry import shipped_card
from pages import common

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
    if d.get("sources"):  # one line per source: its photos in training + validation
        return "; ".join(f"{s['name']}: " + " + ".join(f"{sum(int(v) for v in (s['counts'].get(k) or {}).values())} {k}"
                                                        for k in ("train", "val")) for s in d["sources"])
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
        text += f" · {common.SYNTHETIC_NOTE}"
    return text


def _training(card: dict) -> str:
    t = card.get("training") or {}
    bits = [f"{card.get('epochs', 0)} epochs"]
    if card.get("best_epoch"):
        bits.append(f"best epoch {card['best_epoch']}")
    for key, label in (("batch_size", "batch"), ("lr", "lr"), ("device_used", "on")):
        if t.get(key) not in (None, ""):
            bits.append(f"{label} {t[key]}")
    kd = t.get("distillation") or {}
    if kd.get("teacher") in MODEL_NAMES:
        bits.append(f"distilled from {spec(kd['teacher']).display} (its answers {kd.get('weight', 0.5):.0%} of each target)")
    if card.get("trained_at"):
        bits.append(str(card["trained_at"])[:10])
    return ", ".join(bits)


def _checks(card: dict) -> list[str]:
    """The card's `checks` (python -m training.checks --write-card): shortcut probe and heatmap on lesion."""
    c = card.get("checks") or {}
    sp, hm = c.get("shortcut_probe") or {}, c.get("heatmap_on_lesion") or {}
    flips = " · ".join(f"{label} {sp[k]['flipped']:.0%}" for k, label in
                       (("dark_rim", "rim"), ("blue_cast", "blue"), ("colour_chart", "chart")) if k in sp)
    method = f" ({hm['method']})" if hm.get("method") else ""
    peak = f"{hm['peak_on_lesion']:.0%} of {hm['n']} photos{method}" if hm.get("n") else "–"
    mass = (f"{hm['mass_on_lesion']:.0%} (lesion covers {hm['lesion_share_of_frame']:.0%})"
            if hm.get("n") else "–")
    drop = hm.get("log_odds_drop") or {}
    faithful = (f"{drop['heatmap']:.2f} (random blobs {drop['random']:.2f})"
                if drop.get("heatmap") is not None and hm.get("n") else "–")
    return [_folders(c), flips or "–", peak, mass, faithful, _familiarity(c)]


# Source folders by their short names (the Kaggle folder's name is its dataset's).
FOLDER_NAMES = {"skin-cancer-malignant-vs-benign": "Kaggle"}


def _folders(checks: dict) -> str:
    """Validation AUC per source folder as it is on disk: the Kaggle folder's view is made the way
    its held-out test split is."""
    f = checks.get("per_folder") or {}
    return " · ".join(f"{FOLDER_NAMES.get(k, k)} {v['auc']:.3f} ({v['n']})" for k, v in f.items()
                      if v.get("auc") is not None) or "–"


def _familiarity(checks: dict) -> str:
    """How often the unfamiliar-photo warning fires, and the accuracy with and without it: on the
    validation photos, and on benign photos with a dark rim (a camera the models should not trust)."""
    def one(label: str, a: dict | None) -> str | None:
        if not a or not a.get("n"):
            return None
        acc = " / ".join("–" if a.get(k) is None else f"{a[k]:.2f}" for k in ("accuracy_familiar", "accuracy_unfamiliar"))
        return f"{label} {a['unfamiliar'] / a['n']:.0%} flagged (accuracy {acc})"

    parts = [one("validation", (checks.get("familiarity") or {}).get("validation")),
             one("dark rim", ((checks.get("shortcut_probe") or {}).get("dark_rim") or {}).get("familiarity"))]
    return " · ".join(p for p in parts if p) or "–"


rows = ["framework", "initialisation", "input", "data", "training", "validation accuracy", "validation AUC",
        "sensitivity", "specificity", "threshold", "calibration (ECE)", "temperature",
        "validation AUC per source folder (photos)",
        "benign labels flipped by a dark rim / blue cast / colour chart", "heatmap peak on the lesion",
        "heatmap mass on the lesion", "answer's log-odds drop when the heatmap's hottest fifth is blurred",
        "unfamiliar-photo warning (accuracy familiar / unfamiliar)"]
table: dict[str, list[str]] = {"": rows}
no_weights = []
for name in MODEL_NAMES:
    card = shipped_card(name)
    s = spec(name)
    if card is None:
        no_weights.append(s.display)
        table[s.display] = [s.framework, s.init, f"{s.image_size} px"] + ["no weights yet"] + ["–"] * (len(rows) - 4)
        continue
    v = card.get("validation") or {}
    table[s.display] = [
        str(card.get("framework", s.framework)), str(card.get("init", "–")), f"{card.get('image_size')} px",
        _data(card), _training(card), common.fmt_metric(v.get("accuracy"), 3), common.fmt_metric(v.get("auc"), 3),
        common.fmt_metric(v.get("sensitivity"), 3), common.fmt_metric(v.get("specificity"), 3),
        common.fmt_metric(card.get("threshold"), 3), common.fmt_metric(v.get("ece"), 3),
        common.fmt_metric(card.get("temperature"), 2),
    ] + _checks(card)
st.table(table)
st.caption("The last six rows are the project's own checks (`python -m training.checks`, on the validation "
           "split). Per source folder, a photo that both folders hold counts in both: the Kaggle folder's view "
           "(HAM10000 naevi against malignant photos from several collections) is made the way its held-out test "
           "split is, so it stands in for that split. A model that learned the lesion barely changes its answer "
           "when a dermatoscope's dark rim, a blue cast or a colour chart is added to a benign photo, and its "
           "heatmap peaks on the lesion (on HAM10000 photos with an expert lesion mask) far more often than the "
           "lesion's share of the frame. A heatmap that shows what the model used moves the answer when its "
           "hottest fifth of the photo is blurred away, far more than blurring random blobs of the same area does. "
           "The last row says how often the unfamiliar-photo warning fires and how often the answers with and "
           "without it are right: here the flagged photos are not answered worse, so the warning means *unlike the "
           "training photos*, not *probably wrong*.")
st.caption("Validation metrics come from each model card: photos held out from training (split by lesion), "
           "probabilities calibrated by temperature scaling. The threshold is the highest one whose validation "
           "sensitivity is at least 0.90 where possible: missing a melanoma costs more than a second look at a "
           "benign mole. Initialisation: *imagenet* means the network started from weights learnt on everyday "
           "photos (ImageNet), *scratch* from random numbers.")
if no_weights:
    st.caption(f"No weights yet: {', '.join(no_weights)}. `python -m training --model NAME --data DIR` trains one.")
made = {s.display: c["notes"] for s, c in ((spec(n), shipped_card(n)) for n in MODEL_NAMES) if c and c.get("notes")}
if made:
    with st.expander("How each model was made (its card's notes)"):
        for display, note in made.items():
            st.markdown(f"**{display}.** {note}")

st.header("The data and its terms")
st.markdown(
    "- **Training photos.** Models trained in this release learn from two sets of dermoscopic photos: the Kaggle "
    "dataset **“Skin Cancer: Malignant vs. Benign”** (photos from the **ISIC Archive**) and **HAM10000** "
    "(Tschandl, Rosendahl & Kittler, *Sci. Data* 5:180161, 2018; photos from Vienna and Queensland, with lesion "
    "masks and the diagnosis of each lesion). A photo that both sets hold is used once, and the validation photos "
    "are split off **by lesion**, so no lesion is on both sides. The *data* row above names each model's sources "
    "and counts; a model with one source there was trained before HAM10000 was added.\n"
    "- **Why two sources.** In the Kaggle set alone, every benign photo is a HAM10000 naevus while half of the "
    "malignant ones come from other dermatoscopes, with darker corners and a bluer cast: a model can learn "
    "*which camera* instead of *which lesion*. Training now adds HAM10000's keratoses, dermatofibromas, vascular "
    "lesions, basal cell carcinomas and actinic keratoses, evens out colour (Shades of Gray colour constancy, "
    "in training and in the app) and adds dark rims, colour casts, zoom, blur, rescaling with JPEG "
    "compression and hair-like lines to every class, so the camera stops being a cue.\n"
    "- **Terms.** The ISIC images carry **CC-0, CC-BY or CC-BY-NC** licences depending on the collection; "
    "HAM10000 is **CC BY-NC 4.0**. Use them, and these models, for **non-commercial research and teaching** "
    "only, and credit the ISIC Archive, the Kaggle dataset and the HAM10000 authors.\n"
    "- **Example photos.** The examples offered on the Diagnose page are 16 HAM10000 photos (credited in "
    "`assets/examples/ham10000/`), kept out of training and validation.\n"
    "- Your photos are processed in memory for your session only: never saved, never logged.")

st.header("What the models cannot do")
st.markdown(
    "- **They are not a diagnosis.** No model here has been clinically validated or approved; a dermatologist "
    "with a dermatoscope, the patient's history and, when needed, a biopsy makes the diagnosis.\n"
    "- **They know two classes.** Every photo is forced into *benign* or *malignant*, even a photo of a scar, a "
    "rash, a tattoo or a cat.\n"
    "- **They learnt from dermoscopic images.** Phone photos (different light, distance, focus) are far from "
    "what they saw in training and their answers on them mean less.\n"
    "- **They learnt from about ten thousand images of mostly light skin, mostly naevi.** Performance on darker skin, rare "
    "lesion types, children, nails, mucosa or scalp is unknown.\n"
    "- **The validation numbers are from the same archives.** Measured on two public dermoscopy sets from "
    "other clinics, the models trained before this release were wrong most of the time (they called nearly "
    "every benign lesion malignant); the checks in the table show how far the current ones still react to a "
    "dark rim, a blue cast or a colour chart. Expect lower sensitivity and specificity on another clinic's "
    "photos than the validation rows say; a probability is calibrated only on data like the validation set.\n"
    "- **A low probability does not rule anything out.** A lesion that changes, bleeds, itches or looks "
    "different from the person's others needs a doctor, whatever any model says.")

st.header("What the heatmap does and does not mean")
st.markdown(
    "The heatmap (Grad-CAM and its relatives) colours the regions of the photo whose features moved **this "
    "model's** answer most, computed at one of the model's convolutional layers and scaled up to the photo. "
    "The PyTorch models show Layer-CAM by default: every location of the layer weighted by its own gradient. "
    "It reads DenseNet161 and EfficientNet-Lite0 one stage before their last (DenseNet161's 8×8 grid at 128 px "
    "instead of 4×4, EfficientNet-Lite0's 10×10 at 160 px instead of 5×5); measured on HAM10000 validation "
    "photos, its peak lies on the lesion far more often than Grad-CAM's on the last layer, and blurring its "
    "hottest pixels moves the answer at least as much (the table above). "
    "The Keras CNN shows Grad-CAM.\n\n"
    "- It **does** show what the model relied on: if it lights up a ruler, a hair, an ink mark or the dark "
    "corner of a dermoscope, the model is using a shortcut rather than the lesion.\n"
    "- It **does not** show where the disease is. It is not a segmentation, it is coarse (one cell per 8×8 "
    "pixels of the model's input for the two small CNNs, 16×16 cells at 128 px, 20×20 at 160 px; for DenseNet161 and "
    "EfficientNet-Lite0 one per 16×16 with Layer-CAM (8×8 cells at 128 px, 10×10 at 160 px), and one per 32×32 "
    "with the other methods (4×4 and 5×5 cells); scaled up), and it is normalised per photo: red means "
    "“strongest in *this* photo”, not “strong”.\n"
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
