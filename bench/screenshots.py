"""Screenshots of every page, taken in a real Chromium: `python -m bench.screenshots`.

Starts `streamlit run app.py` on a free local port, uploads photos through the real file
input, and writes docs/screenshots/{diagnose,compare,patient,about}.png. Uses the shipped
weights in models/weights/ (or --weights DIR); photos come from --data DIR (a folder with
benign/ and malignant/, e.g. a test split) or, without it, the shipped HAM10000 example photos.

The server, the browser and the page helpers (settle, upload, goto_page, ...) are the browser
tests' harness, tests/harness.py.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

from tests.harness import (CHROMIUM, FILE_INPUT, ROOT, browser, choose, goto_page, screenshot, serve, server_env,
                           settle, upload)
from tests.badfiles import example_photos
from training.datasets import image_files

EXAMPLE = "melanoma 1 (malignant) · ISIC_0033813"  # the example the Diagnose and Compare shots show

def photo_bytes(path: Path | None = None, kind: str = "malignant", seed: int = 0, size: int = 320) -> bytes:
    """A photo's bytes: the file at `path`, else one of the shipped HAM10000 example photos of `kind`
    (tests/badfiles.lesion: a real photo, flipped or rotated by `seed`), as a `size` px JPEG."""
    if path is not None:
        return Path(path).read_bytes()
    from tests.badfiles import lesion

    buf = io.BytesIO()
    lesion(size, seed, kind).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def sample_photos(data: str | os.PathLike | None, n_benign: int, n_malignant: int) -> list[tuple[str, bytes]]:
    """Photos for the screenshots: from a dataset folder when given, else the shipped, credited HAM10000
    example photos (assets/examples/ham10000), under their own names."""
    out: list[tuple[str, bytes]] = []
    for kind, n in (("benign", n_benign), ("malignant", n_malignant)):
        files = image_files(Path(data) / kind) if data else list(example_photos(kind))
        step = max(1, len(files) // max(n, 1))
        out += [(f"{kind}_{p.name}" if data else p.name, p.read_bytes()) for p in files[::step][:n]]
    return out


def take(url: str, out: Path, data: str | os.PathLike | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with browser() as page:
        page.goto(url)
        page.wait_for_selector(FILE_INPUT, state="attached", timeout=60_000)
        settle(page)
        photo = sample_photos(data, 0, 1)

        def show_photo() -> None:
            if data:
                upload(page, photo)
            else:  # a shipped HAM10000 example, shown with its diagnosis and credit
                choose(page, "…or pick an example", EXAMPLE)

        show_photo()
        page.wait_for_selector('[data-testid="stImage"]', timeout=180_000)
        settle(page, timeout=180)
        screenshot(page, out / "diagnose.png")
        shots.append(out / "diagnose.png")

        goto_page(page, "Compare models")
        page.wait_for_selector(FILE_INPUT, state="attached", timeout=60_000)
        settle(page)
        show_photo()
        settle(page, timeout=300)
        page.wait_for_selector('[data-testid="stImage"]', timeout=300_000)
        screenshot(page, out / "compare.png")
        shots.append(out / "compare.png")

        goto_page(page, "Patient view")
        page.wait_for_selector(FILE_INPUT, state="attached", timeout=60_000)
        settle(page)
        upload(page, sample_photos(data, 5, 2))
        page.wait_for_selector(".js-plotly-plot", timeout=300_000)
        settle(page, timeout=300)
        page.wait_for_timeout(1000)
        screenshot(page, out / "patient.png")
        shots.append(out / "patient.png")

        goto_page(page, "About")
        page.wait_for_selector('[data-testid="stTable"]', timeout=60_000)
        settle(page)
        screenshot(page, out / "about.png")
        shots.append(out / "about.png")
    return shots


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", help="weights folder (default: models/weights, the shipped ones)")
    ap.add_argument("--data", help="a folder with benign/ and malignant/ to take photos from (default: the shipped examples)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        sys.exit(f"error: {CHROMIUM} not found (apt-get install -y chromium)")
    with serve(server_env(args.weights)) as (url, _, _):
        for p in take(url, Path(args.out), args.data):
            print(p)


if __name__ == "__main__":
    main()
