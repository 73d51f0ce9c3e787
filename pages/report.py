"""A report to keep: one photo's answers (one model on Diagnose, each model on Compare) as a PNG or a
PDF, made in memory from what the page shows. Data in, bytes out: nothing here draws a widget, and
nothing is written to disk (the photo is patient data).

    rep = Report("mole.jpg", photo_image, [ModelResult(...)], made_at=datetime.now().astimezone())
    report_png(rep), report_pdf(rep)      # bytes

Both formats hold the same text (`header_lines`, `body_lines`); the PDF uses fpdf2's core fonts,
which know latin-1 only, so every text goes through `latin1` first.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from models.classifier import label_at
from models.familiarity import UNFAMILIAR_WARNING
from pages.common import DISCLAIMER, fmt_metric

TITLE = "Lesion Lens report"
PLAIN_DISCLAIMER = DISCLAIMER.replace("**", "")

# Characters the pages use that latin-1 lacks, and what the report writes instead.
_LATIN1 = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "–": "-", "—": "-", "→": "->",
                         "≥": ">=", "≤": "<=", "…": "...", "•": "-", "−": "-", "×": "x", "\u00a0": " "})


def latin1(text: str) -> str:
    """`text` as plain latin-1: typographic marks spelled out, markdown and icons dropped, anything
    else outside latin-1 a '?'."""
    text = re.sub(r":material/[a-z_]+:", "", str(text)).replace("**", "").replace("`", "")
    return text.translate(_LATIN1).encode("latin-1", "replace").decode("latin-1")


# ------------------------------------------------------------------ what a report holds

@dataclass
class ModelResult:
    model: str  # display name
    prob: float  # probability of malignant
    threshold: float  # the threshold the label is at: the one the user chose
    card: dict[str, Any]  # the model card: its own threshold, validation numbers, training data
    method: str  # the heatmap method
    overlay: Image.Image | None = None  # the heatmap over the photo; None: the map is flat
    outlined: bool = False  # the lesion's outline is drawn on the overlay
    checks: list[str] = field(default_factory=list)  # the trust checks, one sentence each (check_lines)
    notes: list[str] = field(default_factory=list)  # more lines: the operating point, test-time augmentation

    @property
    def label(self) -> str:
        return label_at(self.prob, self.threshold)

    @property
    def model_threshold(self) -> float:
        return float(self.card.get("threshold", 0.5))


@dataclass
class Report:
    file_name: str  # the photo the results are about
    photo: Image.Image  # the centre crop the models see
    results: list[ModelResult]
    made_at: datetime
    photo_note: str = ""  # e.g. an example photo's credit
    summary: str = ""  # e.g. whether the models agree


def check_lines(a, heatmap: np.ndarray | None) -> list[str]:
    """The trust checks of `a` (a models.trust.Assessment) as sentences; `heatmap` is the one shown
    (None when the map is flat)."""
    from models.trust import OFF_LESION_SHARE, OFF_LESION_WARNING, on_lesion_share  # torch is loaded by now

    g = a.gate
    out = ["Not-a-lesion gate: not run (no gate is shipped)." if g is None else
           f"Not-a-lesion gate: passed, a photo of a skin lesion (score {g.score:.2f})." if g.lesion_photo else
           f"Not-a-lesion gate: refused (score {g.score:.2f})."]
    f = a.familiarity
    if f is None:
        out.append("Familiarity: not measured (no familiarity model in this model's card).")
    else:
        out.append(f"Familiarity: {'familiar' if f.familiar else 'unfamiliar'} (score {f.familiarity:.0%}: the share "
                   "of its validation photos less like its training photos)."
                   + ("" if f.familiar else f" {UNFAMILIAR_WARNING}."))
    out += [f"Photo quality: {h.message}" for h in a.quality] or ["Photo quality: no hints."]
    mask = a.lesion_mask
    if mask is None:
        out.append("Heatmap on the lesion: unknown (no lesion segmenter).")
    elif heatmap is None:
        out.append("Heatmap on the lesion: no heatmap (the map is flat).")
    elif (share := on_lesion_share(heatmap, mask)) is None:
        out.append("Heatmap on the lesion: unknown (no lesion outline could be drawn).")
    else:
        out.append(f"Heatmap on the lesion: {share:.0%} of it (the lesion covers {mask.mean():.0%} of the photo)."
                   + (f" {OFF_LESION_WARNING}." if share < OFF_LESION_SHARE else ""))
    return out


def tta_sentence(mean: float, probs: Sequence[float], threshold: float, badge: Callable[[str], str] = str) -> str:
    """What test-time augmentation gave (`badge` formats the label: the pages pass common.label_badge)."""
    probs = np.asarray(probs, np.float64)
    return (f"**Test-time augmentation**: mean over 8 flips/rotations {mean:.1%} (range {probs.min():.1%} to "
            f"{probs.max():.1%}, spread SD {100 * probs.std():.1f} points); {badge(label_at(mean, threshold))} at "
            f"threshold {threshold:.3f}.")


def escape_markdown(text: str) -> str:
    """A file name as literal text in Streamlit markdown (no emphasis, links, maths or HTML from it)."""
    return re.sub(r"([\\`*_\[\]<>$~|:])", r"\\\1", text)


def _trained_on(card: dict[str, Any]) -> str:
    data = card.get("data")
    name = data.get("name", "its dataset") if isinstance(data, dict) else (data or "an unrecorded dataset")
    counts = (data.get("counts") or {}).get("train") if isinstance(data, dict) else None
    n = f", {sum(counts.values()):,} training photos" if isinstance(counts, dict) and counts else ""
    synthetic = " (SYNTHETIC images)" if card.get("synthetic") else ""
    return f"Trained on: {name}{synthetic}{n}; {card.get('epochs', '?')} epochs."


def _validation(card: dict[str, Any]) -> str:
    v = card.get("validation") or {}
    if v.get("sensitivity") is None:
        return "Validation: the model card has no validation metrics."
    n = f" ({v['n']:,} photos)" if isinstance(v.get("n"), int) else ""
    return (f"Validation{n}, at its threshold {float(card.get('threshold', 0.5)):.3f}: AUC {fmt_metric(v.get('auc'))}, "
            f"sensitivity {fmt_metric(v.get('sensitivity'))}, specificity {fmt_metric(v.get('specificity'))}.")


def header_lines(rep: Report) -> list[tuple[str, str]]:
    return [("title", TITLE), ("text", f"Photo: {rep.file_name}"),
            ("text", f"Made: {rep.made_at:%Y-%m-%d %H:%M %Z}".rstrip())]


def body_lines(rep: Report) -> list[tuple[str, str]]:
    """(style, text): style is h2, h3, text or small."""
    out: list[tuple[str, str]] = []
    if rep.summary:
        out.append(("text", rep.summary))
    for r in rep.results:
        own = abs(r.threshold - r.model_threshold) < 1e-9
        out += [("h2", f"{r.model}: {r.label}"),
                ("text", f"Probability of malignant: {r.prob:.1%}"),
                ("text", f"Label at threshold {r.threshold:.3f} ({'the model’s own' if own else 'chosen by the user'}): "
                         f"{r.label}")]
        if not own:
            out.append(("text", f"At the model’s own threshold {r.model_threshold:.3f}: "
                                f"{label_at(r.prob, r.model_threshold)}"))
        out.append(("text", f"Heatmap: {r.method}" + (": flat for this photo, no spatial evidence" if r.overlay is None
                                                        else ", white line: the lesion's outline" if r.outlined else "")))
        out += [("text", n) for n in r.notes]
        out += [("h3", "The model"), ("text", _validation(r.card)), ("text", _trained_on(r.card))]
        if r.checks:
            out += [("h3", "Checks")] + [("text", f"- {c}") for c in r.checks]
    if rep.photo_note:
        out.append(("small", rep.photo_note))
    out.append(("small", "The heatmap shows what moved the model's answer, not where the disease is."))
    return out


def _images(rep: Report) -> list[tuple[Image.Image | None, str]]:
    return [(rep.photo, f"The photo: {rep.file_name}")] + [
        (r.overlay, f"{r.model}: {r.method}, evidence for “{r.label}”" if r.overlay is not None
         else f"{r.model}: {r.method} map flat, nothing to draw")
        for r in rep.results]


# ------------------------------------------------------------------ PNG

PNG_WIDTH = 1000
PNG_MARGIN = 40
PNG_IMAGE = 300  # the largest image side
_GAP = 16
_FONT_SIZES = {"title": 30, "h2": 23, "h3": 18, "text": 16, "small": 14}


def _font(style: str) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=_FONT_SIZES[style])  # Pillow's own font: nothing to download


def _wrap(text: str, font, width: float) -> list[str]:
    lines, line = [], ""
    for word in text.split(" "):
        trial = f"{line} {word}" if line else word
        if line and font.getlength(trial) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line]


class _Page:
    """Lays out top to bottom; with `draw` None it only measures (the first pass gives the height)."""

    def __init__(self, img: Image.Image | None = None):
        self.img = img
        self.draw = ImageDraw.Draw(img) if img is not None else None
        self.y = PNG_MARGIN

    def text(self, style: str, text: str, x: int = PNG_MARGIN, width: int = PNG_WIDTH - 2 * PNG_MARGIN,
             fill: str = "#222") -> int:
        font = _font(style)
        step = round(_FONT_SIZES[style] * 1.35)
        self.y += {"title": 0, "h2": 18, "h3": 8}.get(style, 0)
        for line in _wrap(latin1(text), font, width):
            if self.draw is not None:
                self.draw.text((x, self.y), line, font=font, fill=fill,
                               stroke_width=1 if style in ("title", "h2") else 0, stroke_fill=fill)
            self.y += step
        return self.y

    def images(self, items: list[tuple[Image.Image | None, str]]) -> None:
        k = len(items)
        side = min(PNG_IMAGE, (PNG_WIDTH - 2 * PNG_MARGIN - (k - 1) * _GAP) // k)
        top, bottom = self.y + 8, self.y
        for i, (im, caption) in enumerate(items):
            x = PNG_MARGIN + i * (side + _GAP)
            if self.img is not None:
                if im is None:
                    self.draw.rectangle((x, top, x + side - 1, top + side - 1), fill="#eeeeee", outline="#bbbbbb")
                else:
                    self.img.paste(im.convert("RGB").resize((side, side), Image.BILINEAR), (x, top))
            self.y = top + side + 6
            bottom = max(bottom, self.text("small", caption, x=x, width=side, fill="#444"))
        self.y = bottom + 8


def _lay_out(page: _Page, rep: Report) -> int:
    for style, text in header_lines(rep):
        page.text(style, text)
    page.images(_images(rep))
    for style, text in body_lines(rep):
        page.y += 6 if style == "small" else 0
        page.text(style, text, fill="#555" if style == "small" else "#222")
    page.y += 10
    page.text("h3", PLAIN_DISCLAIMER, fill="#8a1c1c")
    return page.y + PNG_MARGIN


def report_png(rep: Report) -> bytes:
    """The report as one PNG, PNG_WIDTH wide and as tall as its content."""
    height = _lay_out(_Page(), rep)
    img = Image.new("RGB", (PNG_WIDTH, height), "white")
    _lay_out(_Page(img), rep)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------ PDF

_PDF_FONTS = {"title": ("B", 16, 8), "h2": ("B", 13, 7), "h3": ("B", 10.5, 5.5), "text": ("", 10, 5),
              "small": ("", 8, 4)}


def _jpeg(img: Image.Image) -> io.BytesIO:
    """A JPEG at quality 90, which fpdf2 embeds as it is: a fifth of the lossless size of a photo."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=90)
    buf.seek(0)
    return buf


