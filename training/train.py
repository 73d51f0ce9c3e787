"""The training command: arguments, run directory, distributed setup, data; then the driver.

    python -m training --model NAME --data DIR [DIR ...] [--epochs N] ...

`--data` takes one or more dataset folders, or a .txt file that lists them one a line
(relative paths are read from the file's folder). See design.md for the whole contract.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from models.registry import MODEL_NAMES, spec

from .augment import AUGMENT_DEFAULTS, parse_augment

from .rundir import RunWriter, StopFlag, create_run_dir, read_json

# Bounds keep a typo from launching a week-long or instantly-diverging run.
LIMITS = {"epochs": (1, 1000), "image_size": (32, 512), "batch_size": (1, 1024), "lr": (1e-7, 1.0),
          "val_fraction": (0.01, 0.9), "distill_weight": (1e-6, 0.5)}
OPTIONAL_LIMITS = {"time_limit": (1e-3, 60 * 24 * 14), "colour_constancy_p": (1.0, 20.0)}


class UsageError(ValueError):
    pass


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", add_help=add_help,
                                description="Train a Lesion Lens model on a folder dataset (benign/, malignant/).")
    p.add_argument("--model", choices=MODEL_NAMES, help="which model to train")
    p.add_argument("--data", nargs="+", metavar="DIR",
                   help="dataset folders with benign/ and malignant/ (or one folder above them), or a .txt file "
                        "listing such folders one a line (relative to the file's folder)")
    p.add_argument("--split", default=None, help="subfolder of --data to use, e.g. train")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None, help="default: the model's size (card)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default per model)")
    p.add_argument("--weights", default=None, help="imagenet | none | PATH (default: the model's init)")
    # Options a resumed run may change default to None here (their value is set in resolve_args),
    # so that only what is given on the command line overrides the run's config.
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda", "mps"], help="default auto")
    p.add_argument("--amp", default=None, choices=["auto", "bf16", "fp16", "off"],
                   help="mixed precision for the PyTorch models (default auto: bf16, or fp16 on older GPUs, on CUDA; "
                        "bf16 on a CPU with native bf16 (AVX512-BF16/AMX); else fp32). off: fp32. fp16 is for GPUs "
                        "without bf16 (on a CPU it is emulated and slow). A resumed run keeps its setting unless given")
    p.add_argument("--out", default=None, help="run directory (default: runs/<new id>)")
    p.add_argument("--resume", default=None, help="continue the run in this directory")
    p.add_argument("--seed", type=int, default=42, help="seed for the validation split and training")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--label-smoothing", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--freeze-epochs", type=int, default=1, help="head-only epochs for pretrained models")
    p.add_argument("--body-lr-mult", type=float, default=0.1, help="body lr / head lr for pretrained models")
    p.add_argument("--clip-grad", type=float, default=2.0)
    p.add_argument("--patience", type=int, default=10, help="early stop after N epochs without val AUC gain (0: off)")
    p.add_argument("--min-epochs", type=int, default=5)
    p.add_argument("--log-every", type=int, default=None, help="steps between metric rows (default 10)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="minutes; no new epoch starts once the next would end past it (the run then finishes)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: all cores)")
    # Preprocessing shared by training and inference (the card's "preprocessing"), both frameworks.
    p.add_argument("--colour-constancy", default="shades_of_gray", choices=["none", "shades_of_gray"],
                   help="per-image illuminant correction before normalisation (default shades_of_gray)")
    p.add_argument("--colour-constancy-p", type=float, default=6.0, help="the Shades of Gray p-norm (default 6)")
    p.add_argument("--augment", default=None,
                   help="training augmentations: default | none | name=p,... with names "
                        f"{', '.join(AUGMENT_DEFAULTS)} and p the share of images each touches "
                        "(e.g. rim=0 turns the dark rim off); the driver passes them on to data.train_batch")
    p.add_argument("--distill", default=None, metavar="TEACHER",
                   help="knowledge distillation: train partly towards this model's answers (a model name for its "
                        "shipped weights, or a checkpoint with its card); see training/distill.py")
    p.add_argument("--distill-weight", type=float, default=0.5,
                   help="the teacher's share of each target, above 0 and at most 0.5 (default 0.5)")
    return p


DEFAULT_LR = {"keras_cnn": 2e-3, "torch_cnn": 2e-3, "densenet161": 1e-3, "efficientnet_lite0": 1e-3}
DEFAULT_EPOCHS = {"keras_cnn": 30, "torch_cnn": 30, "densenet161": 30, "efficientnet_lite0": 15}


def resolve_args(ns: argparse.Namespace) -> dict[str, Any]:
    """Command-line namespace -> the run's config dict, merged with a resumed run's config."""
    given = {k: v for k, v in vars(ns).items() if v is not None}
    if ns.resume:
        prior = read_json(Path(ns.resume) / "config.json")
        if not isinstance(prior, dict):
            raise UsageError(f"{ns.resume}: not a run directory (no readable config.json)")
        cfg = dict(prior)
        for k in ("epochs", "device", "threads", "log_every", "amp"):  # what may change on resume
            if k in given:
                cfg[k] = given[k]
        cfg["out"] = str(Path(ns.resume))
        cfg["resuming"] = True
        return cfg
    if not ns.model or not ns.data:
        raise UsageError("--model and --data are required (or --resume RUN_DIR)")
    s = spec(ns.model)
    cfg = {k.replace("-", "_"): v for k, v in vars(ns).items()}
    cfg["image_size"] = ns.image_size if ns.image_size is not None else s.image_size
    cfg["lr"] = ns.lr if ns.lr is not None else DEFAULT_LR[ns.model]
    cfg["epochs"] = ns.epochs if ns.epochs is not None else DEFAULT_EPOCHS[ns.model]
    cfg["weights"] = ns.weights or ("imagenet" if s.init == "imagenet" else "none")
    cfg["amp"] = ns.amp or "auto"
    cfg["device"] = ns.device or "auto"
    cfg["log_every"] = ns.log_every or 10
    cfg["resuming"] = False
    cfg["data"] = data_folders(ns.data)
    try:
        cfg["augment"] = parse_augment(ns.augment)
    except ValueError as exc:
        raise UsageError(f"--augment {ns.augment}: {exc}") from None
    for key, (lo, hi) in (LIMITS | OPTIONAL_LIMITS).items():
        v = cfg[key]
        if key in OPTIONAL_LIMITS and v is None:
            continue
        if not (isinstance(v, (int, float)) and math.isfinite(v) and lo <= v <= hi):
            raise UsageError(f"--{key.replace('_', '-')} must be between {lo} and {hi}, not {v}")
    if cfg["weights"] not in ("imagenet", "none") and not Path(cfg["weights"]).is_file():
        raise UsageError(f"--weights {cfg['weights']}: no such file (use imagenet, none or a path)")
    if cfg["distill"]:
        from .distill import DistillError, resolve_teacher

        try:
            resolve_teacher(cfg["distill"])
        except DistillError as exc:
            raise UsageError(str(exc)) from None
    if s.framework == "keras" and cfg["weights"] == "imagenet":
        raise UsageError("keras_cnn has no ImageNet weights; use --weights none (from scratch) or a .keras file")
    if s.framework == "keras" and cfg["weights"] != "none" and Path(cfg["weights"]).suffix != ".keras":
        raise UsageError(f"--weights {cfg['weights']}: keras_cnn starts from a .keras file (or none)")
    return cfg


def data_folders(args: list[str]) -> list[str]:
    """--data's arguments -> resolved dataset folders; a .txt file lists folders one a line
    (blank lines and # comments skipped; relative paths are relative to the file's folder)."""
    folders: list[Path] = []
    for arg in args:
        path = Path(arg)
        if path.suffix.lower() == ".txt" and path.is_file():
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"--data {arg}: cannot read the list ({exc})") from None
            listed = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
            if not listed:
                raise UsageError(f"--data {arg}: the list names no folders")
            folders += [path.parent / ln for ln in listed]
        else:
            folders.append(path)
    for f in folders:
        if not f.is_dir():
            what = "not a folder" if f.exists() else "no such folder"
            raise UsageError(f"--data {f}: {what} (expected a folder with benign/ and malignant/)")
    return list(dict.fromkeys(str(f.resolve()) for f in folders))


