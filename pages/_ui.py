"""Shared UI helpers for the pages: cached models, photo picking, examples, probability bars.

Pages stay thin and call these. Nothing here imports torch or TensorFlow at import time:
a model (and its framework) loads the first time a page asks for it, once per process.

Privacy: uploaded photos stay in memory (`UploadedFile.getvalue()` bytes); nothing here
writes them to disk or logs them. Per-session results are kept in `st.session_state`
(bounded), never in a cache shared between sessions.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import streamlit as st
from PIL import Image

from models import MODEL_NAMES, ImageError, MissingWeights, load_classifier, load_image, spec
from models.classifier import Classifier, heatmap_image, overlay_image
from models.preprocess import IMAGE_EXTENSIONS, to_model_size
from models.registry import card_path, read_card, shipped_checkpoint

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "assets" / "examples"
SYNTHETIC_NOTE = "SYNTHETIC (generated, not a real lesion)"
SYNTHETIC_OPTION = "__synthetic__"  # the generated demo dataset in the Training and Evaluate folder lists
# The browser's file picker offers these (by MIME type: .jpg/.jpeg, .png, .webp, .bmp, .tif/.tiff).
# MIME types rather than extensions because with extensions Streamlit re-checks the name on the
# server and raises in the page for a file that bypassed the picker (a hand-made request); this
# way such a file reaches models.load_image, which refuses it with a clear message.
UPLOAD_TYPES = ["image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff"]
DISCLAIMER = ("Research and teaching demo, **not a medical device**: it does not diagnose anything. "
              "See a dermatologist about any skin lesion that worries you.")
DISPLAY_SIZE = 336
MEMO_ENTRIES = 96
EXAMPLES_PER_CLASS = 3

CAM_HELP = {
    "gradcam": "Grad-CAM: the last convolutional feature maps, weighted by the average gradient of the answer.",
    "gradcam++": "Grad-CAM++: like Grad-CAM with higher-order gradient weights; often covers several regions.",
    "xgradcam": "XGrad-CAM: gradients weighted by the activations themselves (axiom-based).",
    "eigencam": "Eigen-CAM: the first principal component of the feature maps; ignores the answer (no gradients).",
    "layercam": "Layer-CAM: element-wise positive gradients times activations; finer detail.",
}


# ------------------------------------------------------------------ models

def display(name: str) -> str:
    return spec(name).display


def shipped_card(name: str) -> dict[str, Any] | None:
    """The model card of the shipped checkpoint (read from JSON: no framework import), or None."""
    ckpt = shipped_checkpoint(name)
    path = card_path(ckpt)
    if not (ckpt.exists() and path.is_file()):
        return None
    try:
        return read_card(path)
    except (OSError, ValueError):
        return None


def has_weights(name: str) -> bool:
    return shipped_card(name) is not None


def models_with_weights() -> list[str]:
    return [n for n in MODEL_NAMES if has_weights(n)]


def default_model(names: Sequence[str] | None = None) -> str:
    """The best available model by validation AUC, PyTorch first (the Keras one imports TensorFlow)."""
    avail = list(names) if names is not None else models_with_weights()
    if not avail:
        return "torch_cnn" if "torch_cnn" in MODEL_NAMES else MODEL_NAMES[0]

    def key(n: str):
        card = shipped_card(n) or {}
        auc = (card.get("validation") or {}).get("auc")
        auc = float(auc) if isinstance(auc, (int, float)) and np.isfinite(auc) else -1.0
        return (spec(n).framework != "keras", bool(card.get("epochs")), auc)

    return max(avail, key=key)


def model_label(name: str) -> str:
    return display(name) if has_weights(name) else f"{display(name)} (no weights)"


def model_select(prefix: str, label: str = "Model") -> str:
    names = list(MODEL_NAMES)
    key = f"{prefix}_model"
    if key not in st.session_state or st.session_state[key] not in names:
        st.session_state[key] = default_model()
    return st.selectbox(label, names, key=key, format_func=model_label,
                        help="Models without weights are listed too; choosing one says how to train it.")


def _file_stamp(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


@st.cache_resource(max_entries=8, show_spinner=False)
def _cached_classifier(name: str, checkpoint: str, stamp: tuple[int, int]) -> Classifier:
    # One instance per (model, checkpoint, modification time) and process; a retrained and
    # promoted checkpoint has a new mtime and is loaded afresh.
    return load_classifier(name, checkpoint)


def get_classifier(name: str) -> Classifier:
    """The shared classifier for `name`; raises MissingWeights (with how to train) or ValueError."""
    ckpt = shipped_checkpoint(name)
    if not ckpt.exists():
        return load_classifier(name)  # raises MissingWeights with the training hint
    stamp = (_file_stamp(ckpt), _file_stamp(card_path(ckpt)))
    with st.spinner(f"Loading {display(name)}…"):
        return _cached_classifier(name, str(ckpt), stamp)


_WARM_UP = {"started": False}
_WARM_UP_LOCK = threading.Lock()


def warm_up() -> None:
    """Once per server process, after the first page has been sent: load the default PyTorch model
    and explain one grey image with it in a background thread, so the first prediction waits for
    neither torch, the checkpoint nor pytorch-grad-cam's import (about 3 CPU-seconds here).

    Not for the Keras model (TensorFlow is imported only when that model is used), not under
    AppTest, and not with LESION_LENS_WARMUP=off.
    """
    if os.environ.get("LESION_LENS_WARMUP", "on").strip().lower() in ("0", "off", "no", "false"):
        return
    if st.get_option("global.appTest"):
        return
    with _WARM_UP_LOCK:
        if _WARM_UP["started"]:
            return
        _WARM_UP["started"] = True
    name = default_model()
    ckpt = shipped_checkpoint(name)
    if spec(name).framework == "keras" or not has_weights(name):
        return
    stamp = (_file_stamp(ckpt), _file_stamp(card_path(ckpt)))

    def load() -> None:
        try:
            clf = _cached_classifier(name, str(ckpt), stamp)
            clf.explain(np.full((64, 64, 3), 128, np.uint8), spec(name).cam_methods[0])
        except Exception:  # noqa: BLE001 - the page reports any problem when the model is used
            pass

    threading.Thread(target=load, name="lesion-lens-warm-up", daemon=True).start()


def try_classifier(name: str) -> Classifier | None:
    """The classifier, or None after showing why not (no weights: a warning; broken: an error)."""
    try:
        return get_classifier(name)
    except MissingWeights as exc:
        st.warning(str(exc), icon=":material/school:")
    except ImportError as exc:
        st.error(f"{display(name)} cannot be loaded here: a library is missing ({exc}).")
    except (ValueError, RuntimeError, OSError) as exc:
        st.error(f"{display(name)}: its checkpoint cannot be loaded ({type(exc).__name__}: {exc}).")
    return None


def model_key(clf: Classifier) -> str:
    """Identifies a loaded classifier in the per-session memo (a retrained model is another key)."""
    return f"{clf.name}@{id(clf)}"


def card_warnings(card: dict[str, Any]) -> None:
    if not card.get("epochs"):
        st.warning("These weights are untrained (the model card says 0 epochs): the output is noise, "
                   "useful only to see what an untrained network does.", icon=":material/warning:")
    if card.get("synthetic"):
        st.warning(f"This model was trained on {SYNTHETIC_NOTE} images only.", icon=":material/warning:")


# ------------------------------------------------------------------ per-session memo

def memo(key: tuple, compute: Callable[[], Any]) -> Any:
    """Remember `compute()` for this browser session (bounded LRU); reruns (sliders) reuse it."""
    store: OrderedDict = st.session_state.setdefault("_lesion_lens_memo", OrderedDict())
    if key in store:
        store.move_to_end(key)
        return store[key]
    value = compute()
    store[key] = value
    while len(store) > MEMO_ENTRIES:
        store.popitem(last=False)
    return value


# ------------------------------------------------------------------ photos and examples

@dataclass(frozen=True)
class Photo:
    name: str
    data: bytes
    source: str  # "upload" or "example"
    note: str = ""  # shown with the photo: dataset label, SYNTHETIC
    synthetic: bool = False

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()[:32]


@dataclass(frozen=True)
class Example:
    label: str
    path: str
    truth: str
    synthetic: bool
    note: str


def _dataset_roots(base: Path, depth: int = 3) -> list[Path]:
    roots: list[Path] = []
    for dirpath, dirnames, _ in os.walk(base, followlinks=False):
        p = Path(dirpath)
        if (p / "benign").is_dir() and (p / "malignant").is_dir():
            roots.append(p)
            dirnames[:] = []
            continue
        if len(p.relative_to(base).parts) >= depth:
            dirnames[:] = []
        dirnames.sort()
    return roots


def _spread(items: list[Path], k: int) -> list[Path]:
    if len(items) <= k:
        return items
    idx = np.linspace(0, len(items) - 1, k).round().astype(int)
    return [items[i] for i in idx]


@st.cache_data(ttl=300, show_spinner=False)
def _examples(data_dir: str | None) -> tuple[list[Example], str]:
    if data_dir:
        base = Path(data_dir)
        roots = _dataset_roots(base) if base.is_dir() else []
        if roots:
            # Held-out images (a test/ split) are the honest examples: the models never trained on them.
            root = next((r for r in roots if r.name.lower() == "test"), roots[0])
            rel = root.relative_to(base) if root != base else Path(base.name)
            held_out = root.name.lower() == "test"
            caveat = "" if held_out else (" The models may have been trained on this photo, so their answer "
                                          "on it is optimistic.")
            found: list[Example] = []
            for cls in ("benign", "malignant"):
                files = sorted(p for p in (root / cls).iterdir()
                               if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith("."))
                for i, p in enumerate(_spread(files, EXAMPLES_PER_CLASS), 1):
                    found.append(Example(f"{cls} {i} ({rel}/{cls}/{p.name})", str(p), cls, False,
                                         f"From the dataset folder {rel}/, labelled {cls} there.{caveat}"))
            if found:
                return found, f"Examples from the dataset in {rel}/ (LESION_LENS_DATA)."
    found = []
    for p in sorted(EXAMPLES_DIR.glob("synthetic_*.png")):
        truth = "malignant" if "malignant" in p.stem else "benign"
        n = p.stem.rsplit("_", 1)[-1]
        found.append(Example(f"synthetic {truth} {n}", str(p), truth, True,
                             f"{SYNTHETIC_NOTE}; drawn to look {truth}."))
    return found, f"{SYNTHETIC_NOTE} examples (set LESION_LENS_DATA to a dataset folder for real ones)."


def list_examples() -> tuple[list[Example], str]:
    return _examples(os.environ.get("LESION_LENS_DATA") or None)


def example_photo(ex: Example) -> Photo:
    return Photo(Path(ex.path).name, Path(ex.path).read_bytes(), "example", ex.note, ex.synthetic)


def uploaded_photo(uploaded) -> Photo:
    # Bytes in memory only: the upload is never written anywhere.
    return Photo(uploaded.name, uploaded.getvalue(), "upload")


def photo_picker(prefix: str, preselect: bool = True) -> Photo | None:
    """File uploader plus an example list; whichever the user touched last is analysed.

    preselect=False starts with no example chosen, so the page's first run does no model work.
    """
    src = f"{prefix}_source"
    st.session_state.setdefault(src, "example")

    def use(which: str) -> None:
        st.session_state[src] = which

    uploaded = st.file_uploader("Upload a photo of a skin lesion", type=UPLOAD_TYPES, key=f"{prefix}_upload",
                                on_change=use, args=("upload",),
                                help="JPEG, PNG, WebP, BMP or TIFF. The photo stays in memory for this session; "
                                     "it is never saved or logged.")
    examples, about = list_examples()
    chosen = None
    if examples:
        i = st.selectbox("…or pick an example", range(len(examples)), key=f"{prefix}_example",
                         index=0 if preselect else None, placeholder="Choose an example photo",
                         format_func=lambda j: examples[j].label, on_change=use, args=("example",),
                         help=about)
        chosen = examples[i] if i is not None else None
    if uploaded is not None and (st.session_state[src] == "upload" or chosen is None):
        return uploaded_photo(uploaded)
    if chosen is not None:
        return example_photo(chosen)
    return None


def image_error(photo: Photo, exc: Exception) -> str:
    """An ImageError's message with the photo's own name instead of the generic 'upload'."""
    msg = str(exc)
    if msg.startswith("upload: "):
        msg = msg[len("upload: "):]
    return f"{photo.name}: {msg}"


def display_crop(photo: Photo, size: int = DISPLAY_SIZE) -> np.ndarray:
    """The centre crop the models see, at display size (memoised; the full photo is not kept).

    Raises ImageError, whose message is meant for the user, when the bytes are not a usable image.
    """
    return memo(("crop", photo.digest, size), lambda: to_model_size(load_image(photo.data), size))


def heatmap_views(photo: Photo, heatmap: np.ndarray, alpha: float, size: int = DISPLAY_SIZE
                  ) -> tuple[Image.Image, Image.Image, Image.Image]:
    """(photo crop, colour heatmap, overlay), all at display size."""
    crop = display_crop(photo, size)
    heat = np.asarray(Image.fromarray(heatmap.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))
    heat = np.clip(heat, 0.0, 1.0)
    return Image.fromarray(crop), heatmap_image(heat), overlay_image(crop, heat, alpha=alpha)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def thumbnail_uri(arr: np.ndarray, size: int = 72) -> str:
    img = Image.fromarray(arr).resize((size, size), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


# ------------------------------------------------------------------ probabilities and thresholds

def threshold_slider(card_threshold: float, key: str, help: str) -> tuple[float, bool]:
    """The decision-threshold slider, starting at the card's threshold: (threshold, is the card's).

    The slider has 3 decimals; while it sits on the card's threshold rounded to them, the card's exact
    threshold is returned, so labels and metrics there are the card's own."""
    shown = float(round(card_threshold, 3))
    thr = st.slider("Decision threshold", 0.0, 1.0, shown, 0.005, format="%.3f", key=key, help=help)
    if abs(thr - shown) < 1e-9:
        return card_threshold, True
    return thr, False


