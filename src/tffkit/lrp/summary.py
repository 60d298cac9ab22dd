"""Which rule every operation on the relevance path got (``Explainer.rules()``, ``tff rank --show-rules``): the
first thing to read when relevance is not conserved."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.fx as fx

from . import kinds
from .rules import LRPConv
from .trace import module_of, scope_of
from .transformer import HeadsAttention

_LABELS = {
    kinds.Gradient: "gradient (the operation's own)", kinds.Identity: "identity",
    kinds._Gate: "gate (all to the signal)",
    kinds.Epsilon: "epsilon", kinds.Uniform: "uniform (1/n to each factor)", kinds._SumModule: "epsilon (sum)",
    kinds._SoftmaxDim: "softmax (AttnLRP)", kinds._NormOf: "norm (σ constant, epsilon)",
    kinds.BatchNorm: "identity (batch norm not folded)",
}


@dataclass(frozen=True)
class RuleEntry:
    """One operation on the relevance path: ``module`` — the leaf module's path, or the path of the module whose
    forward calls the function/method; ``op`` — the module class, function or ``.method``; ``rule`` — the rule's
    name; ``unit`` — whether its output is a unit layer (``layer``, the explainable model's module name)."""

    module: str
    op: str
    rule: str
    unit: bool
    layer: str
    node: str


def origins(gm: fx.GraphModule, assigned: dict) -> dict[fx.Node, tuple[str, str]]:
    """(module path, operation) of every assigned node, read before the rewrite replaces the operations."""
    out = {}
    for node in assigned:
        if node.op == "call_module":
            out[node] = (node.target, type(module_of(gm, node)).__name__)
        elif node.op == "call_method":
            out[node] = (scope_of(node), f".{node.target}")
        else:
            out[node] = (scope_of(node), getattr(node.target, "__name__", str(node.target)))
    return out


def _label(rule: kinds.Rule, module: object, attention: str) -> str:
    if isinstance(module, LRPConv):
        if module.epsilon:
            return "epsilon"
        if module.gamma is not None:
            return f"gamma (γ = {module.gamma:g})"
        if module.box:
            return "zbox (pixel bounds)"
        return "zplus + flat fallback" if module.flat_fallback else "zplus"
    if isinstance(module, HeadsAttention) or isinstance(
            rule, (kinds.Attention, kinds.MultiheadAttention, kinds.WindowAttention)):
        form = ", gradient form" if "gradient form" in getattr(rule, "label", "") else ""
        return f"attention ({attention}{form})"
    return _LABELS.get(type(rule)) or getattr(rule, "label", type(rule).__name__)


def entries(gm: fx.GraphModule, assigned: dict, where: dict[fx.Node, tuple[str, str]], units: set[str],
            attention: str) -> list[RuleEntry]:
    """The rule table of the rewritten graph ``gm`` in forward order (``where`` from :func:`origins`)."""
    out = []
    for node in gm.graph.nodes:
        if node not in assigned:
            continue
        rule = assigned[node][0]
        module = module_of(gm, node)
        layer = node.target if node.op == "call_module" else ""
        unit = bool(layer) and (layer in units or f"{layer}.heads" in units)
        path, op = where[node]
        out.append(RuleEntry(path or "(top level)", op, _label(rule, module, attention), unit, layer, node.name))
    return out


def rules_text(rows: Sequence[RuleEntry], title: str = "") -> str:
    """The rule table as aligned text: module path, operation, rule, ``unit`` where its output is a unit layer."""
    head = ("module", "operation", "rule", "unit layer")
    cells = [head] + [(r.module, r.op, r.rule, r.layer if r.unit else "") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(3)]
    lines = [f"{title}{len(rows)} operation(s) on the relevance path, "
             f"{sum(r.unit for r in rows)} of them unit layers:"] if title or rows else []
    for c in cells:
        lines.append("  ".join(s.ljust(w) for s, w in zip(c[:3], widths, strict=True)) + "  " + c[3])
    return "\n".join(line.rstrip() for line in lines)
