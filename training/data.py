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

log = logging.getLogger(__name__)
MAX_SEARCH_DEPTH = 3


class DatasetError(ValueError):
    """The folder is not a usable dataset; the message says what was expected."""


def _has_classes(path: Path) -> bool:
    return all((path / c).is_dir() for c in CLASSES)


def find_dataset_root(path: str | os.PathLike, split: str | None = None) -> Path:
    """The folder holding benign/ and malignant/: `path` itself, `path/split`, or the one such
    folder below it (train/, test/ ... above them are fine when `split` says which)."""
    root = Path(path)
    if not root.exists():
        raise DatasetError(f"{root}: no such folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; expected a folder with benign/ and malignant/ subfolders")
    if split:
        root = root / split
        if not root.is_dir():
            raise DatasetError(f"{root}: no such folder")
    if _has_classes(root):
        return root
    found: list[Path] = []
    for dirpath, dirnames, _ in os.walk(root, followlinks=False):  # no symlink loops
        depth = len(Path(dirpath).relative_to(root).parts)
        if depth >= MAX_SEARCH_DEPTH:
            dirnames[:] = []
        if _has_classes(Path(dirpath)):
            found.append(Path(dirpath))
            dirnames[:] = []
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(str(f.relative_to(root)) for f in sorted(found))
        raise DatasetError(f"{root} holds several datasets ({names}); name one of them")
    raise DatasetError(f"{root}: not a dataset; expected subfolders {CLASSES[0]}/ and {CLASSES[1]}/ with images")


def list_images(root: Path) -> list[tuple[Path, int]]:
    files: list[tuple[Path, int]] = []
    for label, cls in enumerate(CLASSES):
        folder = root / cls
        items = sorted(p for p in folder.iterdir()
                       if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith("."))
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

    @property
    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(CLASSES)}

    def subset(self, idx: np.ndarray) -> "Dataset":
        return Dataset(self.root, self.images[idx], self.labels[idx], [self.paths[i] for i in idx],
                       synthetic=self.synthetic)


def _decode(item: tuple[Path, int], size: int):
    path, label = item
    try:
        data = path.read_bytes()
        return prepare(data, size), label, hashlib.md5(data).hexdigest(), None
    except (ImageError, OSError) as exc:
        return None, label, None, str(exc)


def load_dataset(path: str | os.PathLike, image_size: int, split: str | None = None,
                 workers: int | None = None, progress=None, dedupe: bool = True) -> Dataset:
    """Decode every image once. Unreadable files are skipped and counted; byte-identical
    duplicates are kept once when `dedupe` (so a copy can never sit on both sides of a split;
    evaluation keeps every file, so its n is the folder's)."""
    root = find_dataset_root(path, split)
    files = list_images(root)
    images, labels, paths, skipped, seen = [], [], [], [], set()
    duplicates = 0
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 2)) as pool:
        for i, ((p, _), (img, label, digest, err)) in enumerate(
                zip(files, pool.map(lambda it: _decode(it, image_size), files))):
            if progress:
                progress(i + 1, len(files))
            if err is not None:
                log.warning("skipping %s: %s", p, err)
                skipped.append((str(p), err))
                continue
            if dedupe and digest in seen:
                duplicates += 1
                continue
            seen.add(digest)
            images.append(img)
            labels.append(label)
            paths.append(str(p))
    labels_arr = np.asarray(labels, dtype=np.int64)
    for i, c in enumerate(CLASSES):
        if not (labels_arr == i).any():
            raise DatasetError(f"{root / c}: none of its images could be read ({len(skipped)} unreadable files)")
    synthetic = (root / "SYNTHETIC.txt").exists()
    return Dataset(root, np.stack(images), labels_arr, paths, skipped, duplicates, synthetic)


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


@dataclass
class Split:
    train: Dataset
    val: Dataset
    seed: int
    val_fraction: float

    def info(self) -> dict:
        return {"root": str(self.train.root), "name": self.train.root.parent.name + "/" + self.train.root.name,
                "counts": {"train": self.train.counts, "val": self.val.counts},
                "split_seed": self.seed, "val_fraction": self.val_fraction,
                "skipped": len(self.train.skipped), "duplicates_removed": self.train.duplicates,
                "synthetic": self.train.synthetic}


def load_split(path: str | os.PathLike, image_size: int, val_fraction: float = 0.15, seed: int = 42,
               split: str | None = None) -> Split:
    ds = load_dataset(path, image_size, split)
    tr, va = stratified_split(ds.labels, val_fraction, seed)
    train, val = ds.subset(tr), ds.subset(va)
    train.skipped, train.duplicates = ds.skipped, ds.duplicates
    return Split(train, val, seed, val_fraction)


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Inverse-frequency weights (mean 1), so the loss treats both classes alike."""
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(np.float64)
    w = counts.sum() / (len(CLASSES) * np.maximum(counts, 1))
    return w.astype(np.float32)


# ------------------------------------------------------------------ augmentation (torch)

def augment(batch, generator=None, crop_scale=(0.6, 1.0), jitter: float = 0.1):
    """Random flips, 90° rotations, resized crops and mild colour jitter on a float NCHW batch
    in [0, 255] (CPU or GPU). A dermoscopy photo has no 'up', so all 8 symmetries are fair."""
    import torch
    from torchvision.ops import roi_align

    n, _, h, w = batch.shape
    dev = batch.device
    g = generator

    def rand(*shape):
        return torch.rand(*shape, generator=g, device="cpu").to(dev)

    # random resized crop, per sample, as bilinear ROI sampling
    area = crop_scale[0] + (crop_scale[1] - crop_scale[0]) * rand(n)
    log_ratio = (rand(n) - 0.5) * 2 * np.log(4 / 3)
    ratio = torch.exp(log_ratio)
    cw = (torch.sqrt(area * ratio) * w).clamp(max=w)
    ch = (torch.sqrt(area / ratio) * h).clamp(max=h)
    x0 = rand(n) * (w - cw)
    y0 = rand(n) * (h - ch)
    boxes = torch.stack([torch.arange(n, device=dev, dtype=batch.dtype), x0, y0, x0 + cw, y0 + ch], 1)
    batch = roi_align(batch, boxes.to(batch.dtype), output_size=(h, w), spatial_scale=1.0, sampling_ratio=2,
                      aligned=True)
    # flips and rotations
    flip = rand(n) < 0.5
    batch = torch.where(flip.view(n, 1, 1, 1), batch.flip(3), batch)
    k = (rand(n) * 4).long().clamp(max=3)
    if h == w:
        rotated = batch.clone()
        for r in (1, 2, 3):
            sel = k == r
            if sel.any():
                rotated[sel] = torch.rot90(batch[sel], r, dims=(2, 3))
        batch = rotated
    # colour jitter: brightness, contrast, saturation
    if jitter > 0:
        b = 1 + (rand(n, 1, 1, 1) - 0.5) * 2 * jitter
        c = 1 + (rand(n, 1, 1, 1) - 0.5) * 2 * jitter
        s = 1 + (rand(n, 1, 1, 1) - 0.5) * 2 * jitter
        batch = batch * b
        mean = batch.mean(dim=(1, 2, 3), keepdim=True)
        batch = (batch - mean) * c + mean
        grey = batch.mean(dim=1, keepdim=True)
        batch = (batch - grey) * s + grey
    return batch.clamp(0, 255)
