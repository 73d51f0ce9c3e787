"""The checks on the pages (Streamlit AppTest, the shipped gate and segmenter, throwaway classifiers)."""

from __future__ import annotations

import pytest

from test_app_pages import app, no_exception, prob_percent, texts, weights  # noqa: F401  (fixture)


def pick(at, prefix: str):
    box = at.selectbox(key="diag_example")
    labels = list(box.options)
    idx = [i for i, lab in enumerate(labels) if lab.startswith(prefix)]
    if not idx:
        pytest.skip(f"no example photo labelled {prefix!r}")
    box.select_index(idx[0]).run()
    no_exception(at)
    return at


def test_diagnose_shows_outline_share_for_a_lesion_and_no_verdict_for_a_drawing(weights):  # noqa: F811
    at = pick(app(), "melanoma")
    assert prob_percent(at)
    shown = " ".join(m.value for m in at.markdown) + " ".join(i.value for i in at.info)
    # the share is stated for every heatmap that has one (a throwaway model may give a flat map)
    assert "of the heatmap lies on the lesion" in shown or "map is flat" in shown
    at = pick(at, "drawing: synthetic malignant 1")  # a drawing the shipped gate refuses (it passes some cartoons)
    warnings = " ".join(w.value for w in at.warning)
    assert "This does not look like a photo of a skin lesion" in warnings and not prob_percent(at)
