"""Learn DenseNet: dense connectivity explained on the DenseNet161 object this app runs.

UI only: every number and image comes from `models.anatomy` and `models.inside`, the drawings and
the quiz from pages/densenet_graphs.py and pages/densenet_quiz.py. Runs inside app.py's navigation
or on its own (`streamlit run pages/densenet.py`).
"""

from __future__ import annotations

import io

import pandas as pd
import streamlit as st
from PIL import Image

from models import MODEL_NAMES, ImageError, MissingWeights, untrained_classifier
from models import anatomy, inside
from models.loader import train_hint
from models.registry import file_stamp, shipped_checkpoint
from pages import classifiers, common, densenet_graphs, densenet_quiz, photos
from training.synthetic import SYNTHETIC_LABEL, make_lesion

NAME = "densenet161"
TRAINED, RANDOM = "trained", "random"
MODEL_LABELS = {TRAINED: "Trained DenseNet161 (the app's weights)", RANDOM: "Randomly initialised DenseNet161"}
INPUT_SIZES = [64, 96, 128, 160, 192, 224, 256, 288, 320, 384, 448, 512]


# ------------------------------------------------------------------ cached computation

@st.cache_resource(show_spinner="Building a randomly initialised DenseNet161…")
def _random_classifier(image_size: int | None):
    return untrained_classifier(NAME, image_size=image_size, seed=0)


def random_classifier():
    """Random weights, at the trained model's input size when there is one (a like-for-like comparison)."""
    return _random_classifier(trained.image_size if trained is not None else None)


def trained_classifier():
    """The app's DenseNet161, or (None, why not)."""
    try:
        return classifiers.get_classifier(NAME), ""
    except MissingWeights:
        return None, "This build has no trained DenseNet161 weights"
    except (ImportError, ValueError, RuntimeError, OSError) as exc:
        return None, f"The trained DenseNet161 cannot be loaded ({type(exc).__name__}: {exc})"


@st.cache_data(show_spinner="Walking the network…", max_entries=16)
def block_table(image_size: int, _clf, model_id: str) -> list[dict]:
    return anatomy.dense_block_table(_clf, image_size)


@st.cache_data(show_spinner="Counting the app's models (the Keras one starts TensorFlow)…")
def _comparison(stamps: tuple) -> list[dict]:
    return anatomy.compare_models()


def comparison() -> list[dict]:
    # Keyed on the shipped checkpoints' modification times: a newly promoted model is re-measured.
    return _comparison(tuple(file_stamp(shipped_checkpoint(name)) for name in MODEL_NAMES))


@st.cache_data(show_spinner=False)
def reference() -> list[dict]:
    return anatomy.imagenet_reference()


def fmt_count(n: int | None, unit: str = "") -> str:
    if n is None:
        return "–"
    for div, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if n >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n}{unit}"


@st.cache_data(show_spinner=False)
def _generated_png(kind: str, size: int = 224, seed: int = 5) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(make_lesion(kind, size, seed)).save(buf, format="PNG")
    return buf.getvalue()


def generated_photo(kind: str) -> photos.Photo:
    return photos.Photo(f"synthetic_{kind}.png", _generated_png(kind), "example",
                    f"{SYNTHETIC_LABEL}; drawn to look {kind}.", synthetic=True)


def inside_view(clf, photo) -> inside.InsideView:
    # Per browser session (never a cache shared between sessions): photos are patient data.
    return common.memo(("densenet_inside", classifiers.model_key(clf), photo.digest),
                   lambda: inside.look_inside(clf, photo.data))


# ------------------------------------------------------------------ the page

st.title("Learn DenseNet")
st.markdown("How does a **densely connected** network see a skin lesion? This page takes the DenseNet161 "
            "this app runs apart: every number below is read from the model object, every image is computed "
            "from the photo you choose.")

trained, why_not = trained_classifier()
structure = trained if trained is not None else random_classifier()
blocks = anatomy.dense_blocks(structure)
b1 = blocks[0]

