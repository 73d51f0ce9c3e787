"""Train the lesion segmenter on HAM10000's masks: `python -m training.segment --data DIR`.

    python -m training.segment --data ../shared/data/ham10000 [--minutes 25] [--out models/weights/segmenter.pt]
           [--val-fraction 0.15] [--seed 0] [--threads 1] [--batch-size 24] [--limit N]

DIR holds `images/{benign,malignant}/<id>.jpg`, `masks/<id>_segmentation.png` and `metadata.csv`
(image_id, lesion_id). Validation is split by lesion (every photo of a validation lesion stays out of
training). The run is bounded by wall time: the learning rate follows a cosine over the time budget,
a checkpoint (weights + card with the validation Dice so far) is written atomically every few minutes
and at the end, so a killed run still leaves a usable segmenter.

Augmentation: random square crops (so lesions reach and cross the border, as in badly framed photos),
the eight flips/rotations, brightness/contrast/colour casts, blur and dark round dermatoscope rims (the
lesion under a rim is invisible, so the mask is cleared there too).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from models.segmenter import SEGMENTER_SIZE, WIDTHS, LesionUNet, save_segmenter, to_input


def read_items(root: Path) -> list[tuple[Path, Path, str]]:
    """(image, mask, lesion_id) for every image of metadata.csv that has both files."""
    items = []
    with open(root / "metadata.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            image = root / "images" / row["label"] / f"{row['image_id']}.jpg"
            mask = root / "masks" / f"{row['image_id']}_segmentation.png"
            if image.is_file() and mask.is_file():
                items.append((image, mask, row["lesion_id"] or row["image_id"]))
    if not items:
        raise SystemExit(f"error: {root}: no images with masks (expected images/, masks/ and metadata.csv)")
    return items


def lesion_split(groups: list[str], val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import GroupShuffleSplit

    gss = GroupShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    train, val = next(gss.split(np.zeros(len(groups)), groups=groups))
    return np.sort(train), np.sort(val)


def load_pairs(items, height: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """Decode every image and mask once, at `height` rows (HAM10000 here is 200x150)."""
    import cv2

    def one(item):
        image = cv2.cvtColor(cv2.imread(str(item[0]), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        mask = cv2.imread(str(item[1]), cv2.IMREAD_GRAYSCALE)
        h, w = image.shape[:2]
        if h != height:
            size = (round(w * height / h), height)
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        return image, mask > 127

    with ThreadPoolExecutor(4) as pool:
        pairs = list(pool.map(one, items))
    width = min(p[0].shape[1] for p in pairs)
    images = np.stack([p[0][:, :width] for p in pairs])
    masks = np.stack([p[1][:, :width] for p in pairs])
    return images, masks


def centre_crops(images: np.ndarray, masks: np.ndarray, size: int = SEGMENTER_SIZE):
    """The crop every classifier sees (centre square), at the segmenter's size."""
    import cv2

    h, w = images.shape[1:3]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    xi = np.stack([cv2.resize(im[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)
                   for im in images])
    xm = np.stack([cv2.resize(m[top:top + side, left:left + side].astype(np.uint8), (size, size),
                              interpolation=cv2.INTER_NEAREST) for m in masks]).astype(bool)
    return xi, xm


def rim_mask(size: int, radius: float, cx: float, cy: float) -> np.ndarray:
    """True inside a circle (the dermatoscope's field of view)."""
    yy, xx = np.mgrid[:size, :size]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= (radius * size) ** 2


def augment(images: np.ndarray, masks: np.ndarray, idx: np.ndarray, rng: np.random.Generator,
            size: int = SEGMENTER_SIZE):
    import cv2

    h, w = images.shape[1:3]
    out_i = np.empty((len(idx), size, size, 3), np.uint8)
    out_m = np.empty((len(idx), size, size), np.float32)
    for n, i in enumerate(idx):
        side = int(rng.uniform(0.55, 1.0) * min(h, w))
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        im = cv2.resize(images[i, top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)
        m = cv2.resize(masks[i, top:top + side, left:left + side].astype(np.uint8), (size, size),
                       interpolation=cv2.INTER_NEAREST)
        k = int(rng.integers(0, 8))
        if k >= 4:
            im, m = im[:, ::-1], m[:, ::-1]
        im, m = np.rot90(im, k % 4), np.rot90(m, k % 4)
        x = im.astype(np.float32)
        x = (x - x.mean()) * rng.uniform(0.75, 1.3) + x.mean() * rng.uniform(0.7, 1.3)  # contrast, brightness
        x *= rng.uniform(0.85, 1.15, size=3)  # colour cast
        if rng.random() < 0.2:
            x *= np.array([0.85, 0.95, 1.2])  # bluer dermatoscope
        if rng.random() < 0.2:
            x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.6, 2.0))
        m = m.astype(np.float32)
        if rng.random() < 0.25:
            inside = rim_mask(size, rng.uniform(0.42, 0.6), size / 2 + rng.normal(0, 4), size / 2 + rng.normal(0, 4))
            x = np.where(inside[..., None], x, x * 0.05)
            m = m * inside
        out_i[n] = x.clip(0, 255).astype(np.uint8)
        out_m[n] = m
    return out_i, out_m


