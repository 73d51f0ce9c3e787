"""Lesion Lens: the Streamlit app. `streamlit run app.py` (or `make run`).

`run()` builds the navigation; tests drive it with streamlit.testing's AppTest. Models load
lazily, once per process (pages/classifiers.py, pages/warm_up.py), and TensorFlow only with the Keras model, so the
first page is up before any framework has been imported.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit import delta_generator

from pages.common import disclaimer
from pages.warm_up import warm_up

ROOT = Path(__file__).resolve().parent
PAGES = ROOT / "pages"
FAVICON = ROOT / "assets" / "favicon.png"

# (file, title, icon, section): every page of the app; a missing file is an error, not a gap in the menu.
PAGE_TABLE = [
    ("diagnose.py", "Diagnose", ":material/search:", "Use"),
    ("compare.py", "Compare models", ":material/compare:", "Use"),
    ("patient.py", "Patient view", ":material/grid_view:", "Use"),
    ("train.py", "Training", ":material/model_training:", "Models"),
    ("evaluate.py", "Evaluate", ":material/analytics:", "Models"),
    ("densenet.py", "DenseNet lesson", ":material/school:", "Learn"),
    ("about.py", "About", ":material/info:", "Learn"),
]


def pages() -> dict[str, list]:
    missing = [file for file, *_ in PAGE_TABLE if not (PAGES / file).is_file()]
    if missing:
        raise FileNotFoundError(f"the app's page files are missing from {PAGES}: {', '.join(missing)}")
    sections: dict[str, list] = {}
    for file, title, icon, section in PAGE_TABLE:
        sections.setdefault(section, []).append(
            st.Page(PAGES / file, title=title, icon=icon, default=(file == "diagnose.py")))
    return sections


def run() -> None:
    # Start-up cost measured with bench/startup.py: an emoji page icon imports Streamlit's emoji table
    # (0.15 s of the first run), so the icon is a small PNG; and the first element of a process makes
    # Streamlit walk the whole call stack with inspect.stack() to tell a REPL from `streamlit run`
    # (0.12 s), which this process never is.
    delta_generator._use_warning_has_been_displayed = True
    st.set_page_config(page_title="Lesion Lens", page_icon=FAVICON, layout="wide")
    nav = st.navigation(pages())
    with st.sidebar:
        st.markdown("### :material/biotech: Lesion Lens")
        st.caption("Four neural networks look at a photo of a skin lesion and say how likely it is to be "
                   "malignant, and where they looked.")
    # Above every page, so it is always in view (the sidebar can be collapsed).
    disclaimer()
    try:
        nav.run()
    finally:  # also after a page's st.stop()
        warm_up()


if __name__ == "__main__":  # Streamlit runs the script as __main__
    run()
