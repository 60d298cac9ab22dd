"""Model → explainable copy: trace with torch.fx, fold batch norm, attach an LRP rule to every op.

Architecture knowledge lives here and only here: which module and function types map to which
rule of SPEC §2. Anything on the path from the input to the logit that has no rule raises
:class:`UnsupportedLayerError` naming it — there is no silent fallback to a plain gradient.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from . import rules


class UnsupportedLayerError(TypeError):
    """The model contains an operation the LRP engine has no rule for."""


@dataclass(frozen=True)
class FeatureLayer:
    """A layer whose output channels are feature maps (a convolution output after BN folding)."""

    name: str
    channels: int
    index: int


ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Hardswish, nn.Mish)
ACTIVATION_NAMES = {"Swish", "MemoryEfficientSwish"}  # efficientnet-pytorch's x·sigmoid(x)
TRANSPARENT_TYPES = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Flatten, nn.MaxPool2d)
TRANSPARENT_NAMES = {"StochasticDepth"}  # identity in eval mode
POOL_TYPES = (nn.AdaptiveAvgPool2d, nn.AvgPool2d)
SIGMOID_FUNCTIONS = {torch.sigmoid, F.sigmoid, F.hardsigmoid}
RELU_FUNCTIONS = {F.relu: nn.ReLU, torch.relu: nn.ReLU, F.silu: nn.SiLU, F.gelu: nn.GELU,
                  F.hardswish: nn.Hardswish}
TRANSPARENT_FUNCTIONS = {torch.flatten, torch.reshape, torch.cat, torch.squeeze, torch.unsqueeze, F.dropout,
                         F.max_pool2d, getattr, operator.getitem}
TRANSPARENT_METHODS = {"flatten", "reshape", "view", "contiguous", "squeeze", "unsqueeze", "size", "dim"}
ADD_TARGETS = {operator.add, operator.iadd, torch.add, "add", "add_"}
MUL_TARGETS = {operator.mul, operator.imul, torch.mul, "mul", "mul_"}
NONNEG_TYPES = (nn.ReLU, nn.ReLU6)


class _Tracer(fx.Tracer):
    """Keeps convolutions (incl. padding subclasses) and activation modules as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (isinstance(m, nn.Conv2d) or type(m).__name__ in ACTIVATION_NAMES | TRANSPARENT_NAMES
                or super().is_leaf_module(m, qualname))


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _set_module(gm: fx.GraphModule, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, attr, module)


