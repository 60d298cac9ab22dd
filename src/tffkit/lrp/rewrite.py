"""Model → explainable copy: trace with torch.fx, make convolutions canonical and fold batch norm into
them, give every operation on the relevance path its rule from :mod:`.registry`, find the units.

Steps (one generic mechanism for every architecture):
1. trace; leaves are the modules the rule table names (:func:`registry.module_rule`);
2. probe: run the graph once on an example batch, recording which values are tensors derived from the
   input ("tainted": shape arithmetic and constants are not) and their shapes;
3. canonicalise: functional convolutions with constant weights become modules, batch norm directly after
   a convolution is folded into it (W' = W·γ/σ, b' = (b − μ)·γ/σ + β);
4. walking back from the output, every operation that relevance reaches gets its rule; operations that
   have none are collected and reported together, naming each with its module path and source line;
5. units (the feature maps of FF-RS) are read off the rewritten graph; the rewritten model's logits are
   checked against the detector's on the probe batch (a mismatch names the first layer that differs).
The model passed in is never modified.
"""

from __future__ import annotations

import contextlib
import copy
import operator
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from . import registry as reg
from .rules import LRPConv, LRPEpsilon, LRPSum
from .transformer import LRPMultiheadAttention


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


class LogOdds(nn.Module):
    """A two-class detector as one logit: ``out[:, fake] − out[:, real]`` (so sigmoid gives p(fake))."""

    def __init__(self, model: nn.Module, fake_index: int = 1):
        super().__init__()
        self.model, self.fake_index = model, fake_index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[:, self.fake_index] - out[:, 1 - self.fake_index]


@dataclass
class _Info:
    tensor: bool
    tainted: bool
    shape: tuple[int, ...] | None = None
    value: torch.Tensor | None = field(default=None, repr=False)


class _Tracer(fx.Tracer):
    """Leaves are the modules with a rule; containers and everything else are traced into."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return False
        if reg.module_rule(m) is not None:
            return True
        registered_base = any(c in reg.MODULE_RULES or reg._qualname(c) in reg.NAMED_RULES for c in type(m).__mro__)
        return not registered_base and super().is_leaf_module(m, qualname)


@contextlib.contextmanager
def _traceable_batch_norm() -> Iterator[None]:
    """While tracing, batch norm's input-rank check (``if input.dim() != 4: raise``, not traceable) is skipped,
    so a BN subclass whose forward calls ``super().forward`` can be traced into."""
    classes = [c for c in vars(nn.modules.batchnorm).values()
               if isinstance(c, type) and "_check_input_dim" in vars(c)]
    saved = {c: vars(c)["_check_input_dim"] for c in classes}
    for c in classes:
        c._check_input_dim = lambda self, input: None
    try:
        yield
    finally:
        for c, method in saved.items():
            c._check_input_dim = method


class _Probe(fx.Interpreter):
    """Runs the graph once, recording per node: tensor-valued, input-derived, shape, constant value."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.info: dict[fx.Node, _Info] = {}

    def run_node(self, n: fx.Node):
        result = super().run_node(n)
        tensor = _has_tensor(result)
        tainted = n.op == "placeholder" or (tensor and any(self.info[a].tainted and self.info[a].tensor
                                                             for a in n.all_input_nodes))
        is_t = isinstance(result, torch.Tensor)
        self.info[n] = _Info(tensor, tainted, tuple(result.shape) if is_t else None,
                             result if is_t and not tainted else None)
        return result


def _failing_module(exc: BaseException) -> str:
    """`` in module <Class>`` for the innermost module whose forward was being traced when ``exc`` was raised."""
    tb, found = exc.__traceback__, ""
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and not isinstance(owner, fx.GraphModule):
            found = f" in module {type(owner).__module__}.{type(owner).__qualname__}"
        tb = tb.tb_next
    return found


def _has_tensor(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    return isinstance(value, (tuple, list)) and any(_has_tensor(v) for v in value)


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _set_module(gm: fx.GraphModule, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, attr, module)


def _scope(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack.values()))[0] if stack else ""


def _source_line(node: fx.Node) -> str:
    """``file:line`` and code of the user frame that created ``node`` (fx records the stack)."""
    frames = re.findall(r'File "([^"]+)", line (\d+), in [^\n]+\n\s*([^\n]*)', node.stack_trace or "")
    user = [f for f in frames if "/torch/fx/" not in f[0] and "/torch/nn/modules/module.py" not in f[0]]
    if not user:
        return ""
    path, line, code = user[-1]
    return f" at {path.split('site-packages/')[-1]}:{line} `{code.strip()}`"


