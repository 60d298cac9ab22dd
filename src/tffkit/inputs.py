"""What every job does with its inputs: find the data (summary printed and kept for run.json), load the detector
(weights required unless random weights are asked for, and then said), and derive the run's preprocessing."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from torch import nn

from .data import DataSpec, Discovery, Preprocessing, as_spec, discover
from .detectors import Weights, as_weights, load_detector, preprocessing_of
from .layouts import format_summary
from .preprocess import small_image_note


def find_data(data: str | os.PathLike | DataSpec, sets=None, max_per_class: int | None = None,
              max_per_label: int | None = None, main: bool = True, what: str = "") -> Discovery:
    """:func:`tffkit.layouts.discover`, with what was found printed on the main process."""
    found = discover(data, sets, max_per_class, max_per_label)
    if main:
        print((f"{what}: " if what else "") + format_summary(found.summary()), flush=True)
    return found


def load_model(arch: str, weights: str | os.PathLike | Weights | None, device, main: bool = True) -> nn.Module:
    """:func:`tffkit.detectors.load_detector`; a randomly initialised detector is announced."""
    model = load_detector(arch, weights, device)
    w = as_weights(weights)
    if w.random is True and main:
        print(f"note: detector {arch} has RANDOM weights (--random-weights): its scores and explanations describe "
              "an untrained network", flush=True)
    elif w.random and main:
        print(f"note: detector {arch} has a RANDOM {w.random} (--random-weights {w.random}); only its "
              f"{'head' if w.random == 'backbone' else 'backbone'} is read from a file ({w}): its scores and "
              "explanations are not the released detector's", flush=True)
    code = getattr(model, "tff_code", None)
    if code and main:
        print(f"note: detector {arch} ran your Python file {code['file']} (sha256 {code['sha256']}; --trust-code)",
              flush=True)
    return model


def run_preprocessing(model: nn.Module, data: str | os.PathLike | DataSpec | None,
                      small_images: str | None = None) -> Preprocessing:
    """The detector's preprocessing with the small-image policy (``small_images``, else the data spec's; the preset
    is applied by the pass)."""
    small = small_images or (as_spec(data).small_images if data is not None else "upscale")
    return replace(preprocessing_of(model), small_images=small)


def input_record(found: Discovery | list[Discovery], model: nn.Module, prep: Preprocessing, preset: str,
                 weights: Any, n_small: int = 0, main: bool = True) -> dict[str, Any]:
    """run.json fields: the data found, the detector and its polarity, the effective preprocessing and what
    happened to images smaller than the crop (the note is printed on the main process too)."""
    effective = prep.for_preset(preset)
    note = small_image_note(n_small, effective)
    if note and main:
        print(f"note: {note}", flush=True)
    parts = found if isinstance(found, list) else [found]
    w = as_weights(weights)
    random = w.random if w.random in ("backbone", "head") else bool(w.random and w.path is None)
    return {"data_found": [d.summary() for d in parts],
            "detector": {"arch": getattr(model, "tff_detector", None), "weights": w.to_dict(),
                         "random_weights": random, "code": getattr(model, "tff_code", None)},
            "preprocessing": {**effective.to_dict(), "preset": preset}, "n_smaller_than_crop": n_small,
            "small_images_note": note}


def explainer_for(model: nn.Module, prep: Preprocessing | None = None, **kwargs: Any):
    """:class:`tffkit.lrp.Explainer` with the detector's normalisation constants (zβ pixel bounds)."""
    from .lrp import Explainer

    prep = prep or preprocessing_of(model)
    return Explainer(model, mean=prep.mean, std=prep.std, **kwargs)
