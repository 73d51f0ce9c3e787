"""Fit (or refresh) a model's familiarity score: `python -m training.familiarity`.

    python -m training.familiarity --model NAME [--checkpoint PATH] [--data DIR ...] [--max-train N]
                                   [--dims K] [--percentile P] [--json] [--dry-run]

Embeds the training and validation photos of the split the model was trained on (sources, seed,
fraction and lesion grouping from its card unless `--data` names other folders), fits
`models.familiarity.fit_familiarity` and writes the result into the model card beside the checkpoint
(`card["familiarity"]`, atomically). The same fit runs at the end of every training run through
`fit_extras`, the training driver's hook.

Reported per model: the share of validation photos flagged unfamiliar, and the accuracy (at the card's
threshold) on familiar vs unfamiliar validation photos.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from models.familiarity import (DEFAULT_DIMS, DEFAULT_PERCENTILE, Familiarity, accuracy_split, card_entry,
                                fit_familiarity)
from models.registry import MODEL_NAMES

MAX_TRAIN = 3000  # a 32-direction PCA is settled long before; embedding more costs a pass per photo
EMBED_BATCH = 64


def _subsample(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    if not limit or n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def _softmax_p1(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = np.asarray(logits, np.float64) / max(float(temperature), 1e-6)
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e[:, 1] / e.sum(1)


def familiarity_entry(train_emb: np.ndarray, val_emb: np.ndarray, val_logits: np.ndarray | None,
                      val_labels: np.ndarray | None, threshold: float = 0.5, temperature: float = 1.0,
                      dims: int = DEFAULT_DIMS, percentile: float = DEFAULT_PERCENTILE) -> dict[str, Any]:
    """The card's `familiarity` entry, with accuracy on familiar / unfamiliar validation photos."""
    params, summary = fit_familiarity(train_emb, val_emb, dims, percentile)
    fam = Familiarity(params)
    if val_logits is not None and val_labels is not None:
        familiar = np.array([r.familiar for r in fam.score_batch(val_emb)])
        correct = (_softmax_p1(val_logits, temperature) >= threshold).astype(int) == np.asarray(val_labels)
        summary["validation"] = {**accuracy_split(familiar, correct), "threshold": float(threshold)}
    return card_entry(params, summary)


def fit_extras(backend, split, cfg: dict, card: dict | None = None) -> dict:
    """The training driver's hook (after calibration, best weights loaded): `{"familiarity": ...}`.

    `backend.embed` gives the embeddings and `backend.eval_logits` the validation logits; accuracy is
    taken at the calibrated card's threshold and temperature when `card` (or `cfg`) carries them."""
    ref = card or cfg or {}
    idx = _subsample(len(split.train.images), MAX_TRAIN, int(cfg.get("seed", 0) or 0))
    train_emb = _embed_in_batches(backend.embed, split.train.images, idx)
    val_emb = _embed_in_batches(backend.embed, split.val.images, np.arange(len(split.val.images)))
    try:
        logits = backend.eval_logits(split.val.images, fp32=True)
    except TypeError:
        logits = backend.eval_logits(split.val.images)
    entry = familiarity_entry(train_emb, val_emb, logits, split.val.labels, float(ref.get("threshold", 0.5)),
                              float(ref.get("temperature", 1.0) or 1.0))
    return {"familiarity": entry}


