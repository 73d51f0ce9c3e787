"""A corpus of bad and odd image files, generated in memory (no binary files in the repository).

Every entry says what Lesion Lens must do with it:

- ``expect="ok"``: `models.load_image` returns an upright 8-bit RGB image; ``message`` describes the
  expected behaviour and ``check`` (when given) asserts it on the decoded image;
- ``expect="error"``: a `models.ImageError` (and, on the command line, exit status 2 with one
  ``error: ...`` line) whose message contains ``message``.

``cli=True`` marks the few representative files the default test suite also sends through
`python -m models.predict` (the full command-line sweep is marked slow).

Used by tests/test_bad_inputs.py, tests/test_bad_uploads_app.py and tests/test_browser_bad_uploads.py:

    from badfiles import corpus, by_name
    for f in corpus(): ...
"""

from __future__ import annotations

import csv
import functools
import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (20, 200, 20)

# The user-facing phrases of models.preprocess, in one place so a reworded message fails loudly here.
NOT_AN_IMAGE = "not an image this app can read"
EMPTY = "the file is empty"
TRUNCATED = "truncated or damaged"
TOO_LARGE = "image is too large"
TOO_SMALL = "image is too small"
HEIC = "HEIC/AVIF photos are not supported"
TOO_MANY_BYTES = "MB allowed"
CANNOT = "cannot"  # "cannot read the image" / "cannot decode the image"


@dataclass(frozen=True)
class BadFile:
    name: str
    data: bytes = field(repr=False)
    expect: str  # "ok" | "error"
    message: str  # error: a substring of the message; ok: the expected behaviour, in words
    check: Optional[Callable[[Image.Image], None]] = field(default=None, repr=False, compare=False)
    cli: bool = False  # one of the representative files for the default command-line test
    mime: str = "application/octet-stream"

    @property
    def ext(self) -> str:
        return self.name.rsplit(".", 1)[-1].lower() if "." in self.name else ""


# ------------------------------------------------------------------ image makers

def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples" / "ham10000"


@functools.lru_cache(maxsize=None)
def example_photos(kind: str) -> tuple[Path, ...]:
    with open(EXAMPLES / "examples.csv", newline="", encoding="utf-8") as f:
        return tuple(EXAMPLES / r["file"] for r in csv.DictReader(f) if r["label"] == kind)


def lesion(size: int = 96, seed: int = 0, kind: str = "malignant") -> Image.Image:
    """A real dermoscopic photo (one of the app's credited HAM10000 examples, chosen by `seed`), centre
    cropped to a size x size square: a photo the not-a-lesion gate lets through, as a user's would be."""
    photos = example_photos(kind)
    img = Image.open(photos[seed % len(photos)]).convert("RGB")
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    turn = (seed // len(photos)) % 8  # past the first round, each seed is a flip/rotation of a photo
    return img.transpose(DIHEDRAL[turn - 1]) if turn else img


DIHEDRAL = list(Image.Transpose)  # the 7 flips and rotations other than the identity


def halves(w: int = 96, h: int = 64, top=RED, bottom=BLUE) -> Image.Image:
    """Top half `top`, bottom half `bottom` (upright)."""
    arr = np.empty((h, w, 3), np.uint8)
    arr[: h // 2] = top
    arr[h // 2:] = bottom
    return Image.fromarray(arr)


def exif_rotated_jpeg(orientation: int) -> bytes:
    """A JPEG stored sideways/upside down whose EXIF orientation makes it upright red-on-top."""
    upright = halves()
    stored = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270,
              3: Image.Transpose.ROTATE_180}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(upright.transpose(stored), "JPEG", quality=95, exif=exif.tobytes())


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with one tiny (wrong) data chunk: a bomb by its header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + png_chunk(b"IEND", b""))


def png_with_chunk(img: Image.Image, kind: bytes, payload: bytes) -> bytes:
    """`img` as PNG with one extra chunk inserted right after IHDR."""
    raw = _save(img, "PNG")
    cut = 8 + 8 + 13 + 4  # signature + IHDR chunk
    return raw[:cut] + png_chunk(kind, payload) + raw[cut:]


def bad_crc_png() -> bytes:
    raw = bytearray(_save(lesion(64, 3), "PNG"))
    raw[29:33] = b"\x00\x00\x00\x00"  # IHDR's CRC
    return bytes(raw)


def cmyk_jpeg() -> bytes:
    return _save(Image.new("CMYK", (80, 60), (0, 255, 255, 0)), "JPEG", quality=95)  # pure red in CMYK


def sixteen_bit_png() -> bytes:
    ramp = (np.linspace(0, 65535, 96)[None, :].repeat(64, 0)).astype(np.uint16)
    img = Image.fromarray(ramp)
    assert img.mode.startswith("I;16"), img.mode
    return _save(img, "PNG")


def palette_transparent_png() -> bytes:
    img = Image.new("P", (64, 64), 0)
    img.putpalette([0, 0, 0, *RED] + [0] * (256 - 2) * 3)
    img.paste(1, (0, 0, 64, 32))  # top half red, bottom half index 0 (transparent)
    return _save(img, "PNG", transparency=0)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 64), c) for c in (RED, GREEN, BLUE)]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def big_exif_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription: nearly the whole 64 KB APP1 segment
    exif[0x0112] = 1
    return _save(lesion(96, 4), "JPEG", exif=exif.tobytes())


