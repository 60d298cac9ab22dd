"""The rule table: which LRP rule every module type, function and tensor method gets.

All architecture knowledge of the engine lives in this table (docs/algorithms.md, "LRP rules").
Users extend it from their own code without editing tffkit::

    from tffkit.lrp.registry import Epsilon, Gradient, Identity, register_rule
    register_rule(MyLinearBlock, Epsilon())         # a module type (kept as a leaf, not traced into)
    register_rule(my_activation_function, Identity(activation=True))  # a function called in a forward
    register_rule("my_norm", Identity())            # a tensor method (``x.my_norm()``), by name
    register_rule("package.module.Class", Gradient())  # a module class by qualified name (no import)

A module whose class (or a base class) is registered is a leaf of the traced graph unless its class
overrides ``forward`` below the registered class — then it is traced into, so a subclass with its own
computation is never mistaken for its base. An operation without a rule raises an error naming it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .rules import EpsilonFn, LRPEpsilon, LRPSum, MultiEpsilonFn, PassFn, SoftmaxFn
from .swin import window_attention
from .transformer import LRPMultiheadAttention, group_norm_linear, layer_norm_linear, norm_rule, sdpa

Key = int | str  # a positional argument's index or a keyword argument's name


@dataclass
class Site:
    """What a rule sees of one operation: its graph node, the leaf module (``call_module``) or the callable,
    the argument keys whose values carry relevance, their shapes, and the engine's settings."""

    node: Any
    module: nn.Module | None
    fn: Callable[..., Any]
    tainted: tuple[Key, ...]
    shapes: dict[Key, tuple[int, ...]]
    out_shape: tuple[int, ...] | None
    config: RuleConfig
    is_sigmoid: Callable[[Key], bool] = field(default=lambda key: False)

    def arg(self, key: Key, default: Any = None) -> Any:
        """The node's argument at ``key`` (a positional index or a keyword), ``default`` when absent."""
        if isinstance(key, int):
            return self.node.args[key] if key < len(self.node.args) else default
        return self.node.kwargs.get(key, default)


@dataclass(frozen=True)
class RuleConfig:
    """Engine-wide settings the rules read: ε, the attention rule and the z⁺ fallback (see Explainer)."""

    eps: float = 1e-6
    attention: str = "attnlrp"
    zplus_fallback: str = "depthwise"
    input_epsilon: bool = False


