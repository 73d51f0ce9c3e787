"""PyTorch classifiers with Grad-CAM family explanations from pytorch-grad-cam.

Speed: the explained prediction is one forward pass. Model parameters never require
grad; a forward hook turns the CAM layer's output into a fresh leaf that does, so
autograd records only pool + linear head, and the backward pass is a few microseconds.
The logits of that same forward are the prediction. One CAM object per method is built
once and its hooks are attached only for the duration of an `explain` call.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from .architectures import LesionNet
from .classifier import Classifier, softmax_np
from .preprocess import model_input
from .registry import TORCH_CAM_METHODS


def cam_class(method: str) -> type:
    """pytorch-grad-cam's class for a method; imported on first use (it pulls in scikit-learn and
    OpenCV: about 1.4 s here, which a plain prediction need not pay)."""
    import pytorch_grad_cam as pgc

    classes = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM,
               "eigencam": pgc.EigenCAM, "layercam": pgc.LayerCAM}
    assert set(classes) == set(TORCH_CAM_METHODS)
    return classes[method]


def _cut_graph_here(module, inputs, output):
    """Forward hook: the CAM layer's output becomes a leaf that requires grad."""
    return output.detach().requires_grad_(True)


class _LogOddsTarget:
    """CAM target: evidence for the label the model gives at its threshold (log-odds)."""

    def __init__(self, threshold: float, temperature: float):
        self.threshold = threshold
        self.temperature = temperature

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        p = softmax_np(output.detach().float().cpu().numpy(), self.temperature)[1]
        diff = output[1] - output[0]
        return diff if p >= self.threshold else -diff


class TorchClassifier(Classifier):
    cam_methods = TORCH_CAM_METHODS

    def __init__(self, model: LesionNet, card: dict[str, Any], device: str | torch.device = "cpu"):
        super().__init__(card)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.mean, self.std = card["mean"], card["std"]
        self._cams: dict[str, Any] = {}

    def _tensor(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).permute(0, 3, 1, 2)
        return model_input(x, self.card)

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(self._tensor(batch)).float().cpu().numpy()

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model.embed(self._tensor(batch)).float().cpu().numpy()

    def _logits_embed(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            emb = self.model.embed(self._tensor(batch))
            logits = self.model.head(self.model.dropout(emb))
            return logits.float().cpu().numpy(), emb.float().cpu().numpy()

    def _explain_embed(self, batch: np.ndarray, method: str, threshold: float | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The explained prediction, and the embedding its forward fed to the head (a pre-hook)."""
        seen: dict[str, torch.Tensor] = {}
        hook = self.model.head.register_forward_pre_hook(lambda m, inputs: seen.__setitem__("emb", inputs[0]))
        try:
            logits, heat = self._explain(batch, method, threshold)
        finally:
            hook.remove()
        return logits, heat, seen["emb"].detach().float().cpu().numpy()[0]

    def _cam(self, method: str):
        cam = self._cams.get(method)
        if cam is None:
            cam = cam_class(method)(model=self.model, target_layers=[self.model.cam_layer(method)])
            cam.activations_and_grads.release()  # hooks go on only inside `_hooks`
            self._cams[method] = cam
        return cam

    @contextlib.contextmanager
    def _hooks(self, cam):
        layer = cam.target_layers[0]
        aag = cam.activations_and_grads
        cut = layer.register_forward_hook(_cut_graph_here)
        aag.handles = [layer.register_forward_hook(aag.save_activation),
                       layer.register_forward_hook(aag.save_gradient)]
        try:
            yield cam
        finally:
            aag.release()
            cut.remove()

    def _explain(self, batch: np.ndarray, method: str, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        cam = self._cam(method)
        x = self._tensor(batch)
        target = _LogOddsTarget(self.threshold if threshold is None else threshold, self.temperature)
        with self._hooks(cam), torch.enable_grad():
            heat = cam(input_tensor=x, targets=[target])
            logits = cam.outputs.detach().float().cpu().numpy()[0]
        return logits, heat[0]


def load_state(path, map_location="cpu") -> dict:
    """A checkpoint's model state dict, loaded without unpickling arbitrary objects."""
    obj = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a PyTorch checkpoint of this project")
    return {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in obj.items()}


def build_for_inference(name: str) -> LesionNet:
    """The architecture only: no download, no ImageNet weights (the checkpoint has them)."""
    from .architectures import build_torch

    model, _ = build_torch(name, weights=None)
    return model

