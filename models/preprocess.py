"""Image decoding and preprocessing shared by training and inference.

Everything a model sees goes through `load_image` (untrusted bytes -> RGB PIL image),
`to_model_size` (RGB image -> square uint8 array at the card's size) and `normalize`
(uint8 batch -> float batch with the card's mean/std). Training calls the same three
functions, so a model never sees pixels prepared differently from how it was trained.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import warnings
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# A photo from a phone is ~12-50 Mpx; anything far beyond is a decompression bomb.
MAX_PIXELS = 60_000_000
MAX_BYTES = 50 * 1024 * 1024
MIN_SIDE = 32
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image]


class ImageError(ValueError):
    """An input that cannot become a model image; the message is meant for the user."""


# What the app accepts, by content (never by file name). PIL recognises many more formats;
# some of them hand the bytes to outside programs (EPS -> Ghostscript), so the rest are refused.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "DIB", "TIFF", "GIF")  # JPEG also opens MPO (camera) files
# Leading bytes of the accepted formats: a file that starts like one but does not open is damaged.
SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
              (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))
HEIF_BRANDS = (b"ftypheic", b"ftypheix", b"ftyphevc", b"ftypheim", b"ftypheis", b"ftypmif1", b"ftypmsf1",
               b"ftypavif", b"ftypavis")
# warnings.catch_warnings swaps process-wide state; app sessions and data loading decode in threads.
_WARNINGS_LOCK = threading.Lock()


def _sniff(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((fmt for sig, fmt in SIGNATURES if data.startswith(sig)), None)


def _damaged(name: str) -> ImageError:
    return ImageError(f"{name}: the image file is truncated or damaged")


def _open(source: ImageSource) -> tuple[Image.Image, str]:
    if isinstance(source, Image.Image):
        return source, "image"
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = "upload"
    else:
        path = Path(source)
        name = path.name
        if not path.exists():
            raise ImageError(f"{path}: no such file")
        if path.is_dir():
            raise ImageError(f"{path}: is a folder, not an image")
        if not path.is_file():
            raise ImageError(f"{path}: not a regular file")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ImageError(f"{name}: file is {size / 2**20:.0f} MB, more than the {MAX_BYTES // 2**20} MB allowed")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"{path}: cannot read the file ({exc.strerror or type(exc).__name__})") from None
    if not data:
        raise ImageError(f"{name}: the file is empty")
    if len(data) > MAX_BYTES:
        raise ImageError(f"{name}: file is {len(data) / 2**20:.0f} MB, more than the {MAX_BYTES // 2**20} MB allowed")
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: image is too large (more than {MAX_PIXELS:,} pixels)") from None
    except UnidentifiedImageError:
        if data[4:12] in HEIF_BRANDS:
            raise ImageError(f"{name}: HEIC/AVIF photos are not supported; export the photo as JPEG or PNG") from None
        fmt = _sniff(data)
        if fmt:
            raise ImageError(f"{name}: not an image this app can read: it starts like a {fmt} file but is "
                             "truncated or damaged") from None
        raise ImageError(f"{name}: not an image this app can read (JPEG, PNG, WebP, BMP, TIFF or GIF)") from None
    except ValueError as exc:
        if "MAX_TEXT_CHUNK" in str(exc) or "Too much memory" in str(exc):  # PNG text/metadata bomb
            raise ImageError(f"{name}: the image carries oversized metadata; save the photo again as a "
                             "plain JPEG or PNG") from None
        raise ImageError(f"{name}: cannot read the image ({exc})") from None
    except (OSError, SyntaxError, EOFError, struct.error):
        raise _damaged(name) from None
    except Exception as exc:  # PIL raises a zoo of errors on hostile headers
        raise ImageError(f"{name}: cannot read the image ({type(exc).__name__})") from None
    return img, name


def load_image(source: ImageSource) -> Image.Image:
    """Decode an untrusted image into an upright 8-bit RGB PIL image, or raise ImageError."""
    img, name = _open(source)
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise ImageError(f"{name}: image is too large ({w}x{h}; at most {MAX_PIXELS:,} pixels)")
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{name}: image is too small ({w}x{h}); at least {MIN_SIDE} px on each side is needed")
    try:
        if getattr(img, "is_animated", False):
            img.seek(0)
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError) as exc:
        msg = str(exc).lower()
        if isinstance(exc, ValueError) and "too much memory" in msg:
            raise ImageError(f"{name}: image is too large to decode") from None
        raise _damaged(name) from None
    except Exception as exc:
        raise ImageError(f"{name}: cannot decode the image ({type(exc).__name__})") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - damaged EXIF: the pixels are fine, keep them as stored
        pass
    try:
        img = _to_rgb(img)
    except (OSError, ValueError) as exc:  # e.g. a TIFF in a colour space PIL cannot convert
        raise ImageError(f"{name}: cannot convert the image to RGB ({img.mode}: {exc})") from None
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        finite = np.isfinite(arr)
        lo, hi = (float(arr[finite].min()), float(arr[finite].max())) if finite.any() else (0.0, 0.0)
        # NaN counts as the darkest value, +/-inf as the extremes: a few bad pixels never blank the image.
        arr = np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo)
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr = ((arr - lo) * scale).clip(0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, 1, L ...


def to_model_size(img: Image.Image, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to `size`: HxWx3 uint8.

    Dermoscopy centres the lesion, so a centre crop keeps it while a squash would distort
    its shape, which is itself a malignancy cue.
    """
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side != size:
        img = img.resize((size, size), Image.BILINEAR, reducing_gap=None)
    return np.asarray(img, dtype=np.uint8).copy()


