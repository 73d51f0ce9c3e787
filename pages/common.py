"""What every page imports: the shared widgets and formatting (model choice, threshold slider,
probability bar, labels, metric text, warnings, the disclaimer) and the per-session memo.

Nothing here imports torch or TensorFlow. Per-session results live in `st.session_state`
(bounded), never in a cache shared between sessions: photos are patient data.
"""

from __future__ import annotations

import html
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import streamlit as st

from models.classifier import label_at
from models.registry import MODEL_NAMES, default_model, has_weights, spec
from training.datasets import count_images

SYNTHETIC_NOTE = "SYNTHETIC (generated, not a real lesion)"
SYNTHETIC_OPTION = "__synthetic__"  # the generated demo dataset in the Training and Evaluate folder lists
DISCLAIMER = ("Research and teaching demo, **not a medical device**: it does not diagnose anything. "
              "See a dermatologist about any skin lesion that worries you.")
MEMO_ENTRIES = 96
LABEL_COLOURS = {"malignant": "#b03a2e", "benign": "#2471a3"}

CAM_HELP = {
    "gradcam": "Grad-CAM: the last convolutional feature maps, weighted by the average gradient of the answer.",
    "gradcam++": "Grad-CAM++: like Grad-CAM with higher-order gradient weights; often covers several regions.",
    "xgradcam": "XGrad-CAM: gradients weighted by the activations themselves (axiom-based).",
    "eigencam": "Eigen-CAM: the first principal component of the feature maps; ignores the answer (no gradients).",
    "layercam": ("Layer-CAM (the PyTorch models' default): each location's activations weighted by its own "
                 "positive gradient; read one stage earlier in DenseNet161 and EfficientNet-Lite0, so finer."),
}


# ------------------------------------------------------------------ models

def display(name: str) -> str:
    return spec(name).display


def model_label(name: str) -> str:
    return display(name) if has_weights(name) else f"{display(name)} (no weights)"


def model_select(prefix: str, label: str = "Model") -> str:
    names = list(MODEL_NAMES)
    key = f"{prefix}_model"
    if key not in st.session_state or st.session_state[key] not in names:
        st.session_state[key] = default_model()
    return st.selectbox(label, names, key=key, format_func=model_label,
                        help="Models without weights are listed too; choosing one says how to train it.")


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
        # Shifted by its own width times the threshold, the label stays inside the bar at any threshold
        # (centred, it stuck out past the right edge near 1 and gave a phone's page a sideways scroll).
        f'<div style="position:absolute;left:{thr:.2f}%;top:24px;transform:translateX(-{thr:.2f}%);font-size:.72rem;'
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
    if opt == SYNTHETIC_OPTION:
        return synthetic
    counts = count_images(base / opt) if base else {}
    shown = base.name if opt == "." and base else opt
    return f"{shown} ({counts.get('benign', 0)} benign, {counts.get('malignant', 0)} malignant)"
