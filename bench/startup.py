"""App start-up and first predictions, measured in a real browser: `python -m bench.startup`.

Prints one table:
- seconds from `streamlit run` to the Diagnose page being interactive (file input and model
  choice in the page), then from picking an example right away to its prediction and heatmap
  (the default model loads in the background from start-up), median of --repeat starts; the
  baseline is a bare Streamlit page with one file uploader, started the same way (same
  .streamlit/config.toml) in the same run;
- per model: seconds from choosing it in the browser to its prediction and heatmap on the page
  (cold: the model loads, and the Keras one imports TensorFlow), then the warm in-process
  time of one explained prediction;
- the server's resident memory (VmRSS) after start-up and with every model loaded.

Uses the shipped weights (models/weights/) or --weights DIR; --throwaway writes untrained
checkpoints of all four models to a temporary folder (same speed and memory as trained ones).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.screenshots import photo_bytes
from tests.harness import CHROMIUM, FILE_INPUT, browser, choose, rss_mb, serve, server_env, settle, upload

ROOT = Path(__file__).resolve().parent.parent

BARE_APP = """import streamlit as st
st.title("Bare Streamlit")
st.file_uploader("Upload")
"""
IMAGES_LOADED = """n => [...document.querySelectorAll('[data-testid="stImage"] img')]
    .filter(i => i.complete && i.naturalWidth > 0).length >= n"""


def write_throwaway(folder: Path) -> Path:
    from models.loader import save_torch_weights
    from models.registry import default_card, write_card
    from models.torch_classifier import build_for_inference

    for name in ("torch_cnn", "densenet161", "efficientnet_lite0"):
        card = default_card(name)
        card.update(epochs=1, data={"name": "untrained benchmark checkpoint"})
        save_torch_weights(build_for_inference(name), card, folder / f"{name}.pt")
    try:
        from models.keras_model import build_keras_cnn, save_keras_model
    except ImportError:
        return folder
    card = default_card("keras_cnn")
    card.update(epochs=1, data={"name": "untrained benchmark checkpoint"})
    save_keras_model(build_keras_cnn(card["image_size"]), folder / "keras_cnn.keras")
    write_card(folder / "keras_cnn.json", card)
    return folder


def time_start(page, env: dict, script: Path | None, lesion_lens: bool) -> dict:
    """Spawn the server, open the page: seconds to interactive (and to the first prediction)."""
    with serve(env, script=script) as (url, proc, health_s):  # script: the bare baseline page
        page.goto(url)
        page.wait_for_selector(FILE_INPUT, state="attached", timeout=120_000)
        if lesion_lens:
            page.get_by_role("combobox", name="Model", exact=True).wait_for(timeout=120_000)
        interactive = time.perf_counter() - proc.t0
        out = {"health": health_s, "interactive": interactive, "rss_start": rss_mb(proc.pid)}
        if lesion_lens:
            # A user who picks the first example as soon as the page is up.
            t = time.perf_counter()
            page.get_by_role("combobox", name="…or pick an example", exact=True).click()
            page.get_by_role("option").first.click()
            page.locator('[data-testid="stMetricValue"]').first.wait_for(timeout=300_000)
            page.wait_for_function(IMAGES_LOADED, arg=3, timeout=120_000)
            out["first_prediction"] = time.perf_counter() - t
            out["rss_default"] = rss_mb(proc.pid)
        return out


def warm_explain(name: str, image: bytes, n: int = 3) -> float:
    from models import load_classifier

    clf = load_classifier(name)
    clf.explain(image)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        clf.explain(image)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", help="weights folder (default: models/weights, the shipped ones)")
    ap.add_argument("--throwaway", action="store_true", help="benchmark untrained checkpoints of all four models")
    ap.add_argument("--repeat", type=int, default=3, help="server starts to time (median)")
    ap.add_argument("--start-only", action="store_true",
                    help="only the start-up rows (bare page vs Diagnose), not the per-model cold loads")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        sys.exit(f"error: {CHROMIUM} not found (apt-get install -y chromium)")
    tmp = tempfile.TemporaryDirectory(prefix="lesion-lens-bench-")
    weights = args.weights
    if args.throwaway:
        weights = str(write_throwaway(Path(tmp.name) / "weights"))
    if weights:
        os.environ["LESION_LENS_WEIGHTS_DIR"] = weights
    env = server_env(weights)

    bare = Path(tmp.name) / "bare_app.py"
    bare.write_text(BARE_APP)  # served from the project folder: the same .streamlit/config.toml

    from models import MODEL_NAMES, spec
    from models.registry import default_model, models_with_weights

    rows: list[tuple[str, str, str]] = []
    with browser() as page:
        base = [time_start(page, env, bare, False) for _ in range(args.repeat)]
        ours = [time_start(page, env, None, True) for _ in range(args.repeat)]
        med = lambda runs, k: statistics.median(r[k] for r in runs)  # noqa: E731
        rows += [
            ("bare Streamlit page: spawn -> interactive", f"{med(base, 'interactive'):.2f} s", "baseline"),
            ("Lesion Lens Diagnose: spawn -> interactive", f"{med(ours, 'interactive'):.2f} s",
             f"+{med(ours, 'interactive') - med(base, 'interactive'):.2f} s over the baseline"),
            ("Lesion Lens Diagnose: interactive -> first prediction", f"{med(ours, 'first_prediction'):.2f} s",
             f"example picked at once; {spec(default_model()).display}, loading in the background since start"),
            ("server RSS when interactive: bare / Lesion Lens",
             f"{med(base, 'rss_start'):.0f} / {med(ours, 'rss_start'):.0f} MB", "Lesion Lens: warm-up may have begun"),
        ]

        if not args.start_only:
            # First prediction per model, cold, in one server; then memory with all of them loaded.
            available = models_with_weights()
            image = photo_bytes(kind="malignant", seed=3, size=320)
            with serve(env) as (url, proc, _):
                page.goto(url)
                page.wait_for_selector(FILE_INPUT, state="attached", timeout=120_000)
                page.get_by_role("combobox", name="Model", exact=True).wait_for(timeout=120_000)
                settle(page, timeout=300)
                first = default_model()
                order = [first] + [n for n in MODEL_NAMES if n in available and n != first]
                upload(page, [("bench.jpg", image)])
                settle(page, timeout=300)
                for name in order[1:] + [first]:
                    display = spec(name).display
                    t = time.perf_counter()
                    choose(page, "Model", display)
                    page.get_by_text(f"{display} says", exact=True).wait_for(timeout=300_000)
                    page.wait_for_function(IMAGES_LOADED, arg=3, timeout=300_000)
                    settle(page, timeout=300, pause=0.0)
                    cold = time.perf_counter() - t
                    note = "already loaded at start (the default model)" if name == first else "model load included"
                    if spec(name).framework == "keras":
                        note = "TensorFlow import and model load included"
                    rows.append((f"{display}: choose -> prediction + heatmap on the page", f"{cold:.2f} s", note))
                rss_all = rss_mb(proc.pid)
            rows.append(("server RSS with every model loaded", f"{rss_all:.0f} MB",
                         f"{med(ours, 'rss_default'):.0f} MB with the default model only; {', '.join(order)}"))
            for name in MODEL_NAMES:
                if name not in available:
                    rows.append((f"{spec(name).display}", "no weights", "not measured"))
                    continue
                rows.append((f"{spec(name).display}: one explained prediction, warm", f"{warm_explain(name, image):.3f} s",
                             "in-process, median of 3, CPU"))

    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>{vwidth}}  note")
    print(f"{'-' * width}  {'-' * vwidth}  {'-' * 30}")
    for k, v, note in rows:
        print(f"{k:<{width}}  {v:>{vwidth}}  {note}")
    print(f"\n{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}; weights: {weights or 'models/weights'}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
