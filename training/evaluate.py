"""`python -m training.evaluate`: measure a model on a labelled folder.

    python -m training.evaluate --model NAME [--checkpoint PATH] --data DIR [--split S] [--tta] [--json]

`--json` prints one object with n, accuracy, auc, sensitivity, specificity, threshold and the
model's name, plus the curve data the Evaluate page draws (roc, confusion, calibration).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

import numpy as np

from models.classifier import dihedral, softmax_np
from models.registry import MODEL_NAMES

from .metrics import summarize


def predict_images(clf, images: np.ndarray, tta: bool = False, batch_size: int = 32,
                   progress: Callable[[int, int], None] | None = None,
                   embeddings: list | None = None) -> np.ndarray:
    """Calibrated P(malignant) for a uint8 NHWC array at the model's size. With `embeddings` (a list),
    each chunk's embeddings (of the photo as it is) are appended to it, from the same forward pass."""
    probs = np.empty(len(images), dtype=np.float64)
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        batch = np.stack([v for img in chunk for v in dihedral(img)]) if tta else chunk  # TTA: 8 views each
        if embeddings is None:
            p = clf.predict_batch(batch)
        else:
            logits, emb = clf.logits_embed_batch(batch)
            p = softmax_np(logits, clf.temperature)[:, 1]
            embeddings.append(emb[::8] if tta else emb)  # dihedral view 0 is the photo itself
        probs[i:i + len(chunk)] = p.reshape(len(chunk), 8).mean(1) if tta else p
        if progress:
            progress(min(i + batch_size, len(images)), len(images))
    return probs


def evaluate_folder(clf, data: str | os.PathLike, split: str | None = None, tta: bool = False,
                    threshold: float | None = None, progress=None) -> dict[str, Any]:
    from .data import load_dataset

    ds = load_dataset(data, clf.image_size, split, dedupe=False)
    return evaluate_images(clf, ds.images, ds.labels, ds.paths, tta, threshold, progress,
                           skipped=ds.skipped, data=str(ds.root))


def evaluate_images(clf, images: np.ndarray, labels: np.ndarray, paths: list[str], tta: bool = False,
                    threshold: float | None = None, progress=None, skipped=(), data: str = "") -> dict[str, Any]:
    """The evaluation of `clf` on decoded images (uint8 NHWC at its size) with their labels: what
    evaluate_folder returns for a folder, for images from anywhere (the Evaluate page's zip upload)."""
    from models.familiarity import Familiarity

    fam = Familiarity.from_card(clf.card)
    embs: list | None = [] if fam is not None else None
    probs = predict_images(clf, images, tta=tta, progress=progress, embeddings=embs)
    familiar = [r.familiar for r in fam.score_batch(np.concatenate(embs))] if embs else None
    thr = clf.threshold if threshold is None else float(threshold)
    result = {"model": clf.name, **summarize(labels, probs, thr), "tta": bool(tta),
              "data": data, "skipped": [{"path": p, "reason": r} for p, r in skipped]}
    result["per_image"] = [{"path": p, "label": int(y), "prob_malignant": float(q), "pred": int(q >= thr)}
                           for p, y, q in zip(paths, labels, probs)]
    if familiar is not None:  # the model's familiarity score: which photos are unlike its training photos
        for row, f in zip(result["per_image"], familiar):
            row["familiar"] = bool(f)
    return result


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, choices=MODEL_NAMES)
    p.add_argument("--checkpoint", default=None, help="default: the shipped weights")
    p.add_argument("--data", required=True, help="folder with benign/ and malignant/ (or one above them)")
    p.add_argument("--split", default=None, help="subfolder of --data, e.g. test")
    p.add_argument("--threshold", type=float, default=None, help="default: the model card's")
    p.add_argument("--tta", action="store_true", help="average the 8 flips/rotations of each image")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--per-image", action="store_true", help="with --json: include every image's probability")
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = get_args_parser().parse_args(argv)
    from models.loader import load_classifier

    from .data import DatasetError, find_dataset_root

    try:
        find_dataset_root(args.data, args.split)  # a mistyped folder is reported before a model loads
        clf = load_classifier(args.model, args.checkpoint)
        r = evaluate_folder(clf, args.data, args.split, args.tta, args.threshold)
    except (DatasetError, ValueError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if args.json:
        if not args.per_image:
            r.pop("per_image")
        print(json.dumps(r))
    else:
        c = r["confusion"]
        print(f"{r['model']} on {r['data']} (n={r['n']}{', TTA' if r['tta'] else ''}): accuracy {r['accuracy']:.4f}, "
              f"AUC {r['auc']:.4f}, sensitivity {r['sensitivity']:.4f}, specificity {r['specificity']:.4f} "
              f"at threshold {r['threshold']:.4f} (TP {c['tp']}, FN {c['fn']}, TN {c['tn']}, FP {c['fp']}; "
              f"ECE {r['ece']:.4f})")
        if r["skipped"]:
            print(f"skipped {len(r['skipped'])} unreadable files", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
