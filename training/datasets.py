"""Dataset folders: the one walker that finds them, the fence that keeps them inside their folder,
the image files in them, and the folders the app may offer (under LESION_LENS_DATA, or the
generated synthetic demo set). No torch here: the pages list datasets without a framework.

A dataset is a folder with `benign/` and `malignant/`. `training.data.find_dataset_root` and
`list_images` (what training and evaluation load) are built on `dataset_roots` and `image_files`,
so the app counts and offers exactly what a run will load.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from models.preprocess import IMAGE_EXTENSIONS
from models.registry import CLASSES

from .rundir import runs_dir

DATA_ENV = "LESION_LENS_DATA"
MAX_SEARCH_DEPTH = 3
SYNTHETIC_DIR_NAME = "_synthetic_demo"  # under runs/; not a run id (ids start with a letter or digit)
SYNTHETIC_PER_CLASS = {"train": 60, "test": 30}
SYNTHETIC_SIZE = 64


class DatasetChoiceError(ValueError):
    """A folder the app may not use as a dataset; the message is for the user."""


# ------------------------------------------------------------------ what a dataset is

def has_classes(path: Path) -> bool:
    """Does `path` hold the class folders benign/ and malignant/?"""
    return all((path / c).is_dir() for c in CLASSES)


def image_files(folder: Path) -> list[Path]:
    """The images of one class folder, sorted: files with an accepted extension, not hidden."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    return sorted(p for p in entries
                  if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file())


def _escapes(path: Path, base: Path) -> bool:
    try:
        return not path.resolve().is_relative_to(base)
    except RuntimeError:  # a symlink loop: it leads nowhere, so not out of `base` either
        return False
    except OSError:
        return True


def contained(root: Path, base: Path) -> bool:
    """`root`, its class folders and every entry in them resolve inside `base` (no symlink out)."""
    base = Path(base).resolve()
    if _escapes(Path(root), base):
        return False
    for c in CLASSES:
        folder = Path(root) / c
        if _escapes(folder, base):
            return False
        try:
            for entry in os.scandir(folder):
                if entry.is_symlink() and _escapes(Path(entry.path), base):
                    return False
        except OSError:
            return False
    return True


def dataset_roots(path: str | os.PathLike, base: str | os.PathLike | None = None,
                  depth: int = MAX_SEARCH_DEPTH) -> list[Path]:
    """Every dataset folder at or below `path` (at most `depth` levels down), in sorted walk order;
    below a dataset nothing more is searched. Symlinked folders are not followed (no loops) and hidden
    ones are skipped; a dataset whose class folders or files are symlinks leading out of `base`
    (default: `path`) is left out."""
    top = Path(path)
    fence = Path(base).resolve() if base is not None else top.resolve()
    found: list[Path] = []
    for dirpath, dirnames, _ in os.walk(top, followlinks=False):
        p = Path(dirpath)
        if has_classes(p):
            if contained(p, fence):
                found.append(p)
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if len(p.relative_to(top).parts) >= depth:
            dirnames[:] = []
    return found


def count_images(root: str | os.PathLike) -> dict[str, int]:
    """Images per class, exactly the files a run on `root` loads."""
    return {c: len(image_files(Path(root) / c)) for c in CLASSES}


# ------------------------------------------------------------------ what the app may use

def data_base() -> Path | None:
    """The folder the UI may read datasets from (LESION_LENS_DATA), resolved; None if unset or missing."""
    value = os.environ.get(DATA_ENV, "").strip()
    if not value:
        return None
    base = Path(value).expanduser().resolve()
    return base if base.is_dir() else None


def list_datasets(base: str | os.PathLike | None = None, depth: int = MAX_SEARCH_DEPTH) -> list[str]:
    """Dataset folders under `base` (default LESION_LENS_DATA), as sorted paths relative to it
    ("." for base itself); one that links outside `base` is left out."""
    base = Path(base).resolve() if base is not None else data_base()
    if base is None or not base.is_dir():
        return []
    return sorted(p.relative_to(base).as_posix() for p in dataset_roots(base, depth=depth))


def resolve_dataset(rel: str, base: str | os.PathLike | None = None) -> Path:
    """A dataset chosen in the UI (a path relative to LESION_LENS_DATA) -> its absolute folder.
    Refuses absolute paths, `..`, symlinks out of the folder and folders that are not datasets."""
    base_path = Path(base).resolve() if base is not None else data_base()
    if base_path is None:
        raise DatasetChoiceError(f"no dataset folder is configured: set {DATA_ENV} to a folder of datasets")
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute():
        raise DatasetChoiceError(f"{rel!r}: choose a dataset folder inside {DATA_ENV}")
    path = (base_path / rel).resolve()
    if not path.is_relative_to(base_path):
        raise DatasetChoiceError(f"{rel}: outside the dataset folder ({DATA_ENV}); refused")
    if not path.is_dir():
        raise DatasetChoiceError(f"{rel}: no such folder inside {DATA_ENV}")
    if not has_classes(path):
        inside = dataset_roots(path, base_path)
        if inside:
            names = ", ".join(r.relative_to(path).as_posix() for r in inside)
            raise DatasetChoiceError(f"{rel} holds several datasets ({names}); choose one of them")
    if not (has_classes(path) and contained(path, base_path)):
        raise DatasetChoiceError(f"{rel}: not a dataset folder inside {DATA_ENV} (with {CLASSES[0]}/ and "
                                 f"{CLASSES[1]}/), or it links outside it; refused")
    return path


def synthetic_demo(root: str | os.PathLike | None = None) -> Path:
    """The generated demo set (train/ and test/, each labelled SYNTHETIC), made once under runs/.
    Written to a temporary folder and renamed, so two sessions never see half of it."""
    from .synthetic import write_dataset

    parent = Path(root) if root else runs_dir()
    demo = parent / SYNTHETIC_DIR_NAME
    if all((demo / split / "SYNTHETIC.txt").is_file() for split in SYNTHETIC_PER_CLASS):
        return demo
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=parent))
    try:
        for i, (split, n) in enumerate(SYNTHETIC_PER_CLASS.items()):
            write_dataset(tmp / split, per_class=n, size=SYNTHETIC_SIZE, seed=11 + i)
        try:
            os.rename(tmp, demo)
        except OSError:  # another session made it first (or a broken one is there)
            if not all((demo / s / "SYNTHETIC.txt").is_file() for s in SYNTHETIC_PER_CLASS):
                shutil.rmtree(demo, ignore_errors=True)
                os.rename(tmp, demo)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return demo


def allowed_data(path: str | os.PathLike, root: str | os.PathLike | None = None) -> bool:
    """May the app train or evaluate on this folder? Only inside LESION_LENS_DATA or the demo set."""
    p = Path(path).resolve()
    bases = [b for b in (data_base(), (Path(root) if root else runs_dir()).resolve() / SYNTHETIC_DIR_NAME) if b]
    return has_classes(p) and any(p.is_relative_to(b) and contained(p, b) for b in bases)