class Rule:
    """How relevance passes through one kind of operation (a row of the table)."""

    activation = False  # an element-wise non-linearity (units before one are "neurons")

    def resolve(self, site: Site) -> Rule:
        """The concrete rule for this operation (dispatching rules choose by which arguments carry relevance)."""
        return self

    def keys(self, site: Site) -> tuple[Key, ...]:
        """Argument keys that receive relevance (default: every relevance-carrying argument)."""
        return site.tainted

    def module(self, site: Site) -> nn.Module | None:
        """The module that runs this operation with the rule in its backward; None keeps the operation as is."""
        return LRPOp(site.fn, self, self.keys(site), site.config.eps)

    def run(self, op: LRPOp, call: Callable[..., torch.Tensor], tensors: list[torch.Tensor], args: list,
            kwargs: dict) -> Any:
        """Run ``call(*tensors)`` (the operation with ``tensors`` at the relevance keys) under this rule;
        ``args``/``kwargs`` are the operation's arguments (for rules that read constants from them)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Gradient(Rule):
    """The operation's own gradient is its LRP rule: reshapes, selections, concatenation, padding, dtype
    casts, max pooling (winner takes all), dropout in eval mode."""

    def module(self, site: Site) -> None:
        return None


class Identity(Rule):
    """Element-wise operations (activations, scaling by a constant, normalising by a held-constant norm):
    relevance passes unchanged to the first relevance-carrying argument (or ``signal``)."""

    def __init__(self, activation: bool = False, signal: Key | None = None):
        self.activation, self.signal = activation, signal

    def keys(self, site: Site) -> tuple[Key, ...]:
        return (self.signal,) if self.signal is not None else site.tainted[:1]

    def run(self, op, call, tensors, args, kwargs):
        return PassFn.apply(tensors[0], call)


class Epsilon(Rule):
    """ε rule for an operation that is linear (or affine: the constant part stays in the denominator) in its
    relevance-carrying inputs: linear layers, average pooling, means, sums, bilinear resampling."""

    def module(self, site: Site) -> nn.Module:
        if site.module is not None and site.tainted == (0,) and len(site.node.args) == 1 and not site.node.kwargs:
            return LRPEpsilon(site.module, site.config.eps)
        return super().module(site)

    def run(self, op, call, tensors, args, kwargs):
        if len(tensors) == 1:
            return EpsilonFn.apply(tensors[0], call, op.eps)
        return MultiEpsilonFn.apply(call, op.eps, 1.0, *tensors)


class Uniform(Rule):
    """Product of n relevance-carrying factors: each receives 1/n of the relevance by the ε rule (AttnLRP)."""

    def run(self, op, call, tensors, args, kwargs):
        return MultiEpsilonFn.apply(call, op.eps, 1.0 / len(tensors), *tensors)


class Sum(Rule):
    """``a ± b``: two relevance-carrying terms share by the ε rule (residual sums); with a constant term
    (a bias, a position embedding) it is the ε rule of an affine map."""

    def resolve(self, site: Site) -> Rule:
        plain = site.tainted == (0, 1) and len(site.node.args) == 2 and not site.node.kwargs
        return _SumModule(_is_sub(site.node.target)) if plain else Epsilon()


class _SumModule(Rule):
    def __init__(self, subtract: bool):
        self.subtract = subtract

    def module(self, site: Site) -> nn.Module:
        return LRPSum(site.config.eps, -1.0 if self.subtract else 1.0)


class Product(Rule):
    """``a · b`` (or ``a / b``): with one relevance-carrying factor, a scaling (relevance passes unchanged);
    with two, a gate when one factor is a sigmoid or broadcasts over the other (squeeze-excitation, Swish:
    all relevance to the signal), else the uniform rule. A relevance-carrying divisor is held constant."""

    def resolve(self, site: Site) -> Rule:
        if len(site.tainted) == 1 or _is_div(site.node.target):
            return Identity(signal=site.tainted[0])
        a, b = site.tainted[:2]
        sig_a, sig_b = site.is_sigmoid(a), site.is_sigmoid(b)
        if sig_a != sig_b:
            return _Gate(b if sig_a else a)
        na, nb = (_numel(site.shapes.get(k)) for k in (a, b))
        if na != nb:
            return _Gate(a if na > nb else b)
        return Uniform()


class _Gate(Identity):
    activation = True

    def __init__(self, signal: Key):
        super().__init__(activation=True, signal=signal)


class MatMul(Rule):
    """Matrix products: ε rule with one constant factor (a projection), uniform rule with two (attention)."""

    def resolve(self, site: Site) -> Rule:
        return Epsilon() if len(site.tainted) == 1 else Uniform()


class Softmax(Rule):
    """AttnLRP softmax rule R_in = x ⊙ (R − s ⊙ Σ R) along the softmax dimension."""

    def resolve(self, site: Site) -> Rule:
        if site.module is not None:
            dim = site.module.dim
        else:
            dim = site.arg(1, site.node.kwargs.get("dim"))
        if dim is None:
            raise ValueError("softmax without an explicit dim")
        return _SoftmaxDim(dim)


class _SoftmaxDim(Rule):
    def __init__(self, dim: int):
        self.dim = dim

    def keys(self, site):
        return (0,)

    def run(self, op, call, tensors, args, kwargs):
        return SoftmaxFn.apply(tensors[0], call, self.dim)


class Norm(Rule):
    """LayerNorm / GroupNorm (modules and functions) by AttnLRP's rule: σ held constant, ε rule on the rest."""

    def keys(self, site):
        return (0,)

    def resolve(self, site: Site) -> Rule:
        m, target = site.module, site.node.target
        if isinstance(m, nn.LayerNorm):
            return _NormOf(layer_norm_linear, len(m.normalized_shape), m.eps)
        if isinstance(m, nn.GroupNorm):
            return _NormOf(group_norm_linear, m.num_groups, m.eps)
        size = site.arg(1, site.node.kwargs.get("normalized_shape", site.node.kwargs.get("num_groups")))
        eps = site.arg(4, site.node.kwargs.get("eps", 1e-5))
        if target is F.layer_norm:
            return _NormOf(layer_norm_linear, len(size) if isinstance(size, (tuple, list)) else 1, eps)
        if target is F.group_norm:
            return _NormOf(group_norm_linear, size, eps)
        raise ValueError(f"the Norm rule knows LayerNorm and GroupNorm, not {target}")


