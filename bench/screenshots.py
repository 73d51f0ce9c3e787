"""Screenshots of every page, taken in a real Chromium: `python bench/screenshots.py`.

Starts `streamlit run app.py` on a free local port, uploads photos through the real file
input, and writes docs/screenshots/{diagnose,compare,patient,about}.png. Uses the shipped
weights in models/weights/ (or --weights DIR); photos come from --data DIR (a folder with
benign/ and malignant/, e.g. a test split) or, without it, synthetic images labelled as such.

The page helpers here (settle, upload, goto_page, ...) are shared with bench/startup.py and the
browser tests.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The server and browser helpers live in bench/serve.py; the tests and benchmarks import them from here too.
from bench.serve import CHROMIUM, browser, serve, server_env  # noqa: E402,F401

READY = '[data-testid="stApp"][data-test-script-state="notRunning"]'
FILE_INPUT = 'input[type="file"]'


def settle(page, timeout: float = 120.0, pause: float = 0.4) -> None:
    """Wait until the script run triggered by the last action has finished."""
    page.wait_for_timeout(pause * 1000)
    page.wait_for_selector(READY, timeout=timeout * 1000)


def photo_bytes(path: Path | None = None, kind: str = "malignant", seed: int = 0, size: int = 320) -> bytes:
    if path is not None:
        return Path(path).read_bytes()
    from PIL import Image

    from training.synthetic import make_lesion

    buf = io.BytesIO()
    Image.fromarray(make_lesion(kind, size, seed)).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def upload(page, files: list[tuple[str, bytes]], index: int = 0) -> None:
    """Send files through the page's real <input type=file> (the index-th one)."""
    payload = [{"name": n, "mimeType": "image/png" if n.lower().endswith(".png") else "image/jpeg", "buffer": b}
               for n, b in files]
    page.locator(FILE_INPUT).nth(index).set_input_files(payload)


def choose(page, label: str, option: str) -> None:
    """Pick `option` in the Streamlit selectbox labelled `label`."""
    page.get_by_role("combobox", name=label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).first.click()


def screenshot(page, path: Path, width: int = 1400) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to fit it."""
    height = page.evaluate("""() => Math.max(...[...document.querySelectorAll('[data-testid="stMain"], '
        + '[data-testid="stAppViewContainer"], [data-testid="stMainBlockContainer"]')].map(e => e.scrollHeight),
        document.body.scrollHeight)""")
    page.set_viewport_size({"width": width, "height": min(int(height) + 40, 8000)})
    page.wait_for_timeout(800)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": width, "height": 1000})


def goto_page(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()


def sample_photos(data: str | os.PathLike | None, n_benign: int, n_malignant: int) -> list[tuple[str, bytes]]:
    """Photos for the screenshots: from a dataset folder when given, else synthetic (named so)."""
    out: list[tuple[str, bytes]] = []
    for kind, n in (("benign", n_benign), ("malignant", n_malignant)):
        if data:
            files = sorted(p for p in (Path(data) / kind).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            step = max(1, len(files) // max(n, 1))
            out += [(f"{kind}_{p.name}", p.read_bytes()) for p in files[::step][:n]]
        else:
            out += [(f"synthetic_{kind}_{i + 1}.jpg", photo_bytes(kind=kind, seed=100 + i)) for i in range(n)]
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
            else:  # a shipped example: the page labels it SYNTHETIC
                choose(page, "…or pick an example", "synthetic malignant 1")

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
    ap.add_argument("--data", help="a folder with benign/ and malignant/ to take photos from (default: synthetic)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        sys.exit(f"error: {CHROMIUM} not found (apt-get install -y chromium)")
    with serve(server_env(args.weights)) as (url, _, _):
        for p in take(url, Path(args.out), args.data):
            print(p)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
