"""Relevance per branch: how much of the logit's relevance reaches each input branch of a detector that marks its
branches — SPAI's original patch, low-pass band and high-pass band (``tff_relevance_branches`` on the model: branch
name → module path of an identity module on that branch's input).

The LRP backward carries relevance as the gradient of the explainable copy, so a hook on a branch module's output
reads the relevance of that branch exactly; the branches' totals sum to the relevance reaching the image (before the
band filters, whose ε rule conserves it) — see docs/lrp.md "SPAI".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn


def relevance_branches(model: nn.Module) -> dict[str, str]:
    """Branch name → module path (from the model root) of the first module carrying ``tff_relevance_branches``;
    empty when the detector marks none."""
    for prefix, module in model.named_modules():
        branches = getattr(module, "tff_relevance_branches", None)
        if isinstance(branches, Mapping):
            return {name: f"{prefix}.{path}" if prefix else path for name, path in branches.items()}
    return {}


@contextlib.contextmanager
def branch_relevance(explainer, branches: Mapping[str, str]) -> Iterator[dict[str, torch.Tensor]]:
    """While active, every :meth:`~tffkit.lrp.Explainer.explain` fills the yielded dict with each branch's relevance
    per image (B,) (the last explanation's)."""
    found: dict[str, torch.Tensor] = {}
    handles = []
    for name, path in branches.items():
        try:
            module = explainer.model.get_submodule(path)
        except AttributeError:
            raise ValueError(f"branch {name!r}: module {path!r} is not in the explainable model") from None

        def on_forward(_m, _inputs, out, name=name) -> torch.Tensor | None:
            if not (isinstance(out, torch.Tensor) and out.requires_grad):
                return None
            out = out.view_as(out)  # a tensor of this branch only (an identity returns its input itself)
            out.register_hook(lambda rel: found.__setitem__(name, rel.detach().flatten(1).sum(1)))
            return out
        handles.append(module.register_forward_hook(on_forward))
    try:
        yield found
    finally:
        for h in handles:
            h.remove()


def band_relevance(explainer, x: torch.Tensor, seed: float | torch.Tensor = 1.0,
                   *, branches: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Each branch's relevance per image (B,) and the input relevance per image (``input``) of one explanation."""
    with branch_relevance(explainer, branches) as found:
        e = explainer.explain(x, seed)
    return {**found, "input": e.input_relevance.flatten(1).sum(1).detach()}


def branch_rows(found: Mapping[str, torch.Tensor], index: int) -> dict[str, float]:
    """``relevance_<branch>`` and ``share_<branch>`` (of the branches' total) of image ``index`` (explain.csv)."""
    values = {name: float(r[index]) for name, r in found.items()}
    total = sum(values.values())
    return {**{f"relevance_{n}": v for n, v in values.items()},
            **{f"share_{n}": v / total if total else float("nan") for n, v in values.items()}}
