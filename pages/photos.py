"""Photos for the pages: the upload/example picker, the example list, the display crop and the
heatmap views.

Privacy: uploaded photos stay in memory (`UploadedFile.getvalue()` bytes); nothing here writes
them to disk or logs them.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from models import load_image
from models.classifier import heatmap_image, overlay_image, resize_heatmap
from models.preprocess import to_model_size
from models.registry import MODEL_NAMES, shipped_card
from pages.common import SYNTHETIC_NOTE, display, memo
from training.datasets import dataset_roots, image_files

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "assets" / "examples"
# The browser's file picker offers these (by MIME type: .jpg/.jpeg, .png, .webp, .bmp, .tif/.tiff, .gif).
# MIME types rather than extensions because with extensions Streamlit re-checks the name on the
# server and raises in the page for a file that bypassed the picker (a hand-made request); this
# way such a file reaches models.load_image, which refuses it with a clear message.
UPLOAD_TYPES = ["image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif"]
UPLOAD_FORMATS = "JPEG, PNG, WebP, BMP, TIFF or GIF"  # the words models.load_image's refusal uses too
DISPLAY_SIZE = 336
EXAMPLES_PER_CLASS = 3


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
    note: str  # what the photo is and where it comes from (diagnosis, confirmation, credit)
    kind: str = "dataset"  # "ham10000" (shipped, credited), "dataset" (LESION_LENS_DATA) or "drawing"


# ------------------------------------------------------------------ examples

HAM_CREDIT = ("Photo: HAM10000 (Tschandl, Rosendahl, Kittler, Sci. Data 5:180161, 2018), CC BY-NC 4.0; "
              "see assets/examples/ham10000/README.md.")
DX_TYPE = {"histo": "histopathology", "follow_up": "follow-up examination", "consensus": "expert consensus",
           "confocal": "confocal microscopy"}


def _spread(items: list[Path], k: int) -> list[Path]:
    if len(items) <= k:
        return items
    idx = np.linspace(0, len(items) - 1, k).round().astype(int)
    return [items[i] for i in idx]


def _ham_examples() -> list[Example]:
    """The credited HAM10000 photos of assets/examples/ham10000/examples.csv, in its order."""
    ham = EXAMPLES_DIR / "ham10000"
    csv_path = ham / "examples.csv"
    if not csv_path.is_file():
        return []
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if (ham / r.get("file", "")).is_file()]
    seen: dict[str, int] = {}
    out = []
    for r in rows:
        seen[r["dx"]] = n = seen.get(r["dx"], 0) + 1
        how = DX_TYPE.get(r.get("dx_type", ""), r.get("dx_type") or "not stated")
        who = ", ".join(x for x in (r.get("sex"), f"{float(r['age']):.0f} years" if r.get("age") else "",
                                     r.get("localization")) if x)
        out.append(Example(f"{r['diagnosis']} {n} ({r['label']}) · {r['image_id']}", str(ham / r["file"]),
                           r["label"], False,
                           f"{r['image_id']}: **{r['diagnosis']}** ({r['label']}), confirmed by {how}"
                           + (f"; {who}" if who else "") + f". {HAM_CREDIT}", "ham10000"))
    return out


def _drawings() -> list[Example]:
    found = []
    for p in sorted(EXAMPLES_DIR.glob("synthetic_*.png")):
        truth = "malignant" if "malignant" in p.stem else "benign"
        n = p.stem.rsplit("_", 1)[-1]
        found.append(Example(f"drawing: synthetic {truth} {n} (not a lesion)", str(p), truth, True,
                             f"{SYNTHETIC_NOTE}: a drawing made to look {truth}, not a photo of anyone.", "drawing"))
    return found


def _dataset_examples(base: Path) -> tuple[list[Example], str]:
    roots = dataset_roots(base) if base.is_dir() else []
    if not roots:
        return [], ""
    # A test/ split is the likeliest to be held out; whether a model trained on the folder is said per
    # photo from the model cards (trained_on).
    root = next((r for r in roots if r.name.lower() == "test"), roots[0])
    rel = root.relative_to(base) if root != base else Path(base.name)
    found: list[Example] = []
    for cls in ("benign", "malignant"):
        for i, p in enumerate(_spread(image_files(root / cls), EXAMPLES_PER_CLASS), 1):
            found.append(Example(f"{cls} {i} ({rel}/{cls}/{p.name})", str(p), cls, False,
                                 f"From the dataset folder {rel}/, labelled {cls} there."))
    return found, f" Then photos from the dataset folder {rel}/ (LESION_LENS_DATA)."


@st.cache_data(ttl=300, show_spinner=False)
def _examples(data_dir: str | None) -> tuple[list[Example], str]:
    ham = _ham_examples()
    found, about = list(ham), ""
    if ham:
        about = (f"{len(ham)} dermoscopic photos from HAM10000 (CC BY-NC 4.0), each with its diagnosis and how it "
                 "was confirmed; none was used to train or validate this app's models.")
    if data_dir:
        more, where = _dataset_examples(Path(data_dir).resolve())
        found += more
        about += where
    drawings = _drawings()
    if drawings:
        found += drawings
        about += f" Last, {len(drawings)} drawings ({SYNTHETIC_NOTE})."
    return found, about.strip()


def list_examples(kinds: tuple[str, ...] | None = None) -> tuple[list[Example], str]:
    """The example photos (HAM10000 first, then LESION_LENS_DATA's, then the drawings), or only `kinds`."""
    found, about = _examples(os.environ.get("LESION_LENS_DATA") or None)
    return ([e for e in found if kinds is None or e.kind in kinds]), about


def _training_roots(card: dict) -> list[tuple[Path, bool]]:
    """(root, left the example photos out) for every data source a model card names."""
    data = card.get("data") if isinstance(card.get("data"), dict) else {}
    sources = data.get("sources") or ([{"root": data["root"]}] if data.get("root") else [])
    return [(Path(s["root"]), "left_out" in s) for s in sources if s.get("root")]


def trained_on(ex: Example, card: dict) -> bool:
    """Whether the model of `card` may have trained (or validated) on the example photo.

    A dataset-folder photo: it lies under one of the card's data folders. A HAM10000 example: one of
    the card's sources holds a photo of that name in its class folder and did not leave the examples
    out (training/sources.py records `left_out` once it does)."""
    path = Path(ex.path).resolve()
    for root, left_out in _training_roots(card):
        root = root.resolve()
        if ex.kind == "dataset" and path.is_relative_to(root):
            return True
        if ex.kind == "ham10000" and not left_out and any(
                (r / ex.truth / path.name).is_file() for r in (root, root / "images")):
            return True
    return False


def training_sentence(ex: Example) -> str:
    """What the app's models (their shipped cards) say about having seen the example photo."""
    if ex.kind == "drawing":
        return ""
    cards = {n: c for n in MODEL_NAMES if (c := shipped_card(n))}
    saw = [display(n) for n, c in cards.items() if trained_on(ex, c)]
    if saw:
        return (f" {' and '.join(saw)} may have seen this photo in training or validation (its model card names "
                "the folder it comes from), so the answer on it is optimistic.")
    if ex.kind == "ham10000":
        return " Kept out of training and validation: none of this app's models has seen it."
    return " None of this app's model cards names this folder among its training data."


def example_photo(ex: Example) -> Photo:
    return Photo(Path(ex.path).name, Path(ex.path).read_bytes(), "example", ex.note + training_sentence(ex),
                 ex.synthetic)


def uploaded_photo(uploaded) -> Photo:
    # Bytes in memory only: the upload is never written anywhere.
    return Photo(uploaded.name, uploaded.getvalue(), "upload")


def widget_key(prefix: str, what: str) -> str:
    """The key of the uploader or camera widget: a new key empties it (Streamlit widgets holding
    files cannot be set from code). The first generation keeps the plain name (`diag_upload`)."""
    gen = st.session_state.get(f"{prefix}_{what}_gen", 0)
    return f"{prefix}_{what}" if gen == 0 else f"{prefix}_{what}_{gen}"


def empty_widget(prefix: str, what: str) -> None:
    if st.session_state.get(widget_key(prefix, what)) is not None:  # holds a file
        st.session_state[f"{prefix}_{what}_gen"] = st.session_state.get(f"{prefix}_{what}_gen", 0) + 1


def photo_picker(prefix: str, preselect: bool = True, camera: bool = False) -> Photo | None:
    """File uploader (and, with `camera`, the device's camera) plus an example list. Only one source
    holds a photo at a time: a new upload or snapshot clears the example choice, and picking an
    example empties the uploader and the camera, so the photo on screen is the one analysed.

    preselect=False starts with no example chosen, so the page's first run does no model work.
    """
    ex_key = f"{prefix}_example"
    sources = ["upload"] + (["camera"] if camera else [])

    def took(which: str) -> None:  # a file arrived (or was removed) in the uploader or the camera
        if st.session_state.get(widget_key(prefix, which)) is None:
            return
        st.session_state[ex_key] = None
        for other in sources:
            if other != which:
                empty_widget(prefix, other)

    def picked() -> None:
        if st.session_state.get(ex_key) is not None:
            for other in sources:
                empty_widget(prefix, other)

    up_key = widget_key(prefix, "upload")
    uploaded = st.file_uploader("Upload a photo of a skin lesion", type=UPLOAD_TYPES, key=up_key,
                                on_change=took, args=("upload",),
                                help=f"{UPLOAD_FORMATS}. The photo stays in memory for this session; "
                                     "it is never saved or logged.")
    shot = None
    if camera and st.toggle("Take a photo with this device's camera", key=f"{prefix}_use_camera",
                            help="Hold the camera close to the lesion, in good light, lesion in the middle."):
        shot = st.camera_input("Camera", key=widget_key(prefix, "camera"), on_change=took, args=("camera",),
                               help="The snapshot stays in memory for this session; it is never saved or logged.")
    examples, about = list_examples()
    chosen = None
    if examples:
        if ex_key not in st.session_state and preselect:
            st.session_state[ex_key] = 0
        i = st.selectbox("…or pick an example", range(len(examples)), key=ex_key, index=None,
                         placeholder="Choose an example photo", format_func=lambda j: examples[j].label,
                         on_change=picked, help=about)
        chosen = examples[i] if i is not None and i < len(examples) else None
    if shot is not None:
        return Photo("camera snapshot", shot.getvalue(), "camera")
    if uploaded is not None:
        return uploaded_photo(uploaded)
    if chosen is not None:
        return example_photo(chosen)
    return None


# ------------------------------------------------------------------ showing a photo

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
    heat = resize_heatmap(heatmap, size)
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
