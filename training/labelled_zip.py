"""A labelled set of photos in a zip file, read in memory: `benign/` and `malignant/` folders at any
depth, as `python -m training.evaluate --data` expects on disk.

For the Evaluate page, where a visitor of a public Space has no folder on the server: the zip's
bytes stay in memory and nothing is extracted to disk. A zip is refused as a whole (ZipRefused,
with a message for the user) when it is not a zip, has too many files, claims too many bytes once
unpacked, or packs a file tighter than LIMITS["max_ratio"] (a zip bomb); a file inside that is not
a readable photo is skipped with the reason models.load_image gives, as the upload pages do.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

from models.preprocess import IMAGE_EXTENSIONS, ImageError, prepare

CLASSES = ("benign", "malignant")
LIMITS = {
    "max_files": 2000,  # entries in the zip, folders included
    "max_photos": 1000,  # labelled photos evaluated
    "max_file_bytes": 20 * 2**20,  # one photo, unpacked
    "max_total_bytes": 400 * 2**20,  # everything, unpacked
    "max_ratio": 50,  # unpacked / packed size of one file; photos barely compress (JPEG ~1x, PNG ~1-3x)
}


class ZipRefused(ValueError):
    """The zip as a whole cannot be used; the message says why, for the user."""


@dataclass
class LabelledZip:
    name: str
    photos: list[tuple[str, int, bytes]] = field(default_factory=list)  # (path in the zip, label, bytes)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path in the zip, why)

    def counts(self) -> dict[str, int]:
        return {c: sum(1 for _, y, _ in self.photos if y == i) for i, c in enumerate(CLASSES)}

    def data(self, path: str) -> bytes:
        return next(b for p, _, b in self.photos if p == path)


def _label(path: PurePosixPath) -> int | None:
    """The class of a file from its nearest folder named benign or malignant (any depth)."""
    for part in reversed(path.parts[:-1]):
        if part.lower() in CLASSES:
            return CLASSES.index(part.lower())
    return None


def _hidden(path: PurePosixPath) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in path.parts)


def read_labelled_zip(data: bytes, name: str = "upload.zip", limits: dict | None = None) -> LabelledZip:
    lim = {**LIMITS, **(limits or {})}
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise ZipRefused(f"{name}: not a zip file this app can read") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > lim["max_files"]:
            raise ZipRefused(f"{name}: {len(infos):,} entries, more than the {lim['max_files']:,} allowed")
        files = [i for i in infos if not i.is_dir() and not _hidden(PurePosixPath(i.filename))]
        total = sum(i.file_size for i in files)
        if total > lim["max_total_bytes"]:
            raise ZipRefused(f"{name}: {total / 2**20:.0f} MB once unpacked, more than the "
                             f"{lim['max_total_bytes'] // 2**20} MB allowed")
        for i in files:
            if i.file_size > lim["max_ratio"] * max(i.compress_size, 1) and i.file_size > 2**20:
                raise ZipRefused(f"{name}: {i.filename} unpacks to {i.file_size / max(i.compress_size, 1):.0f}x its "
                                 f"packed size (more than {lim['max_ratio']}x): refused as a possible zip bomb")
        out = LabelledZip(name)
        for i in files:
            path = PurePosixPath(i.filename)
            label = _label(path)
            if label is None:
                out.skipped.append((i.filename, "not inside a benign/ or malignant/ folder"))
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                out.skipped.append((i.filename, f"not a photo ({path.suffix or 'no extension'})"))
                continue
            if i.flag_bits & 0x1:
                out.skipped.append((i.filename, "encrypted"))
                continue
            if i.file_size > lim["max_file_bytes"]:
                out.skipped.append((i.filename, f"{i.file_size / 2**20:.0f} MB, more than the "
                                                f"{lim['max_file_bytes'] // 2**20} MB allowed for one photo"))
                continue
            if len(out.photos) >= lim["max_photos"]:
                out.skipped.append((i.filename, f"beyond the first {lim['max_photos']:,} photos"))
                continue
            try:
                with zf.open(i) as f:
                    blob = f.read(lim["max_file_bytes"] + 1)  # never more than the limit, whatever the header says
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError) as exc:
                out.skipped.append((i.filename, f"cannot be unpacked ({type(exc).__name__})"))
                continue
            if len(blob) > lim["max_file_bytes"]:
                out.skipped.append((i.filename, "larger unpacked than its header says: refused"))
                continue
            out.photos.append((i.filename, label, blob))
    if not out.photos:
        raise ZipRefused(f"{name}: no photos in benign/ or malignant/ folders"
                         + (f" ({len(out.skipped)} files skipped, e.g. {out.skipped[0][0]}: {out.skipped[0][1]})"
                            if out.skipped else ""))
    return out


def decode(lz: LabelledZip, image_size: int) -> tuple[np.ndarray, np.ndarray, list[str], list[tuple[str, str]]]:
    """(images uint8 NHWC at `image_size`, labels, paths, skipped): unreadable photos are skipped with
    the reason models.load_image gives."""
    images, labels, paths, skipped = [], [], [], list(lz.skipped)
    for path, label, blob in lz.photos:
        try:
            images.append(prepare(blob, image_size))
        except ImageError as exc:
            msg = str(exc)
            skipped.append((path, msg.split(": ", 1)[1] if msg.startswith("upload: ") else msg))
            continue
        labels.append(label)
        paths.append(path)
    if not images:
        raise ZipRefused(f"{lz.name}: none of its {len(lz.photos)} photos could be read "
                         f"(e.g. {skipped[-1][0]}: {skipped[-1][1]})")
    return np.stack(images), np.array(labels, dtype=np.int64), paths, skipped
