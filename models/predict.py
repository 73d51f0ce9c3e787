"""`python -m models.predict`: one image in, probability of malignant (and a heatmap) out.

    python -m models.predict --model NAME [--checkpoint PATH] IMAGE [--cam OUT.png] [--method M] [--json]

Bad input (missing, empty, truncated, not an image, too large, too small) or missing weights:
exit status 2 and one line `error: ...` on stderr, never a traceback.
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
    p = _Parser(prog="python -m models.predict", description="Predict benign/malignant for one lesion photo.")
    p.add_argument("--model", required=True, choices=MODEL_NAMES)
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: the shipped weights)")
    p.add_argument("image", help="photo of the lesion (JPEG, PNG, WebP, BMP, TIFF, GIF)")
    p.add_argument("--cam", default=None, metavar="OUT.png", help="write the Grad-CAM overlay here")
    p.add_argument("--method", default="gradcam", choices=TORCH_CAM_METHODS, help="CAM method (Keras: gradcam)")
    p.add_argument("--threshold", type=float, default=None, help="decision threshold (default: the model card's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args: argparse.Namespace) -> dict:
    from .loader import load_classifier
    from .preprocess import load_image

    image = load_image(args.image)  # validate the input before paying for a model load
    try:
        clf = load_classifier(args.model, args.checkpoint)
    except (ValueError, OSError):  # MissingWeights, a card for another model: their messages name the file
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint raises anything from zip/pickle/torch
        where = args.checkpoint or f"the shipped {args.model} weights"
        first = " ".join(str(exc).split()).split(". ")[0]
        raise ValueError(f"{where}: cannot load the checkpoint ({type(exc).__name__}: {first})") from None
    if args.cam:
        if args.method not in clf.cam_methods:
            raise ValueError(f"{args.model} supports --method {', '.join(clf.cam_methods)}")
        out = Path(args.cam)
        if out.parent and not out.parent.exists():
            raise ValueError(f"{out.parent}: folder does not exist")
        expl = clf.explain(image, args.method, threshold=args.threshold)
        expl.overlay().save(out, format="PNG")
        result = expl.prediction.to_dict()
        result.update({"cam": str(out), "method": args.method, "cam_flat": expl.flat})
    else:
        result = clf.predict(image, threshold=args.threshold).to_dict()
    result["synthetic_training_data"] = bool(clf.card.get("synthetic"))
    return result


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # PIL warns on stderr about odd-but-readable files (corrupt EXIF, ...): the contract is one
    # `error:` line for bad input and a clean stderr otherwise.
    warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
    args = get_args_parser().parse_args(argv)
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        print("error: --threshold must be between 0 and 1", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        result = run(args)
    except (ValueError, OSError) as exc:  # ImageError, MissingWeights, bad checkpoint, unwritable --cam
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint can raise anything from pickle/zip
        print(f"error: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(result))
    else:
        line = f"{result['model']}: P(malignant) = {result['prob_malignant']:.3f} -> {result['label']} " \
               f"(threshold {result['threshold']:.3f})"
        if "cam" in result:
            line += f"; heatmap: {result['cam']}" + (" (flat: no spatial evidence)" if result["cam_flat"] else "")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