def garbage_exif_jpeg() -> bytes:
    """A JPEG whose APP1 says Exif but holds garbage after the TIFF header."""
    raw = _save(lesion(96, 5), "JPEG")
    payload = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08" + b"\xff\x07" + bytes(range(256)) * 4
    seg = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return raw[:2] + seg + raw[2:]


def bad_orientation_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 9  # not an orientation (1..8)
    return _save(lesion(96, 6), "JPEG", exif=exif.tobytes())


def huge_exif_png() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "y" * 3_000_000
    return png_with_chunk(halves(), b"eXIf", exif.tobytes())


def text_bomb_png() -> bytes:
    """A compressed text chunk that inflates to 64 MB (PIL stops at its text-chunk limit)."""
    return png_with_chunk(lesion(64, 7), b"zTXt", b"Comment\x00\x00" + zlib.compress(b"A" * (64 << 20), 9))


def one_bit_bomb(width: int, height: int) -> bytes:
    """A real, decodable image of width x height pixels that is only a few KB on disk."""
    return _save(Image.new("1", (width, height), 0), "PNG", optimize=False)


def float_tiff(nan: bool = False) -> bytes:
    arr = np.linspace(-1.5, 3.0, 96, dtype=np.float32)[None, :].repeat(64, 0)
    if nan:
        arr[:4, :4] = np.nan
        arr[-4:, -4:] = np.inf
        arr[:4, -4:] = -np.inf
    return _save(Image.fromarray(arr, mode="F"), "TIFF")


