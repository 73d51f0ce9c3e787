"""`python -m training.checks`: what a model learned, measured on its own validation split.

    python -m training.checks --model NAME [--checkpoint PATH] [--data DIR ...] [--limit N]
                              [--json] [--write-card]

Three checks, each on the validation split that training used (same sources, seed, fraction and
lesion grouping, from the model card unless `--data` names other folders):

- **per source and per diagnosis**: AUC, sensitivity and specificity at the card's threshold for each
  source; the same for each source folder as it is on disk (a photo that two folders hold counts in
  both: the Kaggle folder's view, HAM10000 naevi against malignant photos of several collections, is
  how the Kaggle test split is made); for each diagnosis (`dx`, which is one class) the share called
  malignant;
- **shortcut probe**: a dark round rim, a blue cast and a colour-chart patch are added to the benign
  validation photos; reported are the mean change of P(malignant) and the share of labels that flip
  (a model that learned the lesion barely moves; one that learned the camera flips);
- **heatmap on the lesion**: on validation photos with a lesion mask (HAM10000's), the share whose
  heatmap's peak lies on the lesion, and the heatmap's mass on the lesion beside the lesion's share of
  the frame (a map that ignores the lesion puts about the lesion's share there); and whether the map
  shows what the model used: blurring the map's hottest fifth of the photo should move the answer
  (the label's log-odds) far more than blurring a random blob of the same area.

With a familiarity score in the card, each is also split by it: the share of validation photos (per
source) and of each probe's photos flagged unfamiliar, and the accuracy on familiar vs unfamiliar ones.

`--write-card` stores the results as the card's `checks` (the About page shows them).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from models.familiarity import Familiarity, accuracy_split
from models.registry import MODEL_NAMES

from .evaluate import predict_images
from .metrics import binary_metrics, platt_gap

PROBES = ("dark_rim", "blue_cast", "colour_chart")
FLIP_LIMIT = 0.10  # the regression test's bound on benign labels flipped by the dark rim


# ------------------------------------------------------------------ perturbations (uint8 NHWC)

def _radius(size: int) -> np.ndarray:
    c = (np.arange(size) + 0.5) / size * 2 - 1
    return np.sqrt(c[None, :] ** 2 + c[:, None] ** 2)


def dark_rim(images: np.ndarray, radius: float = 0.95, softness: float = 0.05, darkness: float = 0.95) -> np.ndarray:
    """A dermatoscope's dark round field: black outside a circle just inside the frame's corners."""
    size = images.shape[1]
    mask = darkness / (1 + np.exp(-(_radius(size) - radius) / softness))
    out = images.astype(np.float32) * (1 - mask[None, :, :, None]) + 8.0 * mask[None, :, :, None]
    return out.round().clip(0, 255).astype(np.uint8)


def blue_cast(images: np.ndarray, gains=(0.85, 1.0, 1.25)) -> np.ndarray:
    """A bluer white balance, as one outside dermatoscope has."""
    out = images.astype(np.float32) * np.asarray(gains, np.float32)
    return out.round().clip(0, 255).astype(np.uint8)


# A 4x3 colour checker's patches (approximate sRGB of the classic chart's top rows).
CHART = np.array([[115, 82, 68], [194, 150, 130], [98, 122, 157], [87, 108, 67],
                  [133, 128, 177], [103, 189, 170], [214, 126, 44], [80, 91, 166],
                  [193, 90, 99], [94, 60, 108], [157, 188, 64], [224, 163, 46]], np.uint8)


def colour_chart(images: np.ndarray, side: float = 0.28) -> np.ndarray:
    """A small colour-calibration chart in the bottom-right corner, off the centred lesion."""
    out = images.copy()
    size = images.shape[1]
    h = max(3, int(size * side * 0.75))
    w = max(4, int(size * side))
    y0, x0 = size - h - size // 32, size - w - size // 32
    for i, colour in enumerate(CHART):
        r, c = divmod(i, 4)
        ys = slice(y0 + r * h // 3, y0 + (r + 1) * h // 3)
        xs = slice(x0 + c * w // 4, x0 + (c + 1) * w // 4)
        out[:, ys, xs] = colour
    return out


PERTURB = {"dark_rim": dark_rim, "blue_cast": blue_cast, "colour_chart": colour_chart}


# ------------------------------------------------------------------ the checks

def _rates(y: np.ndarray, p: np.ndarray, thr: float) -> dict[str, Any]:
    m = binary_metrics(y, p, thr)
    return {k: m[k] for k in ("n", "auc", "sensitivity", "specificity", "accuracy")}


def groups(keys: list[str]):
    """(name, boolean mask) for each distinct key, sorted; an empty key is named "unknown"."""
    for k in sorted(set(keys)):
        yield k or "unknown", np.array([x == k for x in keys])


def per_group(y: np.ndarray, p: np.ndarray, thr: float, keys: list[str]) -> dict[str, dict]:
    return {k: _rates(y[sel], p[sel], thr) for k, sel in groups(keys) if sel.any()}


def per_folder(y: np.ndarray, p: np.ndarray, thr: float, val) -> dict[str, dict]:
    """Each source folder as it is on disk: its own photos and those kept as another source's copy.
    The Kaggle folder's view (HAM10000 naevi as its benign photos, malignant photos from several
    collections) is how its held-out test split is made, so it stands in for that split."""
    return {k: _rates(y[sel], p[sel], thr) for k in sorted(set(val.sources))
            if (sel := val.held_by(k)).any() and len(set(y[sel].tolist())) == 2}


def per_dx(p: np.ndarray, thr: float, dx: list[str]) -> dict[str, dict]:
    return {d: {"n": int(sel.sum()), "called_malignant": float((p[sel] >= thr).mean())} for d, sel in groups(dx)}


def predict_familiar(clf, images: np.ndarray, fam) -> tuple[np.ndarray, np.ndarray | None]:
    """P(malignant) and, when the model has a familiarity score (`fam`), whether each photo is familiar,
    from the same forward pass."""
    if fam is None:
        return predict_images(clf, images), None
    chunks: list[np.ndarray] = []
    p = predict_images(clf, images, embeddings=chunks)
    emb = np.concatenate(chunks) if chunks else np.zeros((0, fam.dims), np.float32)
    return p, np.array([r.familiar for r in fam.score_batch(emb)], bool) if len(emb) else np.zeros(0, bool)


def shortcut_probe(clf, images: np.ndarray, thr: float, fam=None) -> dict[str, dict]:
    """Benign photos with each perturbation: mean change of P(malignant) and share of labels flipped.
    With `fam`, also the share of each probe's photos flagged unfamiliar and the accuracy (benign
    called benign) on its familiar and unfamiliar photos: does the warning land where answers fail?"""
    base, familiar = predict_familiar(clf, images, fam)
    out: dict[str, Any] = {"n": int(len(images)), "clean_called_malignant": float((base >= thr).mean())}
    if familiar is not None:
        out["clean_familiarity"] = accuracy_split(familiar, base < thr)
    for name in PROBES:
        p, familiar = predict_familiar(clf, PERTURB[name](images), fam)
        out[name] = {"mean_change": float((p - base).mean()),
                     "flipped": float(((p >= thr) != (base >= thr)).mean()),
                     "called_malignant": float((p >= thr).mean())}
        if familiar is not None:
            out[name]["familiarity"] = accuracy_split(familiar, p < thr)
    return out


def load_mask(path: Path, size: int) -> np.ndarray | None:
    from models.preprocess import ImageError, prepare

    try:
        return prepare(path, size)[..., 0] > 127
    except ImageError:
        return None


DELETED_SHARE = 0.2  # the faithfulness check blurs this share of the photo


def _label_log_odds(clf, images: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Calibrated log-odds of the label each photo was given (+: malignant, -: benign)."""
    logits, _ = clf.logits_embed_batch(images)
    return signs * (logits[:, 1] - logits[:, 0]) / clf.temperature


