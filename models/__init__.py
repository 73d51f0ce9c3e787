"""Lesion Lens models: architectures, checkpoints with model cards, preprocessing, predict, Grad-CAM.

Importing this package is cheap; torch loads with the first classifier and TensorFlow only
with the Keras model.
"""

from .registry import CLASSES, MODEL_NAMES, SPECS, default_card, read_card, spec, write_card  # noqa: F401
from .preprocess import ImageError, load_image, normalize, prepare, to_model_size  # noqa: F401
from .loader import MissingWeights, load_classifier, untrained_classifier  # noqa: F401
