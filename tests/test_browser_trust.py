"""Issue 14 in a real Chromium: what a person sees of the trust checks on the pages that predict.

`streamlit run app.py` with a throwaway PyTorch CNN (threshold 0.5) in a temporary
LESION_LENS_WEIGHTS_DIR and the shipped gate and segmenter. The fixture fits the model's familiarity
(models.familiarity, as training does) on its own embeddings of real lesion photos (the shipped
HAM10000 examples, tests/badfiles.lesion), so a plain lesion photo is familiar and the same photo
under a heavy green cast, which the gate still takes for a lesion, is not: both are checked with the
real gate and familiarity before the browser sees them. The not-a-lesion photo is a generated page of
text (training.fit_gate.make_document), checked against the shipped gate too.
"""

from __future__ import annotations

import io
import re
import urllib.request

import numpy as np
import pytest
from PIL import Image

from test_app_pages import make_weights, photo
from harness import skip_without_browser

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

skip_without_browser()

from harness import open_app, serve, server_env, settle, upload  # noqa: E402

NOT_A_LESION = "This does not look like a photo of a skin lesion"
UNFAMILIAR = "This photo differs from the photos this model learned from"
ANSWER = "Probability of malignant"
PLAIN = ("malignant", 1, 300)  # photo(kind, seed, size): the plain lesion photo of these tests


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def document() -> bytes:
    from training.fit_gate import make_document

    buf = io.BytesIO()
    make_document(5).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def green_cast() -> bytes:
    """The plain photo under a heavy green cast: still a lesion to the gate, unlike any training photo."""
    arr = np.asarray(Image.open(io.BytesIO(photo(*PLAIN)))).astype(np.float32)
    return png(Image.fromarray(np.clip(arr * (0.3, 1.0, 0.3), 0, 255).astype(np.uint8)))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from badfiles import lesion
    from models.familiarity import Familiarity, card_entry, fit_familiarity
    from models.gate import load_gate
    from models.loader import load_classifier
    from models.preprocess import load_image, to_model_size
    from models.registry import read_card, write_card

    weights = make_weights(tmp_path_factory.mktemp("trust_browser_weights"), {"torch_cnn": 0.5})
    clf = load_classifier("torch_cnn", weights / "torch_cnn.pt")
    # "Training photos": the examples at two sizes (a seed past a kind's photo count is a flip or rotation).
    emb = np.stack([clf.embed(np.asarray(lesion(size, seed, kind)))
                    for seed in range(16) for kind in ("benign", "malignant") for size in (160, 300)])
    params, summary = fit_familiarity(emb, emb, percentile=100.0)  # every one of these photos is familiar
    card = read_card(weights / "torch_cnn.json")
    card["familiarity"] = card_entry(params, summary)
    write_card(weights / "torch_cnn.json", card)

    # The photos' roles hold with the real checks, whatever the browser then shows.
    fam, gate = Familiarity(params), load_gate()
    assert gate is not None, "models/weights/gate.* is shipped"
    seen = {n: gate.check(to_model_size(load_image(b), 224)).lesion_photo
            for n, b in (("plain", photo(*PLAIN)), ("green", green_cast()), ("document", document()))}
    assert seen == {"plain": True, "green": True, "document": False}, seen
    plain, green = (fam.score(clf.embed(b)) for b in (photo(*PLAIN), green_cast()))
    assert plain.distance < 0.9 * fam.threshold and green.distance > 3 * fam.threshold, (plain, green, fam.threshold)

    with serve(server_env(weights)) as (url, proc, _):
        yield url, proc


def open_page(page, url: str, title: str | None = None) -> None:
    open_app(page, url, title)
    if title:
        page.get_by_role("heading", name=title if title != "Patient view" else "Patient view: the ugly duckling"
                         ).wait_for(timeout=60_000)
        settle(page)


