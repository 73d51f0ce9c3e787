"""Several dataset folders as one training set: metadata, one copy of each photo, lesion groups.

A source is a folder with `benign/` and `malignant/` (found by `find_dataset_root`). A source may
carry a `metadata.csv` beside or above those folders (HAM10000 does) with, per image, `image_id`
(the file's stem), `lesion_id`, `dx`, `dx_type` and `kaggle_train_file` (the path, relative to another
source's root, of the same photo in that source). With it:

- a photo that two sources both hold is used once (the copy whose source has the metadata, which
  knows its lesion and diagnosis; the other copy is counted as a cross-source duplicate);
- images of one lesion share a group, so the validation split never holds a lesion that training saw;
- every image knows its diagnosis (`dx`), so metrics can be reported per diagnosis.

Images without metadata are their own group and have dx "" (unknown).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

METADATA_NAMES = ("metadata.csv",)
# Photos shipped as the app's examples (assets/examples/ham10000/examples.csv): kept out of training
# and validation, with every other photo of the same lesion.
EXAMPLES_CSV = Path(__file__).resolve().parent.parent / "assets" / "examples" / "ham10000" / "examples.csv"


@dataclass
class ImageMeta:
    lesion_id: str = ""
    dx: str = ""
    dx_type: str = ""
    same_as: str = ""  # relative path in another source of the same photo


@dataclass
class Source:
    name: str
    root: Path
    metadata: dict[str, ImageMeta] = field(default_factory=dict)  # image stem -> metadata

    def meta(self, path: Path) -> ImageMeta:
        return self.metadata.get(path.stem, ImageMeta())


def find_metadata(root: Path) -> Path | None:
    for folder in (root, root.parent):
        for name in METADATA_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


def read_metadata(path: Path) -> dict[str, ImageMeta]:
    out: dict[str, ImageMeta] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            image_id = (row.get("image_id") or "").strip()
            if image_id:
                out[image_id] = ImageMeta((row.get("lesion_id") or "").strip(), (row.get("dx") or "").strip(),
                                          (row.get("dx_type") or "").strip(),
                                          (row.get("kaggle_train_file") or "").strip())
    return out


def source_name(root: Path) -> str:
    """A short readable name: the first folder above benign/malignant that is not a split name."""
    for part in reversed(root.parts):
        if part.lower() not in ("train", "test", "val", "valid", "validation", "images", "data"):
            return part
    return root.name


def open_source(root: Path) -> Source:
    meta_path = find_metadata(root)
    return Source(source_name(root), root, read_metadata(meta_path) if meta_path else {})


def excluded_lesions(csv_path: Path | None = None) -> tuple[set[str], set[str]]:
    """(image ids, lesion ids) that must stay out of training: the app's example photos."""
    csv_path = csv_path or EXAMPLES_CSV
    if not csv_path.is_file():
        return set(), set()
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {r["image_id"] for r in rows if r.get("image_id")}, {r["lesion_id"] for r in rows if r.get("lesion_id")}


@dataclass
class Entry:
    path: Path
    label: int
    source: str
    group: str
    dx: str
    image_id: str
    also_in: str = ""  # the other source that holds a copy of this photo (its copy is not loaded)


def plan_entries(sources: list[Source], files: dict[str, list[tuple[Path, int]]], exclude_examples: bool = True
                 ) -> tuple[list[Entry], dict]:
    """The images to load, one copy per photo, with groups; and what was dropped, per source."""
    ex_images, ex_lesions = excluded_lesions() if exclude_examples else (set(), set())
    # Photos that a source with metadata says it shares with another source: "<other source rel path>".
    shared: dict[str, str] = {}
    for s in sources:
        for stem, m in s.metadata.items():
            if m.same_as:
                shared[m.same_as.replace("\\", "/")] = f"{s.name}:{stem}"
    copies: dict[str, str] = {}  # "<source with metadata>:<stem>" -> the other source holding the photo
    for s in sources:
        if not s.metadata:
            for path, _ in files[s.name]:
                owner = shared.get(path.relative_to(s.root).as_posix())
                if owner:
                    copies[owner] = s.name
    entries: list[Entry] = []
    dropped = {s.name: {"cross_source_duplicates": 0, "example_photos": 0} for s in sources}
    for s in sources:
        for path, label in files[s.name]:
            rel = path.relative_to(s.root).as_posix()
            if not s.metadata and rel in shared:
                dropped[s.name]["cross_source_duplicates"] += 1
                continue
            m = s.meta(path)
            if path.stem in ex_images or (m.lesion_id and m.lesion_id in ex_lesions):
                dropped[s.name]["example_photos"] += 1
                continue
            group = f"lesion:{m.lesion_id}" if m.lesion_id else f"image:{s.name}/{rel}"
            entries.append(Entry(path, label, s.name, group, m.dx, path.stem if s.metadata else "",
                                 copies.get(f"{s.name}:{path.stem}", "") if s.metadata else ""))
    return entries, dropped



def mask_path(source_root: str | Path, image_id: str) -> Path | None:
    """The lesion mask of an image, where its source ships masks (HAM10000: masks/<id>_segmentation.png
    beside the images folder)."""
    if not image_id:
        return None
    root = Path(source_root)
    for folder in (root / "masks", root.parent / "masks"):
        p = folder / f"{image_id}_segmentation.png"
        if p.is_file():
            return p
    return None


SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def locate(folder: str | Path) -> Path:
    """A card's data folder on this machine: as recorded, or, when the checkout moved, the same
    path under the `shared/data` beside this checkout (cards record where training read from)."""
    p = Path(folder)
    if p.is_dir():
        return p
    parts = p.parts
    for i in range(len(parts) - 1):
        if parts[i] == "shared" and parts[i + 1] == "data":
            moved = SHARED_DATA.joinpath(*parts[i + 2:])
            if moved.is_dir():
                return moved
    return p