def normalize(batch, mean: Sequence[float], std: Sequence[float], channels_last: bool = False):
    """uint8 images -> float32 normalised with the card's mean/std.

    Accepts a torch tensor (N,3,H,W or N,H,W,3 with channels_last) or a numpy array;
    returns the same kind.
    """
    if type(batch).__module__.startswith("torch"):
        import torch

        shape = (1, 1, 1, 3) if channels_last else (1, 3, 1, 1)
        m = torch.tensor(mean, dtype=torch.float32, device=batch.device).view(shape) * 255.0
        s = torch.tensor(std, dtype=torch.float32, device=batch.device).view(shape) * 255.0
        return (batch.float() - m) / s
    arr = np.asarray(batch, dtype=np.float32)
    shape = (1, 1, 1, 3) if channels_last else (1, 3, 1, 1)
    m = np.asarray(mean, dtype=np.float32).reshape(shape) * 255.0
    s = np.asarray(std, dtype=np.float32).reshape(shape) * 255.0
    return (arr - m) / s


def shades_of_gray(batch, p: float = 6.0, channels_last: bool = False):
    """Colour constancy (Finlayson & Trezzi's Shades of Gray): estimate each image's illuminant as
    the p-norm mean of each channel and scale the channels so it becomes grey. Float or uint8
    batch in [0, 255] (torch tensor or numpy array, NCHW or NHWC) -> float batch in [0, 255]."""
    axes = (1, 2) if channels_last else (2, 3)
    shape_c = -1 if channels_last else 1
    if type(batch).__module__.startswith("torch"):
        x = batch.float()
        illum = x.clamp(min=0).pow(p).mean(dim=axes, keepdim=True).pow(1.0 / p).clamp(min=1e-3)
        grey = illum.mean(dim=shape_c, keepdim=True)
        return (x * (grey / illum)).clamp(0, 255)
    x = np.asarray(batch, dtype=np.float32)
    illum = np.maximum(np.power(np.power(np.maximum(x, 0), p).mean(axis=axes, keepdims=True), 1.0 / p), 1e-3)
    grey = illum.mean(axis=shape_c, keepdims=True)
    return np.clip(x * (grey / illum), 0, 255)


COLOUR_CONSTANCY = {"shades_of_gray": shades_of_gray}


def model_input(batch, card: dict, channels_last: bool = False):
    """uint8 (or float [0, 255]) batch -> what the network takes: the card's colour constancy
    (`card["preprocessing"]`), then its mean/std. Training (after augmentation) and inference call
    this one function, so the two can never prepare pixels differently."""
    pre = card.get("preprocessing") or {}
    method = pre.get("colour_constancy")
    if method:
        if method not in COLOUR_CONSTANCY:
            raise ValueError(f"unknown colour constancy {method!r} in the model card")
        batch = COLOUR_CONSTANCY[method](batch, float(pre.get("colour_constancy_p", 6.0)), channels_last)
    return normalize(batch, card["mean"], card["std"], channels_last=channels_last)


def prepare(source: ImageSource, size: int) -> np.ndarray:
    """Untrusted input -> HxWx3 uint8 at model size (the cached form training keeps in memory)."""
    return to_model_size(load_image(source), size)
