"""`python -m training.finalize RUN_DIR`: write the model card of a run that stopped before
its end (stopped, killed, out of time) from its best checkpoint, as a finished run would.

    python -m training.finalize runs/ID [--data DIR ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from .rundir import read_json, read_metrics, write_json


def finalize(run: Path, data: str | list[str] | None = None, device: str = "cpu") -> dict:
    """Calibrate the run's best checkpoint and write its card through the driver's `finish`,
    the code a run that reaches its end uses (either framework)."""
    from .data import load_split
    from .driver import finish, make_backend

    cfg = read_json(run / "config.json")
    if not isinstance(cfg, dict):
        raise ValueError(f"{run}: no config.json; not a run directory")
    if not (run / "best.json").exists():
        raise ValueError(f"{run}: no best checkpoint (best.pt or best.keras with best.json) to finalize")
    # Weights come from the best checkpoint: no download, no last checkpoint, on `device`.
    cfg = dict(cfg, out=str(run), data=data or cfg["data"], device=device, weights="none", resuming=False)
    split = load_split(cfg["data"], cfg["image_size"], cfg["val_fraction"], cfg["seed"], cfg.get("split"))
    rows = [r for r in read_metrics(run) if r.get("split") == "val"]
    seconds = [r["seconds"] for r in rows if "seconds" in r]
    status = read_json(run / "status.json", {}) or {}
    best_epoch = (status.get("best") or {}).get("epoch")  # the driver's choice, as the checkpoint was saved
    backend = make_backend(cfg, split, log=lambda message: None)
    card = finish(backend, split, cfg, best_epoch, len({r.get("epoch") for r in rows}),
                  statistics.median(seconds) if seconds else None,
                  finalized_from=f"the best checkpoint of a run that ended as {status.get('state', 'unknown')!r}")
    status.update({"state": "finished", "message": f"finalized from the best checkpoint "
                                                   f"(validation AUC {card['validation']['auc']:.4f})"})
    write_json(run / "status.json", status)
    return card


def main(argv=None) -> int:
    from .driver import TrainingFailed

    p = argparse.ArgumentParser(prog="python -m training.finalize", description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--data", nargs="+", default=None, help="dataset folders, if they moved since the run")
    args = p.parse_args(argv)
    try:
        card = finalize(Path(args.run), args.data)
    except (ValueError, OSError, TrainingFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    v = card["validation"]
    print(f"{card['name']}: validation accuracy {v['accuracy']:.4f}, AUC {v['auc']:.4f}, sensitivity "
          f"{v['sensitivity']:.4f}, specificity {v['specificity']:.4f} at threshold {card['threshold']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
