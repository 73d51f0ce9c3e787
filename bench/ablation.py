"""Ablation of the camera-breaking ingredients (issue 13): each on and off, on torch_cnn.

    python bench/ablation.py --data DIR [DIR ...] [--image-size 64] [--epochs 5] [--out runs/ablation]

Trains one short torch_cnn run per configuration through `python -m training` (same split, seed and
schedule), runs `python -m training.checks` on each best checkpoint, and prints one table: validation
AUC per source, specificity at the threshold, the shortcut probe's flips and the heatmap-on-lesion
score. A configuration whose run directory already has its checks is not trained again, so the command
can be rerun after an interruption. Small images and few epochs keep it to minutes per row on a CPU:
the rows compare with each other, not with the shipped models.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OFF = "rim=0,colour=0,blur=0,rescale_jpeg=0,hair=0"
CONFIGS = {  # name -> (augment, colour constancy)
    "all on": ("default", "shades_of_gray"),
    "no colour constancy": ("default", "none"),
    "no dark rim": ("rim=0", "shades_of_gray"),
    "no colour casts": ("colour=0", "shades_of_gray"),
    "no rescale + JPEG": ("rescale_jpeg=0", "shades_of_gray"),
    "no blur, no hair": ("blur=0,hair=0", "shades_of_gray"),
    "baseline (geometry only)": (OFF, "none"),
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def run_one(name: str, augment: str, cc: str, args) -> dict:
    out = Path(args.out) / slug(name)
    checks = out / "checks.json"
    if checks.is_file():
        return json.loads(checks.read_text())
    cmd = [sys.executable, "-m", "training", "--model", "torch_cnn", "--data", *args.data,
           "--image-size", str(args.image_size), "--epochs", str(args.epochs), "--batch-size", "32",
           "--lr", "2e-3", "--patience", "0", "--augment", augment, "--colour-constancy", cc,
           "--threads", str(args.threads), "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    res = subprocess.run([sys.executable, "-m", "training.checks", "--model", "torch_cnn", "--checkpoint",
                          str(out / "best.pt"), "--limit", str(args.limit), "--json"],
                         cwd=ROOT, check=True, capture_output=True, text=True)
    checks.write_text(res.stdout)
    return json.loads(res.stdout)


def row(name: str, r: dict) -> str:
    src = r["per_source"]
    auc = " | ".join(f"{src[s]['auc']:.3f}" if s in src else "–" for s in sorted(src))
    sp, hm, v = r["shortcut_probe"], r["heatmap_on_lesion"], r["validation"]
    return (f"| {name} | {v['auc']:.3f} | {auc} | {v['specificity']:.3f} | {sp['dark_rim']['flipped']:.1%} | "
            f"{sp['blue_cast']['flipped']:.1%} | {sp['colour_chart']['flipped']:.1%} | "
            f"{hm['peak_on_lesion']:.1%} | {hm['mass_on_lesion']:.1%} / {hm['lesion_share_of_frame']:.1%} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=300)
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--only", nargs="*", default=None, help="configuration names to run")
    args = p.parse_args(argv)
    results = {}
    for name, (augment, cc) in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        results[name] = run_one(name, augment, cc, args)
        print(f"done: {name}", file=sys.stderr, flush=True)
    sources = sorted(next(iter(results.values()))["per_source"]) if results else []
    print(f"torch_cnn, {args.image_size} px, {args.epochs} epochs per row; validation split of the card's sources\n")
    print("| configuration | val AUC | " + " | ".join(f"AUC {s}" for s in sources)
          + " | specificity | dark rim flips | blue cast flips | chart flips | CAM peak on lesion | "
            "CAM mass on lesion / lesion share |")
    print("|---" * (9 + len(sources)) + "|")
    for name, r in results.items():
        print(row(name, r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
