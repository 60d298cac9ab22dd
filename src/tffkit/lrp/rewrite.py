"""Model → explainable copy: trace with torch.fx, make convolutions canonical and fold batch norm into
them, give every operation on the relevance path its rule from :mod:`.registry`, find the units.

Steps (one generic mechanism for every architecture):
1. merge re-parameterisable multi-branch blocks (:func:`reparameterize`); trace; leaves are the modules the
   rule table names (:func:`registry.module_rule`);
2. probe: run the graph once on an example batch, recording which values are tensors derived from the
   input ("tainted": shape arithmetic and constants are not) and their shapes;
3. canonicalise: functional convolutions with constant weights become modules, batch norm directly after
   a convolution or a linear layer is folded into it (W' = W·γ/σ, b' = (b − μ)·γ/σ + β);
4. walking back from the output, every operation that relevance reaches gets its rule; operations that
   have none are collected and reported together, naming each with its module path and source line;
5. units (the feature maps of FF-RS) are read off the rewritten graph; the rewritten model's logits are
   checked against the detector's on the probe batch (a mismatch names the first layer that differs); the
   Explainer then checks the copy's relevance there too (:mod:`.check`); max pooling runs channels-last on the
   CPU (:mod:`.pools`: the same values, faster).
The model passed in is never modified.
"""

from __future__ import annotations

import copy
import operator
import re
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..heads import LogOdds
from . import registry as reg
from . import summary
from .composite import Composite
from .concrete import UntraceableError, trace_model
from .pools import fast_max_pools
from .rules import LRPEpsilon, LRPSum
from .trace import (
    NodeInfo,
    Probe,
    canonicalize,
    describe,
    free_name,
    module_of,
    scope_of,
    set_module,
    split_shared_convs,
)
from .transformer import HeadsAttention


class UnsupportedLayerError(ValueError):
    """The model contains operations the LRP engine has no rule for (all of them are listed)."""


class LogitMismatchError(ValueError):
    """The explainable model's logits differ from the detector's (a rule or folding does not fit a layer)."""


@dataclass(frozen=True)
class FeatureLayer:
    """A layer whose outputs are units: ``channels`` units along dimension ``dim`` of its output.

    ``kind``: ``conv`` (convolution channels after BN folding), ``neuron`` (hidden units of a linear layer
    followed by a non-linearity, e.g. a transformer MLP), ``residual`` (residual-stream dimensions of a
    token model), ``head`` (attention heads)."""

    name: str
    channels: int
    index: int
    dim: int = 1
    kind: str = "conv"


_OUT_OF_PLACE = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                 operator.itruediv: operator.truediv}


def _method(name: str):
    """``x.name(…)`` as a function; in-place methods (``mul_``) run out of place (the rules keep their inputs)."""
    if name.endswith("_") and not name.startswith("__"):
        name = name[:-1]

    def call(self, *args, **kwargs):
        return getattr(self, name)(*args, **kwargs)
    call.__name__ = name
    return call


def _lookup(gm: fx.GraphModule, node: fx.Node, composite: Composite) -> reg.Rule | None:
    if node.op == "call_module":
        return composite.module_rule(module_of(gm, node), node.target)
    if node.op == "call_function":
        return composite.function_rule(node.target)
    if node.op == "call_method":
        return composite.method_rule(node.target)
    return None


def _is_sigmoid_node(gm: fx.GraphModule, node: object) -> bool:
    if not isinstance(node, fx.Node):
        return False
    if node.op == "call_module":
        return isinstance(module_of(gm, node), (nn.Sigmoid, nn.Hardsigmoid))
    return (node.op == "call_function" and node.target in (torch.sigmoid, F.sigmoid, F.hardsigmoid)) or \
        (node.op == "call_method" and node.target in ("sigmoid", "sigmoid_"))


def _site(gm: fx.GraphModule, node: fx.Node, info: dict[fx.Node, NodeInfo], config: reg.RuleConfig) -> reg.Site:
    keys = [(i, a) for i, a in enumerate(node.args)] + list(node.kwargs.items())
    live = {k: a for k, a in keys if isinstance(a, fx.Node) and info[a].tainted and info[a].tensor}
    fn = module_of(gm, node) if node.op == "call_module" else (
        _method(node.target) if node.op == "call_method" else _OUT_OF_PLACE.get(node.target, node.target))
    return reg.Site(node, module_of(gm, node), fn, tuple(live), {k: info[a].shape for k, a in live.items()},
                    info[node].shape, config, lambda key: _is_sigmoid_node(gm, live.get(key)))


