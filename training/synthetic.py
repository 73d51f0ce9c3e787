"""Synthetic lesion-like images, for tests and for trying the pipeline without real data.

Benign: a round, evenly coloured blob. Malignant: an irregular border and several colours.
These are cartoons with a learnable difference, not medical images: every place that shows
them labels them SYNTHETIC.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SYNTHETIC_LABEL = "SYNTHETIC (generated, not a real lesion)"


def make_lesion(kind: str, size: int = 128, seed: int = 0) -> np.ndarray:
    """One HxWx3 uint8 image of a synthetic 'benign' or 'malignant' lesion."""
    if kind not in ("benign", "malignant"):
        raise ValueError("kind must be 'benign' or 'malignant'")
    rng = np.random.default_rng(seed)
    skin = np.array([222, 184, 160]) + rng.integers(-20, 20, 3)
    img = Image.new("RGB", (size, size), tuple(int(c) for c in skin.clip(0, 255)))
    draw = ImageDraw.Draw(img)
    cx, cy = size / 2 + rng.normal(0, size * 0.05, 2)
    radius = size * rng.uniform(0.18, 0.3)
    n = 64
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    if kind == "benign":
        radii = radius * (1 + 0.04 * np.sin(angles * 2 + rng.uniform(0, 6)))
        base = np.array([120, 80, 55]) + rng.integers(-15, 15, 3)
        colours = [base]
    else:
        radii = radius * (1 + 0.25 * rng.standard_normal(n).cumsum() / np.sqrt(n) + 0.15 * np.sin(angles * rng.integers(3, 7)))
        radii = np.clip(radii, radius * 0.5, radius * 1.6)
        colours = [np.array([70, 40, 30]), np.array([40, 30, 60]), np.array([160, 60, 60]), np.array([90, 70, 90])]
        colours = [c + rng.integers(-15, 15, 3) for c in colours]
    points = [(cx + r * np.cos(a), cy + r * np.sin(a)) for r, a in zip(radii, angles)]
    draw.polygon(points, fill=tuple(int(c) for c in colours[0].clip(0, 255)))
    for colour in colours[1:]:  # blotches of other colours inside the lesion
        bx, by = cx + rng.normal(0, radius * 0.35, 2)
        br = radius * rng.uniform(0.15, 0.35)
        draw.ellipse((bx - br, by - br, bx + br, by + br), fill=tuple(int(c) for c in colour.clip(0, 255)))
    img = img.filter(ImageFilter.GaussianBlur(size / 128))
    arr = np.asarray(img, dtype=np.int16) + rng.normal(0, 6, (size, size, 3)).astype(np.int16)
    return arr.clip(0, 255).astype(np.uint8)


def write_dataset(root: str | Path, per_class: int = 20, size: int = 64, seed: int = 0,
                  fmt: str = "png") -> Path:
    """A folder dataset root/{benign,malignant}/NNN.png with a SYNTHETIC.txt marker."""
    root = Path(root)
    for ci, kind in enumerate(("benign", "malignant")):
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(make_lesion(kind, size, seed * 100003 + ci * 10007 + i)).save(folder / f"{i:03d}.{fmt}")
    (root / "SYNTHETIC.txt").write_text(f"{SYNTHETIC_LABEL}: made by training.synthetic\n")
    return root


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic lesion dataset (clearly labelled synthetic).")
    parser.add_argument("out")
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_dataset(args.out, args.per_class, args.size, args.seed))


if __name__ == "__main__":
    main()