def no_traceback(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "Traceback" not in page.inner_text("body")


def refusal(page):
    return page.locator('[data-testid="stAlert"]').filter(has_text=NOT_A_LESION)


@pytest.mark.parametrize("title", ["Diagnose", "Compare models"])
def test_a_page_of_text_gets_the_gates_sentence_and_no_percentage(server, page, title):
    url, _ = server
    open_page(page, url, None if title == "Diagnose" else title)
    upload(page, [("scan_of_a_letter.jpg", document())])
    refusal(page).wait_for(timeout=120_000)
    settle(page, timeout=120)
    body = page.inner_text("body")
    assert ANSWER not in body and not re.search(r"\d+\.\d%", body), body[:3000]
    assert page.locator('[data-testid="stMetric"]').count() == 0
    no_traceback(page)


def test_patient_view_names_the_refused_photo_and_ranks_only_the_lesions(server, page):
    url, _ = server
    open_page(page, url, "Patient view")
    lesions = [(f"mole_{i}.png", photo("benign", 2 + i, size=160)) for i in range(3)]
    upload(page, lesions + [("letter.jpg", document())])
    page.wait_for_selector(".js-plotly-plot", timeout=300_000)
    settle(page, timeout=300)
    warning = refusal(page)
    assert warning.count() == 1 and "letter.jpg" in warning.inner_text()
    # the gallery's entries ("#1 mole_2.png") and the plot's points hold the lesions only
    ranked = re.findall(r"#\d+ (\S+\.(?:png|jpg))", page.inner_text("body"))
    assert sorted(ranked) == ["mole_0.png", "mole_1.png", "mole_2.png"], ranked
    names = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')]
        .flatMap(d => (d.data || []).flatMap(t => (t.customdata || []).map(c => c[0])))""")
    assert sorted(names) == ["mole_0.png", "mole_1.png", "mole_2.png"], names
    # the ranking table (the data grid keeps an accessible copy of its cells in the page)
    page.get_by_text("The numbers, per model").click()
    cells = '[data-testid="stDataFrame"] td'
    page.wait_for_function(f"() => document.querySelectorAll('{cells}').length >= 3", timeout=30_000)
    table = page.evaluate(f"() => [...document.querySelectorAll('{cells}')].map(c => c.textContent)")
    assert sorted(c for c in table if re.search(r"\.(png|jpg)$", c)) == ["mole_0.png", "mole_1.png", "mole_2.png"], table
    no_traceback(page)


def answer_value(page) -> str:
    page.get_by_text("PyTorch CNN says", exact=True).wait_for(timeout=180_000)
    settle(page, timeout=180)
    return page.locator('[data-testid="stMetricValue"]').first.inner_text().strip()


def test_an_unfamiliar_photo_is_answered_with_the_warning(server, page):
    url, _ = server
    open_page(page, url)
    upload(page, [("mole.png", photo(*PLAIN))])
    assert re.fullmatch(r"\d+\.\d%", answer_value(page))
    assert UNFAMILIAR not in page.inner_text("body")
    upload(page, [("mole_green_light.png", green_cast())])
    warning = page.locator('[data-testid="stAlert"]').filter(has_text=UNFAMILIAR)
    warning.wait_for(timeout=180_000)
    settle(page, timeout=180)
    assert re.search(r"Familiarity 0%", warning.inner_text())
    assert re.fullmatch(r"\d+\.\d%", page.locator('[data-testid="stMetricValue"]').first.inner_text().strip())
    no_traceback(page)


def shown_image(page, url: str, caption: str) -> np.ndarray:
    """The pixels of the image whose caption starts with `caption`, as the browser got them."""
    figure = page.locator('[data-testid="stImage"]').filter(has_text=caption).first
    src = figure.locator("img").get_attribute("src")
    with urllib.request.urlopen(src if src.startswith("http") else url + src, timeout=30) as r:
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))


def test_diagnose_draws_the_lesion_outline_and_states_the_heatmaps_share_on_it(server, page):
    url, _ = server
    open_page(page, url)
    upload(page, [("mole.png", photo(*PLAIN))])
    answer_value(page)
    page.locator('[data-testid="stImage"] img').nth(2).wait_for(timeout=60_000)
    body = page.inner_text("body")
    share = re.search(r"(\d+)% of the heatmap lies on the lesion", body)
    assert share and 0 <= int(share.group(1)) <= 100, body[:3000]
    assert re.search(r"the lesion covers \d+% of the photo", body)
    # The overlay carries the white outline: a blend of photo and heatmap is never white, the outline is.
    overlay = shown_image(page, url, "Overlay")
    photo_crop = shown_image(page, url, "The photo")
    white = lambda a: int((a.min(-1) >= 235).sum())  # noqa: E731
    assert white(overlay) > 0.004 * overlay.shape[0] * overlay.shape[1], white(overlay)
    assert white(overlay) > 2 * white(photo_crop), (white(overlay), white(photo_crop))
    no_traceback(page)


def test_server_log_has_no_traceback(server):
    _, proc = server
    assert "Traceback" not in proc.log_path.read_text(errors="replace")