def _assign(gm: fx.GraphModule, info: dict[fx.Node, NodeInfo], composite: Composite, config: reg.RuleConfig,
            problems: list[str]) -> dict[fx.Node, tuple[reg.Rule, reg.Site]]:
    """Walk back from the output: each operation relevance reaches gets its (resolved) rule."""
    output = next(n for n in gm.graph.nodes if n.op == "output")
    needed = {n for n in output.all_input_nodes if info[n].tainted}
    assigned: dict[fx.Node, tuple[reg.Rule, reg.Site]] = {}
    conv_calls: dict[str, int] = {}
    for node in reversed(list(gm.graph.nodes)):
        if node not in needed or node.op in ("placeholder", "get_attr"):
            continue
        live = [a for a in node.all_input_nodes if info[a].tainted and info[a].tensor]
        rule = _lookup(gm, node, composite)
        if rule is None:
            problems.append(f"{describe(gm, node)}: no rule")
            needed.update(live)
            continue
        site = _site(gm, node, info, config)
        try:
            rule = composite.concrete(rule, site)
            keys = rule.keys(site)
        except ValueError as exc:
            problems.append(f"{describe(gm, node)}: {exc}")
            needed.update(live)
            continue
        if isinstance(rule, reg.Conv):
            conv_calls[node.target] = conv_calls.get(node.target, 0) + 1
            if conv_calls[node.target] == 2:
                problems.append(f"{describe(gm, node)}: the convolution is applied twice, so its feature maps "
                                "would be ambiguous")
        assigned[node] = (rule, site)
        if isinstance(rule, reg.Gradient):
            needed.update(live)
        else:
            needed.update(a for k in keys if isinstance(a := site.arg(k), fx.Node) and info[a].tainted)
    return assigned


def _through_gradient(node: fx.Node, assigned: dict, forward: bool) -> list[fx.Node]:
    """Nodes reached from ``node`` (users if ``forward``, else the first relevance input) across Gradient rules."""
    out, todo = [], [node]
    while todo:
        n = todo.pop()
        nxt = list(n.users) if forward else [a for a in n.all_input_nodes if a in assigned or a.op == "placeholder"][:1]
        for m in nxt:
            out.append(m)
            if isinstance(assigned.get(m, (None,))[0], reg.Gradient):
                todo.append(m)
    return out


def _nonnegative(gm: fx.GraphModule, assigned: dict) -> set[fx.Node]:
    """Nodes whose values are ≥ 0 by construction (ReLU outputs, and selections/max/avg pooling of them)."""
    relus = (nn.ReLU, nn.ReLU6)
    relu_fns = (F.relu, torch.relu, F.relu6)
    out: set[fx.Node] = set()
    for node in gm.graph.nodes:
        rule = assigned.get(node, (None,))[0]
        m = module_of(gm, node)
        ins = [a for a in node.all_input_nodes if a in assigned or a.op == "placeholder"]
        if isinstance(m, relus) or (node.op == "call_function" and node.target in relu_fns) or \
                (node.op == "call_method" and node.target in ("relu", "relu_")):
            out.add(node)
        elif ins and all(a in out for a in ins) and (isinstance(rule, reg.Gradient) or isinstance(
                m, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)) or (node.op == "call_function" and node.target in (
                F.adaptive_avg_pool2d, F.avg_pool2d))):
            out.add(node)
    return out