def dice_scores(prob: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Per-image Dice of the thresholded mask; an empty truth and empty prediction score 1."""
    pred = prob >= threshold
    truth = truth.astype(bool)
    inter = (pred & truth).reshape(len(pred), -1).sum(1)
    total = pred.reshape(len(pred), -1).sum(1) + truth.reshape(len(truth), -1).sum(1)
    return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))


def predict_probs(model, images: np.ndarray, batch: int = 64) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            out.append(torch.sigmoid(model(to_input(images[i:i + batch])))[:, 0].numpy())
    return np.concatenate(out)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.segment", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="HAM10000 folder (images/, masks/, metadata.csv)")
    p.add_argument("--out", default="models/weights/segmenter.pt")
    p.add_argument("--minutes", type=float, default=25.0, help="wall-time budget for training")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=24)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--checkpoint-every", type=float, default=4.0, help="minutes between checkpoints")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images (smoke tests)")
    return p


def main(argv=None) -> int:
    import torch

    args = get_args_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    root = Path(args.data)
    if not root.is_dir():
        print(f"error: {root}: no such folder", file=sys.stderr)
        return 2
    items = read_items(root)[: args.limit]
    train_idx, val_idx = lesion_split([it[2] for it in items], args.val_fraction, args.seed)
    t0 = time.time()
    images, masks = load_pairs(items)
    val_x, val_m = centre_crops(images[val_idx], masks[val_idx])
    probe = np.arange(len(val_idx))[: 400]
    print(f"{len(items)} images ({len(train_idx)} train, {len(val_idx)} val, lesion-grouped; "
          f"{len({items[i][2] for i in val_idx})} val lesions); decoded in {time.time() - t0:.0f} s", flush=True)

    model = LesionUNet(WIDTHS)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    budget = args.minutes * 60.0
    start = time.time()
    last_ckpt = start
    step = seen = 0

    def card(val_dice: np.ndarray, final: bool) -> dict:
        return {"name": "segmenter", "architecture": "LesionUNet", "widths": list(WIDTHS), "image_size": SEGMENTER_SIZE,
                "input": "the classifier's centre-square crop, resized to 128 px, RGB scaled to [-1, 1]",
                "threshold": 0.5, "params": int(sum(p.numel() for p in model.parameters())),
                "data": {"root": str(root), "name": "HAM10000 (lesion masks, Tschandl et al. 2020)",
                         "train_images": int(len(train_idx)), "val_images": int(len(val_idx)),
                         "val_lesions": int(len({items[i][2] for i in val_idx})), "grouping": "lesion_id",
                         "split_seed": args.seed, "val_fraction": args.val_fraction},
                "validation": {"dice_mean": float(val_dice.mean()), "dice_median": float(np.median(val_dice)),
                               "n": int(len(val_dice)), "on": "centre-square crop at 128 px, mask threshold 0.5",
                               "complete": final},
                "training": {"steps": step, "images_seen": seen, "minutes": round((time.time() - start) / 60, 1),
                             "batch_size": args.batch_size, "lr": args.lr, "threads": args.threads,
                             "loss": "BCE + soft Dice"},
                "trained_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "licence": "Trained on HAM10000 images and masks (CC BY-NC 4.0): non-commercial use, credit "
                           "Tschandl et al. 2018/2020. Not a medical device."}

    while time.time() - start < budget:
        frac = (time.time() - start) / budget
        for g in opt.param_groups:
            g["lr"] = args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        model.train()
        batch = rng.choice(train_idx, args.batch_size, replace=False)
        x, m = augment(images, masks, batch, rng)
        logits = model(to_input(x))[:, 0]
        target = torch.from_numpy(m)
        prob = torch.sigmoid(logits)
        soft_dice = 1 - (2 * (prob * target).sum((1, 2)) + 1) / (prob.sum((1, 2)) + target.sum((1, 2)) + 1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target) + soft_dice.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        seen += len(batch)
        if step % 50 == 0:
            print(f"step {step} ({seen} images, {(time.time() - start) / 60:.1f} min): loss {loss.item():.3f}",
                  flush=True)
        if time.time() - last_ckpt > args.checkpoint_every * 60:
            d = dice_scores(predict_probs(model, val_x[probe]), val_m[probe])
            save_segmenter(model, card(d, final=False), args.out)
            print(f"checkpoint at step {step}: val Dice (first {len(probe)}) {d.mean():.3f}", flush=True)
            last_ckpt = time.time()
    d = dice_scores(predict_probs(model, val_x), val_m)
    save_segmenter(model, card(d, final=True), args.out)
    print(f"done: {step} steps, val Dice {d.mean():.3f} (median {np.median(d):.3f}) on {len(d)} lesion-grouped "
          f"validation images; wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