def _embed_in_batches(embed, images: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = [np.asarray(embed(images[idx[i:i + EMBED_BATCH]]), np.float32) for i in range(0, len(idx), EMBED_BATCH)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def classifier_pass(clf, images: np.ndarray, batch: int = EMBED_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """Logits and embeddings of every image, one forward pass each."""
    logits, embs = [], []
    for i in range(0, len(images), batch):
        lg, em = clf.logits_embed_batch(images[i:i + batch])
        logits.append(lg)
        embs.append(em)
    return np.concatenate(logits), np.concatenate(embs)


def familiarity_counts(clf, images: np.ndarray, labels: np.ndarray, threshold: float | None = None,
                       probs: np.ndarray | None = None) -> dict[str, Any] | None:
    """For the Evaluate page: how many photos are unfamiliar, and the accuracy on familiar vs unfamiliar
    ones (at `threshold`, default the card's). None when the model has no familiarity fitted."""
    fam = Familiarity.from_card(clf.card)
    if fam is None:
        return None
    logits, emb = classifier_pass(clf, images)
    p = _softmax_p1(logits, clf.temperature) if probs is None else np.asarray(probs)
    thr = clf.threshold if threshold is None else float(threshold)
    familiar = np.array([r.familiar for r in fam.score_batch(emb)]) if len(emb) else np.zeros(0, bool)
    return {**accuracy_split(familiar, (p >= thr).astype(int) == np.asarray(labels)), "threshold": thr}


def refresh(clf, data: list[str] | None = None, max_train: int | None = MAX_TRAIN, dims: int = DEFAULT_DIMS,
            percentile: float = DEFAULT_PERCENTILE, log=print) -> dict[str, Any]:
    """Fit the familiarity of a loaded classifier on its training split; returns the card entry."""
    from .data import load_split

    info = clf.card.get("data") if isinstance(clf.card.get("data"), dict) else {}
    folders = data or [s["root"] for s in info.get("sources", [])] or ([info["root"]] if info.get("root") else None)
    if not folders:
        raise ValueError(f"{clf.name}: the model card names no training data; give --data")
    split = load_split(folders, clf.image_size, float(info.get("val_fraction", 0.15)), int(info.get("split_seed", 42)))
    idx = _subsample(len(split.train.images), max_train)
    log(f"{clf.name}: embedding {len(idx)} of {len(split.train.images)} training and {len(split.val.images)} "
        f"validation photos from {', '.join(map(str, folders))}")
    _, train_emb = classifier_pass(clf, split.train.images[idx])
    val_logits, val_emb = classifier_pass(clf, split.val.images)
    return familiarity_entry(train_emb, val_emb, val_logits, split.val.labels, clf.threshold, clf.temperature,
                             dims, percentile)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.familiarity", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, choices=MODEL_NAMES)
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: the shipped weights)")
    p.add_argument("--data", nargs="+", default=None, help="dataset folders (default: the card's training sources)")
    p.add_argument("--max-train", type=int, default=MAX_TRAIN, help="embed at most this many training photos")
    p.add_argument("--dims", type=int, default=DEFAULT_DIMS)
    p.add_argument("--percentile", type=float, default=DEFAULT_PERCENTILE)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--dry-run", action="store_true", help="fit and report, do not write the card")
    return p


def main(argv=None) -> int:
    from models.loader import card_path, load_classifier
    from models.registry import shipped_checkpoint, write_card

    args = get_args_parser().parse_args(argv)
    try:
        clf = load_classifier(args.model, args.checkpoint)
        entry = refresh(clf, args.data, args.max_train, args.dims, args.percentile,
                        log=(lambda m: print(m, file=sys.stderr)) if args.json else print)
    except (ValueError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    summary = {k: v for k, v in entry.items() if k != "params"}
    if not args.dry_run:
        from pathlib import Path

        ckpt = Path(args.checkpoint) if args.checkpoint else shipped_checkpoint(args.model)
        target = card_path(ckpt) if card_path(ckpt).is_file() else ckpt.parent / "card.json"
        card = json.loads(target.read_text(encoding="utf-8"))
        card["familiarity"] = entry
        write_card(target, card)
        summary["card"] = str(target)
    if args.json:
        print(json.dumps({"model": args.model, **summary}))
    else:
        v = summary.get("validation", {})
        fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
        print(f"{args.model}: {v.get('unfamiliar')} of {v.get('n')} validation photos unfamiliar "
              f"({summary['val_unfamiliar']:.1%}; cross-fitted {summary['val_unfamiliar_cross_fitted']:.1%}); "
              f"accuracy familiar {fmt(v.get('accuracy_familiar'))}, unfamiliar {fmt(v.get('accuracy_unfamiliar'))}"
              + (f"; wrote {summary['card']}" if "card" in summary else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