def dist_from_env():
    from .driver import Dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = resolve_args(get_args_parser().parse_args(argv))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_config(cfg)


def run_config(cfg: dict[str, Any]) -> int:
    """Run a resolved configuration; every outcome ends up in the run's status.json."""
    framework = spec(cfg["model"]).framework
    dist = dist_from_env()
    if dist.enabled and framework != "torch":
        print("error: torchrun is for the PyTorch models only", file=sys.stderr)
        return 2
    if dist.enabled:
        import torch
        import torch.distributed as tdist

        tdist.init_process_group("nccl" if torch.cuda.is_available() and cfg["device"] in ("auto", "cuda") else "gloo")
        # Rank 0 names the run directory; the others only learn it.
        holder = [cfg.get("out") or (str(create_run_dir(cfg["model"])) if dist.main else None)]
        tdist.broadcast_object_list(holder, src=0)
        cfg["out"] = holder[0]
    elif not cfg.get("out"):
        cfg["out"] = str(create_run_dir(cfg["model"]))
    if cfg.get("threads"):
        import torch

        torch.set_num_threads(int(cfg["threads"]))
    out = Path(cfg["out"])
    writer = RunWriter(out, enabled=dist.main)
    stop = StopFlag().install()
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "STOP").unlink(missing_ok=True)
        if not cfg.get("resuming"):
            writer.write_config({**cfg, "created": time.time(), "world_size": dist.world})
        print(f"run directory: {out}", flush=True)
    writer.update(state="starting", epochs=cfg["epochs"], message="loading data", model=cfg["model"])
    code = 0
    try:
        from .data import DatasetError, load_split

        try:  # an older run's config holds one folder as a string: load_split takes both
            split = load_split(cfg["data"], cfg["image_size"], cfg["val_fraction"], cfg["seed"], cfg.get("split"))
        except DatasetError as exc:
            writer.update(state="failed", message=str(exc))
            writer.log(f"error: {exc}")
            print(f"error: {exc}", file=sys.stderr)
            code = 2
            return code
        info = split.info()
        writer.log(f"data: {info['root']} train {info['counts']['train']} val {info['counts']['val']}; "
                   f"{info['skipped']} unreadable files skipped, {info['duplicates_removed']} duplicates removed")
        if split.train.skipped and dist.main:
            print(f"warning: skipped {len(split.train.skipped)} unreadable files "
                  f"(first: {split.train.skipped[0][0]}: {split.train.skipped[0][1]})", file=sys.stderr)
        if split.train.synthetic and dist.main:
            print("note: this dataset is SYNTHETIC (generated images)", flush=True)
        from .driver import make_backend, train

        result = train(cfg, writer, split, stop, make_backend(cfg, split, writer.log, dist))
        writer.update(state=result["state"], message=result.get("message", result["state"]))
        writer.log(result.get("message", result["state"]))
        if dist.main:
            print(result.get("message", result["state"]), flush=True)
    except Exception as exc:  # noqa: BLE001 - every failure must reach status.json
        from .driver import TrainingFailed

        message = str(exc) if isinstance(exc, TrainingFailed) else f"{type(exc).__name__}: {exc}"
        try:
            writer.log(traceback.format_exc())
        except OSError:
            pass
        writer.update(state="failed", message=message)
        print(f"error: {message}", file=sys.stderr)
        code = 1
    finally:
        writer.close()
        if dist.enabled:
            import torch.distributed as tdist

            # Rank 0 writes the card after the last epoch while the others are done: they wait for it,
            # so no rank tears the process group down under another (gloo aborts the early one). A rank
            # that failed does not wait: the others' next collective then fails instead of hanging.
            if code == 0:
                try:
                    tdist.barrier()
                except RuntimeError:
                    pass
            tdist.destroy_process_group()
    return code