def deletion_drop(clf, images: np.ndarray, heatmaps: list[np.ndarray], signs: np.ndarray,
                  share: float = DELETED_SHARE, seed: int = 0) -> dict[str, float]:
    """How far the answer's log-odds fall when the hottest `share` of each photo (by its heatmap) is
    blurred away, beside the same for smooth random blobs of that area (the no-information baseline)."""
    import cv2

    if not len(images):
        return {"share": share, "heatmap": float("nan"), "random": float("nan")}
    rng = np.random.default_rng(seed)
    size = images.shape[1]
    blurred = np.stack([cv2.GaussianBlur(im, (0, 0), size / 16) for im in images])

    def blur_top(maps) -> np.ndarray:
        sel = np.stack([m >= np.quantile(m, 1 - share) for m in maps])[..., None]
        return np.where(sel, blurred, images)

    blobs = [cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), size / 10) for _ in images]
    base = _label_log_odds(clf, images, signs)
    return {"share": share,
            "heatmap": float(np.mean(base - _label_log_odds(clf, blur_top(heatmaps), signs))),
            "random": float(np.mean(base - _label_log_odds(clf, blur_top(blobs), signs)))}


def heatmap_on_lesion(clf, images: np.ndarray, masks: list[np.ndarray], method: str | None = None) -> dict[str, Any]:
    """Share of photos whose heatmap peak lies on the lesion; heatmap mass on the lesion against the
    lesion's share of the frame (means over photos); the deletion check (`deletion_drop`)."""
    method = method or clf.default_cam
    peaks, mass, share, kept, maps, signs, flat = [], [], [], [], [], [], 0
    for i, (img, mask) in enumerate(zip(images, masks)):
        e = clf.explain(img, method)
        if e.flat:
            flat += 1
            continue
        heat = e.heatmap
        peaks.append(bool(mask.flat[int(np.argmax(heat))]))
        mass.append(float((heat * mask).sum() / max(heat.sum(), 1e-9)))
        share.append(float(mask.mean()))
        kept.append(i)
        maps.append(heat)
        signs.append(1.0 if e.prediction.prob_malignant >= e.prediction.threshold else -1.0)
    n = len(peaks)
    return {"n": n, "flat_maps": flat, "method": method,
            "peak_on_lesion": float(np.mean(peaks)) if n else float("nan"),
            "mass_on_lesion": float(np.mean(mass)) if n else float("nan"),
            "lesion_share_of_frame": float(np.mean(share)) if n else float("nan"),
            "log_odds_drop": deletion_drop(clf, images[kept], maps, np.asarray(signs))}


