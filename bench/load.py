"""Many users at once: `python -m bench.load [--sessions 1 4 8 16] [--weights DIR]`.

Starts `streamlit run app.py` on a free loopback port and, for each N, opens N browser sessions
at once (one Chromium, N contexts, Playwright's async API). Every session loads the Diagnose page,
then all upload at the same moment, each a DIFFERENT synthetic photo (training.synthetic, its own
seed, labelled synthetic), and wait for the probability. Each photo's probability is computed
beforehand in this process with the same model, so a session that shows another session's
answer (cross-talk) is caught. Prints p50/p95/max time from upload to result, errors and
cross-talk per N, and the baseline: the same page with one session, measured in the same run.

Then the same harness on a bare Streamlit page (an uploader and one metric, no model): Chromium's
sessions share this machine's cores with the server, and that table shows what Streamlit and the
browsers cost without Lesion Lens. CPU seconds of the server and of every Chromium process are
counted from the moment all sessions upload until the last is done.

Targets: 0 errors and no cross-talk at 16 sessions; p95 at 8 sessions within 4x the single-session
median. Loopback only; at most 32 sessions; every wait is bounded (--timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tests.harness import CHROMIUM, CHROMIUM_ARGS, FILE_INPUT, READY, rss_mb, serve, server_env

ROOT = Path(__file__).resolve().parent.parent

# The baseline page: Streamlit alone, an uploader and one metric, whose value the bench can predict
# from the photo's bytes (so cross-talk is checked there too). No model, no images drawn.
BARE_APP = """import hashlib
import streamlit as st
photo = st.file_uploader("Photo")
if photo is not None:
    st.metric("Stand-in answer", f"{int(hashlib.sha256(photo.getvalue()).hexdigest(), 16) % 1000 / 1000:.1%}")