def operating_point(validation: dict[str, Any] | None, threshold: float) -> tuple[float, float] | None:
    """(sensitivity, specificity) on validation when malignant means p >= threshold, from the card's ROC.

    The ROC lists (fpr, tpr) at thresholds on the calibrated probability; the point that applies
    to `threshold` is the one with the smallest listed threshold still >= it. None without an ROC.
    """
    roc = (validation or {}).get("roc")
    try:
        thr = np.asarray(roc["thresholds"], dtype=np.float64)
        tpr = np.asarray(roc["tpr"], dtype=np.float64)
        fpr = np.asarray(roc["fpr"], dtype=np.float64)
    except (TypeError, KeyError, ValueError):
        return None
    if not (len(thr) == len(tpr) == len(fpr)) or len(thr) == 0:
        return None
    above = np.flatnonzero(thr >= threshold)
    if len(above) == 0:  # stricter than any listed point: nothing is called malignant
        return 0.0, 1.0
    i = above[np.argmin(thr[above])]
    return float(tpr[i]), float(1.0 - fpr[i])


def label_at(prob: float, threshold: float) -> str:
    return "malignant" if prob >= threshold else "benign"


LABEL_COLOURS = {"malignant": "#b03a2e", "benign": "#2471a3"}


def prob_bar_html(prob: float, threshold: float, ticks: Sequence[float] | None = None) -> str:
    """A horizontal bar of the probability of malignant with the threshold marked."""
    colour = LABEL_COLOURS[label_at(prob, threshold)]
    pct = max(0.0, min(100.0, 100.0 * prob))
    thr = max(0.0, min(100.0, 100.0 * threshold))
    tick_html = "".join(
        f'<div style="position:absolute;left:{100 * min(max(t, 0), 1):.2f}%;top:2px;bottom:2px;width:2px;'
        f'background:#333;opacity:.55"></div>' for t in (ticks or []))
    return (
        f'<div class="ll-bar" role="img" aria-label="probability of malignant {pct:.1f} percent, '
        f'threshold {thr:.1f} percent" style="margin:.2rem 0 1.1rem 0">'
        f'<div style="position:relative;height:22px;border-radius:4px;background:#e8e8e8;overflow:visible">'
        f'<div style="position:absolute;left:0;top:0;bottom:0;width:{pct:.2f}%;background:{colour};border-radius:4px"></div>'
        f'{tick_html}'
        f'<div title="threshold" style="position:absolute;left:{thr:.2f}%;top:-4px;bottom:-4px;width:3px;'
        f'margin-left:-1px;background:#111"></div>'
        f'<div style="position:absolute;left:{thr:.2f}%;top:24px;transform:translateX(-50%);font-size:.72rem;'
        f'color:#444;white-space:nowrap">threshold {threshold:.3f}</div>'
        f'</div></div>'
    )


