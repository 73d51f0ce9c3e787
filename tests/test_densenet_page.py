"""pages/densenet.py under AppTest: every section renders, its numbers are the model's, the widgets work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from models import anatomy
from test_anatomy import count_edges

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "densenet.py")
HEADERS = ["1 · The idea", "2 · DenseNet161 as built", "3 · Inside the network", "4 · Try it"]


def _elements(at: AppTest, kind: str) -> list:
    found = []

    def walk(node):
        if getattr(node, "type", None) == kind:
            found.append(node)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return found


def _texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "success", "error")
             for e in _elements(at, kind)]
    return "\n".join(str(p) for p in parts)


def _captions(at: AppTest) -> list[str]:
    return [img.caption for e in _elements(at, "image") for img in e.proto.imgs]


def _dots(at: AppTest) -> list[str]:
    return [e.proto.spec for e in _elements(at, "graphviz_chart")]


def _check(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.fixture(scope="module")
def structure():
    """The same architecture the page walks, on the meta device (no memory, no weights)."""
    return anatomy.architecture("densenet161")


@pytest.fixture(scope="module")
def no_weights(tmp_path_factory):
    """The page with no trained DenseNet161: the untrained model explains the photo."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LESION_LENS_WEIGHTS_DIR", str(tmp_path_factory.mktemp("no_weights")))
    mp.delenv("LESION_LENS_DATA", raising=False)
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    yield at
    mp.undo()


def test_every_section_renders_without_trained_weights(no_weights):
    at = no_weights
    _check(at)
    assert at.title[0].value == "Learn DenseNet"
    headers = [h.value for h in at.header]
    for expected in HEADERS:
        assert any(h.startswith(expected) for h in headers), (expected, headers)
    assert len(_dots(at)) == 3
    assert len(_elements(at, "image")) >= 1 + 4 + 4  # photo, four feature grids, four Grad-CAMs
    assert "untrained" in " ".join(i.value for i in at.info)
    assert not _elements(at, "radio")  # no trained model to switch to
    texts = _texts(at)
    assert "HAM10000" in texts and "CC BY-NC 4.0" in texts  # the first example photo, with its credit
    for block in ("denseblock1", "denseblock2", "denseblock3", "denseblock4"):
        assert block in texts


def test_block_table_is_the_models(no_weights, structure):
    at = no_weights
    table = at.dataframe[0].value
    size = at.select_slider(key="dn_size").value
    features = structure.body.features
    for _, row in table.iterrows():
        if row["what"] in ("dense block", "transition"):
            module = getattr(features, row["stage"])
            assert row["parameters"] == sum(p.numel() for p in module.parameters())
        if row["what"] == "dense block":
            layers = list(getattr(features, row["stage"]).children())
            k0, k = layers[0].norm1.num_features, layers[0].conv2.out_channels
            assert int(row["layers"]) == len(layers) and int(row["growth rate k"]) == k
            assert (row["channels in"], row["channels out"]) == (k0, k0 + len(layers) * k)
    assert table["parameters"].sum() == anatomy.count_parameters(structure)
    assert table["multiply-adds"].sum() == anatomy.count_macs(structure, size)
    assert f"{anatomy.count_parameters(structure):,}" in _texts(at)


def test_comparison_lists_every_model(no_weights):
    cmp_table = at_df(no_weights, "model")
    assert set(cmp_table["model"]) >= {"PyTorch CNN", "DenseNet161", "EfficientNet-Lite0"}
    dn = cmp_table[cmp_table["model"] == "DenseNet161"].iloc[0]
    assert dn["parameters"] == anatomy.count_parameters(anatomy.architecture("densenet161"))
    assert dn["multiply-adds per image"] > 0