def report_pdf(rep: Report) -> bytes:
    """The report as an A4 PDF (fpdf2, core fonts)."""
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    pdf = FPDF(format="A4")
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(True, margin=15)
    pdf.set_title(latin1(f"{TITLE}: {rep.file_name}"))
    pdf.set_creator("Lesion Lens")
    pdf.add_page()

    def write(style: str, text: str, x: float | None = None, w: float = 0) -> None:
        weight, size, height = _PDF_FONTS[style]
        pdf.set_font("Helvetica", weight, size)
        if style in ("h2", "h3"):
            pdf.ln(3 if style == "h2" else 1)
        if x is not None:
            pdf.set_x(x)
        pdf.multi_cell(w, height, latin1(text), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    for style, text in header_lines(rep):
        write(style, text)
    items = _images(rep)
    width = pdf.w - pdf.l_margin - pdf.r_margin
    side = min(70.0, (width - (len(items) - 1) * 4) / len(items))
    if pdf.get_y() + side + 15 > pdf.h - pdf.b_margin:
        pdf.add_page()
    top = pdf.get_y() + 3
    bottom = top
    for i, (im, caption) in enumerate(items):
        x = pdf.l_margin + i * (side + 4)
        if im is None:
            pdf.set_fill_color(238, 238, 238)
            pdf.rect(x, top, side, side, style="F")
        else:
            pdf.image(_jpeg(im), x=x, y=top, w=side, h=side)
        pdf.set_y(top + side + 1.5)
        write("small", caption, x=x, w=side)
        bottom = max(bottom, pdf.get_y())
    pdf.set_y(bottom + 2)
    for style, text in body_lines(rep):
        write(style, text)
    pdf.ln(3)
    pdf.set_text_color(138, 28, 28)
    write("h3", PLAIN_DISCLAIMER)
    return bytes(pdf.output())


FORMATS: dict[str, Callable[[Report], bytes]] = {"PDF": report_pdf, "PNG": report_png}
MIME = {"PDF": "application/pdf", "PNG": "image/png"}