class _NormOf(Norm):
    def __init__(self, make: Callable, size: int, norm_eps: float):
        self.make, self.size, self.norm_eps = make, size, norm_eps

    def run(self, op, call, tensors, args, kwargs):
        if isinstance(op.fn, nn.Module):
            weight, bias = op.fn.weight, op.fn.bias
        else:
            weight = args[2] if len(args) > 2 else kwargs.get("weight")
            bias = args[3] if len(args) > 3 else kwargs.get("bias")
        return norm_rule(tensors[0], call, self.make(self.size, weight, bias, self.norm_eps), op.eps)


class Conv(Rule):
    """Convolutions (z⁺ on hidden layers, zβ on the pixels when bounds are given): replaced by the rewrite's
    canonical :class:`~tffkit.lrp.rules.LRPConv`, batch norm folded in."""

    def keys(self, site):
        return (0,)


class BatchNorm(Rule):
    """Batch norm: folded into the convolution before it; otherwise (DenseNet's pre-activation BN) a
    per-channel affine map through which relevance passes unchanged (the bias is not credited)."""

    def keys(self, site):
        return (0,)

    def run(self, op, call, tensors, args, kwargs):
        return PassFn.apply(tensors[0], call)


class Resample(Rule):
    """``interpolate`` / ``Upsample``: nearest neighbour copies values (its gradient is the rule), other
    modes are linear maps (ε rule)."""

    def resolve(self, site: Site) -> Rule:
        mode = site.module.mode if site.module is not None else site.arg(3, site.node.kwargs.get("mode", "nearest"))
        return Gradient() if mode in ("nearest", "nearest-exact") else Epsilon()


class Attention(Rule):
    """``F.scaled_dot_product_attention`` by the attention rules of the engine's mode (AttnLRP or CP-LRP).
    Its output (B, heads, L, head_dim) is the attention heads' unit layer."""

    def keys(self, site):
        return tuple(k for k in site.tainted if k in (0, 1, 2, "query", "key", "value"))

    def run(self, op, call, tensors, args, kwargs):
        return call(*tensors)

    def module(self, site: Site) -> nn.Module:
        def attend(*args, **kwargs):
            return sdpa(*args, **kwargs, mode=site.config.attention, eps=site.config.eps)
        return LRPOp(attend, self, self.keys(site), site.config.eps)


class MultiheadAttention(Rule):
    """``nn.MultiheadAttention`` rebuilt from LRP rules (:class:`~tffkit.lrp.transformer.LRPMultiheadAttention`)."""

    def keys(self, site):
        return tuple(k for k in site.tainted if k in (0, 1, 2, "query", "key", "value"))

    def module(self, site: Site) -> nn.Module:
        return LRPMultiheadAttention(site.module, site.config.attention, site.config.eps)