"""
METRIC = '[data-testid="stMetricValue"]'
MAX_SESSIONS = 32
MIN_GAP = 0.3  # percentage points between the probabilities of photos in one wave


@dataclass
class Photo:
    name: str
    data: bytes
    seed: int
    expected: float = float("nan")  # P(malignant), computed in this process


@dataclass
class Result:
    n: int
    wave: int
    name: str
    expected: str = ""
    shown: str = ""
    seconds: float = float("nan")
    error: str = ""
    crosstalk: bool = False


@dataclass
class Row:
    n: int
    sessions: int
    p50: float
    p95: float
    max: float
    errors: int
    crosstalk: int
    rss_mb: float
    # CPU seconds per session from the moment all upload until every session is done
    server_cpu: float = float("nan")  # the server, all its threads
    browser_cpu: float = float("nan")  # every Chromium process (upload, drawing the result; closing the tab)
    load: float = float("nan")  # 1-minute load average after the waves (other work on the machine shows here)
    results: list = field(default_factory=list)


# ------------------------------------------------------------------ the server

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def browser_cpu_seconds() -> float:
    """CPU time of every Chromium process on the machine, plus that of the finished ones they reaped
    (a closed session's renderer), so the browsers' share of this one machine can be reported."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            if "chrom" not in stat[stat.index("(") + 1:stat.rindex(")")]:
                continue
            f = stat.rsplit(")", 1)[1].split()
            total += sum(int(x) for x in f[11:15]) / tick
        except (OSError, ValueError, IndexError):
            continue
    return total


# ------------------------------------------------------------------ photos and their expected answers

def photo(seed: int, size: int = 256) -> Photo:
    """A real lesion photo (a shipped HAM10000 example, flipped or rotated by `seed`): the gate lets it
    through, so the page answers with a percentage."""
    from tests.badfiles import lesion

    kind = "malignant" if seed % 2 else "benign"
    buf = io.BytesIO()
    lesion(size, seed // 2, kind).save(buf, format="PNG")
    return Photo(f"lesion_{kind}_{seed}.png", buf.getvalue(), seed)


def expected_probability(clf, p: Photo) -> float:
    # The Diagnose page shows the prediction that comes with the heatmap; compute it the same way.
    return float(clf.explain(p.data).prediction.prob_malignant)


def bare_answer(p: Photo) -> float:
    """What BARE_APP shows for this photo."""
    return int(hashlib.sha256(p.data).hexdigest(), 16) % 1000 / 1000


def pick_photos(answer, count: int, next_seed: list[int]) -> list[Photo]:
    """`count` photos whose answers differ pairwise by MIN_GAP points, so any mix-up shows."""
    chosen: list[Photo] = []
    tries = 0
    while len(chosen) < count:
        tries += 1
        if tries > 50 * count + 200:
            raise RuntimeError(f"cannot find {count} photos with distinct answers for this page")
        p = photo(next_seed[0])
        next_seed[0] += 1
        p.expected = answer(p)
        if all(abs(p.expected - q.expected) * 100 >= MIN_GAP for q in chosen):
            chosen.append(p)
    return chosen


def percent(p: float) -> str:
    return f"{p:.1%}"  # what the page's st.metric shows


# ------------------------------------------------------------------ browser sessions

async def upload_photo(page, p: Photo) -> None:
    await page.locator(FILE_INPUT).first.set_input_files([{"name": p.name, "mimeType": "image/png", "buffer": p.data}])


async def one_session(ctx, url: str, p: Photo, n: int, wave: int, loaded: asyncio.Queue,
                      go: asyncio.Event, timeout: float) -> Result:
    res = Result(n, wave, p.name, expected=percent(p.expected))
    signalled = False
    try:
        page = await ctx.new_page()
        await page.goto(url, timeout=timeout * 1000)
        await page.wait_for_selector(FILE_INPUT, state="attached", timeout=timeout * 1000)
        await page.wait_for_selector(READY, timeout=timeout * 1000)
        await loaded.put(True)
        signalled = True
        await go.wait()
        t0 = time.perf_counter()
        await upload_photo(page, p)
        metric = page.locator(METRIC).first
        await metric.wait_for(timeout=timeout * 1000)
        res.seconds = time.perf_counter() - t0
        res.shown = (await metric.inner_text()).strip()
        await page.wait_for_selector(READY, timeout=timeout * 1000)
        if await page.locator('[data-testid="stException"]').count() or "Traceback" in await page.inner_text("body"):
            res.error = "exception shown on the page"
        elif await page.locator('[data-testid="stAlert"]').filter(has_text=p.name).count():
            res.error = "the page reported the photo as bad"
    except Exception as exc:  # noqa: BLE001 - a session's failure is a result, not a crash of the bench
        res.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    finally:
        if not signalled:
            await loaded.put(False)
    if not res.error:
        try:
            shown = float(res.shown.rstrip("%"))
            res.crosstalk = abs(shown - 100 * p.expected) > 0.11  # one rounding step of 0.1 %
        except ValueError:
            res.error = f"unexpected metric text {res.shown!r}"
    return res


async def wave(browser, url: str, photos: list[Photo], n: int, index: int, timeout: float, server_pid: int
               ) -> tuple[list[Result], float, float]:
    """(results, server CPU s, browser CPU s), the CPU counted from the moment all upload until the end."""
    loaded: asyncio.Queue = asyncio.Queue()
    go = asyncio.Event()
    # The tabs close after the whole wave: closing one is no part of any session's time to result, and
    # on this one machine it would take CPU from the sessions still waiting.
    contexts = [await browser.new_context(viewport={"width": 1280, "height": 900}) for _ in photos]
    try:
        tasks = [asyncio.create_task(one_session(ctx, url, p, n, index, loaded, go, timeout))
                 for ctx, p in zip(contexts, photos)]
        for _ in photos:  # every session has its page up (or has failed) before anyone uploads
            await asyncio.wait_for(loaded.get(), timeout=timeout * 2)
        c0, b0 = cpu_seconds(server_pid), browser_cpu_seconds()
        go.set()
        results = list(await asyncio.wait_for(asyncio.gather(*tasks), timeout=timeout * 3))
        return results, cpu_seconds(server_pid) - c0, browser_cpu_seconds() - b0
    finally:
        for ctx in contexts:
            await ctx.close()


async def warm_up(browser, url: str, timeout: float) -> str:
    """One session before timing (loads the default model into the server); returns the heading of
    the answer ("<model> says"), or "" on a page without one."""
    ctx = await browser.new_context()
    try:
        page = await ctx.new_page()
        await page.goto(url, timeout=timeout * 1000)
        await page.wait_for_selector(FILE_INPUT, state="attached", timeout=timeout * 1000)
        await upload_photo(page, photo(1))
        await page.locator(METRIC).first.wait_for(timeout=timeout * 1000)
        heading = page.locator("h3").filter(has_text=" says")
        return (await heading.first.inner_text()).replace(" says", "").strip() if await heading.count() else ""
    finally:
        await ctx.close()


def summarize(n: int, results: list[Result], rss: float, cpu: float, browser_cpu: float) -> Row:
    ok = np.array([r.seconds for r in results if not r.error])
    q = (lambda x: float(np.percentile(ok, x))) if len(ok) else (lambda x: float("nan"))
    return Row(n, len(results), q(50), q(95), float(ok.max()) if len(ok) else float("nan"),
               sum(bool(r.error) for r in results), sum(r.crosstalk for r in results), rss,
               cpu / max(len(results), 1), browser_cpu / max(len(results), 1), os.getloadavg()[0],
               [asdict(r) for r in results])


async def measure(browser, url: str, server_pid: int, answer, args) -> list[Row]:
    """Waves of N simultaneous sessions for each N in args.sessions, each photo with its own answer."""
    rows, seed = [], [1000]
    for n in args.sessions:
        waves = max(1, math.ceil(args.min_samples / n))
        results: list[Result] = []
        cpu = browser_cpu = 0.0
        for w in range(waves):
            got, server_s, browser_s = await wave(browser, url, pick_photos(answer, n, seed), n, w, args.timeout,
                                                  server_pid)
            results += got
            cpu += server_s
            browser_cpu += browser_s
        rows.append(summarize(n, results, rss_mb(server_pid), cpu, browser_cpu))
        print(f"  N={n:>2}: {waves} wave(s) done", file=sys.stderr, flush=True)
    return rows


async def run(args) -> tuple[list[Row], list[Row], dict]:
    """(Lesion Lens rows, bare-page rows, info), both measured in this run with the same harness."""
    from playwright.async_api import async_playwright

    from models import MODEL_NAMES, load_classifier, spec

    bare_rows: list[Row] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            with serve(server_env(Path(args.weights).resolve() if args.weights else None), timeout=120) as (url, proc, _):
                t0 = time.perf_counter()
                display = await warm_up(browser, url, args.timeout)
                warm = time.perf_counter() - t0
                name = next(m for m in MODEL_NAMES if spec(m).display == display)
                if args.weights:
                    os.environ["LESION_LENS_WEIGHTS_DIR"] = str(Path(args.weights).resolve())
                clf = load_classifier(name)
                rows = await measure(browser, url, proc.pid, lambda p: expected_probability(clf, p), args)
                log = proc.log_path.read_text(errors="replace")
            if args.bare_baseline:
                print("  the bare Streamlit page, same harness:", file=sys.stderr, flush=True)
                with tempfile.TemporaryDirectory() as tmp:
                    script = Path(tmp) / "bare_app.py"
                    script.write_text(BARE_APP)
                    with serve(server_env(), script=script, timeout=120) as (url, proc, _):
                        await warm_up(browser, url, args.timeout)
                        bare_rows = await measure(browser, url, proc.pid, bare_answer, args)
        finally:
            await browser.close()
    info = {"model": name, "display": display, "warm_up_s": round(warm, 2), "cpus": os.cpu_count(),
            "server_log_tracebacks": log.count("Traceback")}
    return rows, bare_rows, info


def table(rows: list[Row], title: str) -> str:
    base = next((r.p50 for r in rows if r.n == 1), float("nan"))
    lines = [f"{title} Baseline: N=1 median {base:.2f} s (same run).",
             "",
             "| sessions at once | samples | p50 s | p95 s | max s | p95 / N=1 p50 | errors | cross-talk | "
             "server CPU s/session | browser CPU s/session | server RSS MB | load avg |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.n} | {r.sessions} | {r.p50:.2f} | {r.p95:.2f} | {r.max:.2f} | {r.p95 / base:.1f}x | "
                     f"{r.errors} | {r.crosstalk} | {r.server_cpu:.2f} | {r.browser_cpu:.2f} | {r.rss_mb:.0f} | {r.load:.1f} |")
    return "\n".join(lines)


def p95_ratio(rows: list[Row], n: int) -> float | None:
    by_n = {r.n: r for r in rows}
    return by_n[n].p95 / by_n[1].p50 if n in by_n and 1 in by_n else None


def verdict(rows: list[Row], bare_rows: list[Row] = ()) -> list[str]:
    by_n = {r.n: r for r in rows}
    out = []
    base = by_n.get(1)
    if 16 in by_n:
        r = by_n[16]
        ok = r.errors == 0 and r.crosstalk == 0
        out.append(f"{'PASS' if ok else 'FAIL'}: 16 sessions: {r.errors} errors, {r.crosstalk} cross-talk (target 0, 0)")
    if 8 in by_n and base:
        ratio = by_n[8].p95 / base.p50
        out.append(f"{'PASS' if ratio <= 4 else 'FAIL'}: 8 sessions: p95 {by_n[8].p95:.2f} s = {ratio:.1f}x the "
                   f"single-session median {base.p50:.2f} s (target <= 4x)")
        bare = p95_ratio(list(bare_rows), 8)
        if bare is not None:
            out.append(f"context: the bare Streamlit page, same harness and machine: 8-session p95 = {bare:.1f}x "
                       "its single-session median")
    total_errors = sum(r.errors + r.crosstalk for r in rows)
    if total_errors:
        first = next(x for r in rows for x in r.results if x["error"] or x["crosstalk"])
        out.append(f"first problem: {first}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8, 16], help="N values (1 first: the baseline)")
    ap.add_argument("--min-samples", type=int, default=8, help="repeat waves until each N has this many samples")
    ap.add_argument("--weights", default=None, help="weights folder (default: the shipped models/weights)")
    ap.add_argument("--timeout", type=float, default=240, help="seconds any one wait may take")
    ap.add_argument("--json", default=None, help="also write every result to this JSON file")
    ap.add_argument("--no-bare-baseline", dest="bare_baseline", action="store_false",
                    help="skip the same measurement on a bare Streamlit page (uploader + one metric)")
    args = ap.parse_args(argv)
    if any(n < 1 or n > MAX_SESSIONS for n in args.sessions):
        ap.error(f"--sessions must be between 1 and {MAX_SESSIONS}")
    if 1 not in args.sessions:
        args.sessions = [1, *args.sessions]  # the baseline is always measured in the same run
    if not Path(CHROMIUM).exists():
        print(f"error: {CHROMIUM} not found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    rows, bare_rows, info = asyncio.run(run(args))
    print(table(rows, f"Diagnose page, model {info['display']} ({info['model']}), {info['cpus']} CPUs, server and "
                      "Chromium on this machine; time from upload to the probability shown."))
    if bare_rows:
        print()
        print(table(bare_rows, "The bare Streamlit page (file uploader + one metric, no model), same harness, same "
                               "run: what Streamlit and the browsers cost on their own."))
    print()
    lines = verdict(rows, bare_rows)
    for line in lines:
        print(line)
    if info["server_log_tracebacks"]:
        print(f"server log: {info['server_log_tracebacks']} tracebacks")
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "rows": [asdict(r) for r in rows],
                                               "bare_rows": [asdict(r) for r in bare_rows]}, indent=1))
    bare_problems = sum(r.errors + r.crosstalk for r in bare_rows)
    failed = any(line.startswith("FAIL") for line in lines) or info["server_log_tracebacks"] or bare_problems
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
