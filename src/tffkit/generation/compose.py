"""The graph explained when relevance flows into a generator: latent → generator → output mapping → detector
preprocessing (resize, crop, normalisation) → detector → logit, one fx graph under the same rule table.

The output mapping and normalisation form one per-channel affine map (:class:`PixelAffine`) through which
relevance passes unchanged (its offsets are not credited); bilinear resizing gets the ε-rule, cropping and
nearest resizing their gradient (docs/algorithms.md, "LRP into the generator").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data import IMAGENET_MEAN, IMAGENET_STD
from ..lrp import Explainer, FeatureLayer, default_input_shape
from ..lrp.registry import Identity


class PixelAffine(nn.Module):
    """Per-channel y = x·scale + shift: a generator's output range mapped to [0, 1], then normalised."""

    def __init__(self, scale: Sequence[float], shift: Sequence[float]):
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32, device="cpu").reshape(1, -1, 1, 1))
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32, device="cpu").reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


# relevance passes unchanged (its offsets are not credited): the rule travels with the module, and an Explainer
# extends its composite with it (no global table)
PixelAffine.tff_lrp_rules = {PixelAffine: Identity()}


class DetectorInput(nn.Module):
    """Generator output → detector input: range ``out_range`` → [0, 1] → (x − mean)/std, then an optional bilinear
    resize to ``size`` and a centre crop to ``crop`` (the detector's preprocessing)."""

    def __init__(self, out_range: tuple[float, float] = (-1.0, 1.0), mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, size: int | None = None, crop: int | None = None):
        super().__init__()
        lo, hi = out_range
        scale = [1.0 / ((hi - lo) * s) for s in std]
        shift = [(-lo / (hi - lo) - m) / s for m, s in zip(mean, std, strict=True)]
        self.affine, self.size, self.crop = PixelAffine(scale, shift), size, crop
        self.out_range = out_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.affine(x)
        if self.size is not None:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if self.crop is not None:
            top, left = (x.shape[-2] - self.crop) // 2, (x.shape[-1] - self.crop) // 2
            x = x[..., top:top + self.crop, left:left + self.crop]
        return x

    @classmethod
    def for_detector(cls, detector: nn.Module, out_range: tuple[float, float] = (-1.0, 1.0),
                     size: int | None = None, crop: int | None = None) -> DetectorInput:
        """The mapping into ``detector`` with the normalisation :func:`~tffkit.detectors.load_detector` attached
        to it (ImageNet for any other module); resize and crop are the caller's (generated images keep their
        size by default)."""
        from ..detectors import preprocessing_of

        prep = preprocessing_of(detector)
        return cls(out_range, prep.mean, prep.std, size, crop)


class GeneratedDetection(nn.Module):
    """``detector(adapter(generator(z)))``: the logit of a generated image as a function of the generator's input."""

    def __init__(self, generator: nn.Module, detector: nn.Module, adapter: DetectorInput):
        super().__init__()
        self.generator, self.adapter, self.detector = generator, adapter, detector

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.detector(self.adapter(self.generator(z)))


class GeneratorExplainer:
    """LRP from a detector's logit through the image into a generator, on one explainable copy of the composed
    graph (neither network is modified). ``units``: the generator's unit layers (its convolution channels,
    transposed included, and the neurons of linear layers followed by a non-linearity). The layer that writes
    the image (``toRGB``) is left out unless ``include_output_layer``: its channels are the image's colour
    channels, not features, and with so few units each holds a large share of its layer's relevance."""

    def __init__(self, generator: nn.Module, detector: nn.Module, adapter: DetectorInput | None = None,
                 input_shape: Sequence[int] | None = None, include_output_layer: bool = False,
                 **explainer_options):
        param = next(iter(generator.parameters()), None)  # the adapter's buffers follow the generator's device
        self.adapter = (adapter or DetectorInput()).to(param.device if param is not None else "cpu")
        self.input_shape = tuple(input_shape or default_input_shape(generator))
        model = GeneratedDetection(generator, detector, self.adapter)
        self.explainer = Explainer(model, input_shape=self.input_shape, input_rule="zplus", **explainer_options)
        units = [layer for layer in self.explainer.layers if layer.name.startswith("generator.")]
        self.output_layer = self._output_layer(units)
        self.units: list[FeatureLayer] = [u for u in units if include_output_layer or u.name != self.output_layer]
        if not self.units:
            raise ValueError("the generator has no unit layers (convolutions or linear layers)")

    def _output_layer(self, units: list[FeatureLayer]) -> str | None:
        """The unit layer whose output is the generated image itself (up to element-wise maps), if any."""
        probe = torch.zeros(1, *self.input_shape, dtype=self.explainer.dtype, device=self.explainer.device)
        shapes: dict[str, tuple[int, ...]] = {}
        image, _ = self.images_and_logits(probe)
        self.explainer.forward(probe, tap=lambda layer, act: shapes.__setitem__(layer.name, tuple(act.shape)),
                               layers=units)
        last = units[-1].name if units else None
        return last if last is not None and shapes.get(last) == tuple(image.shape) else None

    @property
    def device(self) -> torch.device:
        return self.explainer.device

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Logits (B,) of the generated images (of the explainable copy, so a dropout plan applies)."""
        return self.explainer.forward(z)

    @torch.no_grad()
    def images_and_logits(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The generator's output mapped to [0, 1] (B, C, H, W) and the logits, from one forward of the copy."""
        found: list[torch.Tensor] = []
        module = self.explainer.model.get_submodule("adapter.affine")
        handle = module.register_forward_hook(lambda _m, inp, _out: found.append(inp[0]))
        try:
            logits = self.explainer.forward(z)
        finally:
            handle.remove()
        lo, hi = self.adapter.out_range
        return (found[0] - lo) / (hi - lo), logits
