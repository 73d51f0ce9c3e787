"""Promote a finished run to the app's models: `python -m training.promote runs/ID`.

Copies the run's best checkpoint (`best.pt` or `best.keras`) and its model card to
`models/registry.weights_dir()` as `<name>.pt|.keras` and `<name>.json`. Each file is written
to a temporary name and renamed, and the files shipped before are kept as `<name>.prev.*`
(a pair that `models.load_classifier(name, "<dir>/<name>.prev.pt")` still loads). The new
files have fresh modification times, which is what the app's model cache is keyed on, so
every page picks up the promoted model on its next run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from pathlib import Path
from typing import Any

from models.registry import MODEL_NAMES, atomic_write_bytes, read_card, spec, weights_dir, write_card

from .rundir import ACTIVE_STATES, read_run, safe_run_path


class PromoteError(ValueError):
    """The run cannot be promoted; the message says why."""


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def promotable(run_dir: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """(checkpoint, card) of a run that may be promoted; raises PromoteError otherwise."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PromoteError(f"{run_dir}: no such run directory")
    info = read_run(run_dir)
    if info.state in ACTIVE_STATES:
        raise PromoteError(f"run {run_dir.name} is still {info.state}; wait for it to finish")
    card_file = run_dir / "card.json"
    if not card_file.is_file():
        raise PromoteError(f"run {run_dir.name} has no model card (card.json): only a finished run can be promoted "
                           f"(a stopped PyTorch run can be finished with `python -m training.finalize {run_dir}`)")
    try:
        card = read_card(card_file)
    except (OSError, ValueError) as exc:
        raise PromoteError(f"run {run_dir.name}: its model card cannot be read ({exc})") from None
    name = card["name"]
    ckpt = run_dir / f"best{spec(name).checkpoint_ext}"
    if not ckpt.is_file():
        raise PromoteError(f"run {run_dir.name}: {ckpt.name} is missing")
    if not _inside(ckpt, run_dir) or not _inside(card_file, run_dir):
        raise PromoteError(f"run {run_dir.name}: its checkpoint links outside the run directory; refused")
    return ckpt, card


def promote_run(run_dir: str | os.PathLike, dest: str | os.PathLike | None = None,
                verify: bool = True) -> dict[str, Any]:
    """Install a run's best checkpoint + card as the app's model; returns what was written."""
    run_dir = Path(run_dir)
    ckpt, card = promotable(run_dir)
    name = card["name"]
    if name not in MODEL_NAMES:
        raise PromoteError(f"unknown model {name!r}")
    if verify:  # the same loader the app uses must accept it, before anything is replaced
        from models.loader import load_classifier

        try:
            load_classifier(name, ckpt)
        except Exception as exc:  # noqa: BLE001 - any load failure means: do not promote
            raise PromoteError(f"run {run_dir.name}: {ckpt.name} does not load ({type(exc).__name__}: {exc})") from None
    ext = spec(name).checkpoint_ext
    folder = Path(dest) if dest else weights_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target, target_card = folder / f"{name}{ext}", folder / f"{name}.json"
    previous = []
    for current, prev in ((target, folder / f"{name}.prev{ext}"), (target_card, folder / f"{name}.prev.json")):
        if current.is_file():
            atomic_write_bytes(prev, current.read_bytes())
            previous.append(str(prev))
    card = dict(card)
    card["promoted_from"] = run_dir.name
    card["promoted_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    # Checkpoint first, then its card: the app's cache key covers both files' mtimes.
    atomic_write_bytes(target, ckpt.read_bytes())
    write_card(target_card, card)
    return {"name": name, "checkpoint": str(target), "card": str(target_card), "previous": previous,
            "run": run_dir.name}


def promote(run_id: str, root: str | os.PathLike | None = None, dest: str | os.PathLike | None = None,
            verify: bool = True) -> dict[str, Any]:
    """Promote runs/<run_id> (an id from the UI: anything that could leave runs/ is refused)."""
    try:
        run_dir = safe_run_path(run_id, root)
    except ValueError as exc:
        raise PromoteError(str(exc)) from None
    return promote_run(run_dir, dest, verify)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.promote", description=__doc__.splitlines()[0])
    p.add_argument("run", help="run directory, e.g. runs/20250101-120000-torch_cnn-abc123")
    p.add_argument("--dest", default=None, help="weights folder (default: models/weights or LESION_LENS_WEIGHTS_DIR)")
    args = p.parse_args(argv)
    try:
        out = promote_run(Path(args.run), args.dest)
    except PromoteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{out['name']}: {out['checkpoint']} and {out['card']}"
          + (f" (previous kept as {', '.join(Path(p).name for p in out['previous'])})" if out["previous"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
