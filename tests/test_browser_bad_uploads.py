"""Bad uploads through the real <input type=file> in Chromium, one after another, then a good one.

`streamlit run app.py` on a free loopback port with throwaway weights. Each bad file must give a
clear message that names it (from the page, or from Streamlit's uploader for a type it refuses or
a file over the 10 MB cap), the page must never show a traceback or an exception box, and a good
photo afterwards must be predicted.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import badfiles
from test_app_pages import make_weights
from harness import skip_without_browser

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
skip_without_browser()

from harness import FILE_INPUT, goto_page, serve, server_env, settle  # noqa: E402

# (file, where the message appears: "page" = the app's own error, "widget" = Streamlit's uploader, text)
SEQUENCE = [
    ("notes.jpg", "page", badfiles.NOT_AN_IMAGE),
    ("cut.jpg", "page", badfiles.TRUNCATED),
    ("photo_heic.jpg", "page", badfiles.HEIC),
    ("bomb_header.png", "page", badfiles.TOO_LARGE),
    ("bomb_1bit_81mpx.png", "page", badfiles.TOO_LARGE),
    ("one_pixel.png", "page", badfiles.TOO_SMALL),
    ("text_bomb.png", "page", "oversized metadata"),
    ("report.pdf", "widget", "files are not allowed"),
    ("eleven_mb.jpg", "widget", "must be 10"),  # .streamlit/config.toml: maxUploadSize = 10
    ("empty.jpg", "page", badfiles.EMPTY),
]


def bad_file(name: str) -> badfiles.BadFile:
    if name == "eleven_mb.jpg":
        jpeg = badfiles.by_name("trailing_garbage.jpg").data
        return badfiles.BadFile(name, jpeg + b"\0" * (11 << 20), "error", "", mime="image/jpeg")
    return badfiles.by_name(name)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    weights = make_weights(tmp_path_factory.mktemp("bad_upload_browser_weights"), {"torch_cnn": 0.5})
    with serve(server_env(weights)) as (url, proc, _):
        yield url, proc


def send(page, files: list[badfiles.BadFile]) -> None:
    page.locator(FILE_INPUT).first.set_input_files(
        [{"name": f.name, "mimeType": f.mime, "buffer": f.data} for f in files])


def no_traceback(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0
    body = page.inner_text("body")
    assert "Traceback" not in body and "StreamlitAPIException" not in body


def test_diagnose_bad_files_one_after_another_then_a_good_one(server, page):
    url, _ = server
    page.goto(url)
    page.wait_for_selector(FILE_INPUT, state="attached", timeout=60_000)
    settle(page)
    for name, where, text in SEQUENCE:
        f = bad_file(name)
        send(page, [f])
        if where == "page":
            alert = page.locator('[data-testid="stAlert"]').filter(has_text=f"{name}: ")
            alert.wait_for(timeout=60_000)
            settle(page)
            message = alert.inner_text()
            assert text in message, (name, message)
            assert page.locator('[data-testid="stMetricValue"]').count() == 0, name
        else:  # refused by the uploader itself, before the app sees a byte
            uploader = page.locator('[data-testid="stFileUploader"]').first
            page.wait_for_function(
                "([n, t]) => { const u = document.querySelector('[data-testid=\"stFileUploader\"]');"
                " return u && u.innerText.includes(n) && u.innerText.includes(t); }", arg=[name, text],
                timeout=30_000)
            assert name in uploader.inner_text()
            settle(page)
        no_traceback(page)
    good = badfiles.BadFile("good_mole.png", badfiles.good_photo(seed=5), "ok", "", mime="image/png")
    send(page, [good])
    page.get_by_text("PyTorch CNN says").wait_for(timeout=120_000)
    settle(page, timeout=120)
    value = page.locator('[data-testid="stMetricValue"]').first.inner_text()
    assert re.fullmatch(r"\d+\.\d%", value.strip()), value
    assert page.locator('[data-testid="stAlert"]').filter(has_text="empty.jpg").count() == 0
    page.wait_for_function("""() => [...document.querySelectorAll('[data-testid="stImage"] img')]
        .filter(i => i.complete && i.naturalWidth > 0).length >= 3""", timeout=60_000)
    no_traceback(page)


def test_patient_page_with_bad_and_good_files_together(server, page):
    url, _ = server
    page.goto(url)
    page.wait_for_selector(FILE_INPUT, state="attached", timeout=60_000)
    settle(page)
    goto_page(page, "Patient view")
    page.get_by_role("heading", name="Patient view: the ugly duckling").wait_for(timeout=60_000)
    settle(page)
    bad = [bad_file(n) for n in ("notes.jpg", "cut.png", "bomb_header.png", "one_pixel.png")]
    good = [badfiles.BadFile(f"mole_{i}.png", badfiles.good_photo(seed=60 + i, size=128), "ok", "", mime="image/png")
            for i in range(3)]
    odd = [bad_file(n) for n in ("rotated_exif6.jpg", "cmyk.jpg")]
    send(page, bad + good + odd)
    page.wait_for_selector(".js-plotly-plot", timeout=300_000)
    settle(page, timeout=300)
    for f in bad:
        alert = page.locator('[data-testid="stAlert"]').filter(has_text=f"{f.name}: ")
        assert alert.count() == 1 and f.message in alert.inner_text(), f.name
    body = page.inner_text("body")
    for f in good + odd:
        assert f.name in body, f.name
    no_traceback(page)


def test_server_log_has_no_traceback_and_no_upload_names(server):
    _, proc = server
    log = proc.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    for name, _, _ in SEQUENCE:
        assert Path(name).stem not in log, name
