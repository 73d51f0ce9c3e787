"""The warm-up thread: once per server process, after the first page has been sent, load the default
PyTorch model into the classifier cache, explain one grey image with it and load the trust checks
(gate, segmenter, their ONNX Runtime sessions built), so the first prediction waits for neither torch,
the checkpoint, pytorch-grad-cam's import (about 3 CPU-seconds here) nor the checks."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import streamlit as st

from models.registry import checkpoint_stamp, default_model, has_weights, shipped_checkpoint, spec
from pages.classifiers import cached_classifier
from pages.trust_view import checks

WARMUP_DELAY_S = 1.5  # bench/startup.py: the page became interactive ~0.2 s sooner than with 0
THREAD_NAME = "lesion-lens-warm-up"
_STARTED = {"started": False}
_LOCK = threading.Lock()


def under_app_test() -> bool:
    """True while Streamlit's AppTest runs the script. AppTest patches `streamlit.config.get_option`;
    `st.get_option` is the unpatched function, bound at import, and says False there."""
    from streamlit import config

    return bool(config.get_option("global.appTest"))


def warm_up() -> None:
    """Start the warm-up thread, once per process. Not for the Keras model (TensorFlow is imported
    only when that model is used), not under AppTest, and not with LESION_LENS_WARMUP=off.

    A daemon thread, so that stopping the server never waits for it. Left running under AppTest, it
    made test processes that ended while it was still loading the model abort at exit ("terminate
    called without an active exception", 134: the interpreter cut it off inside PyTorch). A server
    stopped within the warm-up's few seconds could do the same; as a non-daemon thread it made the stop
    take 6-10 s instead of 1-2 (three stops here), which was judged worse."""
    if os.environ.get("LESION_LENS_WARMUP", "on").strip().lower() in ("0", "off", "no", "false"):
        return
    if under_app_test():
        return
    with _LOCK:
        if _STARTED["started"]:
            return
        _STARTED["started"] = True
    name = default_model()
    if spec(name).framework == "keras" or not has_weights(name):
        return
    ckpt = shipped_checkpoint(name)
    stamp = checkpoint_stamp(ckpt)

    def load() -> None:
        # Let the first page finish arriving: its widgets' script chunks and fonts are served by this
        # process, and importing torch (seconds of GIL-bound work) would slow them down.
        time.sleep(WARMUP_DELAY_S)
        try:
            clf = cached_classifier(name, str(ckpt), stamp)
            clf.explain(np.full((64, 64, 3), 128, np.uint8), spec(name).cam_methods[0])
            checks().warm()  # the not-a-lesion gate and the lesion segmenter every answer is checked with
        except Exception:  # noqa: BLE001 - the page reports any problem when the model is used
            pass

    threading.Thread(target=load, name=THREAD_NAME, daemon=True).start()
