"""Bad and odd uploads (tests/badfiles.py) on the Diagnose, Compare and Patient pages, under AppTest.

Every bad file gives a clear message naming the file and no exception; every odd-but-valid
file gives an answer (a prediction, or the not-a-lesion gate's sentence for a flat colour card); the session keeps working afterwards (a good photo after the bad
ones is predicted). The default suite sends a representative handful; the whole corpus is
marked slow. Real models with throwaway weights (no mocks).
"""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

import badfiles
from pages.trust_view import NOT_A_LESION_MESSAGE as NOT_A_LESION
from test_app_pages import APP, TIMEOUT, make_weights

pytestmark = pytest.mark.timeout(900)

# Extensions of the image types the Diagnose uploader offers (the browser filters by them).
ALLOWED = {"jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"}
UPLOADABLE = [f for f in badfiles.corpus() if f.ext in ALLOWED and len(f.data) <= 10 << 20]  # 10 MB cap
REPRESENTATIVE = ["notes.jpg", "empty.jpg", "cut.jpg", "cut.png", "photo_heic.jpg", "bomb_header.png",
                  "bomb_1bit_81mpx.png", "one_pixel.png", "text_bomb.png", "rotated_exif6.jpg", "cmyk.jpg",
                  "palette_transparent.png", "sixteen_bit.png"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = make_weights(tmp_path_factory.mktemp("bad_upload_weights"), {"torch_cnn": 0.5})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LESION_LENS_WEIGHTS_DIR", str(folder))
        mp.delenv("LESION_LENS_DATA", raising=False)
        yield folder


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def probabilities(at: AppTest) -> list[str]:
    return [m.value for m in at.metric if m.label == "Probability of malignant"]


def no_exception(at: AppTest, what: str) -> None:
    assert not at.exception, (what, [e.value for e in at.exception])


def check_diagnose(at: AppTest, f: badfiles.BadFile) -> None:
    no_exception(at, f.name)
    if f.expect == "error":
        errors = texts(at.error)
        assert f"{f.name}: " in errors and f.message in errors, (f.name, errors)
        assert not probabilities(at), f.name
        assert not at.image, f.name  # nothing of a bad file is drawn
    else:  # decoded: an answer, which for a flat colour test card is the not-a-lesion gate's
        assert not at.error, (f.name, texts(at.error))
        if NOT_A_LESION in texts(at.warning):
            assert not probabilities(at), f.name
            assert len(at.image) == 1, f.name  # the photo, no heatmap
        else:
            assert probabilities(at), f.name
            assert len(at.image) in (1, 3), f.name  # photo (+ heatmap and overlay unless the CAM is flat)


def diagnose_sweep(files: list[badfiles.BadFile]) -> AppTest:
    """One browser session that uploads every file in turn, then a good photo."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    no_exception(at, "start")
    for f in files:
        at.file_uploader(key="diag_upload").set_value((f.name, f.data, f.mime)).run()
        check_diagnose(at, f)
    at.file_uploader(key="diag_upload").set_value(("good.png", badfiles.good_photo(), "image/png")).run()
    no_exception(at, "good.png")
    assert not at.error and probabilities(at) and len(at.image) == 3
    return at


def test_diagnose_survives_representative_bad_uploads(weights):
    diagnose_sweep([badfiles.by_name(n) for n in REPRESENTATIVE])


@pytest.mark.slow
def test_diagnose_survives_every_uploadable_file(weights):
    assert len(UPLOADABLE) >= 40
    diagnose_sweep(UPLOADABLE)


def test_the_uploader_only_offers_image_types(weights):
    # The browser's file chooser filters by these (MIME types or extensions); the app checks content anyway.
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    allowed = {t.lower() for t in at.file_uploader(key="diag_upload").allowed_type}
    assert allowed and all(t.startswith("image/") or t.lstrip(".") in ALLOWED for t in allowed), allowed
    assert not any(t in allowed for t in ("image/svg+xml", "application/pdf", ".pdf", ".svg", "image/*"))


@pytest.mark.parametrize("name", ["report.pdf", "drawing.svg", "photo.heic", "image.ppm", "photo.avif"])
def test_a_file_of_another_type_that_bypasses_the_browser_gets_a_message(weights, name):
    # A hand-made request (or an old browser) can send any file whatever the chooser's filter:
    # the page must answer with a message, not an exception.
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    f = badfiles.by_name(name)
    try:
        at.file_uploader(key="diag_upload").set_value((f.name, f.data, f.mime)).run()
    except Exception as exc:  # noqa: BLE001 - AppTest raises what the page would show as an exception
        pytest.fail(f"{name}: {type(exc).__name__}: {exc}")
    no_exception(at, name)
    assert f"{name}: " in texts(at.error) and f.message in texts(at.error), texts(at.error)
    at.file_uploader(key="diag_upload").set_value(("good.png", badfiles.good_photo(), "image/png")).run()
    no_exception(at, "good.png")
    assert probabilities(at)


def test_compare_page_reports_bad_uploads_and_recovers(weights):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/compare.py").run()
    no_exception(at, "compare")
    for name in ("cut.png", "bomb_header.png", "notes.jpg"):
        f = badfiles.by_name(name)
        at.file_uploader(key="cmp_upload").set_value((f.name, f.data, f.mime)).run()
        no_exception(at, name)
        assert f"{name}: " in texts(at.error) and f.message in texts(at.error), texts(at.error)
        assert not probabilities(at)
    at.file_uploader(key="cmp_upload").set_value(("good.png", badfiles.good_photo(), "image/png")).run()
    no_exception(at, "good.png")
    assert not at.error and probabilities(at)


def test_patient_page_reports_each_bad_file_and_ranks_the_good_ones(weights):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/patient.py").run()
    bad = [badfiles.by_name(n) for n in ("notes.jpg", "empty.jpg", "cut.png", "bomb_header.png", "one_pixel.png",
                                         "photo_heic.jpg")]
    odd = [badfiles.by_name(n) for n in ("rotated_exif6.jpg", "cmyk.jpg", "palette_transparent.png")]
    good = [(f"mole_{i}.png", badfiles.good_photo(seed=30 + i, size=128), "image/png") for i in range(3)]
    at.file_uploader(key="pat_upload").set_value([(f.name, f.data, f.mime) for f in bad + odd] + good).run()
    no_exception(at, "patient")
    errors = texts(at.error)
    for f in bad:
        assert f"{f.name}: " in errors and f.message in errors, (f.name, errors)
    table = at.dataframe[0].value
    # the odd files decode; they are flat colour cards, so each is an answer the gate gives by name
    warnings = texts(at.warning)
    ranked = set(table["photo"])
    for f in odd:
        assert f.name in ranked or f"{f.name}: {NOT_A_LESION}" in warnings, (f.name, warnings)
    assert {g[0] for g in good} <= ranked and ranked <= {f.name for f in odd} | {g[0] for g in good}
    # every upload bad: messages only, no table, no exception
    at.file_uploader(key="pat_upload").set_value([(f.name, f.data, f.mime) for f in bad]).run()
    no_exception(at, "patient, all bad")
    assert len(at.error) == len(bad) and not at.dataframe
