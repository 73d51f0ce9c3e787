"""The DenseNet lesson's text read off the model: the depth sentence under the block maps and the
quiz, whose answers come from the model object."""

from __future__ import annotations

from typing import Any

from models.anatomy import dense_block_table, dense_blocks, dense_connections, transitions
from models.inside import InsideView


def depth_sentence(view: InsideView) -> str:
    """What changes from the first dense block to the last, in numbers from this photo."""
    a, b = view.blocks[0], view.blocks[-1]
    text = (f"From {a.name} to {b.name} the grid shrinks from {a.height}×{a.width} to {b.height}×{b.width} "
            f"positions while the channels grow from {a.channels} to {b.channels}: early blocks keep fine "
            f"detail (edges, colour, texture) at many positions, late blocks describe larger regions with many "
            f"more features, which is what the classifier reads.")
    if a.cam_area is not None and b.cam_area is not None:
        text += (f" Half of the Grad-CAM heat covers {a.cam_area:.0%} of the photo at {a.name} "
                 f"and {b.cam_area:.0%} at {b.name}.")
    return text


def quiz_questions(model: Any, image_size: int = 224, table: list[dict[str, Any]] | None = None
                   ) -> list[dict[str, Any]]:
    """Questions whose answers are read from the model: key, question, answer (int), explanation."""
    blocks = dense_blocks(model)
    trans = transitions(model)
    table = table if table is not None else dense_block_table(model, image_size)
    qs = []
    b3 = blocks[2] if len(blocks) >= 3 else blocks[-1]
    last_in = b3.layer_inputs[-1]
    qs.append({
        "key": "last_layer_inputs",
        "question": f"How many input channels does the last layer of dense block {b3.index} receive?",
        "answer": last_in,
        "explanation": (f"{b3.channels_in} channels enter block {b3.index}; each of the {b3.layers - 1} layers "
                        f"before the last adds k = {b3.growth}: {b3.channels_in} + {b3.layers - 1}·{b3.growth} "
                        f"= {last_in} (read from that layer's norm1.num_features)."),
    })
    t = trans[1] if len(trans) >= 2 else trans[0]
    qs.append({
        "key": "transition_out",
        "question": f"Dense block {t.index} ends with {t.channels_in} channels. How many leave transition {t.index}?",
        "answer": t.channels_out,
        "explanation": (f"The transition's 1×1 convolution compresses {t.channels_in} to {t.channels_out} "
                        f"channels (θ = {t.compression:g}), then a 2×2 average pool halves the grid."),
    })
    b1 = blocks[0]
    qs.append({
        "key": "connections",
        "question": (f"Dense block {b1.index} has {b1.layers} layers. How many direct connections link its input "
                     f"and its layers (layer l receives one from each of the l nodes before it)?"),
        "answer": dense_connections(b1.layers),
        "explanation": (f"1 + 2 + … + {b1.layers} = {b1.layers}·{b1.layers + 1}/2 = "
                        f"{dense_connections(b1.layers)}; a plain chain of the same depth has {b1.layers}."),
    })
    last = [r for r in table if r["kind"] == "dense block"][-1]
    first_block = [r for r in table if r["kind"] == "dense block"][0]
    qs.append({
        "key": "last_block_side",
        "question": (f"For a {image_size}×{image_size} photo, what is the side length of the feature maps "
                     f"after {last['stage']}?"),
        "answer": last["output_hw"][0],
        "explanation": (f"The stem shrinks {image_size} px to {first_block['output_hw'][0]} "
                        f"({first_block['output_size']} after {first_block['stage']}); each transition's "
                        f"pooling halves the side again, giving {last['output_size']} after {last['stage']}."),
    })
    return qs


def check_answer(question: dict[str, Any], value: float | int | None) -> bool:
    return value is not None and int(round(float(value))) == int(question["answer"])
