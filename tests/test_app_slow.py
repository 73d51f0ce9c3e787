"""All four models in the app (DenseNet161 and the Keras CNN too), through AppTest. Slow on CPU."""

from __future__ import annotations

import pytest

from test_app_pages import app, make_keras_weights, make_weights, no_exception, photo, prob_percent, texts

pytestmark = pytest.mark.slow

TRUST_WARNINGS = ("evidence is mostly outside the lesion", "differs from the photos this model learned from")
DISPLAY = {"keras_cnn": "Keras CNN", "torch_cnn": "PyTorch CNN", "densenet161": "DenseNet161",
           "efficientnet_lite0": "EfficientNet-Lite0"}


@pytest.fixture(scope="module")
def all_weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights_all")
    make_weights(folder, {"torch_cnn": 0.0, "efficientnet_lite0": 1.0, "densenet161": 0.0})
    make_keras_weights(folder, 1.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LESION_LENS_WEIGHTS_DIR", str(folder))
        mp.delenv("LESION_LENS_DATA", raising=False)
        yield folder


def test_diagnose_every_model(all_weights):
    at = app()
    at.file_uploader(key="diag_upload").upload("mole.png", photo("malignant", 4, size=240), "image/png").run()
    for name, display in DISPLAY.items():
        at.selectbox(key="diag_model").set_value(name).run()
        no_exception(at)
        assert not at.error, (name, texts(at.error))
        # a throwaway model may look off the lesion or find the photo unfamiliar: the trust checks say so;
        # any other warning (no weights, a load failure) is a failure here
        others = [w.value for w in at.warning if not any(t in w.value for t in TRUST_WARNINGS)]
        assert not others, (name, others)
        assert f"{display} says" in texts(at.subheader)
        assert len(prob_percent(at)) == 1 and len(at.image) == 3, name
        methods = list(at.selectbox(key="diag_cam").options)
        assert methods == (["gradcam"] if name == "keras_cnn" else
                           ["layercam", "gradcam", "gradcam++", "xgradcam", "eigencam"])
    at.selectbox(key="diag_model").set_value("densenet161").run()
    at.selectbox(key="diag_cam").set_value("layercam").run()
    no_exception(at)
    assert any("Heatmap (layercam)" in str(im.proto) for im in at.image)
    at.toggle(key="diag_tta").set_value(True).run()
    no_exception(at)
    assert "Test-time augmentation" in texts(at.markdown)


def test_compare_all_four(all_weights):
    at = app("pages/compare.py")
    at.file_uploader(key="cmp_upload").upload("mole.png", photo("benign", 5, size=240), "image/png").run()
    no_exception(at)
    assert len(prob_percent(at)) == 4 and len(at.image) == 5  # the photo and four heatmaps
    for name in DISPLAY:  # each model offers the methods it supports (the Keras model: Grad-CAM only)
        assert list(at.selectbox(key=f"cmp_cam_{name}").options) == (
            ["gradcam"] if name == "keras_cnn" else ["layercam", "gradcam", "gradcam++", "xgradcam", "eigencam"])
    warning = texts(at.warning)
    assert "The models disagree" in warning
    assert "PyTorch CNN and DenseNet161 say **malignant**" in warning
    assert "Keras CNN and EfficientNet-Lite0 say **benign**" in warning


def test_patient_with_keras_and_densenet(all_weights):
    at = app("pages/patient.py")
    files = [(f"l{i}.png", photo("benign", 30 + i, size=160), "image/png") for i in range(4)]
    files.append(("odd.png", photo("malignant", 77, size=160), "image/png"))
    at.file_uploader(key="pat_upload").set_value(files).run()
    at.multiselect(key="pat_models").set_value(["keras_cnn", "densenet161"]).run()
    no_exception(at)
    cols = set(at.dataframe[0].value.columns)
    assert {"outlier Keras CNN", "outlier DenseNet161"} <= cols
    assert len(at.get("plotly_chart")) == 2
