"""Lesion Lens: the Streamlit app. `streamlit run app.py` (or `make run`).

`run()` builds the navigation; tests drive it with streamlit.testing's AppTest. Models load
lazily, once per process (pages/_ui.py), and TensorFlow only with the Keras model, so the
first page is up before any framework has been imported.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages._ui import disclaimer, warm_up

ROOT = Path(__file__).resolve().parent
PAGES = ROOT / "pages"

# (file, title, icon, section); pages written by others appear once their file exists.
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
    sections: dict[str, list] = {}
    for file, title, icon, section in PAGE_TABLE:
        path = PAGES / file
        if path.is_file():
            sections.setdefault(section, []).append(
                st.Page(path, title=title, icon=icon, default=(file == "diagnose.py")))
    return sections


def run() -> None:
    st.set_page_config(page_title="Lesion Lens", page_icon="🔬", layout="wide")
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