def _describe(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {type(_module(gm, node)).__name__} at '{node.target}'"
    target = getattr(node.target, "__name__", node.target)
    return f"{node.op} '{target}' (graph node '{node.name}')"


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """W' = W·γ/σ, b' = (b − μ)·γ/σ + β with σ = sqrt(var + eps), written into ``conv`` in place."""
    with torch.no_grad():
        gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
        beta = bn.bias if bn.affine else torch.zeros_like(bn.running_var)
        scale = gamma / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        new_bias = (bias - bn.running_mean) * scale + beta
        conv.bias = nn.Parameter(new_bias.detach().clone(), requires_grad=False)


def _fold_all(gm: fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        bn = _module(gm, node)
        if not isinstance(bn, nn.BatchNorm2d):
            continue
        src = node.args[0]
        conv = _module(gm, src) if isinstance(src, fx.Node) else None
        if not isinstance(conv, nn.Conv2d) or len(src.users) != 1:
            raise UnsupportedLayerError(f"{_describe(gm, node)} does not directly follow a convolution; "
                                        "only conv→BN pairs can be folded")
        with torch.no_grad():  # the BN map raw ↦ scale·raw + zero, kept for the pre-BN site (public code)
            zero = torch.zeros(1, bn.num_features, 1, 1, dtype=conv.weight.dtype, device=conv.weight.device)
            conv._tff_pre_bn_zero = bn(zero).reshape(-1)
            conv._tff_pre_bn_scale = bn(zero + 1).reshape(-1) - conv._tff_pre_bn_zero
        fold_batchnorm(conv, bn)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        _set_module(gm, node.target, nn.Identity())


def _is_sigmoid(gm: fx.GraphModule, node: object) -> bool:
    if not isinstance(node, fx.Node):
        return False
    if node.op == "call_module":
        return isinstance(_module(gm, node), (nn.Sigmoid, nn.Hardsigmoid))
    return (node.op == "call_function" and node.target in SIGMOID_FUNCTIONS) or \
        (node.op == "call_method" and node.target == "sigmoid")


def _ancestors(node: fx.Node) -> set[fx.Node]:
    seen, stack = set(), [node]
    while stack:
        for parent in stack.pop().all_input_nodes:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def _gates(gm: fx.GraphModule) -> tuple[dict[fx.Node, tuple[fx.Node, fx.Node]], set[fx.Node]]:
    """Gate multiplications → (signal, gate), and every node that only feeds a gate."""
    gates, gate_path = {}, set()
    for node in gm.graph.nodes:
        if node.op not in ("call_function", "call_method") or node.target not in MUL_TARGETS:
            continue
        a, b = node.args[0], node.args[1]
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
            continue  # scaling by a constant: rejected below as an op without a rule
        if _is_sigmoid(gm, b) != _is_sigmoid(gm, a):
            signal, g = (a, b) if _is_sigmoid(gm, b) else (b, a)
        else:
            raise UnsupportedLayerError(f"{_describe(gm, node)}: a product of two tensors is only supported "
                                        "as a sigmoid gate (squeeze-excitation, Swish)")
        gates[node] = (signal, g)
        keep = _ancestors(signal) | {signal}
        stack = [g]
        while stack:
            n = stack.pop()
            if n in keep or n in gate_path:
                continue
            gate_path.add(n)
            stack.extend(n.all_input_nodes)
    return gates, gate_path


def _nonnegative(gm: fx.GraphModule) -> set[fx.Node]:
    """Nodes whose values are ≥ 0 by construction (ReLU outputs and pooling/reshapes of them)."""
    out: set[fx.Node] = set()
    for node in gm.graph.nodes:
        m = _module(gm, node)
        first = node.args[0] if node.args else None
        if isinstance(m, NONNEG_TYPES) or (node.op == "call_function" and node.target in (F.relu, torch.relu)):
            out.add(node)
        elif (isinstance(m, (nn.MaxPool2d, nn.Identity, nn.Flatten) + POOL_TYPES)
              or (node.op == "call_method" and node.target in TRANSPARENT_METHODS)) and first in out:
            out.add(node)
    return out


def build_explainable(model: nn.Module, input_low: torch.Tensor | None, input_high: torch.Tensor | None,
                      eps: float = 1e-6) -> tuple[fx.GraphModule, list[FeatureLayer]]:
    """A BN-folded, LRP-ruled copy of ``model`` and its feature-map layers in forward order.

    Convolutions reading the input use the zβ rule with per-channel bounds when ``input_low`` /
    ``input_high`` are given, else the general β = 0 rule. ``model`` itself is never modified.
    """
    net = copy.deepcopy(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    gm = fx.GraphModule(net, _Tracer().trace(net))
    _fold_all(gm)
    gates, gate_path = _gates(gm)
    nonneg = _nonnegative(gm)
    output = next(n for n in gm.graph.nodes if n.op == "output")
    main_path = (_ancestors(output) - gate_path)
    layers: list[FeatureLayer] = []
    counter = 0
    for node in list(gm.graph.nodes):
        if node not in main_path or node.op in ("placeholder", "get_attr", "output"):
            continue
        first = node.args[0] if node.args else None
        m = _module(gm, node)
        if m is not None:
            if isinstance(m, (rules.LRPPass, rules.LRPEpsilon)):
                continue  # a module called more than once (e.g. a block's shared ReLU), already wrapped
            if isinstance(m, rules.LRPConv):
                raise UnsupportedLayerError(f"convolution '{node.target}' is applied twice; its feature maps "
                                            "would be ambiguous")
            if isinstance(m, nn.Conv2d):
                reads_input = isinstance(first, fx.Node) and first.op == "placeholder"
                box = reads_input and input_low is not None
                lrp_conv = rules.LRPConv(m, eps, nonneg_input=first in nonneg,
                                         low=input_low if box else None, high=input_high if box else None)
                lrp_conv.reads_input = reads_input
                _set_module(gm, node.target, lrp_conv)
                layers.append(FeatureLayer(node.target, m.out_channels, len(layers)))
            elif isinstance(m, (nn.Linear, *POOL_TYPES)):
                _set_module(gm, node.target, rules.LRPEpsilon(m, eps))
            elif isinstance(m, ACTIVATION_TYPES) or type(m).__name__ in ACTIVATION_NAMES:
                if hasattr(m, "inplace"):
                    m.inplace = False
                _set_module(gm, node.target, rules.LRPPass(m))
            elif not (isinstance(m, TRANSPARENT_TYPES) or type(m).__name__ in TRANSPARENT_NAMES):
                raise UnsupportedLayerError(f"LRP has no rule for {_describe(gm, node)}")
            continue
        if node in gates:
            signal, g = gates[node]
            node.target, node.op, node.args, node.kwargs = rules.gate, "call_function", (signal, g), {}
        elif node.target in ADD_TARGETS and all(isinstance(a, fx.Node) for a in node.args[:2]):
            node.target, node.op, node.args, node.kwargs = rules.epsilon_sum, "call_function", node.args[:2], {
                "eps": eps}
        elif node.op == "call_function" and node.target in RELU_FUNCTIONS:
            counter += 1
            name = f"_lrp_activation_{counter}"
            gm.add_submodule(name, rules.LRPPass(RELU_FUNCTIONS[node.target]()))
            node.op, node.target, node.args, node.kwargs = "call_module", name, (first,), {}
        elif node.op == "call_function" and node.target is F.adaptive_avg_pool2d:
            counter += 1
            name = f"_lrp_pool_{counter}"
            size = node.args[1] if len(node.args) > 1 else node.kwargs["output_size"]
            gm.add_submodule(name, rules.LRPEpsilon(nn.AdaptiveAvgPool2d(size), eps))
            node.op, node.target, node.args, node.kwargs = "call_module", name, (first,), {}
        elif node.op == "call_function" and node.target in TRANSPARENT_FUNCTIONS:
            continue
        elif node.op == "call_function" and getattr(node.target, "__name__", "") == "stochastic_depth":
            continue  # torchvision's functional stochastic depth: identity in eval mode
        elif node.op == "call_method" and node.target in TRANSPARENT_METHODS:
            continue
        else:
            raise UnsupportedLayerError(f"LRP has no rule for {_describe(gm, node)}")
    gm.graph.lint()
    gm.recompile()
    return gm, layers