class WindowAttention(Rule):
    """Swin's shifted-window attention (torchvision's wrapped function) by :func:`~tffkit.lrp.swin.window_attention`."""

    def keys(self, site):
        return (0,)

    def run(self, op, call, tensors, args, kwargs):
        return call(*tensors)

    def module(self, site: Site) -> nn.Module:
        def attend(*args, **kwargs):
            return window_attention(*args, **kwargs, mode=site.config.attention, eps=site.config.eps)
        return LRPOp(attend, self, (0,), site.config.eps)


class Trace(Rule):
    """Never a leaf: the tracer enters the module and its operations get their own rules."""


class LRPOp(nn.Module):
    """Runs one operation of the traced graph under ``rule``: the arguments at ``keys`` carry relevance,
    every other tensor argument is a constant for this operation (detached)."""

    def __init__(self, fn: Callable[..., Any], rule: Rule, keys: tuple[Key, ...], eps: float):
        super().__init__()
        self.fn, self.rule, self.keys, self.eps = fn, rule, tuple(keys), eps  # a module fn becomes a submodule

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = list(args), dict(kwargs)
        for key in [*range(len(args)), *kwargs]:
            value = args[key] if isinstance(key, int) else kwargs[key]
            if key not in self.keys and isinstance(value, torch.Tensor) and value.requires_grad:
                _set(args, kwargs, key, value.detach())
        tensors = [args[k] if isinstance(k, int) else kwargs[k] for k in self.keys]

        def call(*ts: torch.Tensor) -> Any:
            a, kw = list(args), dict(kwargs)
            for k, t in zip(self.keys, ts, strict=True):
                _set(a, kw, k, t)
            return self.fn(*a, **kw)

        return self.rule.run(self, call, tensors, args, kwargs)

    def extra_repr(self) -> str:
        name = type(self.fn).__name__ if isinstance(self.fn, nn.Module) else getattr(self.fn, "__name__", self.fn)
        return f"{name}, rule={self.rule!r}, keys={self.keys}"


def _set(args: list, kwargs: dict, key: Key, value: Any) -> None:
    if isinstance(key, int):
        args[key] = value
    else:
        kwargs[key] = value


def _numel(shape: tuple[int, ...] | None) -> int:
    n = 1
    for s in shape or ():
        n *= s
    return n


def _is_sub(target: Any) -> bool:
    return target in (operator.sub, operator.isub, torch.sub, "sub", "sub_")


def _is_div(target: Any) -> bool:
    return target in (operator.truediv, operator.itruediv, torch.div, torch.true_divide, "div", "div_",
                      "true_divide")


# ----------------------------------------------------------------------------------------------- the table

MODULE_RULES: dict[type, Rule] = {}
FUNCTION_RULES: dict[Callable, Rule] = {}
METHOD_RULES: dict[str, Rule] = {}
NAMED_RULES: dict[str, Rule] = {}  # module classes and functions by qualified name ("pkg.module.Name")


def register_rule(target: type | Callable | str, rule: Rule) -> None:
    """Give ``target`` the LRP rule ``rule``: a module class (or its qualified name ``"pkg.mod.Class"``), a
    function, a bound tensor method (``torch.Tensor.softmax``) or a method name (``"softmax"``)."""
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be a tffkit.lrp.registry.Rule, got {rule!r}")
    if isinstance(target, type) and issubclass(target, nn.Module):
        MODULE_RULES[target] = rule
    elif isinstance(target, str):
        (NAMED_RULES if "." in target else METHOD_RULES)[target] = rule
    elif getattr(target, "__objclass__", None) is torch.Tensor or getattr(target, "__qualname__", "").startswith(
            "Tensor."):
        METHOD_RULES[target.__name__] = rule
    elif callable(target):
        FUNCTION_RULES[target] = rule
    else:
        raise TypeError(f"cannot register a rule for {target!r}")


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def module_rule(module: nn.Module) -> Rule | None:
    """The rule of ``module``'s class (most specific registered base), or None when it is to be traced into:
    no registered base, or a class below the registered one overrides ``forward``."""
    for cls in type(module).__mro__:
        rule = MODULE_RULES.get(cls) or NAMED_RULES.get(_qualname(cls))
        if rule is not None:
            same = all(getattr(type(module), a, None) is getattr(cls, a, None) for a in ("forward", "_conv_forward"))
            return rule if same and not isinstance(rule, Trace) else None
    return None