# ------------------------------------------------------------------ 1. the idea
st.header("1 · The idea: every layer sees every earlier layer", anchor="idea")
st.markdown(
    "In a plain network each layer sees only the output of the layer before it. A **residual** network adds a "
    "layer's input to its output. A **dense block** instead *concatenates*: layer *l* receives the block input "
    "(k₀ channels) and the new channels of all *l − 1* layers before it, and adds only **k** new channels of its "
    "own — the *growth rate*. Features computed once are reused by every later layer instead of being recomputed.")

@st.fragment(key="dn_idea")
def the_idea() -> None:
    """The sliders of the idea redraw only this section (a fragment), not the photo's maps below."""
    c1, c2, c3 = st.columns(3)
    layers = c1.slider("Layers in the block (L)", 1, 12, min(b1.layers, 12), key="dn_layers",
                       help=f"DenseNet161's first block has {b1.layers} layers.")
    growth = c2.slider("Growth rate (k)", 4, 96, b1.growth, step=4, key="dn_growth",
                       help=f"DenseNet161 uses k = {b1.growth} (read from conv2.out_channels).")
    k0 = c3.slider("Channels entering the block (k₀)", 8, 256, b1.channels_in, step=8, key="dn_k0",
                   help=f"DenseNet161's first block receives {b1.channels_in} channels from the stem.")

    out_ch = k0 + layers * growth
    conns = anatomy.dense_connections(layers)
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Channels leaving the block", f"{out_ch:,}", help="k₀ + L·k")
    m1.caption(f"k₀ + L·k = {k0} + {layers}·{growth} = {out_ch}")
    m2.metric("Connections in the dense block", f"{conns}", help="L(L+1)/2: layer l has l inputs")
    m2.caption(f"L(L+1)/2 = {layers}·{layers + 1}/2, plus {layers + 1} into the concatenation")
    m3.metric("Plain chain", f"{layers}", help="one input per layer")
    m3.caption("each layer: one input")
    m4.metric("Residual chain", f"{layers} + {layers}", help="one input per layer plus one identity (+) per layer")
    m4.caption("each layer: one input, one identity")

    st.markdown(f"**Dense block**: {conns} connections between the input and the layers, "
                f"{layers + 1} more into the concatenated output")
    st.graphviz_chart(densenet_graphs.dense_block_dot(layers, growth, k0), width="content")
    if layers >= 10:
        st.caption(f"A hairball on purpose: the connections grow with the square of the depth. DenseNet161's "
                   f"deepest block has {max(b.layers for b in blocks)} layers, "
                   f"{anatomy.dense_connections(max(b.layers for b in blocks)):,} connections.")
    st.markdown(f"**Plain chain** of the same depth: {layers} connections")
    st.graphviz_chart(densenet_graphs.chain_dot(layers, k0, residual=False, growth=growth), width="content")
    st.markdown(f"**Residual chain** of the same depth: {layers} connections, and {layers} dashed identity arcs that "
                "add each layer's input to its output (+); the width never changes")
    st.graphviz_chart(densenet_graphs.chain_dot(layers, k0, residual=True), width="content")

    ins = anatomy.dense_layer_inputs(layers, growth, k0)
    growth_df = pd.DataFrame({
        "layer": list(range(1, layers + 1)),
        "dense block": ins,
        "plain chain": [k0] + [growth] * (layers - 1),
        "residual chain": [k0] * layers,
    })
    st.markdown("**Channels each layer receives**: the dense block grows linearly, k₀ + (l − 1)·k; the chains stay flat.")
    st.line_chart(growth_df, x="layer", y=["dense block", "plain chain", "residual chain"],
                  y_label="input channels", height=220)


the_idea()

# ------------------------------------------------------------------ 2. as built
st.header("2 · DenseNet161 as built", anchor="as-built")
st.markdown("The table walks the model's modules (`features.denseblock1…4`, `features.transition1…3`) and "
            "runs one forward pass with hooks to measure output sizes and multiply-adds.")