def at_df(at: AppTest, column: str):
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_sliders_redraw_the_dense_block(no_weights):
    at = no_weights
    before = _dots(at)[0]
    at.slider(key="dn_layers").set_value(3).run()
    _check(at)
    after = _dots(at)
    assert after[0] != before
    assert count_edges(after[0]) == 3 * 4 // 2 + 4
    assert count_edges(after[1]) == 3 + 1  # plain chain of the same depth
    at.slider(key="dn_growth").set_value(12)
    at.slider(key="dn_k0").set_value(64).run()
    dense = _dots(at)[0]
    assert "H3\\n88 → 12" in dense  # k0 + 2k
    metric = next(m for m in at.metric if m.label.startswith("Channels leaving"))
    assert metric.value == str(64 + 3 * 12)
    at.slider(key="dn_layers").set_value(6)
    at.slider(key="dn_growth").set_value(48)
    at.slider(key="dn_k0").set_value(96)
    at.run()
    _check(at)


def test_input_size_changes_output_sizes(no_weights, structure):
    at = no_weights
    at.select_slider(key="dn_size").set_value(128).run()
    _check(at)
    table = at.dataframe[0].value
    row = table[table["stage"] == "denseblock4"].iloc[0]
    expected = anatomy.probe(structure, 128, watch=["body.features.denseblock4"]).shapes["body.features.denseblock4"]
    assert row["output size"] == f"{expected[1]}×{expected[2]}"
    quiz = next(n for n in at.number_input if n.key == "dn_q_last_block_side")
    assert "128×128" in quiz.label or "128×128" in _texts(at)


def test_quiz_checks_answers_against_the_model(no_weights, structure):
    at = no_weights
    features = structure.body.features
    right = list(features.denseblock3.children())[-1].norm1.num_features
    at.number_input(key="dn_q_last_layer_inputs").set_value(right).run()
    at.button(key="dn_check_last_layer_inputs").click().run()
    _check(at)
    assert any(f"{right:,}" in s.value for s in at.success)
    at.number_input(key="dn_q_last_layer_inputs").set_value(right + 1).run()
    at.button(key="dn_check_last_layer_inputs").click().run()
    assert not at.exception and at.error and "Not quite" in at.error[0].value
    answers = re.findall(r"\*\*([\d,]+)\*\*:", _texts(at))
    assert f"{features.transition2.conv.out_channels:,}" in answers


@pytest.fixture(scope="module")
def with_weights(tmp_path_factory):
    """A throwaway 'trained' DenseNet161 (64 px card, fp16) and no example files: the page offers the
    trained/random switch and draws a synthetic example itself."""
    from models.loader import save_torch_weights
    from models.registry import default_card
    from models.torch_classifier import build_for_inference
    from pages import photos

    wdir = tmp_path_factory.mktemp("weights")
    card = default_card("densenet161", image_size=64)
    card["epochs"] = 1
    save_torch_weights(build_for_inference("densenet161"), card, wdir / "densenet161.pt", half=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("LESION_LENS_WEIGHTS_DIR", str(wdir))
    mp.delenv("LESION_LENS_DATA", raising=False)
    mp.setattr(photos, "EXAMPLES_DIR", tmp_path_factory.mktemp("no_examples"))
    photos._examples.clear()
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    yield at
    mp.undo()
    photos._examples.clear()


def test_switching_trained_and_random(with_weights):
    at = with_weights
    _check(at)
    assert at.radio(key="dn_model").value == "trained"
    texts = _texts(at)
    assert "The trained DenseNet161 gives" in texts
    assert "SYNTHETIC" in texts  # the generated example is labelled
    assert at.select_slider(key="dn_size").value == 64  # the trained card's input size
    shown = len(_captions(at))
    at.radio(key="dn_model").set_value("random").run()
    _check(at)
    assert "The untrained DenseNet161 gives" in _texts(at)
    assert "What the model sees (64 px)" in _captions(at)  # like for like with the trained model
    at.toggle(key="dn_side").set_value(True).run()
    _check(at)
    captions = _captions(at)
    assert len(captions) == shown + 2 * 8  # both models: four feature grids and four Grad-CAMs each
    assert sum(c == "denseblock4 Grad-CAM" for c in captions) == 2
