"""Load any of the four models from a checkpoint and its model card."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .classifier import Classifier
from .registry import card_path, default_card, read_card, shipped_checkpoint, spec


class MissingWeights(FileNotFoundError):
    """No trained checkpoint for a model; the message says how to make one."""


def train_hint(name: str) -> str:
    return (f"train it with `python -m training --model {name} --data DIR` (or on the Training page) "
            f"and promote the run, or put a checkpoint at models/weights/{name}{spec(name).checkpoint_ext}")


def find_card(checkpoint: Path) -> dict[str, Any]:
    """The card beside a checkpoint: <stem>.json, else card.json in the same folder."""
    for candidate in (card_path(checkpoint), checkpoint.parent / "card.json"):
        if candidate.is_file():
            return read_card(candidate)
    raise MissingWeights(f"{checkpoint}: no model card found beside it ({card_path(checkpoint).name} or card.json)")


def load_classifier(name: str, checkpoint: str | os.PathLike | None = None, device: str = "cpu") -> Classifier:
    """The classifier for `name` from `checkpoint` (default: the shipped weights)."""
    s = spec(name)
    path = Path(checkpoint) if checkpoint else shipped_checkpoint(name)
    if not path.exists():
        if checkpoint:
            raise MissingWeights(f"{path}: no such checkpoint")
        raise MissingWeights(f"{s.display} has no trained weights yet: {train_hint(name)}")
    card = find_card(path)
    if card["name"] != name:
        raise ValueError(f"{path}: the model card is for {card['name']!r}, not {name!r}")
    if s.framework == "keras":
        from .keras_model import KerasClassifier

        return KerasClassifier.from_checkpoint(path, card)
    from .torch_classifier import TorchClassifier, build_for_inference, load_state

    model = build_for_inference(name)
    model.load_state_dict(load_state(path))
    return TorchClassifier(model, card, device=device)


def untrained_classifier(name: str, image_size: int | None = None, seed: int = 0) -> Classifier:
    """A randomly initialised model (for teaching: what an untrained network 'sees')."""
    s = spec(name)
    card = default_card(name, image_size, init="random")
    if s.framework == "keras":
        from .keras_model import KerasClassifier, build_keras_cnn

        import keras
        keras.utils.set_random_seed(seed)
        return KerasClassifier(build_keras_cnn(card["image_size"]), card)
    import torch

    from .torch_classifier import TorchClassifier, build_for_inference

    torch.manual_seed(seed)
    return TorchClassifier(build_for_inference(name), card)


def save_torch_weights(model, card: dict[str, Any], path: str | os.PathLike, half: bool = False) -> Path:
    """Write `<path>` (state dict, optionally fp16) and `<path>.json` (the card), each atomically."""
    import io

    import torch

    from .registry import atomic_write_bytes, write_card

    path = Path(path)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"model": state, "format": 1}, buf)
    atomic_write_bytes(path, buf.getvalue())
    write_card(card_path(path), card)
    return path
