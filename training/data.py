"""Folder datasets: discover, decode once into memory, split, augment on tensors.

A dataset is a folder with `benign/` and `malignant/` (any image format PIL reads). Images
are decoded once, centre-cropped and resized with `models.preprocess` (the same code the app
uses) and kept as one uint8 NHWC array, so an epoch costs no JPEG decoding at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.preprocess import IMAGE_EXTENSIONS, ImageError, prepare
from models.registry import CLASSES

from .augment import augment, augment_settings  # noqa: F401  (augment is part of this module's interface)
from .datasets import dataset_roots, has_classes, image_files

log = logging.getLogger(__name__)
MAX_SEARCH_DEPTH = 3


class DatasetError(ValueError):
    """The folder is not a usable dataset; the message says what was expected."""


def find_dataset_root(path: str | os.PathLike, split: str | None = None) -> Path:
    """The folder holding benign/ and malignant/: `path` itself, `path/split`, or the one such
    folder below it (train/, test/ ... above them are fine when `split` says which). A dataset
    whose class folders or files are symlinks leading out of `path` is refused."""
    root = Path(path)
    if not root.exists():
        raise DatasetError(f"{root}: no such folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; expected a folder with benign/ and malignant/ subfolders")
    if split:
        root = root / split
        if not root.is_dir():
            raise DatasetError(f"{root}: no such folder")
    found = dataset_roots(root, base=path, depth=MAX_SEARCH_DEPTH)
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(str(f.relative_to(root)) for f in found)
        raise DatasetError(f"{root} holds several datasets ({names}); name one of them")
    if has_classes(root):
        raise DatasetError(f"{root}: {CLASSES[0]}/ or {CLASSES[1]}/ (or files in them) are links to outside "
                           f"{Path(path)}; refused")
    raise DatasetError(f"{root}: not a dataset; expected subfolders {CLASSES[0]}/ and {CLASSES[1]}/ with images")


def list_images(root: Path) -> list[tuple[Path, int]]:
    files: list[tuple[Path, int]] = []
    for label, cls in enumerate(CLASSES):
        folder = root / cls
        items = image_files(folder)
        if not items:
            raise DatasetError(f"{folder}: no images; each of {CLASSES[0]}/ and {CLASSES[1]}/ needs at least one "
                               f"({', '.join(IMAGE_EXTENSIONS)})")
        files += [(p, label) for p in items]
    return files


@dataclass
class Dataset:
    root: Path
    images: np.ndarray  # N,H,W,3 uint8
    labels: np.ndarray  # N int64
    paths: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    duplicates: int = 0
    synthetic: bool = False
    sources: list[str] = field(default_factory=list)  # per image: its source's name
    groups: list[str] = field(default_factory=list)  # per image: lesion (or image) group
    dx: list[str] = field(default_factory=list)  # per image: diagnosis from metadata, "" unknown
    image_ids: list[str] = field(default_factory=list)  # per image: metadata image id, "" none
    also_in: list[str] = field(default_factory=list)  # per image: another source holding a copy, "" none
    roots: dict[str, str] = field(default_factory=dict)  # source name -> folder
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # source name -> what was left out

    @property
    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(CLASSES)}

    def subset(self, idx: np.ndarray) -> "Dataset":
        pick = lambda xs: [xs[i] for i in idx] if xs else []  # noqa: E731
        return Dataset(self.root, self.images[idx], self.labels[idx], pick(self.paths), synthetic=self.synthetic,
                       sources=pick(self.sources), groups=pick(self.groups), dx=pick(self.dx),
                       image_ids=pick(self.image_ids), also_in=pick(self.also_in), roots=self.roots)

    def held_by(self, source: str) -> np.ndarray:
        """Which images the folder of `source` holds: its own, and those kept as another source's copy."""
        also = self.also_in or [""] * len(self.sources)
        return np.asarray([s == source or a == source for s, a in zip(self.sources, also)], bool)

    def source_counts(self) -> dict[str, dict[str, int]]:
        """Per source: images per class."""
        out: dict[str, dict[str, int]] = {}
        for src, y in zip(self.sources, self.labels):
            out.setdefault(src, {c: 0 for c in CLASSES})[CLASSES[int(y)]] += 1
        return out

    def dx_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.dx:
            out[d or "unknown"] = out.get(d or "unknown", 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _decode(item, size: int):
    path = item.path
    try:
        data = path.read_bytes()
        return prepare(data, size), hashlib.md5(data).hexdigest(), None
    except (ImageError, OSError) as exc:
        return None, None, str(exc)


def _as_list(path) -> list:
    return list(path) if isinstance(path, (list, tuple)) else [path]


def load_dataset(path: str | os.PathLike | list, image_size: int, split: str | None = None,
                 workers: int | None = None, progress=None, dedupe: bool = True,
                 exclude_examples: bool = False) -> Dataset:
    """Decode every image of one or several source folders once. Unreadable files are skipped and
    counted; byte-identical duplicates are kept once when `dedupe`, and a photo that two sources
    share (by their metadata) always once (so a copy can never sit on both sides of a split;
    evaluation keeps every file of its one folder, so its n is the folder's). With
    `exclude_examples` the app's example photos (and their lesions) stay out."""
    from .sources import open_source, plan_entries

    sources = []
    for p in _as_list(path):
        src = open_source(find_dataset_root(p, split))
        if any(s.name == src.name for s in sources):
            src.name = f"{src.name}-{len(sources) + 1}"
        sources.append(src)
    files = {s.name: list_images(s.root) for s in sources}
    entries, dropped = plan_entries(sources, files, exclude_examples)
    images, kept, skipped, seen = [], [], [], set()
    duplicates = 0
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 2)) as pool:
        for i, (e, (img, digest, err)) in enumerate(zip(entries, pool.map(lambda it: _decode(it, image_size), entries))):
            if progress:
                progress(i + 1, len(entries))
            if err is not None:
                log.warning("skipping %s: %s", e.path, err)
                skipped.append((str(e.path), err))
                continue
            if dedupe and digest in seen:
                duplicates += 1
                continue
            seen.add(digest)
            images.append(img)
            kept.append(e)
    labels_arr = np.asarray([e.label for e in kept], dtype=np.int64)
    for i, c in enumerate(CLASSES):
        if not (labels_arr == i).any():
            where = " or ".join(str(s.root / c) for s in sources)
            raise DatasetError(f"{where}: none of its images could be read ({len(skipped)} unreadable files)")
    synthetic = all((s.root / "SYNTHETIC.txt").exists() for s in sources)
    return Dataset(sources[0].root, np.stack(images), labels_arr, [str(e.path) for e in kept], skipped, duplicates,
                   synthetic, sources=[e.source for e in kept], groups=[e.group for e in kept],
                   dx=[e.dx for e in kept], image_ids=[e.image_id for e in kept],
                   also_in=[e.also_in for e in kept],
                   roots={s.name: str(s.root) for s in sources}, dropped=dropped)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): each class split with the same fraction, reproducibly for a seed."""
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"validation fraction must be between 0 and 1, not {val_fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        else:
            raise DatasetError(f"class {CLASSES[c]} has {len(idx)} image; at least 2 are needed to split off validation")
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def grouped_split(labels: np.ndarray, groups: list[str], val_fraction: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) with every group (lesion) wholly on one side, each class's share of
    validation images close to `val_fraction`, reproducibly for a seed. A group's class is its
    most malignant image's. With one image per group this is `stratified_split`."""
    if len(set(groups)) == len(groups):
        return stratified_split(labels, val_fraction, seed)
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"validation fraction must be between 0 and 1, not {val_fraction}")
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    names = sorted(members)
    group_label = np.array([int(labels[members[g]].max()) for g in names])
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for c in np.unique(group_label):
        gs = [names[i] for i in np.flatnonzero(group_label == c)]
        if len(gs) < 2:
            raise DatasetError(f"class {CLASSES[c]} has {len(gs)} lesion; at least 2 are needed to split off validation")
        rng.shuffle(gs)
        target = val_fraction * sum(len(members[g]) for g in gs)
        taken = 0
        for g in gs[:-1]:  # at least one group stays in training
            if taken >= target:
                break
            val += members[g]
            taken += len(members[g])
    val_idx = np.sort(np.asarray(val, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


@dataclass
class Split:
    train: Dataset
    val: Dataset
    seed: int
    val_fraction: float

    def info(self) -> dict:
        """The card's `data`: every source with its counts, the split and its grouping."""
        tr, va = self.train, self.val
        sources = []
        for name, root in tr.roots.items():
            sources.append({"name": name, "root": root,
                            "counts": {"train": tr.source_counts().get(name, {}), "val": va.source_counts().get(name, {})},
                            "left_out": tr.dropped.get(name, {})})
        grouped = any(g.startswith("lesion:") for g in tr.groups)
        return {"root": str(tr.root), "name": " + ".join(tr.roots) if len(tr.roots) > 1 else
                tr.root.parent.name + "/" + tr.root.name,
                "sources": sources,
                "counts": {"train": tr.counts, "val": va.counts},
                "dx": {"train": tr.dx_counts(), "val": va.dx_counts()},
                "split_seed": self.seed, "val_fraction": self.val_fraction,
                "grouping": ("by lesion (metadata lesion_id; an image without one is its own group), "
                             "stratified by class" if grouped else "by image, stratified by class"),
                "skipped": len(tr.skipped), "duplicates_removed": tr.duplicates,
                "synthetic": tr.synthetic}


def load_split(path: str | os.PathLike | list, image_size: int, val_fraction: float = 0.15, seed: int = 42,
               split: str | None = None) -> Split:
    ds = load_dataset(path, image_size, split, exclude_examples=True)
    tr, va = grouped_split(ds.labels, ds.groups, val_fraction, seed)
    train, val = ds.subset(tr), ds.subset(va)
    train.skipped, train.duplicates, train.dropped = ds.skipped, ds.duplicates, ds.dropped
    return Split(train, val, seed, val_fraction)


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Inverse-frequency weights (mean 1), so the loss treats both classes alike."""
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(np.float64)
    w = counts.sum() / (len(CLASSES) * np.maximum(counts, 1))
    return w.astype(np.float32)


# ------------------------------------------------------------------ batches (both frameworks)

def preprocessing_settings(cfg: dict) -> dict:
    """The card's `preprocessing`: every step training and inference share (see
    `models.preprocess.model_input`), from the run's config."""
    cc = cfg.get("colour_constancy", "none")
    out: dict = {"resize": "centre square crop, bilinear resize to image_size"}
    if cc and cc != "none":
        out.update(colour_constancy=cc, colour_constancy_p=float(cfg.get("colour_constancy_p", 6.0)))
    # Training only (inference never augments), recorded so the card says how the model was made.
    out["training_augmentation"] = augment_settings(cfg.get("augment"))
    return out


def _card_view(cfg: dict) -> dict:
    from models.registry import spec

    s = spec(cfg["model"])
    return {"mean": list(s.mean), "std": list(s.std), "preprocessing": preprocessing_settings(cfg)}


def _to_tensor(images: np.ndarray, device, channels_last: bool):
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def train_batch(images: np.ndarray, generator, cfg: dict, device="cpu", channels_last: bool = False):
    """uint8 NHWC batch -> augmented, preprocessed, normalised float NCHW tensor on `device`
    (the one training transform of every framework; Keras takes `.permute(0, 2, 3, 1)`)."""
    from models.preprocess import model_input

    x = augment(_to_tensor(images, device, False), generator, cfg.get("augment"))
    x = model_input(x, _card_view(cfg))
    import torch

    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def eval_batch(images: np.ndarray, cfg: dict, device="cpu", channels_last: bool = False):
    """uint8 NHWC batch -> preprocessed, normalised float NCHW tensor (no augmentation)."""
    from models.preprocess import model_input

    return model_input(_to_tensor(images, device, channels_last), _card_view(cfg))
