"""Building and loading detectors: strict keys, safe reading, polarity and preprocessing attached.

:func:`load_detector` returns a module that outputs **the fake logit** (p(fake) = sigmoid(output)) whatever the
detector's head: a (real, fake) head is wrapped in :class:`tffkit.heads.LogOdds`, a one-logit 'real' score is
negated (:mod:`tffkit.heads`), so scoring and explaining agree. The module carries ``tff_preprocessing`` (its
:class:`~tffkit.preprocess.Preprocessing`), ``tff_normalization`` (its mean and std, the LRP engine's pixel
bounds), ``tff_input_shape`` (the probe shape of the LRP engine) and ``tff_detector`` (the zoo name). Weights are
required: a randomly initialised detector only with ``random_weights=True`` (``--random-weights``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..heads import LogOdds, NegatedLogit, default_input_shape
from ..preprocess import Preprocessing
from ..results import display_path
from .checkpoints import extract_state_dict, load_state, read_checkpoint
from .zoo import Detector, resolve


class NoWeightsError(ValueError):
    """No weights were given and random weights were not asked for."""


@dataclass(frozen=True)
class Weights:
    """Where a detector's weights come from: ``path`` (the released file or ours), ``backbone`` (a second file,
    e.g. CLIP's for univfd2023/rine2024), ``trust`` (allow pickled objects), ``random`` (no file: random init)."""

    path: str | None = None
    backbone: str | None = None
    trust: bool = False
    random: bool | str = False  # True: the whole detector; "backbone" / "head": that part (two-file detectors)

    def __str__(self) -> str:
        if self.random is True and self.path is None:
            return "random (no weights: randomly initialised detector)"
        text = display_path(self.path) if self.path else ("RANDOM head" if self.random == "head" else "none")
        if self.random == "backbone":
            return text + " + RANDOM backbone"
        return text + (f" + backbone {display_path(self.backbone)}" if self.backbone else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields (run.json)."""
        return {"path": self.path, "backbone": self.backbone, "trust": self.trust, "random": self.random}


def as_weights(weights: str | os.PathLike | Weights | None) -> Weights:
    """A :class:`Weights` for a path, ``None`` (nothing given) or a :class:`Weights`."""
    if isinstance(weights, Weights):
        return weights
    return Weights(None if weights is None else os.fspath(weights))


def build_detector(arch: str, **kwargs: Any) -> nn.Module:
    """A freshly initialised detector of ``arch`` with its raw head (see :func:`tffkit.detectors.zoo.resolve`)."""
    return resolve(arch).create(**kwargs)


def _outputs(model: nn.Module, det: Detector, shape: tuple[int, ...]) -> int:
    if det.outputs is not None:
        return det.outputs
    param = next(iter(model.parameters()), None)
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, *shape, device=param.device if param is not None else "cpu"))
    n = out.reshape(1, -1).shape[1] if isinstance(out, torch.Tensor) else -1
    if n not in (1, 2):
        raise ValueError(f"detector {det.name!r} outputs {tuple(out.shape) if n != -1 else type(out).__name__} per "
                         "image; expected one logit or two (real, fake)")
    return n


def as_fake_logit(model: nn.Module, det: Detector) -> nn.Module:
    """``model`` with the zoo's polarity applied and its preprocessing and probe shape attached."""
    prep = getattr(model, "tff_preprocessing", None)
    prep = Preprocessing(**prep) if isinstance(prep, dict) else prep or det.preprocessing
    # its tff_input_shape, image_size, timm config, else (3, 224, 224)
    shape = det.input_shape if det.input_shape is not None else default_input_shape(model)
    n = _outputs(model, det, shape)
    if n == 2:
        model = LogOdds(model, det.fake_index)
    elif det.fake_index == 0:
        model = NegatedLogit(model)
    model.tff_preprocessing = prep
    model.tff_normalization = (tuple(prep.mean), tuple(prep.std))
    model.tff_input_shape = tuple(shape)
    model.tff_detector = det.name
    model.tff_code = det.code  # python:FILE.py specs: the file run and its SHA-256 (run.json)
    return model


def load_detector(arch: str, weights: str | os.PathLike | Weights | None = None, device: str | torch.device = "cpu",
                  *, backbone_weights: str | os.PathLike | None = None, trust: bool = False,
                  random_weights: bool = False) -> nn.Module:
    """Build ``arch``, load its weights strictly in the original layout, apply its polarity, move to ``device``,
    eval mode. ``weights`` may be a :class:`Weights` (which then also gives the backbone, trust and random)."""
    w = as_weights(weights)
    w = Weights(w.path, w.backbone or (os.fspath(backbone_weights) if backbone_weights else None),
                w.trust or trust, w.random or random_weights)
    det = resolve(arch)
    if w.random in ("backbone", "head"):
        return _partly_random(det, w, device)
    if w.random and (w.path or w.backbone):
        raise ValueError("--random-weights and --weights/--backbone-weights exclude each other (--random-weights "
                         "backbone or head: one part of univfd2023/rine2024 random)")
    if w.path is None and w.backbone is None:
        if not w.random:
            raise NoWeightsError(f"no weights given for detector {arch!r}: pass --weights FILE (Python: weights=…); "
                                 "to run a randomly initialised detector say so with --random-weights "
                                 "(random_weights=True)")
        return as_fake_logit(det.create(), det).to(device).eval()
    head = read_checkpoint(w.path, w.trust, "weights") if w.path else None
    backbone = read_checkpoint(w.backbone, w.trust, "backbone weights") if w.backbone else None
    kwargs = det.infer(extract_state_dict(head)) if det.infer is not None and head is not None else {}
    model = det.create(**kwargs)
    load_state(model, det.state_dict(head, backbone), det.name, det.layout or None, w.path or w.backbone)
    return as_fake_logit(model, det).to(device).eval()


def preprocessing_of(model: nn.Module) -> Preprocessing:
    """The preprocessing attached by :func:`load_detector` (ImageNet, centre crop 224 for any other module)."""
    prep = getattr(model, "tff_preprocessing", None)
    return prep if isinstance(prep, Preprocessing) else Preprocessing()


def _partly_random(det: Detector, w: Weights, device: str | torch.device) -> nn.Module:
    """A two-file detector with one part randomly initialised (``w.random`` 'backbone' or 'head') and the other
    read from its file: ``--random-weights backbone --weights HEAD`` or ``--random-weights head --backbone-weights
    CLIP``."""
    part, other = w.random, "head" if w.random == "backbone" else "backbone"
    flag = {"head": "--weights", "backbone": "--backbone-weights"}
    if det.backbone_prefix is None:
        raise ValueError(f"--random-weights {part}: detector {det.name!r} has no separate backbone and head files "
                         "(univfd2023, rine2024 have); use --random-weights for the whole detector")
    given = {"head": w.path, "backbone": w.backbone}
    if given[part] is not None or given[other] is None:
        raise ValueError(f"--random-weights {part}: give the {other} file ({flag[other]}) and no {flag[part]}")
    head = read_checkpoint(w.path, w.trust, "weights") if w.path else None
    kwargs = det.infer(extract_state_dict(head)) if det.infer is not None and head is not None else {}
    model = det.create(**kwargs)
    own = model.state_dict()
    backbone = read_checkpoint(w.backbone, w.trust, "backbone weights") if w.backbone else None
    if part == "backbone":
        backbone = {k: v for k, v in own.items() if k.startswith(det.backbone_prefix)}
    else:
        head = {k[len(det.head_prefix):]: v for k, v in own.items() if not k.startswith(det.backbone_prefix)}
    load_state(model, det.state_dict(head, backbone), det.name, det.layout or None, given[other])
    return as_fake_logit(model, det).to(device).eval()
