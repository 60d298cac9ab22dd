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
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .kinds import (
    Attention,
    BatchNorm,
    Conv,
    Epsilon,
    Gradient,
    Identity,
    Key,
    LRPOp,
    MatMul,
    MultiheadAttention,
    Norm,
    Product,
    Resample,
    Rule,
    RuleConfig,
    Site,
    Softmax,
    Sum,
    Trace,
    Uniform,
    WindowAttention,
)

__all__ = ["Attention", "BatchNorm", "Conv", "Epsilon", "Gradient", "Identity", "Key", "LRPOp", "MatMul",
           "MultiheadAttention", "Norm", "Product", "Resample", "Rule", "RuleConfig", "Site", "Softmax", "Sum",
           "Trace", "Uniform", "WindowAttention", "function_rule", "method_rule", "module_rule", "register_rule"]

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