def run_checks(clf, data: list[str] | None = None, limit: int | None = 400, seed: int = 0,
               method: str | None = None) -> dict[str, Any]:
    from .data import load_split
    from .sources import locate, mask_path

    card = clf.card
    info = card.get("data") if isinstance(card.get("data"), dict) else {}
    folders = data or [str(locate(s["root"])) for s in info.get("sources", [])] or (
        [str(locate(info["root"]))] if info.get("root") else None)
    if not folders:
        raise ValueError(f"{clf.name}: the model card names no training data; give --data")
    split = load_split(folders, clf.image_size, float(info.get("val_fraction", 0.15)), int(info.get("split_seed", 42)))
    val = split.val
    thr = clf.threshold
    fam = Familiarity.from_card(card)
    p, familiar = predict_familiar(clf, val.images, fam)
    rng = np.random.default_rng(seed)
    benign = np.flatnonzero(val.labels == 0)
    if limit and len(benign) > limit:
        benign = np.sort(rng.choice(benign, limit, replace=False))
    masked = [(i, mask_path(val.roots[val.sources[i]], val.image_ids[i])) for i in range(len(val.labels))
              if val.image_ids[i]]
    masked = [(i, m) for i, m in masked if m is not None]
    if limit and len(masked) > limit:
        masked = [masked[j] for j in np.sort(rng.choice(len(masked), limit, replace=False))]
    masks = [(i, load_mask(m, clf.image_size)) for i, m in masked]
    masks = [(i, m) for i, m in masks if m is not None and m.any()]
    result = {
        "model": clf.name, "threshold": thr, "data": folders, "split_seed": info.get("split_seed", 42),
        "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "validation": _rates(val.labels, p, thr),
        "calibration": platt_gap(val.labels, p),
        "per_source": per_group(val.labels, p, thr, val.sources),
        "per_folder": per_folder(val.labels, p, thr, val),
        "per_dx": per_dx(p, thr, val.dx),
        "shortcut_probe": shortcut_probe(clf, val.images[benign], thr, fam),
        "heatmap_on_lesion": heatmap_on_lesion(clf, val.images[[i for i, _ in masks]] if masks else
                                               val.images[:0], [m for _, m in masks], method),
    }
    if familiar is not None:
        correct = (p >= thr).astype(int) == val.labels
        result["familiarity"] = {
            "validation": accuracy_split(familiar, correct),
            "per_source": {k: accuracy_split(familiar[sel], correct[sel]) for k, sel in groups(val.sources)}}
    return result