def prob_bar(prob: float, threshold: float, ticks: Sequence[float] | None = None) -> None:
    st.markdown(prob_bar_html(prob, threshold, ticks), unsafe_allow_html=True)


def label_badge(label: str) -> str:
    return (f'<span style="background:{LABEL_COLOURS[label]};color:white;padding:.1rem .5rem;'
            f'border-radius:.3rem;font-weight:600">{html.escape(label)}</span>')


def fmt_metric(value: Any, digits: int = 2) -> str:
    if isinstance(value, (int, float)) and np.isfinite(value):
        return f"{value:.{digits}f}"
    return "–"


def validation_sentence(card: dict[str, Any]) -> str:
    v = card.get("validation") or {}
    if not v or v.get("sensitivity") is None:
        return "This model card has no validation metrics."
    n = v.get("n")
    where = f"its validation set ({n} images)" if n else "its validation set"
    return (f"On {where}, at its threshold {float(card.get('threshold', 0.5)):.3f}: sensitivity "
            f"{fmt_metric(v.get('sensitivity'))}, specificity {fmt_metric(v.get('specificity'))}, "
            f"AUC {fmt_metric(v.get('auc'))}.")


def disclaimer() -> None:
    st.caption(f":material/info: {DISCLAIMER}")


def dataset_label(opt: str, base: Path | None, synthetic: str) -> str:
    """A folder choice under LESION_LENS_DATA, with its image counts (or `synthetic` for the demo set)."""
    from training.launcher import count_images

    if opt == SYNTHETIC_OPTION:
        return synthetic
    counts = count_images(base / opt) if base else {}
    shown = base.name if opt == "." and base else opt
    return f"{shown} ({counts.get('benign', 0)} benign, {counts.get('malignant', 0)} malignant)"