def function_rule(target: Callable) -> Rule | None:
    """The rule of a function called in the graph (by identity, then by qualified name)."""
    try:
        rule = FUNCTION_RULES.get(target)
    except TypeError:  # unhashable
        rule = None
    if rule is None:
        rule = NAMED_RULES.get(f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}")
    return rule


def method_rule(name: str) -> Rule | None:
    """The rule of a tensor method called in the graph."""
    return METHOD_RULES.get(name)


def _register_defaults() -> None:
    grad, ident, act, eps = Gradient(), Identity(), Identity(activation=True), Epsilon()
    modules: dict[Any, Rule] = {
        nn.Conv1d: Conv(), nn.Conv2d: Conv(), nn.Conv3d: Conv(), nn.ConvTranspose1d: Conv(),
        nn.ConvTranspose2d: Conv(), nn.ConvTranspose3d: Conv(), "timm.layers.conv2d_same.Conv2dSame": Conv(),
        # convolutions that pad 'same' from the input size at run time (untraceable, linear in x for given weights)
        "efficientnet_pytorch.utils.Conv2dDynamicSamePadding": Conv(),
        "efficientnet_pytorch.utils.Conv2dStaticSamePadding": Conv(),
        nn.BatchNorm1d: BatchNorm(), nn.BatchNorm2d: BatchNorm(), nn.BatchNorm3d: BatchNorm(),
        nn.SyncBatchNorm: BatchNorm(), nn.LayerNorm: Norm(), nn.GroupNorm: Norm(),
        nn.Linear: eps, nn.AdaptiveAvgPool1d: eps, nn.AdaptiveAvgPool2d: eps, nn.AdaptiveAvgPool3d: eps,
        nn.AvgPool1d: eps, nn.AvgPool2d: eps, nn.AvgPool3d: eps, "timm.layers.pool2d_same.AvgPool2dSame": eps,
        nn.Upsample: Resample(), nn.UpsamplingNearest2d: grad, nn.UpsamplingBilinear2d: eps,
        nn.MaxPool1d: grad, nn.MaxPool2d: grad, nn.MaxPool3d: grad, nn.AdaptiveMaxPool1d: grad,
        nn.AdaptiveMaxPool2d: grad, "timm.layers.pool2d_same.MaxPool2dSame": grad,
        nn.Identity: grad, nn.Dropout: grad, nn.Dropout1d: grad, nn.Dropout2d: grad, nn.Dropout3d: grad,
        nn.AlphaDropout: grad, nn.Flatten: grad, nn.Unflatten: grad, nn.ZeroPad2d: grad, nn.ConstantPad1d: grad,
        nn.ConstantPad2d: grad, nn.ConstantPad3d: grad, nn.ReflectionPad1d: grad, nn.ReflectionPad2d: grad,
        nn.ReplicationPad1d: grad, nn.ReplicationPad2d: grad, nn.PixelShuffle: grad, nn.PixelUnshuffle: grad,
        nn.ChannelShuffle: grad, "torchvision.ops.stochastic_depth.StochasticDepth": grad,
        "timm.layers.drop.DropPath": grad,
        nn.ReLU: act, nn.ReLU6: act, nn.LeakyReLU: act, nn.PReLU: act, nn.ELU: act, nn.SELU: act, nn.CELU: act,
        nn.GELU: act, nn.SiLU: act, nn.Mish: act, nn.Hardswish: act, nn.Hardtanh: act, nn.Tanh: act,
        nn.Sigmoid: act, nn.Hardsigmoid: act, nn.Softplus: act,
        "efficientnet_pytorch.utils.Swish": act, "efficientnet_pytorch.utils.MemoryEfficientSwish": act,
        nn.Softmax: Softmax(), nn.MultiheadAttention: MultiheadAttention(),
        "torchvision.models.swin_transformer._patch_merging_pad": grad,
        "torchvision.models.swin_transformer.shifted_window_attention": WindowAttention(),
    }
    functions: dict[Callable, Rule] = {
        F.conv1d: Conv(), F.conv2d: Conv(), F.conv3d: Conv(), F.conv_transpose1d: Conv(),
        F.conv_transpose2d: Conv(), F.batch_norm: BatchNorm(), F.layer_norm: Norm(), F.group_norm: Norm(),
        F.linear: eps, F.adaptive_avg_pool1d: eps, F.adaptive_avg_pool2d: eps, F.avg_pool1d: eps, F.avg_pool2d: eps,
        torch.mean: eps, torch.sum: eps, F.interpolate: Resample(),
        F.max_pool1d: grad, F.max_pool2d: grad, F.adaptive_max_pool2d: grad, torch.amax: grad, torch.max: grad,
        torch.flatten: grad, torch.reshape: grad, torch.cat: grad, torch.concat: grad, torch.stack: grad,
        torch.squeeze: grad, torch.unsqueeze: grad, torch.permute: grad, torch.transpose: grad, torch.chunk: grad,
        torch.split: grad, torch.unbind: grad, torch.roll: grad, torch.flip: grad, torch.narrow: grad,
        torch.movedim: grad, torch.clone: grad, F.pad: grad, F.pixel_shuffle: grad, F.pixel_unshuffle: grad,
        torch.channel_shuffle: grad, F.dropout: grad, F.dropout1d: grad, F.dropout2d: grad, F.dropout3d: grad,
        operator.getitem: grad, getattr: grad,
        operator.add: Sum(), operator.iadd: Sum(), torch.add: Sum(), operator.sub: Sum(), operator.isub: Sum(),
        torch.sub: Sum(), operator.mul: Product(), operator.imul: Product(), torch.mul: Product(),
        operator.truediv: Product(), operator.itruediv: Product(), torch.div: Product(), operator.neg: ident,
        torch.neg: ident, operator.matmul: MatMul(), torch.matmul: MatMul(), torch.bmm: MatMul(),
        F.relu: act, torch.relu: act, F.relu6: act, F.leaky_relu: act, F.elu: act, F.gelu: act, F.silu: act,
        F.mish: act, F.hardswish: act, F.hardtanh: act, torch.tanh: act, F.tanh: act, torch.sigmoid: act,
        F.sigmoid: act, F.hardsigmoid: act, F.softplus: act, torch.clamp: act, F.normalize: ident,
        F.softmax: Softmax(), torch.softmax: Softmax(),
        F.scaled_dot_product_attention: Attention(),
    }
    methods: dict[str, Rule] = {
        **{m: grad for m in ("flatten", "reshape", "view", "view_as", "reshape_as", "contiguous", "squeeze",
                             "unsqueeze", "permute", "transpose", "swapaxes", "movedim", "expand", "expand_as",
                             "repeat", "repeat_interleave", "chunk", "split", "unbind", "unflatten", "narrow", "flip",
                             "roll", "select", "clone", "to", "type", "type_as", "float", "double", "half",
                             "bfloat16", "amax", "max", "t", "__getitem__")},
        "add": Sum(), "add_": Sum(), "sub": Sum(), "sub_": Sum(), "mul": Product(), "mul_": Product(),
        "div": Product(), "div_": Product(), "neg": ident, "matmul": MatMul(), "bmm": MatMul(),
        "mean": eps, "sum": eps, "relu": act, "relu_": act, "sigmoid": act, "sigmoid_": act, "tanh": act,
        "clamp": act, "clamp_min": act, "softmax": Softmax(),
    }
    for target, rule in modules.items():
        register_rule(target, rule)
    FUNCTION_RULES.update(functions)
    METHOD_RULES.update(methods)


_register_defaults()