def _apply(gm: fx.GraphModule, assigned: dict, info: dict[fx.Node, NodeInfo], composite: Composite,
           config: reg.RuleConfig, affine: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[fx.Node, str]:
    """Replace every assigned operation by its rule's module (a convolution reading the input gets the composite's
    ``first`` rule unless its name has a rule of its own). Returns unit kinds of special nodes."""
    nonneg = _nonnegative(gm, assigned)
    kinds: dict[fx.Node, str] = {}
    replaced: set[str] = set()
    residuals: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node not in assigned:
            continue
        rule, site = assigned[node]
        if node.op == "call_module" and node.target in replaced:
            continue
        if isinstance(rule, reg.Conv):
            src = _through_gradient(node, assigned, forward=False)
            reads_input = bool(src) and src[-1].op == "placeholder"
            if reads_input and composite.first is not None and composite.layer_rule(node.target) is None:
                rule = composite.concrete(composite.first, site)
                assigned[node] = (rule, site)
            module = rule.lrp_module(module_of(gm, node), eps=config.eps, nonneg=node.args[0] in nonneg,
                                     pre_bn=affine.get(node.target))
            module.reads_input = reads_input
            kinds[node] = "conv"
        else:
            module = rule.module(site)
            if module is None:
                continue
        if node.op == "call_module":
            set_module(gm, node.target, module)
            replaced.add(node.target)
        else:
            scope = scope_of(node)
            shape = info[node].shape
            if isinstance(module, LRPSum) and shape is not None and len(shape) == 3:
                residuals[scope] = residuals.get(scope, 0) + 1
                base, kinds[node] = f"{scope + '.' if scope else ''}residual{residuals[scope]}", "residual"
            elif isinstance(rule, reg.Attention):
                base, kinds[node] = f"{scope + '.' if scope else ''}heads", "head"
            elif isinstance(module, HeadsAttention):  # a functional multi-head attention: its heads are units
                base = f"{scope + '.' if scope else ''}attention"
            else:
                base = f"_lrp.{node.name}"
            name = free_name(gm, base)
            gm.add_submodule(name, module)
            node.op, node.target = "call_module", name
        if isinstance(module, LRPEpsilon) and isinstance(module.layer, nn.Linear):
            if any(getattr(assigned.get(u, (None,))[0], "activation", False)
                   for u in _through_gradient(node, assigned, forward=True)):
                kinds[node] = "neuron"
    return kinds


def _units(gm: fx.GraphModule, kinds: dict[fx.Node, str], info: dict[fx.Node, NodeInfo]) -> list[FeatureLayer]:
    """Unit layers in forward order; a layer whose first dimension is not the batch (attention inside windows that
    were folded into it, as in MaxViT's (B·windows, heads, L, d)) has no per-image units and is left out."""
    layers: list[FeatureLayer] = []
    seen: set[str] = set()
    batch = next(info[n].shape[0] for n in gm.graph.nodes if n.op == "placeholder")
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target in seen:
            continue
        seen.add(node.target)
        m, shape = module_of(gm, node), info[node].shape
        if isinstance(m, HeadsAttention):
            layers.append(FeatureLayer(f"{node.target}.heads", m.num_heads, len(layers), 1, "head"))
        elif node in kinds and shape is not None and shape[0] == batch:
            kind = kinds[node]
            dim = 1 if kind in ("conv", "head") else len(shape) - 1
            if kind == "head" and len(shape) < 4:  # (B, heads, L, d), or (B, heads, S, L, d): S sequences
                continue
            layers.append(FeatureLayer(node.target, shape[dim], len(layers), dim, kind))
    return layers


def build_explainable(model: nn.Module, example: torch.Tensor, composite: Composite | None = None, *,
                      fake_index: int = 1, check: bool = True) -> tuple[fx.GraphModule, list[FeatureLayer]]:
    """A BN-folded, LRP-ruled copy of ``model`` and its unit layers in forward order.

    ``example``: a probe batch (its shape is what the detector takes). ``composite``: the rules (default:
    :data:`~tffkit.lrp.registry.DEFAULT`). A detector with two outputs is explained as ``out[fake_index] −
    out[other]``. ``model`` itself is never modified. The copy's ``lrp_rules`` lists the rule of every operation on
    the relevance path (:class:`~tffkit.lrp.summary.RuleEntry`)."""
    composite = composite if composite is not None else reg.DEFAULT
    config = reg.RuleConfig(composite.eps, composite.attention)
    net = copy.deepcopy(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    for m in net.modules():  # in-place activations would overwrite tensors the rules and taps still read
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    with torch.no_grad():
        reference = net(example)
    reparameterize(net)
    two_class = isinstance(reference, torch.Tensor) and reference.dim() == 2 and reference.shape[1] == 2
    if two_class:
        net = LogOdds(net, fake_index)
        reference = reference[:, fake_index] - reference[:, 1 - fake_index]
    elif not (isinstance(reference, torch.Tensor) and reference.reshape(len(example), -1).shape[1] == 1):
        shape = tuple(reference.shape) if isinstance(reference, torch.Tensor) else type(reference).__name__
        raise UnsupportedLayerError(f"the detector outputs {shape}; expected one logit per image or two class "
                                    "logits (real, fake)")
    try:
        gm = trace_model(net, composite, example)
    except UntraceableError as exc:
        raise UnsupportedLayerError(str(exc)) from exc
    split_shared_convs(gm, net, composite)
    probe = Probe(gm)
    with torch.no_grad():
        probe.run(example)
    info, problems = probe.info, []
    folded, affine = canonicalize(gm, info, problems, composite)
    assigned = _assign(gm, info, composite, config, problems)
    if problems:
        raise UnsupportedLayerError(f"LRP has no rule for {len(set(problems))} operation(s) of "
                                    f"{type(model).__name__}:\n  {_grouped(problems)}\n(see "
                                    "Composite.with_ in docs/lrp.md)")
    where = summary.origins(gm, assigned)
    kinds = _apply(gm, assigned, info, composite, config, affine)
    layers = _units(gm, kinds, info)
    gm.lrp_rules = summary.entries(gm, assigned, where, {layer.name for layer in layers}, config.attention)
    fast_max_pools(gm)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    if check and example.device.type != "meta":
        _check_logits(model, reference, gm, example, layers, folded, "model." if two_class else "")
    return gm, layers


_PROBLEM = re.compile(r"^((?:function|method) '[^']*') \(graph node '[^']*'\)(.*?): ([^:]*)$")


def _grouped(problems: list[str], shown: int = 3) -> str:
    """The problems, one line per kind of operation and reason: a function or method used at several places is
    listed once with its number of uses and the first ``shown`` places."""
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for p in dict.fromkeys(problems):
        m = _PROBLEM.match(p)
        groups.setdefault((m[1], m[3]) if m else (p, ""), []).append((m[2].strip() if m else "", p))
    lines = []
    for (what, reason), uses in groups.items():
        if len(uses) == 1:
            lines.append(uses[0][1])
            continue
        places = list(dict.fromkeys(where for where, _ in uses))
        more = f"; … and {len(places) - shown} more place(s)" if len(places) > shown else ""
        lines.append(f"{what}: {reason} — {len(uses)} uses, " + "; ".join(places[:shown]) + more)
    return "\n  ".join(lines)


def reparameterize(module: nn.Module) -> None:
    """Merge re-parameterisable multi-branch blocks (RepVGG, MobileOne, FastViT: a module with a ``reparameterize()``
    or ``switch_to_deploy()`` method, as timm's ``reparameterize_model`` finds them) into their single-branch
    inference form, in place; outer blocks first, then whatever they contain afterwards."""
    for child in list(module.children()):
        for method in ("reparameterize", "switch_to_deploy"):
            if callable(getattr(child, method, None)):
                getattr(child, method)()
                break
        reparameterize(child)


def _check_logits(model: nn.Module, reference: torch.Tensor, gm: fx.GraphModule, example: torch.Tensor,
                  layers: list[FeatureLayer], folded: dict[str, str], prefix: str) -> None:
    """Refuse an explainable model whose logits on ``example`` differ from the detector's (``reference``); name
    the first unit layer whose output differs from the original layer it stands for."""
    with torch.no_grad():
        want = reference.reshape(len(example), -1)[:, 0].double()
        got = gm(example).reshape(len(example), -1)[:, 0].double()
    scale = want.abs().max().item()
    if torch.allclose(got, want, rtol=1e-3, atol=1e-4 * max(scale, 1e-3)):
        return
    first = ""
    originals = dict(model.named_modules())
    captured: dict[str, list[torch.Tensor]] = {"orig": [], "lrp": []}
    for layer in layers:
        origin = folded.get(layer.name, layer.name)
        origin = origin[len(prefix):] if origin.startswith(prefix) else origin
        if origin not in originals:
            continue
        outs = []
        for root, name, key in ((model, origin, "orig"), (gm, layer.name, "lrp")):
            h = root.get_submodule(name).register_forward_hook(lambda _m, _i, o, key=key: captured[key].append(o))
            outs.append(h)
        with torch.no_grad():
            model(example)
            gm(example)
        for h in outs:
            h.remove()
        a, b = captured["orig"][-1], captured["lrp"][-1]
        if isinstance(a, torch.Tensor) and a.shape == b.shape and not torch.allclose(
                a, b, rtol=1e-3, atol=1e-4 * max(a.abs().max().item(), 1e-3)):
            first = f"; the first layer that differs is '{layer.name}' (original '{origin}', max |Δ| " \
                    f"{(a - b).abs().max().item():.3g} on values up to {a.abs().max().item():.3g})"
            break
    raise LogitMismatchError(
        f"the explainable copy of {type(model).__name__} gives logits {got.tolist()} where the detector gives "
        f"{want.tolist()}{first}. A module is probably computed differently than its rule assumes (e.g. a "
        "subclass registered as its base, or a fused layer kept as a leaf); register a fitting rule.")
