"""The classifier cache: one loaded model per (model, checkpoint, file stamps) and server process,
shared by every session (a retrained or promoted checkpoint has new stamps and is loaded afresh).
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from models import MissingWeights, load_classifier
from models.classifier import Classifier, Explanation, label_at
from models.registry import checkpoint_stamp, shipped_checkpoint
from pages.common import display, memo


@st.cache_resource(max_entries=8, show_spinner=False)
def cached_classifier(name: str, checkpoint: str, stamp: tuple[int, int]) -> Classifier:
    """Keyed on `stamp` (registry.checkpoint_stamp) so a replaced file is another entry."""
    return load_classifier(name, checkpoint)


def get_classifier(name: str, checkpoint: str | os.PathLike | None = None) -> Classifier:
    """The shared classifier for `name` (default: its shipped checkpoint); raises MissingWeights
    (with how to train) or whatever loading a broken checkpoint raises."""
    ckpt = Path(checkpoint) if checkpoint else shipped_checkpoint(name)
    if not ckpt.exists():
        return load_classifier(name, checkpoint)  # raises MissingWeights with the training hint
    with st.spinner(f"Loading {display(name)}…"):
        return cached_classifier(name, str(ckpt), checkpoint_stamp(ckpt))


def try_classifier(name: str, checkpoint: str | os.PathLike | None = None) -> Classifier | None:
    """The classifier, or None after showing why not (no weights: a warning; broken: an error)."""
    try:
        return get_classifier(name, checkpoint)
    except MissingWeights as exc:
        st.warning(str(exc), icon=":material/school:")
    except ImportError as exc:
        st.error(f"{display(name)} cannot be loaded here: a library is missing ({exc}).")
    except (ValueError, RuntimeError, OSError) as exc:
        where = checkpoint or "its checkpoint"
        st.error(f"{display(name)}: {where} cannot be loaded ({type(exc).__name__}: {exc}).")
    return None


def model_key(clf: Classifier) -> str:
    """Identifies a loaded classifier in the per-session memo (a retrained model is another key)."""
    return f"{clf.name}@{id(clf)}"


def explain(clf: Classifier, photo, method: str, threshold: float | None = None) -> Explanation:
    """`clf`'s explanation of `photo` whose heatmap explains the label at `threshold` (default: the
    card's), remembered for this session: moving the threshold recomputes only when the label flips."""
    key = ("explain", model_key(clf), photo.digest, method)
    expl = memo(key, lambda: clf.explain(photo.data, method))
    if threshold is None or label_at(expl.prediction.prob_malignant, threshold) == expl.prediction.label:
        return expl
    return memo(key + ("the other label",), lambda: clf.explain(photo.data, method, threshold=threshold))
