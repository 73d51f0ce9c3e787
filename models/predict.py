"""`python -m models.predict`: lesion photos in, one answer per photo out.

    python -m models.predict --model NAME [--checkpoint PATH] IMAGE|FOLDER... [--cam OUT.png|DIR]
                             [--method M] [--threshold T] [--json] [--no-checks]

Every photo goes through the checks of `models.trust.assess` in one process (the model, the gate
and the segmenter load once): a photo that is not a skin lesion gets `"lesion_photo": false` and
no probability (an answer, exit status 0); every other answer carries `prob_malignant`, `label`,
`familiarity` / `familiar`, quality `hints`, the heatmap's `on_lesion_share` and `warnings`.
`--json` prints one JSON object a line, each with its `file`. A FOLDER stands for the images in it.

Bad input: with one IMAGE, a bad file (missing, empty, truncated, not an image, too large, too
small) or missing weights is exit status 2 and one line `error: ...` on stderr, never a
traceback. With several images or a folder, a bad file is reported in its own line (a JSON
object with `file` and `error`) and the rest go on; the exit status is 2 only when no photo
got an answer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from .registry import MODEL_NAMES, TORCH_CAM_METHODS

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: same one-line contract
        self.exit(EXIT_BAD_INPUT, f"error: {message}\n")


def get_args_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m models.predict",
                description="Predict benign/malignant for lesion photos, with the checks that say when not to trust it.")
    p.add_argument("--model", required=True, choices=MODEL_NAMES)
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: the shipped weights)")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="photos of lesions (JPEG, PNG, WebP, BMP, TIFF, GIF) or folders of them")
    p.add_argument("--cam", default=None, metavar="OUT.png",
                   help="write the heatmap overlay (with the lesion outline) here; a folder for several images")
    p.add_argument("--method", default=None, choices=TORCH_CAM_METHODS,
                   help="heatmap method (default: the model's own, layercam for the PyTorch models; Keras: gradcam)")
    p.add_argument("--threshold", type=float, default=None, help="decision threshold (default: the model card's)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image, one a line")
    p.add_argument("--no-checks", action="store_true",
                   help="skip the gate, familiarity, quality and outline checks (the bare prediction)")
    return p


def expand_inputs(paths: list[str]) -> tuple[list[Path], bool]:
    """The image files to answer, and whether this is a batch (several inputs or a folder)."""
    from .preprocess import IMAGE_EXTENSIONS, ImageError

    files: list[Path] = []
    batch = len(paths) > 1
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                           and not f.name.startswith("."))
            if not found:
                raise ImageError(f"{p}: is a folder with no images in it ({', '.join(IMAGE_EXTENSIONS)})")
            files += found
            batch = True
        else:
            files.append(p)
    return files, batch


def open_classifier(args: argparse.Namespace):
    from .loader import load_classifier

    try:
        return load_classifier(args.model, args.checkpoint)
    except (ValueError, OSError):  # MissingWeights, a card for another model: their messages name the file
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint raises anything from zip/pickle/torch
        where = args.checkpoint or f"the shipped {args.model} weights"
        first = " ".join(str(exc).split()).split(". ")[0]
        raise ValueError(f"{where}: cannot load the checkpoint ({type(exc).__name__}: {first})") from None


def cam_target(args: argparse.Namespace, image: Path, batch: bool) -> Path | None:
    if not args.cam:
        return None
    out = Path(args.cam)
    if batch:
        return out / f"{image.stem}.cam.png"
    return out


def answer(clf, image, path: Path, args: argparse.Namespace, batch: bool, checks) -> dict:
    """One image's result dict (raises ImageError for a bad file)."""
    from .trust import assess

    target = cam_target(args, path, batch)
    method = args.method if (target is not None or checks is not None) else None
    if checks is None:  # --no-checks: the bare prediction, as before the checks existed
        if method:
            expl = clf.explain(image, method, threshold=args.threshold)
            result = expl.prediction.to_dict()
            if target is not None:
                expl.overlay().save(target, format="PNG")
                result.update({"cam": str(target), "method": method, "cam_flat": expl.flat})
        else:
            result = clf.predict(image, threshold=args.threshold).to_dict()
    else:
        a = assess(clf, image, method, threshold=args.threshold, checks=checks)
        result = a.to_dict()
        if target is not None and a.explanation is not None:
            a.outline_overlay(size=max(a.image.shape[0], 224)).save(target, format="PNG")
            result.update({"cam": str(target), "method": method, "cam_flat": a.explanation.flat})
    result["synthetic_training_data"] = bool(clf.card.get("synthetic"))
    return {"file": str(path), **result}


def run(args: argparse.Namespace, emit) -> int:
    """Answer every image, calling `emit(result)` for each; returns the exit status."""
    from .preprocess import ImageError, load_image

    files, batch = expand_inputs(args.images)
    first = None
    if not batch:
        first = load_image(files[0])  # validate a single input before paying for a model load
    if args.cam:
        out = Path(args.cam)
        if batch and not out.is_dir():
            raise ValueError(f"{out}: --cam must name an existing folder when there are several images")
        if not batch and out.parent and not out.parent.exists():
            raise ValueError(f"{out.parent}: folder does not exist")
    clf = open_classifier(args)
    args.method = args.method or clf.default_cam
    if (args.cam or not args.no_checks) and args.method not in clf.cam_methods:
        raise ValueError(f"{args.model} supports --method {', '.join(clf.cam_methods)}")
    checks = None
    if not args.no_checks:
        from .trust import default_checks

        checks = default_checks()
    answered = 0
    for i, path in enumerate(files):
        try:
            image = first if (i == 0 and first is not None) else load_image(path)
            emit(answer(clf, image, path, args, batch, checks))
            answered += 1
        except (ImageError, OSError) as exc:
            if not batch:
                raise
            emit({"file": str(path), "error": " ".join(str(exc).split())})
    return 0 if answered else EXIT_BAD_INPUT


def text_line(result: dict) -> str:
    name = result["file"]
    if "error" in result:
        return f"{name}: error: {result['error']}"
    if not result.get("lesion_photo", True):
        return f"{name}: {result['message']} (no verdict)"
    line = (f"{name}: {result['model']}: P(malignant) = {result['prob_malignant']:.3f} -> {result['label']} "
            f"(threshold {result['threshold']:.3f})")
    if "cam" in result:
        line += f"; heatmap: {result['cam']}" + (" (flat: no spatial evidence)" if result["cam_flat"] else "")
    if result.get("on_lesion_share") is not None:
        line += f"; {result['on_lesion_share']:.0%} of the heatmap on the lesion"
    for w in result.get("warnings", []):
        line += f"\n  warning: {w}"
    for h in result.get("quality", []):
        line += f"\n  photo: {h['message']}"
    return line


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # PIL warns on stderr about odd-but-readable files (corrupt EXIF, ...): the contract is one
    # `error:` line for bad input and a clean stderr otherwise.
    warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
    args = get_args_parser().parse_args(argv)
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        print("error: --threshold must be between 0 and 1", file=sys.stderr)
        return EXIT_BAD_INPUT

    def emit(result: dict) -> None:
        print(json.dumps(result) if args.json else text_line(result), flush=True)

    try:
        return run(args, emit)
    except (ValueError, OSError) as exc:  # ImageError, MissingWeights, bad checkpoint, unwritable --cam
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint can raise anything from pickle/zip
        print(f"error: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
