"""`python -m training.finalize RUN_DIR`: write the model card of a run that stopped before
its end (stopped, killed, out of time) from its best checkpoint, as a finished run would.

    python -m training.finalize runs/ID [--data DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

from .cards import build_card, calibrate
from .rundir import read_json, read_metrics, write_json


def finalize(run: Path, data: str | None = None, device: str = "cpu") -> dict:
    import torch

    from models.loader import save_torch_weights
    from models.registry import spec, write_card
    from models.torch_classifier import build_for_inference, load_state

    from .data import load_split
    from .torch_loop import evaluate

    cfg = read_json(run / "config.json")
    if not isinstance(cfg, dict):
        raise ValueError(f"{run}: no config.json; not a run directory")
    name = cfg["model"]
    if spec(name).framework != "torch":
        raise ValueError("finalize handles the PyTorch models; Keras runs write their card in the loop")
    best = run / "best.pt"
    if not best.exists():
        raise ValueError(f"{run}: no best.pt to finalize")
    split = load_split(data or cfg["data"], cfg["image_size"], cfg["val_fraction"], cfg["seed"], cfg.get("split"))
    model = build_for_inference(name)
    model.load_state_dict(load_state(best))
    s = spec(name)
    val = evaluate(model, split.val.images, split.val.labels, list(s.mean), list(s.std), torch.device(device))
    calib = calibrate(val["logits"], split.val.labels)
    rows = [r for r in read_metrics(run) if r.get("split") == "val"]
    best_row = max(rows, key=lambda r: r.get("auc", -1)) if rows else {}
    seconds = [r["seconds"] for r in rows if "seconds" in r]
    status = read_json(run / "status.json", {}) or {}
    card = build_card(name, cfg, split.info(), status.get("init") or ("imagenet" if cfg.get("weights") == "imagenet" else "scratch"),
                      int(best_row.get("epoch", 0)), calib,
                      statistics.median(seconds) if seconds else None, status.get("device"), best_row.get("epoch"))
    card["epochs_run"] = len(rows)
    card["finalized_from"] = f"best.pt of a run that ended as {status.get('state', 'unknown')!r}"
    # Keep the checkpoint's precision (a half-precision file stays half).
    half = any(v.dtype == torch.float16 for v in torch.load(best, map_location="cpu", weights_only=True)["model"].values())
    save_torch_weights(model, card, best, half=half)
    write_card(run / "card.json", card)
    status.update({"state": "finished", "message": f"finalized from best.pt (validation AUC {calib['validation']['auc']:.4f})"})
    write_json(run / "status.json", status)
    return card


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.finalize", description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--data", default=None, help="dataset folder, if it moved since the run")
    args = p.parse_args(argv)
    try:
        card = finalize(Path(args.run), args.data)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    v = card["validation"]
    print(f"{card['name']}: validation accuracy {v['accuracy']:.4f}, AUC {v['auc']:.4f}, sensitivity "
          f"{v['sensitivity']:.4f}, specificity {v['specificity']:.4f} at threshold {card['threshold']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
