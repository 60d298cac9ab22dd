"""Detectors: the zoo of published detectors, plain architectures, and safe, strict checkpoint loading.

- :mod:`.zoo` — zoo entries (architecture, preprocessing, polarity, weight layout) and ``torchvision:``,
  ``timm:``, ``python:`` specs; :mod:`.forensic` — the published architectures; :mod:`.archs` — plain ones.
- :mod:`.checkpoints` — reading with ``weights_only=True`` (``trust`` to opt out), strict loading with a message
  naming the keys at fault, Wang et al.'s ``{'model': sd}`` format for what tffkit writes.
- :mod:`.loading` — :func:`load_detector`: weights required (or ``random_weights=True``), output = fake logit
  (:mod:`tffkit.heads`: :class:`~tffkit.heads.NegatedLogit`, :func:`~tffkit.heads.fake_logit`).
"""

from ..heads import NegatedLogit, fake_logit
from .archs import ARCHITECTURES, clip_vit, efficientnet_b0_lukemelas, tiny_convnext, tiny_resnet, tiny_vit
from .checkpoints import (
    CheckpointMismatchError,
    CheckpointReadError,
    UnsafeCheckpointError,
    extract_state_dict,
    load_init_weights,
    load_state,
    read_checkpoint,
    save_checkpoint,
)
from .loading import NoWeightsError, Weights, as_fake_logit, as_weights, build_detector, load_detector, preprocessing_of
from .zoo import ZOO, Detector, resolve

__all__ = ["ARCHITECTURES", "ZOO", "CheckpointMismatchError", "CheckpointReadError", "Detector", "NegatedLogit",
           "NoWeightsError", "UnsafeCheckpointError", "Weights", "as_fake_logit", "as_weights", "build_detector",
           "clip_vit", "efficientnet_b0_lukemelas", "extract_state_dict", "fake_logit", "load_detector",
           "load_init_weights", "load_state", "preprocessing_of", "read_checkpoint", "resolve", "save_checkpoint",
           "tiny_convnext", "tiny_resnet", "tiny_vit"]