def _describe(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {type(_module(gm, node)).__name__} at '{node.target}'"
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    kind = "method" if node.op == "call_method" else "function"
    where = f" in module '{_scope(node)}'" if _scope(node) else ""
    return f"{kind} '{target}' (graph node '{node.name}'){where}{_source_line(node)}"


def _free_name(gm: fx.GraphModule, base: str) -> str:
    names = dict(gm.named_modules())
    if base not in names:
        return base
    i = 1
    while f"{base}{i}" in names:
        i += 1
    return f"{base}{i}"


def fold_affine(conv: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Fold a per-output-channel affine map y ↦ scale·y + shift into ``conv`` (weights and bias), in place."""
    transposed = isinstance(conv, nn.modules.conv._ConvTransposeNd)
    w = conv.weight
    with torch.no_grad():
        if transposed:  # (in, out/groups, …): out channels on dim 1 (groups = 1 here)
            w.copy_(w * scale.reshape(1, -1, *([1] * (w.dim() - 2))))
        else:
            w.copy_(w * scale.reshape(-1, *([1] * (w.dim() - 1))))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
        conv.bias = nn.Parameter((bias * scale + shift).detach().clone(), requires_grad=False)


def fold_batchnorm(conv: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """W' = W·γ/σ, b' = (b − μ)·γ/σ + β with σ = sqrt(var + eps), written into ``conv`` in place."""
    _fold_bn(conv, bn.running_mean, bn.running_var, bn.weight if bn.affine else None,
             bn.bias if bn.affine else None, bn.eps)


def _fold_bn(conv: nn.Module, mean, var, gamma, beta, eps: float) -> None:
    with torch.no_grad():
        gamma = gamma if gamma is not None else torch.ones_like(var)
        beta = beta if beta is not None else torch.zeros_like(var)
        scale = gamma / torch.sqrt(var + eps)
        shift = beta - mean * scale
        # the BN map raw ↦ scale·raw + shift, kept for the pre-BN site (public code)
        conv._tff_pre_bn_scale, conv._tff_pre_bn_zero = scale.clone(), shift.clone()
    fold_affine(conv, scale, shift)


_CONV_MODULES = {F.conv1d: nn.Conv1d, F.conv2d: nn.Conv2d, F.conv3d: nn.Conv3d,
                 F.conv_transpose1d: nn.ConvTranspose1d, F.conv_transpose2d: nn.ConvTranspose2d}
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_T_ARGS = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")


def _conv_module(node: fx.Node, info: dict[fx.Node, _Info]) -> nn.Module:
    """An nn.ConvNd equal to a functional convolution node whose weight (and bias) are constants."""
    cls = _CONV_MODULES[node.target]
    transposed = issubclass(cls, nn.modules.conv._ConvTransposeNd)
    names = _CONV_T_ARGS if transposed else _CONV_ARGS
    args = {**dict(zip(names, node.args, strict=False)), **node.kwargs}

    def const(key):
        a = args.get(key)
        if isinstance(a, fx.Node):
            if info[a].tainted or info[a].value is None:
                raise ValueError("a convolution whose weights depend on the input")
            return info[a].value
        return a

    w, b = const("weight"), const("bias")
    groups = args.get("groups", 1)
    extra = {k: args[k] for k in ("stride", "padding", "dilation", "output_padding") if k in args}
    in_ch, out_ch = (w.shape[0], w.shape[1] * groups) if transposed else (w.shape[1] * groups, w.shape[0])
    conv = cls(in_ch, out_ch, tuple(w.shape[2:]), groups=groups, bias=b is not None, device=w.device,
               dtype=w.dtype, **extra)
    with torch.no_grad():
        conv.weight.copy_(w)
        if b is not None:
            conv.bias.copy_(b)
    return conv.requires_grad_(False)


def _is_conv(m: nn.Module | None) -> bool:
    return m is not None and isinstance(reg.module_rule(m), reg.Conv)


def _canonicalize(gm: fx.GraphModule, info: dict[fx.Node, _Info], problems: list[str]) -> dict[str, str]:
    """Functional convolutions → modules; BN after a convolution folded. Returns {conv name: BN name}."""
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target in _CONV_MODULES and info[node].tainted:
            try:
                conv = _conv_module(node, info)
            except ValueError as exc:
                problems.append(f"{_describe(gm, node)}: {exc}")
                continue
            name = _free_name(gm, f"{_scope(node)}.conv" if _scope(node) else "conv")
            gm.add_submodule(name, conv)
            node.op, node.target, node.args, node.kwargs = "call_module", name, (node.args[0],), {}
    for node in gm.graph.nodes:
        if node.kwargs.get("inplace") is True:
            node.kwargs = {**node.kwargs, "inplace": False}
    folded: dict[str, str] = {}
    for node in list(gm.graph.nodes):
        bn = _module(gm, node)
        if isinstance(bn, nn.modules.batchnorm._BatchNorm) and not bn.training:
            params = (bn.running_mean, bn.running_var, bn.weight if bn.affine else None,
                      bn.bias if bn.affine else None, bn.eps)
        elif node.op == "call_function" and node.target is F.batch_norm:
            names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
            args = {**dict(zip(names, node.args, strict=False)), **node.kwargs}
            if args.get("training", False):
                continue
            params = tuple(info[args[k]].value if isinstance(args.get(k), fx.Node) else args.get(k)
                           for k in ("running_mean", "running_var", "weight", "bias"))
            params = (*params, args.get("eps", 1e-5))
        else:
            continue
        src = node.args[0]
        conv = _module(gm, src) if isinstance(src, fx.Node) else None
        if not info[node].tainted or not _is_conv(conv) or len(src.users) != 1 or params[0] is None:
            continue
        _fold_bn(conv, *params)
        folded[src.target] = node.target if node.op == "call_module" else _scope(node)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    return folded


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


def _lookup(gm: fx.GraphModule, node: fx.Node) -> reg.Rule | None:
    if node.op == "call_module":
        return reg.module_rule(_module(gm, node))
    if node.op == "call_function":
        return reg.function_rule(node.target)
    if node.op == "call_method":
        return reg.method_rule(node.target)
    return None


def _is_sigmoid_node(gm: fx.GraphModule, node: object) -> bool:
    if not isinstance(node, fx.Node):
        return False
    if node.op == "call_module":
        return isinstance(_module(gm, node), (nn.Sigmoid, nn.Hardsigmoid))
    return (node.op == "call_function" and node.target in (torch.sigmoid, F.sigmoid, F.hardsigmoid)) or \
        (node.op == "call_method" and node.target in ("sigmoid", "sigmoid_"))


def _site(gm: fx.GraphModule, node: fx.Node, info: dict[fx.Node, _Info], config: reg.RuleConfig) -> reg.Site:
    keys = [(i, a) for i, a in enumerate(node.args)] + list(node.kwargs.items())
    live = {k: a for k, a in keys if isinstance(a, fx.Node) and info[a].tainted and info[a].tensor}
    fn = _module(gm, node) if node.op == "call_module" else (
        _method(node.target) if node.op == "call_method" else _OUT_OF_PLACE.get(node.target, node.target))
    return reg.Site(node, _module(gm, node), fn, tuple(live), {k: info[a].shape for k, a in live.items()},
                    info[node].shape, config, lambda key: _is_sigmoid_node(gm, live.get(key)))


def _assign(gm: fx.GraphModule, info: dict[fx.Node, _Info], config: reg.RuleConfig,
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
        rule = _lookup(gm, node)
        if rule is None:
            problems.append(f"{_describe(gm, node)}: no rule")
            needed.update(live)
            continue
        site = _site(gm, node, info, config)
        try:
            rule = rule.resolve(site)
            keys = rule.keys(site)
        except ValueError as exc:
            problems.append(f"{_describe(gm, node)}: {exc}")
            needed.update(live)
            continue
        if isinstance(rule, reg.Conv):
            conv_calls[node.target] = conv_calls.get(node.target, 0) + 1
            if conv_calls[node.target] == 2:
                problems.append(f"{_describe(gm, node)}: the convolution is applied twice, so its feature maps "
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
        m = _module(gm, node)
        ins = [a for a in node.all_input_nodes if a in assigned or a.op == "placeholder"]
        if isinstance(m, relus) or (node.op == "call_function" and node.target in relu_fns) or \
                (node.op == "call_method" and node.target in ("relu", "relu_")):
            out.add(node)
        elif ins and all(a in out for a in ins) and (isinstance(rule, reg.Gradient) or isinstance(
                m, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)) or (node.op == "call_function" and node.target in (
                F.adaptive_avg_pool2d, F.avg_pool2d))):
            out.add(node)
    return out


def _apply(gm: fx.GraphModule, assigned: dict, info: dict[fx.Node, _Info], config: reg.RuleConfig,
           low: torch.Tensor | None, high: torch.Tensor | None) -> dict[fx.Node, str]:
    """Replace every assigned operation by its rule's module. Returns unit kinds of special nodes."""
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
            conv = _module(gm, node)
            src = _through_gradient(node, assigned, forward=False)
            reads_input = bool(src) and src[-1].op == "placeholder"
            box = reads_input and low is not None
            depthwise = getattr(conv, "groups", 1) > 1 and conv.groups == getattr(conv, "in_channels", 0)
            flat = config.zplus_fallback == "all" or (config.zplus_fallback == "depthwise" and depthwise)
            module = LRPConv(conv, config.eps, nonneg_input=node.args[0] in nonneg, low=low if box else None,
                             high=high if box else None, flat_fallback=flat)
            module.reads_input = reads_input
            module.epsilon = reads_input and config.input_epsilon
            kinds[node] = "conv"
        else:
            module = rule.module(site)
            if module is None:
                continue
        if node.op == "call_module":
            _set_module(gm, node.target, module)
            replaced.add(node.target)
        else:
            scope = _scope(node)
            shape = info[node].shape
            if isinstance(module, LRPSum) and shape is not None and len(shape) == 3:
                residuals[scope] = residuals.get(scope, 0) + 1
                base, kinds[node] = f"{scope + '.' if scope else ''}residual{residuals[scope]}", "residual"
            elif isinstance(rule, reg.Attention):
                base, kinds[node] = f"{scope + '.' if scope else ''}heads", "head"
            else:
                base = f"_lrp.{node.name}"
            name = _free_name(gm, base)
            gm.add_submodule(name, module)
            node.op, node.target = "call_module", name
        if isinstance(module, LRPEpsilon) and isinstance(module.layer, nn.Linear) or (
                isinstance(rule, reg.Epsilon) and node.op == "call_function" and node.target is F.linear):
            if any(getattr(assigned.get(u, (None,))[0], "activation", False)
                   for u in _through_gradient(node, assigned, forward=True)):
                kinds[node] = "neuron"
    return kinds


def _units(gm: fx.GraphModule, kinds: dict[fx.Node, str], info: dict[fx.Node, _Info]) -> list[FeatureLayer]:
    layers: list[FeatureLayer] = []
    seen: set[str] = set()
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target in seen:
            continue
        seen.add(node.target)
        m, shape = _module(gm, node), info[node].shape
        if isinstance(m, LRPMultiheadAttention):
            layers.append(FeatureLayer(f"{node.target}.heads", m.num_heads, len(layers), 1, "head"))
        elif node in kinds and shape is not None:
            kind = kinds[node]
            dim = 1 if kind in ("conv", "head") else len(shape) - 1
            if kind == "head" and len(shape) != 4:
                continue
            layers.append(FeatureLayer(node.target, shape[dim], len(layers), dim, kind))
    return layers


def build_explainable(model: nn.Module, example: torch.Tensor, input_low: torch.Tensor | None = None,
                      input_high: torch.Tensor | None = None, config: reg.RuleConfig | None = None,
                      fake_index: int = 1, check: bool = True) -> tuple[fx.GraphModule, list[FeatureLayer]]:
    """A BN-folded, LRP-ruled copy of ``model`` and its unit layers in forward order.

    ``example``: a probe batch (its shape is what the detector takes). Convolutions reading the input use
    the zβ rule with per-channel bounds when ``input_low``/``input_high`` are given, else z⁺. A detector with
    two outputs is explained as ``out[fake_index] − out[other]``. ``model`` itself is never modified."""
    config = config or reg.RuleConfig()
    net = copy.deepcopy(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    for m in net.modules():  # in-place activations would overwrite tensors the rules and taps still read
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    with torch.no_grad():
        reference = net(example)
    two_class = isinstance(reference, torch.Tensor) and reference.dim() == 2 and reference.shape[1] == 2
    if two_class:
        net = LogOdds(net, fake_index)
        reference = reference[:, fake_index] - reference[:, 1 - fake_index]
    elif not (isinstance(reference, torch.Tensor) and reference.reshape(len(example), -1).shape[1] == 1):
        shape = tuple(reference.shape) if isinstance(reference, torch.Tensor) else type(reference).__name__
        raise UnsupportedLayerError(f"the detector outputs {shape}; expected one logit per image or two class "
                                    "logits (real, fake)")
    try:
        with _traceable_batch_norm():
            gm = fx.GraphModule(net, _Tracer().trace(net))
    except Exception as exc:  # fx cannot trace data-dependent control flow
        raise UnsupportedLayerError(f"the detector cannot be traced by torch.fx ({type(exc).__name__}: {exc})"
                                    f"{_failing_module(exc)}; register the untraceable module class with a rule "
                                    "(tffkit.lrp.register_rule) so it is kept as one operation") from exc
    probe = _Probe(gm)
    with torch.no_grad():
        probe.run(example)
    info, problems = probe.info, []
    folded = _canonicalize(gm, info, problems)
    assigned = _assign(gm, info, config, problems)
    if problems:
        listing = "\n  ".join(dict.fromkeys(problems))
        raise UnsupportedLayerError(f"LRP has no rule for {len(set(problems))} operation(s) of "
                                    f"{type(model).__name__}:\n  {listing}\n(see tffkit.lrp.register_rule)")
    kinds = _apply(gm, assigned, info, config, input_low, input_high)
    layers = _units(gm, kinds, info)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    if check and example.device.type != "meta":
        _check_logits(model, reference, gm, example, layers, folded, "model." if two_class else "")
    return gm, layers


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