def size_changed() -> None:
    """The input size changes the table and the quiz's answers: rerun those two fragments only."""
    st.rerun(scope=["dn_as_built", "dn_quiz"])


@st.fragment(key="dn_as_built")
def as_built() -> None:
    size = st.select_slider("Input size (pixels)", INPUT_SIZES, key="dn_size", on_change=size_changed)
    rows = block_table(size, structure, classifiers.model_key(structure))
    table = pd.DataFrame([{
        "stage": r["stage"], "what": r["kind"], "layers": "" if r["layers"] is None else str(r["layers"]),
        "growth rate k": "" if r["growth_rate"] is None else str(r["growth_rate"]),
        "channels in": r["channels_in"], "channels out": r["channels_out"], "parameters": r["parameters"],
        "multiply-adds": r["macs"], "output size": r["output_size"]} for r in rows])
    st.dataframe(table, hide_index=True, column_config={
        "parameters": st.column_config.NumberColumn(format="localized"),
        "multiply-adds": st.column_config.NumberColumn(format="localized"),
        "channels in": st.column_config.NumberColumn(format="%d"),
        "channels out": st.column_config.NumberColumn(format="%d"),
    })
    row_sum = sum(r["parameters"] for r in rows)
    macs_total = sum(r["macs"] for r in rows)
    st.caption(f"The rows hold {row_sum:,} parameters, the model's total is {total_params:,}. One "
               f"{size}×{size} image costs {macs_total:,} multiply-adds ({fmt_count(macs_total)}).")

    biggest = max(blocks, key=lambda b: b.channels_out)
    plain_w = biggest.channels_out * biggest.channels_out * 9
    st.markdown(
        f"Why so few parameters for so many channels? In {biggest.name} each of the {biggest.layers} layers adds only "
        f"k = {biggest.growth} channels: a 1×1 *bottleneck* squeezes its {biggest.layer_inputs[0]:,}–"
        f"{biggest.layer_inputs[-1]:,} inputs to {biggest.bottleneck} channels, then a 3×3 convolution makes "
        f"{biggest.growth}. The block ends with {biggest.channels_out:,} channels for {biggest.parameters:,} "
        f"parameters; a single plain 3×3 convolution keeping {biggest.channels_out:,} channels would need "
        f"{plain_w:,} weights, {plain_w / total_params:.1f}× the whole network.")

    with st.expander("Layer by layer: check k₀ + l·k yourself"):
        pick = st.selectbox("Dense block", [b.name for b in blocks], key="dn_block_pick")
        b = next(b for b in blocks if b.name == pick)
        st.dataframe(pd.DataFrame({
            "layer": [f"denselayer{i + 1}" for i in range(b.layers)],
            "k₀ + l·k": [f"{b.channels_in} + {i}·{b.growth}" for i in range(b.layers)],
            "input channels (norm1.num_features)": b.layer_inputs,
        }), hide_index=True, height=min(400, 38 + 35 * b.layers))

    st.subheader("Compared with the app's other models")
    cmp_rows = comparison()
    st.dataframe(pd.DataFrame([{
        "model": r["display"], "input size": r["image_size"], "parameters": r["parameters"],
        "multiply-adds per image": r["macs"],
        "size on disk (MB)": None if r["size_bytes"] is None else round(r["size_bytes"] / 2**20, 1),
        "size measured from": r["size_source"]} for r in cmp_rows]), hide_index=True, column_config={
        "parameters": st.column_config.NumberColumn(format="localized"),
        "multiply-adds per image": st.column_config.NumberColumn(format="localized"),
    })
    dn = next(r for r in cmp_rows if r["model"] == NAME)
    others = [r for r in cmp_rows if r["model"] != NAME and r["parameters"]]
    if others:
        smallest = min(others, key=lambda r: r["parameters"])
        st.markdown(f"In this app DenseNet161 is the heavyweight: {dn['parameters'] / smallest['parameters']:.0f}× the "
                    f"parameters of the {smallest['display']}. Its parameter efficiency shows against networks of the "
                    "same accuracy:")
    ref = reference()
    st.dataframe(pd.DataFrame([{
        "ImageNet network (1000 classes)": r["network"], "parameters": r["parameters"],
        "multiply-adds at 224 px": r["macs"], "ImageNet top-1 % (torchvision's report)": r["imagenet_top1"]}
        for r in ref]), hide_index=True, column_config={
        "parameters": st.column_config.NumberColumn(format="localized"),
        "multiply-adds at 224 px": st.column_config.NumberColumn(format="localized"),
    })
    dref = next(r for r in ref if r["network"] == "densenet161")
    peers = [r for r in ref if r["network"] != "densenet161" and r["imagenet_top1"] >= dref["imagenet_top1"]]
    if peers:
        peer = min(peers, key=lambda r: r["parameters"])
        st.caption(f"{peer['network']} reaches {peer['imagenet_top1']:.1f}% with {fmt_count(peer['parameters'])} "
                   f"parameters; densenet161 {dref['imagenet_top1']:.1f}% with {fmt_count(dref['parameters'])} "
                   f"({dref['parameters'] / peer['parameters']:.0%} of them). Parameters and multiply-adds are "
                   "counted here from the architectures; the accuracies are torchvision's published figures.")