def familiarity_line(r: dict[str, Any]) -> str:
    """Unfamiliar share and accuracy familiar / unfamiliar on validation, per source and per probe."""
    def one(label: str, a: dict | None) -> str:
        if not a:
            return ""
        acc = "/".join("-" if a[k] is None else f"{a[k]:.2f}" for k in ("accuracy_familiar", "accuracy_unfamiliar"))
        return f"{label} {a['unfamiliar']}/{a['n']} unfamiliar, accuracy {acc}"

    fam, sp = r.get("familiarity") or {}, r["shortcut_probe"]
    parts = [one("validation", fam.get("validation"))]
    parts += [one(k, v) for k, v in (fam.get("per_source") or {}).items()]
    parts += [one("benign clean", sp.get("clean_familiarity"))]
    parts += [one(f"benign + {k}", sp[k].get("familiarity")) for k in PROBES]
    return "familiarity (familiar/unfamiliar): " + "; ".join(x for x in parts if x)


def summary_line(r: dict[str, Any]) -> str:
    sp, hm, v = r["shortcut_probe"], r["heatmap_on_lesion"], r["validation"]
    probes = ", ".join(f"{k} flips {sp[k]['flipped']:.1%} (mean dP {sp[k]['mean_change']:+.3f})" for k in PROBES)
    folders = "".join(f"; {k} folder AUC {f['auc']:.3f}, sensitivity {f['sensitivity']:.3f}, specificity "
                      f"{f['specificity']:.3f} (n={f['n']})" for k, f in (r.get("per_folder") or {}).items())
    return (f"{r['model']}: validation AUC {v['auc']:.3f}, sensitivity {v['sensitivity']:.3f}, specificity "
            f"{v['specificity']:.3f} (n={v['n']}){folders}; shortcut probe on {sp['n']} benign photos: {probes}; "
            f"heatmap ({hm['method']}) peak on lesion {hm['peak_on_lesion']:.1%}, mass on lesion "
            f"{hm['mass_on_lesion']:.1%} vs lesion share {hm['lesion_share_of_frame']:.1%} (n={hm['n']}); blurring its hottest "
            f"{hm['log_odds_drop']['share']:.0%} lowers the label's log-odds by {hm['log_odds_drop']['heatmap']:.2f} "
            f"(random blobs: {hm['log_odds_drop']['random']:.2f})" + calibration_line(r.get("calibration"))
            + (f"\n{familiarity_line(r)}" if r.get("familiarity") else ""))


def calibration_line(c: dict | None) -> str:
    if not c:
        return ""
    return (f"; calibration: ECE {c['ece']:.3f} with the card's temperature, {c['ece_platt_in_sample']:.3f} with a "
            f"log-odds scale {c['scale']:.2f} and bias {c['bias']:+.2f} on top (fitted on these photos)")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.checks", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, choices=MODEL_NAMES)
    p.add_argument("--checkpoint", default=None, help="default: the shipped weights")
    p.add_argument("--data", nargs="+", default=None, help="default: the sources in the model card")
    p.add_argument("--limit", type=int, default=400, help="photos per probe and for the heatmap check (0: all)")
    p.add_argument("--method", default=None, help="heatmap method (default: the model's own)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--write-card", action="store_true", help="store the results as the card's `checks`")
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = get_args_parser().parse_args(argv)
    from models.loader import find_card, load_classifier
    from models.registry import card_path, shipped_checkpoint, write_card

    from .data import DatasetError

    try:
        clf = load_classifier(args.model, args.checkpoint)
        r = run_checks(clf, args.data, args.limit or None, method=args.method)
    except (DatasetError, ValueError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if args.write_card:
        ckpt = Path(args.checkpoint) if args.checkpoint else shipped_checkpoint(args.model)
        path = card_path(ckpt) if card_path(ckpt).is_file() else ckpt.parent / "card.json"
        card = find_card(ckpt)
        card["checks"] = r
        write_card(path, card)
    print(json.dumps(r) if args.json else summary_line(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
