"""Rules of similarity and spread statistics (SPAI's spectral reconstruction similarity; docs/lrp.md).

- :class:`Cosine`: ``cos(a, b)`` along the last dimension. The norms ‖a‖, ‖b‖ are held constant (as LayerNorm's σ in
  AttnLRP); what remains, Σ_d a_d b_d / (‖a‖‖b‖), is a bilinear form whose terms are split by the uniform rule —
  each factor receives half of every term's ε-share (all of it when only one factor carries relevance). The
  relevance of both inputs sums to the output's (up to ε).
- Standard deviations need no new kind: σ(x) is positively homogeneous of degree 1 and shift-invariant, so the ε rule
  (x ⊙ ∇σ · R/σ) conserves exactly (Euler: Σ_i x_i ∂σ/∂x_i = σ); it amounts to holding the weights
  (x_i − m)/((n − 1)σ) constant, i.e. σ read as a linear map of the centred values.
"""

from __future__ import annotations

import torch

from .kinds import Rule
from .rules import MultiEpsilonFn

NORM_EPS = 1e-8  # torch.nn.functional.cosine_similarity's default eps


def cosine_bilinear(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ_d a_d b_d / (‖a‖‖b‖) along the last dimension with the norms detached (held constant)."""
    scale = a.norm(dim=-1).clamp_min(NORM_EPS) * b.norm(dim=-1).clamp_min(NORM_EPS)
    return (a * b).sum(-1) / scale.detach()


class Cosine(Rule):
    """``cos(a, b)`` (last dimension) with the norms held constant and the uniform rule on the products."""

    def run(self, op, call, tensors, args, kwargs):
        full = list(args[:2])
        keys = op.keys

        def bilinear(*ts: torch.Tensor) -> torch.Tensor:
            ab = list(full)
            for k, t in zip(keys, ts, strict=True):
                ab[k] = t
            return cosine_bilinear(*ab)
        return MultiEpsilonFn.apply(bilinear, op.eps, 1.0 / len(tensors), *tensors)
