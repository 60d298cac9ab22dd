"""The relevance self-check (beside the logit check of :func:`~tffkit.lrp.rewrite.build_explainable`): explain the
probe batch once and test, per unit layer, that relevance is finite and of the size the rules allow.

A conservation test proper (Σ R equal from layer to layer) false-alarms on healthy detectors: biases absorb
relevance (the ε rule keeps (z − b)/z of it), the z⁺ rule loses it where a neuron has no positive input,
AttnLRP's softmax rule and gates are not conservative (EfficientNet keeps ~97 %), and with random weights a
probe's logit can be tiny, so Σ R / logit is large without anything being wrong. What a broken rule does
instead is *amplify* relevance: unfolded batch norm after a linear layer (LeViT) or the branches of an
unmerged re-parameterisable block (FastViT) divide by sums that nearly cancel, and the relevance grows by
orders of magnitude layer after layer.

So the check seeds each probe image with its own logit f (relevance then has the units of the logit, and
a tiny f makes tiny relevance instead of huge) and compares every unit layer's relevance mass Σ|R| with the
scale of the detector's own sensitivities: the largest gradient × activation mass Σ|a ∂f/∂a| over the unit
layers and the input (the ordinary gradient, computed through the same copy), or |f| if larger. For an
ε-rule layer relevance *is* gradient × activation, and z⁺ never increases the mass, so a healthy copy stays
near 1. A layer above :data:`LIMIT` times the scale, or with a non-finite value, is reported — the one
nearest the output, where the relevance (which flows from the output to the input) first stops being sane.
Measured values are in docs/algorithms.md §2 (healthy detectors ≤ 2.2; LeViT unfolded 9, FastViT unmerged 24).
It is a coarse check: an error that keeps the mass below the limit (a small FastViT explained unmerged can
stay at 2–4) passes unnoticed; ``rules()`` and ``input_share`` show more.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from .rewrite import FeatureLayer

LIMIT = 5.0  # relevance mass allowed, in units of the largest gradient × activation mass (healthy: ≤ 2.2)


class RelevanceWarning(UserWarning):
    """The explainable copy's relevance is not finite or explodes on the probe batch (see :mod:`.check`)."""


@dataclass
class RelevanceCheck:
    """Outcome of the self-check: per layer (output first, ``input`` last) the largest ratio of relevance mass
    to the scale over the probe images, the fraction of the logit that reaches the input per image, and the
    problem found (None when sane)."""

    ratios: dict[str, float] = field(default_factory=dict)
    input_share: list[float] = field(default_factory=list)
    problem: str | None = None
    layer: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict:
        """JSON-ready (non-finite numbers as None): the outcome, the worst layer and ratio, the input shares."""
        def num(v: float) -> float | None:
            return v if math.isfinite(v) else None

        worst = max(self.ratios.items(), key=lambda kv: kv[1] if math.isfinite(kv[1]) else math.inf,
                    default=(None, 0.0))
        return {"ok": self.ok, "problem": self.problem, "first_bad_layer": self.layer, "worst_layer": worst[0],
                "worst_ratio": num(worst[1]), "limit": LIMIT, "input_share": [num(s) for s in self.input_share]}


class Explains(Protocol):
    """What the check needs of an explainer (:class:`~tffkit.lrp.engine.Explainer`, which runs the check while it is
    built, so this module does not import it): its unit layers, an LRP pass and a gradient pass with taps."""

    layers: Sequence[FeatureLayer]

    def explain(self, images: torch.Tensor, **options: Any) -> Any: ...

    def gradient(self, images: torch.Tensor, **options: Any) -> Any: ...


def _mass(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double().flatten(1).abs().sum(1)


def check_relevance(explainer: Explains, probe: torch.Tensor, *, warn: bool = True) -> RelevanceCheck:
    """Explain ``probe`` once (seed: each image's logit) and compare every unit layer's relevance mass with the
    detector's largest gradient × activation mass; warn (:class:`RelevanceWarning`) naming the layer nearest the
    output where relevance is non-finite or exceeds :data:`LIMIT` times that scale."""
    rel: dict[str, torch.Tensor] = {}
    finite: dict[str, bool] = {}
    grads: dict[str, torch.Tensor] = {}

    def on_relevance(layer, r, _a):
        rel[layer.name] = _mass(r)
        finite[layer.name] = bool(torch.isfinite(r).all())

    e = explainer.explain(probe, seed=lambda logits: logits, tap=on_relevance)
    g = explainer.gradient(probe, seed=1.0, with_activation=True,
                           tap=lambda layer, gr, a: grads.__setitem__(layer.name, _mass(gr * a)))
    rel["input"], finite["input"] = _mass(e.input_relevance), bool(torch.isfinite(e.input_relevance).all())
    grads["input"] = _mass(g.input_relevance * probe)
    f = e.logits.detach().double()
    sensitivity = torch.stack([v for v in grads.values()]).nan_to_num(0.0, 0.0, 0.0).amax(0)
    scale = torch.maximum(sensitivity, f.abs()).clamp_min(torch.finfo(torch.float64).tiny)
    order = [layer.name for layer in sorted(explainer.layers, key=lambda x: -x.index) if layer.name in rel]
    out = RelevanceCheck()
    share = e.input_relevance.detach().double().flatten(1).sum(1) / f
    out.input_share = [float(v) for v in share]
    for name in [*order, "input"]:
        ratio = float((rel[name] / scale).max())
        out.ratios[name] = ratio
        if out.problem is not None:
            continue
        where = f"unit layer '{name}'" if name != "input" else "the input (pixels)"
        if not finite[name] or not math.isfinite(ratio):
            out.problem = f"relevance is not finite at {where}"
        elif ratio > LIMIT:
            out.problem = (f"relevance explodes at {where}: Σ|R| is {ratio:.3g}× the largest gradient×activation "
                           f"mass (limit {LIMIT:g})")
        if out.problem is not None:
            out.layer = name
            above = order[:order.index(name)] if name in order else order
            out.problem += (f" — the first such layer walking from the output (the last sane one above it: "
                            f"'{above[-1]}')" if above else " — already the unit layer nearest the output")
            out.problem += (". A rule does not fit an operation between them; list the rules with "
                            "Explainer.rules() / --show-rules")
    if out.problem is not None and warn:
        warnings.warn(out.problem, RelevanceWarning, stacklevel=3)
    return out