st.session_state.setdefault("dn_size", structure.image_size if structure.image_size in INPUT_SIZES else 224)
total_params = anatomy.count_parameters(structure)
as_built()

# ------------------------------------------------------------------ 3. inside, for one photo
@st.fragment(key="dn_inside")
def inside_the_network() -> None:
    """Sections 3 and 4: choosing a photo or a model reruns only these."""
    st.header("3 · Inside the network, for one photo", anchor="inside")
    if trained is None:
        st.info(f"{why_not}, so the maps below come from an **untrained** (randomly initialised) DenseNet161. "
                f"You can {train_hint(NAME)}.", icon=":material/school:")
        kind = RANDOM
    else:
        kind = st.radio("Which DenseNet161?", [TRAINED, RANDOM], format_func=MODEL_LABELS.get, horizontal=True,
                        key="dn_model",
                        help="Same architecture, different weights: compare what training changes.")
    clf = trained if kind == TRAINED else random_classifier()
    if kind == RANDOM and trained is not None:
        st.caption("Randomly initialised: these maps show the architecture's behaviour before any training.")
    if kind == TRAINED and not clf.trained:
        st.warning("The shipped DenseNet161's model card says 0 epochs: these weights are untrained.")

    pcol, rcol = st.columns([1, 2], gap="large")
    with pcol:
        photo = photos.photo_picker("dn")
        if photo is None and not photos.list_examples()[0]:  # no example files shipped: draw one
            kind_ = st.radio("…or a generated lesion", ["benign", "malignant"], horizontal=True, key="dn_synthetic",
                             format_func=lambda k: f"synthetic {k}")
            photo = generated_photo(kind_)
    if photo is None:
        st.info("Upload a photo or pick an example to look inside the network.")
        return
    try:
        view = inside_view(clf, photo)
    except ImageError as exc:
        st.error(str(exc), icon=":material/broken_image:")
        return
    with rcol:
        st.image(view.image, width=224, caption=f"What the model sees ({view.image.shape[0]} px)")
        if photo.synthetic:  # the note starts with the SYNTHETIC label
            st.markdown(f"**{photo.note or common.SYNTHETIC_NOTE}**")
        elif photo.note:
            st.caption(photo.note)
        p = view.prediction
        who = "trained" if view.trained else "untrained"
        st.markdown(f"The {who} DenseNet161 gives **{p.prob_malignant:.1%}** malignant (label *{p.label}* at "
                    f"threshold {p.threshold:.2f}); Grad-CAM explains that label.")

    st.markdown("**Feature maps after each dense block**: the 16 channels with the highest mean activation, each "
                "scaled to its own range (dark = low, yellow = high), drawn at the block's real grid size.")
    cols = st.columns(len(view.blocks))
    for col, bv in zip(cols, view.blocks):
        with col:
            st.markdown(f"**{bv.name}**")
            st.image(bv.grid, width="stretch",
                     caption=f"{bv.channels:,} channels · {bv.height}×{bv.width} grid")
    st.markdown("**Grad-CAM at each block's output**: where the evidence for the label sits, as each block sees it.")
    cols = st.columns(len(view.blocks))
    for col, bv in zip(cols, view.blocks):
        with col:
            st.image(bv.overlay, width="stretch",
                     caption=(f"{bv.name}: flat map (no spatial signal)" if bv.cam_flat else
                              f"{bv.name}: {bv.height}×{bv.width} map; half the heat in {bv.cam_area:.0%} of the photo"))
    st.info(densenet_quiz.depth_sentence(view), icon=":material/layers:")
    if not view.trained:
        st.caption("These maps come from an untrained model: its channels respond to colour and contrast, "
                   "and its Grad-CAM has no learned notion of a lesion.")

    # ------------------------------------------------------------------ 4. try it
    st.header("4 · Try it", anchor="try-it")
    if trained is None:
        st.markdown("With trained weights you could switch between the trained and a random DenseNet161 here. "
                    "Until then, compare the photos: does the random network's Grad-CAM follow the lesion or "
                    "just the darkest, most contrasted region?")
    else:
        st.markdown("Switch between the trained and the random DenseNet161 above, or see both side by side: "
                    "training should make the late blocks' heatmaps gather on the lesion.")
        if st.toggle("Show trained and random side by side", key="dn_side"):
            for k in (TRAINED, RANDOM):
                other = trained if k == TRAINED else random_classifier()
                v = inside_view(other, photo)
                st.markdown(f"**{MODEL_LABELS[k]}**: {v.prediction.prob_malignant:.1%} malignant")
                # One row of maps and one of Grad-CAMs, four wide: eight to a row were too small to read.
                for col, bv in zip(st.columns(len(v.blocks)), v.blocks):
                    col.image(bv.grid, width="stretch", caption=f"{bv.name} maps")
                for col, bv in zip(st.columns(len(v.blocks)), v.blocks):
                    col.image(bv.overlay, width="stretch", caption=f"{bv.name} Grad-CAM")


