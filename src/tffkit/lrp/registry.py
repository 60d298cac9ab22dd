"""The rule table: which LRP rule every module type, function and tensor method gets, as the default composite.

All architecture knowledge of the engine lives in this table (docs/algorithms.md, "LRP rules"). It is a value,
:data:`DEFAULT` (a :class:`~tffkit.lrp.composite.Composite`, named ``paper``); :data:`COMPOSITES` holds the named
composites a user can pick (``paper``, ``attnlrp``, ``cp-lrp``, ``fast``). Users extend a composite from their own code
without editing tffkit and without global state::

    from tffkit.lrp import Explainer
    from tffkit.lrp.registry import DEFAULT, Epsilon, Gradient, Identity
    composite = DEFAULT.with_({MyLinearBlock: Epsilon(),          # a module type (a leaf, not traced into)
                               my_activation_function: Identity(activation=True),  # a function in a forward
                               "my_norm": Identity(),              # a tensor method (``x.my_norm()``), by name
                               "package.module.Class": Gradient()})  # a module class by qualified name
    Explainer(model, composite=composite)

A module whose class (or a base class) has a rule is a leaf of the traced graph unless its class overrides
``forward`` below that class — then it is traced into, so a subclass with its own computation is never mistaken
for its base. An operation without a rule raises an error naming it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .composite import Composite
from .convs import Conv, ConvEpsilon, Gamma, ZBox, ZPlus
from .kinds import (
    Attention,
    BatchNorm,
    Einsum,
    Epsilon,
    Gradient,
    Identity,
    Key,
    LRPOp,
    MatMul,
    MultiheadAttention,
    MultiheadAttentionFunction,
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

__all__ = ["COMPOSITES", "DEFAULT", "Attention", "BatchNorm", "Composite", "Conv", "ConvEpsilon", "Einsum", "Epsilon",
           "Gamma", "Gradient", "Identity", "Key", "LRPOp", "MatMul", "MultiheadAttention",
           "MultiheadAttentionFunction", "Norm", "Product", "Resample", "Rule", "RuleConfig", "Site", "Softmax", "Sum",
           "Trace", "Uniform", "WindowAttention", "ZBox", "ZPlus",
           "function_rule", "method_rule", "module_rule"]


def _paper() -> Composite:
    """The paper's composite: today's table."""
    grad, ident, act, eps, conv = Gradient(), Identity(), Identity(activation=True), Epsilon(), ZPlus()
    modules: dict[Any, Rule] = {
        nn.Conv1d: conv, nn.Conv2d: conv, nn.Conv3d: conv, nn.ConvTranspose1d: conv,
        nn.ConvTranspose2d: conv, nn.ConvTranspose3d: conv, "timm.layers.conv2d_same.Conv2dSame": conv,
        # convolutions that pad 'same' from the input size at run time (untraceable, linear in x for given weights)
        "efficientnet_pytorch.utils.Conv2dDynamicSamePadding": conv,
        "efficientnet_pytorch.utils.Conv2dStaticSamePadding": conv,
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
        F.conv1d: conv, F.conv2d: conv, F.conv3d: conv, F.conv_transpose1d: conv,
        F.conv_transpose2d: conv, F.batch_norm: BatchNorm(), F.layer_norm: Norm(), F.group_norm: Norm(),
        F.linear: eps, F.adaptive_avg_pool1d: eps, F.adaptive_avg_pool2d: eps, F.avg_pool1d: eps, F.avg_pool2d: eps,
        torch.mean: eps, torch.sum: eps, F.interpolate: Resample(),
        F.max_pool1d: grad, F.max_pool2d: grad, F.adaptive_max_pool2d: grad, torch.amax: grad, torch.max: grad,
        torch.flatten: grad, torch.reshape: grad, torch.cat: grad, torch.concat: grad, torch.stack: grad,
        torch.squeeze: grad, torch.unsqueeze: grad, torch.permute: grad, torch.transpose: grad, torch.swapaxes: grad,
        torch.swapdims: grad, torch.chunk: grad,
        torch.split: grad, torch.unbind: grad, torch.roll: grad, torch.flip: grad, torch.narrow: grad,
        torch.movedim: grad, torch.clone: grad, F.pad: grad, F.pixel_shuffle: grad, F.pixel_unshuffle: grad,
        torch.channel_shuffle: grad, F.dropout: grad, F.dropout1d: grad, F.dropout2d: grad, F.dropout3d: grad,
        operator.getitem: grad, getattr: grad,
        operator.add: Sum(), operator.iadd: Sum(), torch.add: Sum(), operator.sub: Sum(), operator.isub: Sum(),
        torch.sub: Sum(), operator.mul: Product(), operator.imul: Product(), torch.mul: Product(),
        operator.truediv: Product(), operator.itruediv: Product(), torch.div: Product(), operator.neg: ident,
        torch.neg: ident, operator.matmul: MatMul(), torch.matmul: MatMul(), torch.bmm: MatMul(),
        torch.einsum: Einsum(),
        F.relu: act, torch.relu: act, F.relu6: act, F.leaky_relu: act, F.elu: act, F.gelu: act, F.silu: act,
        F.mish: act, F.hardswish: act, F.hardtanh: act, torch.tanh: act, F.tanh: act, torch.sigmoid: act,
        F.sigmoid: act, F.hardsigmoid: act, F.softplus: act, torch.clamp: act, F.normalize: ident,
        F.softmax: Softmax(), torch.softmax: Softmax(),
        F.scaled_dot_product_attention: Attention(), F.multi_head_attention_forward: MultiheadAttentionFunction(),
    }
    methods: dict[str, Rule] = {
        **{m: grad for m in ("flatten", "reshape", "view", "view_as", "reshape_as", "contiguous", "squeeze",
                             "unsqueeze", "permute", "transpose", "swapaxes", "swapdims", "movedim", "expand",
                             "expand_as", "repeat", "repeat_interleave", "chunk", "split", "unbind", "unflatten",
                             "narrow", "flip", "roll", "select", "clone", "to", "type", "type_as", "float", "double",
                             "half", "bfloat16", "amax", "max", "t", "__getitem__")},
        "add": Sum(), "add_": Sum(), "sub": Sum(), "sub_": Sum(), "mul": Product(), "mul_": Product(),
        "div": Product(), "div_": Product(), "neg": ident, "matmul": MatMul(), "bmm": MatMul(),
        "mean": eps, "sum": eps, "relu": act, "relu_": act, "sigmoid": act, "sigmoid_": act, "tanh": act,
        "clamp": act, "clamp_min": act, "softmax": Softmax(),
    }
    return Composite("paper").with_({**modules, **functions, **methods})


DEFAULT: Composite = _paper()
#: the composites a user can pick by name (``--composite``, :func:`named`)
COMPOSITES: dict[str, Composite] = {
    "paper": DEFAULT,
    "attnlrp": DEFAULT.with_(first=ConvEpsilon(), attention="attnlrp", name="attnlrp"),
    "cp-lrp": DEFAULT.with_(first=ConvEpsilon(), attention="cp", name="cp-lrp"),
    "fast": DEFAULT.with_convs(ConvEpsilon()).with_(first=ConvEpsilon(), attention="attnlrp", name="fast", fast=True),
}


def named(name: str) -> Composite:
    """A composite by name: ``paper`` (the default: z⁺ on convolutions, zβ at the pixels where the zoo entry
    asks for it, ε on linear layers, AttnLRP inside attention), ``attnlrp`` (AttnLRP throughout, ε at the patch
    embedding — LXT's rules), ``cp-lrp`` (CP-LRP: attention weights held constant, ε at the patch embedding) or
    ``fast`` (AttnLRP's rules and ε on every convolution, computed as one Gradient × Input pass: :mod:`.fast`;
    ``attention='cp'`` gives CP-LRP in that form)."""
    if name not in COMPOSITES:
        raise ValueError(f"unknown composite {name!r}; use {', '.join(COMPOSITES)}")
    return COMPOSITES[name]


def module_rule(module: nn.Module) -> Rule | None:
    """The default composite's rule of ``module`` (:meth:`Composite.module_rule`)."""
    return DEFAULT.module_rule(module)


def function_rule(target: Callable) -> Rule | None:
    """The default composite's rule of a function (:meth:`Composite.function_rule`)."""
    return DEFAULT.function_rule(target)


def method_rule(name: str) -> Rule | None:
    """The default composite's rule of a tensor method (:meth:`Composite.method_rule`)."""
    return DEFAULT.method_rule(name)