def rgb48_png() -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL cannot write one; built by hand): red top, blue bottom."""
    h, w = 64, 96
    arr = np.zeros((h, w, 3), ">u2")
    arr[: h // 2] = np.array(RED, ">u2") * 257
    arr[h // 2:] = np.array(BLUE, ">u2") * 257
    raw = b"".join(b"\x00" + row.tobytes() for row in arr)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def int32_tiff() -> bytes:
    ramp = (np.linspace(-2e9, 2e9, 96)[None, :].repeat(64, 0)).astype(np.int32)
    return _save(Image.fromarray(ramp), "TIFF")


def multipage_tiff() -> bytes:
    pages = [Image.new("RGB", (64, 64), c) for c in (GREEN, RED)]
    return _save(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def bmp_claiming(width: int, height: int) -> bytes:
    """A BMP header claiming a size, with almost no pixel data."""
    header = b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 16, 2835, 2835, 0, 0)
    return header + info + b"\x00" * 16


def jpeg_zero_height() -> bytes:
    raw = bytearray(_save(lesion(64, 8), "JPEG"))
    sof = raw.find(b"\xff\xc0")
    raw[sof + 5:sof + 7] = b"\x00\x00"  # height 0
    return bytes(raw)


def heic_like() -> bytes:
    return b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 2000


def avif_like() -> bytes:
    return b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 2000


def pdf_bytes() -> bytes:
    return (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] "
            b"/Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")


def eps_bytes() -> bytes:
    # PIL recognises EPS and would hand it to Ghostscript to render: it must be refused before that.
    return (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n%%EndComments\n"
            b"newpath 0 0 moveto 100 100 lineto stroke showpage\n%%EOF\n")


SVG = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="200" height="200">'
       b'<circle cx="100" cy="100" r="80" fill="brown"/></svg>\n')


# ------------------------------------------------------------------ checks on decoded images

def _px(img: Image.Image, x: float, y: float) -> np.ndarray:
    arr = np.asarray(img)
    return arr[int(y * (arr.shape[0] - 1)), int(x * (arr.shape[1] - 1))].astype(int)


def near(a, b, tol: int = 40) -> bool:
    return bool(np.all(np.abs(np.asarray(a, int) - np.asarray(b, int)) <= tol))


def red_on_top(size=(96, 64)):
    def check(img: Image.Image) -> None:
        assert img.size == size, f"size {img.size}, expected {size} (EXIF rotation not applied?)"
        top, bottom = _px(img, 0.5, 0.2), _px(img, 0.5, 0.8)
        assert near(top, RED) and near(bottom, BLUE), f"top {top}, bottom {bottom}: not upright"
    return check


def colour_at(x: float, y: float, colour, size=None, tol: int = 40):
    def check(img: Image.Image) -> None:
        if size:
            assert img.size == size, img.size
        got = _px(img, x, y)
        assert near(got, colour, tol), f"pixel at ({x}, {y}) is {got}, expected about {colour}"
    return check


def size_is(size):
    def check(img: Image.Image) -> None:
        assert img.size == size, f"size {img.size}, expected {size}"
    return check


def horizontal_ramp(img: Image.Image) -> None:
    arr = np.asarray(img).astype(int)
    row = arr[arr.shape[0] // 2, :, 0]
    assert row[0] < 20 and row[-1] > 235, (row[0], row[-1])
    assert np.all(np.diff(row) >= 0), "ramp not monotone"
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all(), "grey became colour"


def finite_ramp(img: Image.Image) -> None:
    arr = np.asarray(img).astype(int)
    assert arr.std() > 10, "a float image with NaN/inf became one flat colour"


def both(*checks):
    def check(img: Image.Image) -> None:
        for c in checks:
            c(img)
    return check


# ------------------------------------------------------------------ the corpus

@functools.lru_cache(maxsize=1)
def corpus() -> tuple[BadFile, ...]:
    good = lesion(160, 1)
    jpeg = _save(good, "JPEG", quality=90)
    png = _save(good, "PNG")
    gif = _save(good.convert("P"), "GIF")
    tiff = _save(good, "TIFF")
    webp = _save(good, "WEBP", quality=90)
    J, P = "image/jpeg", "image/png"
    files = [
        # --- not images at all
        BadFile("notes.jpg", b"Patient notes: mole on left arm, 4 mm.\n" * 20, "error", NOT_AN_IMAGE, cli=True, mime=J),
        BadFile("page.png", b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
                "error", NOT_AN_IMAGE, mime=P),
        BadFile("empty.jpg", b"", "error", EMPTY, cli=True, mime=J),
        BadFile("zeros.png", b"\x00" * 4096, "error", NOT_AN_IMAGE, mime=P),
        BadFile("random.webp", np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
                "error", NOT_AN_IMAGE, mime="image/webp"),
        BadFile("drawing.svg", SVG, "error", NOT_AN_IMAGE, mime="image/svg+xml"),
        BadFile("drawing_svg.png", SVG, "error", NOT_AN_IMAGE, mime=P),
        BadFile("report.pdf", pdf_bytes(), "error", NOT_AN_IMAGE, mime="application/pdf"),
        BadFile("report_pdf.jpg", pdf_bytes(), "error", NOT_AN_IMAGE, mime=J),
        BadFile("figure_eps.jpg", eps_bytes(), "error", NOT_AN_IMAGE, mime=J),
        # formats PIL knows but the app refuses (some would start outside programs: EPS -> Ghostscript)
        BadFile("favicon_ico.png", _save(Image.new("RGB", (64, 64), RED), "ICO"), "error", NOT_AN_IMAGE, mime=P),
        BadFile("image.ppm", _save(Image.new("RGB", (64, 64), RED), "PPM"), "error", NOT_AN_IMAGE),
        BadFile("image_tga.jpg", _save(Image.new("RGB", (64, 64), RED), "TGA"), "error", NOT_AN_IMAGE, mime=J),
        BadFile("archive_zip.png", b"PK\x03\x04" + b"\x00" * 200, "error", NOT_AN_IMAGE, mime=P),
        BadFile("photo.heic", heic_like(), "error", HEIC, cli=True, mime="image/heic"),
        BadFile("photo_heic.jpg", heic_like(), "error", HEIC, mime=J),
        BadFile("photo.avif", avif_like(), "error", HEIC, mime="image/avif"),
        # --- damaged images
        BadFile("cut.jpg", jpeg[: len(jpeg) // 2], "error", TRUNCATED, cli=True, mime=J),
        BadFile("cut.png", png[: len(png) // 2], "error", TRUNCATED, mime=P),
        BadFile("header_only.jpg", jpeg[:200], "error", TRUNCATED, mime=J),
        BadFile("signature_only.png", png[:8], "error", TRUNCATED, mime=P),
        BadFile("cut.gif", gif[: len(gif) // 2], "error", TRUNCATED, mime="image/gif"),
        BadFile("cut.webp", webp[: len(webp) // 2], "error", TRUNCATED, mime="image/webp"),
        BadFile("cut.tiff", tiff[: len(tiff) // 3], "error", TRUNCATED, mime="image/tiff"),
        BadFile("bad_crc.png", bad_crc_png(), "error", TRUNCATED, mime=P),
        BadFile("zero_height.jpg", jpeg_zero_height(), "error", TRUNCATED, mime=J),
        BadFile("bmp_claims_huge.bmp", bmp_claiming(200_000, 200_000), "error", TOO_LARGE, mime="image/bmp"),
        # PIL reads the negative width as 2**32 - 64: refused as too large before any pixel is read
        BadFile("bmp_negative.bmp", bmp_claiming(-64, 64), "error", TOO_LARGE, mime="image/bmp"),
        # --- too large, too small
        BadFile("bomb_header.png", png_header_only(100_000, 100_000), "error", TOO_LARGE, cli=True, mime=P),
        BadFile("bomb_1bit_81mpx.png", one_bit_bomb(9_000, 9_000), "error", TOO_LARGE, mime=P),
        BadFile("bomb_1bit_200mpx.png", one_bit_bomb(20_000, 10_000), "error", TOO_LARGE, mime=P),
        BadFile("over_50mb.jpg", jpeg + b"\x00" * (51 << 20), "error", TOO_MANY_BYTES, mime=J),
        BadFile("one_pixel.png", _save(Image.new("RGB", (1, 1), RED), "PNG"), "error", TOO_SMALL, mime=P),
        BadFile("strip_20000x20.png", _save(Image.new("RGB", (20_000, 20), RED), "PNG"), "error", TOO_SMALL,
                mime=P),
        BadFile("text_bomb.png", text_bomb_png(), "error", "oversized metadata", mime=P),
        # --- odd but valid: must decode to upright RGB
        BadFile("strip_20000x40.png", _save(Image.new("RGB", (20_000, 40), GREEN), "PNG"), "ok",
                "a long thin strip decodes; the centre crop is square", colour_at(0.5, 0.5, GREEN, (20_000, 40)),
                mime=P),
        BadFile("exactly_32px.png", _save(Image.new("RGB", (32, 32), BLUE), "PNG"), "ok",
                "the smallest accepted size", colour_at(0.5, 0.5, BLUE, (32, 32)), mime=P),
        BadFile("cmyk.jpg", cmyk_jpeg(), "ok", "CMYK is converted to RGB (red stays red)",
                colour_at(0.5, 0.5, RED, (80, 60), tol=60), mime=J),
        BadFile("sixteen_bit.png", sixteen_bit_png(), "ok", "16-bit grey (I;16) is scaled to 8-bit grey",
                horizontal_ramp, mime=P),
        BadFile("palette_transparent.png", palette_transparent_png(), "ok",
                "palette with a transparent colour: transparent pixels become white",
                both(colour_at(0.5, 0.2, RED), colour_at(0.5, 0.8, (255, 255, 255), tol=5)), cli=True, mime=P),
        BadFile("animated.gif", animated_gif(), "ok", "an animated GIF: its first frame is used",
                colour_at(0.5, 0.5, RED, (64, 64)), mime="image/gif"),
        BadFile("rotated_exif6.jpg", exif_rotated_jpeg(6), "ok", "EXIF orientation 6 is applied: red ends on top",
                red_on_top(), cli=True, mime=J),
        BadFile("rotated_exif8.jpg", exif_rotated_jpeg(8), "ok", "EXIF orientation 8 is applied: red ends on top",
                red_on_top(), mime=J),
        BadFile("rotated_exif3.jpg", exif_rotated_jpeg(3), "ok", "EXIF orientation 3 is applied: red ends on top",
                red_on_top(), mime=J),
        BadFile("big_exif.jpg", big_exif_jpeg(), "ok", "a 60 KB EXIF block is read past", size_is((96, 96)),
                mime=J),
        BadFile("huge_exif.png", huge_exif_png(), "ok", "a 3 MB eXIf chunk is read past", red_on_top(), mime=P),
        BadFile("garbage_exif.jpg", garbage_exif_jpeg(), "ok", "garbage EXIF is ignored; the pixels decode",
                size_is((96, 96)), mime=J),
        BadFile("bad_orientation.jpg", bad_orientation_jpeg(), "ok", "EXIF orientation 9 (invalid) is ignored",
                size_is((96, 96)), mime=J),
        BadFile("photo.webp", webp, "ok", "WebP decodes", size_is((160, 160)), mime="image/webp"),
        BadFile("photo.bmp", _save(good, "BMP"), "ok", "BMP decodes", size_is((160, 160)), mime="image/bmp"),
        BadFile("photo.tiff", tiff, "ok", "TIFF decodes", size_is((160, 160)), mime="image/tiff"),
        BadFile("rgb48.png", rgb48_png(), "ok", "16 bits per channel RGB becomes 8-bit RGB", red_on_top(), mime=P),
        BadFile("int32.tiff", int32_tiff(), "ok", "a 32-bit integer TIFF is scaled to 8-bit grey", horizontal_ramp,
                mime="image/tiff"),
        BadFile("lab.tiff", _save(Image.new("LAB", (64, 64), (50, 20, 30)), "TIFF"), "ok",
                "a CIELAB TIFF is converted to RGB", size_is((64, 64)), mime="image/tiff"),
        BadFile("ycbcr.jpg", _save(Image.new("RGB", (64, 64), RED).convert("YCbCr"), "JPEG", quality=95), "ok",
                "a YCbCr JPEG becomes RGB", colour_at(0.5, 0.5, RED, (64, 64)), mime=J),
        BadFile("two_pages.tiff", multipage_tiff(), "ok", "a multi-page TIFF: its first page is used",
                colour_at(0.5, 0.5, GREEN, (64, 64)), mime="image/tiff"),
        BadFile("grey_alpha.png", _save(Image.new("LA", (64, 64), (128, 255)), "PNG"), "ok",
                "LA (grey + alpha) becomes grey RGB", colour_at(0.5, 0.5, (128, 128, 128), tol=2), mime=P),
        BadFile("grey.jpg", _save(good.convert("L"), "JPEG"), "ok", "greyscale JPEG becomes RGB",
                size_is((160, 160)), mime=J),
        BadFile("bilevel.png", _save(good.convert("1"), "PNG"), "ok", "1-bit PNG becomes RGB",
                size_is((160, 160)), mime=P),
        BadFile("rgba_half_transparent.png", _save(Image.new("RGBA", (64, 64), (*RED, 0)), "PNG"), "ok",
                "fully transparent RGBA becomes white (not black, not red)",
                colour_at(0.5, 0.5, (255, 255, 255), tol=2), mime=P),
        BadFile("float.tiff", float_tiff(), "ok", "a 32-bit float TIFF is scaled to 8-bit", horizontal_ramp,
                mime="image/tiff"),
        BadFile("float_nan.tiff", float_tiff(nan=True), "ok", "NaN and inf in a float TIFF do not wreck it",
                finite_ramp, mime="image/tiff"),
        BadFile("trailing_garbage.jpg", jpeg + b"GARBAGE" * 1000, "ok", "bytes after the JPEG end are ignored",
                size_is((160, 160)), mime=J),
        BadFile("png_named.jpg", png, "ok", "a PNG named .jpg decodes by its content", size_is((160, 160)),
                mime=J),
        BadFile("jpeg_named.png", jpeg, "ok", "a JPEG named .png decodes by its content", size_is((160, 160)),
                mime=P),
        BadFile("no_extension", jpeg, "ok", "a file without an extension decodes by its content",
                size_is((160, 160))),
        BadFile("UPPER CASE ünï.JPG", jpeg, "ok", "spaces, capitals and non-ASCII in the name", size_is((160, 160)),
                mime=J),
    ]
    names = [f.name for f in files]
    assert len(names) == len(set(names)), "duplicate names in the corpus"
    return tuple(files)


def by_name(name: str) -> BadFile:
    for f in corpus():
        if f.name == name:
            return f
    raise KeyError(name)


def errors() -> list[BadFile]:
    return [f for f in corpus() if f.expect == "error"]


def oks() -> list[BadFile]:
    return [f for f in corpus() if f.expect == "ok"]


def good_photo(seed: int = 11, size: int = 200) -> bytes:
    """A plain, valid lesion photo (PNG) to upload after the bad ones."""
    return _save(lesion(size, seed), "PNG")