inside_the_network()

st.subheader("Check yourself")


@st.fragment(key="dn_quiz")
def quiz() -> None:
    """The questions, at the input size chosen in section 2; a Check reruns only the quiz."""
    size = st.session_state["dn_size"]
    rows = block_table(size, structure, classifiers.model_key(structure))
    st.caption(f"Every answer is read from the model object (for a {size}×{size} input where the size matters).")
    for i, q in enumerate(densenet_quiz.quiz_questions(structure, size, rows), 1):
        with st.container(border=True):
            st.markdown(f"**Q{i}.** {q['question']}")
            a, b_, _ = st.columns([2, 1, 3], vertical_alignment="bottom")
            value = a.number_input("Your answer", min_value=0, value=None, step=1, key=f"dn_q_{q['key']}",
                                   label_visibility="collapsed", placeholder="your answer")
            if b_.button("Check", key=f"dn_check_{q['key']}"):
                if value is None:
                    st.warning("Type a number first.")
                elif densenet_quiz.check_answer(q, value):
                    st.success(f"Right: {q['answer']:,}.")
                else:
                    st.error(f"Not quite: {int(value):,} is not it. Try again, or reveal the answer.")
            with st.expander("Reveal the answer"):
                st.markdown(f"**{q['answer']:,}**: {q['explanation']}")


quiz()
