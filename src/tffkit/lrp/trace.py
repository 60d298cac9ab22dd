"""Tracing a detector for the LRP rewrite: the torch.fx graph (leaves are the modules with a rule), a probe run
that marks which values derive from the input and their shapes, and the canonical form — functional
convolutions with constant weights as modules, batch norm after a convolution or a linear layer folded into it.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from . import registry as reg
from .composite import Composite


@dataclass
class NodeInfo:
    tensor: bool
    tainted: bool
    shape: tuple[int, ...] | None = None
    value: torch.Tensor | None = field(default=None, repr=False)


class Tracer(fx.Tracer):
    """Leaves are the modules with a rule; containers and everything else are traced into."""

    def __init__(self, composite: Composite) -> None:
        # Python functions given a rule by users stay one operation (torch's own are recorded as such anyway;
        # torch.fx only wraps functions whose names do not start with an underscore)
        own = tuple(f for f in composite.functions if isinstance(f, types.FunctionType)
                    and not getattr(f, "__module__", "").startswith("torch"))
        super().__init__(autowrap_functions=own)
        self.record_stack_traces = True
        self.composite = composite

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return False
        if self.composite.module_rule(m, qualname) is not None:
            return True
        return not self.composite.has_rule_base(m) and super().is_leaf_module(m, qualname)


@contextlib.contextmanager
def traceable_batch_norm() -> Iterator[None]:
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


class Probe(fx.Interpreter):
    """Runs the graph once, recording per node: tensor-valued, input-derived, shape, constant value."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.info: dict[fx.Node, NodeInfo] = {}

    def run_node(self, n: fx.Node):
        result = super().run_node(n)
        tensor = has_tensor(result)
        tainted = n.op == "placeholder" or (tensor and any(self.info[a].tainted and self.info[a].tensor
                                                             for a in n.all_input_nodes))
        is_t = isinstance(result, torch.Tensor)
        self.info[n] = NodeInfo(tensor, tainted, tuple(result.shape) if is_t else None,
                             result if is_t and not tainted else None)
        return result


def failing_module(exc: BaseException) -> str:
    """`` in module <Class>`` for the innermost module whose forward was being traced when ``exc`` was raised."""
    tb, found = exc.__traceback__, ""
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and not isinstance(owner, fx.GraphModule):
            found = f" in module {type(owner).__module__}.{type(owner).__qualname__}"
        tb = tb.tb_next
    return found


def has_tensor(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    return isinstance(value, (tuple, list)) and any(has_tensor(v) for v in value)


def module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def set_module(gm: fx.GraphModule, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, attr, module)


def scope_of(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack.values()))[0] if stack else ""


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def source_line(node: fx.Node) -> str:
    """``file:line`` and code of the user frame that created ``node`` (fx records the stack): the innermost frame
    outside torch itself (a function reaching fx through ``__torch_function__`` has torch/overrides.py frames
    below the model's line)."""
    frames = re.findall(r'File "([^"]+)", line (\d+), in [^\n]+\n\s*([^\n]*)', node.stack_trace or "")
    user = [f for f in frames if not os.path.abspath(f[0]).startswith(_TORCH_DIR)] or \
        [f for f in frames if "/torch/fx/" not in f[0] and "/torch/nn/modules/module.py" not in f[0]]
    if not user:
        return ""
    path, line, code = user[-1]
    return f" at {path.split('site-packages/')[-1]}:{line} `{code.strip()}`"


def describe(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {type(module_of(gm, node)).__name__} at '{node.target}'"
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    kind = "method" if node.op == "call_method" else "function"
    where = f" in module '{scope_of(node)}'" if scope_of(node) else ""
    return f"{kind} '{target}' (graph node '{node.name}'){where}{source_line(node)}"


def free_name(gm: fx.GraphModule, base: str) -> str:
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


def fold_batchnorm(conv: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """W' = W·γ/σ, b' = (b − μ)·γ/σ + β with σ = sqrt(var + eps), written into ``conv`` in place; returns the
    BN map raw ↦ scale·raw + shift as (scale, shift)."""
    return fold_bn(conv, bn.running_mean, bn.running_var, bn.weight if bn.affine else None,
                   bn.bias if bn.affine else None, bn.eps)


def fold_bn(conv: nn.Module, mean, var, gamma, beta, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        gamma = gamma if gamma is not None else torch.ones_like(var)
        beta = beta if beta is not None else torch.zeros_like(var)
        scale = gamma / torch.sqrt(var + eps)
        shift = beta - mean * scale
        affine = scale.clone(), shift.clone()  # the BN map raw ↦ scale·raw + shift (the public code's pre-BN site)
    fold_affine(conv, scale, shift)
    return affine


_WEIGHTED_MODULES = {F.conv1d: nn.Conv1d, F.conv2d: nn.Conv2d, F.conv3d: nn.Conv3d, F.linear: nn.Linear,
                     F.conv_transpose1d: nn.ConvTranspose1d, F.conv_transpose2d: nn.ConvTranspose2d}
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_T_ARGS = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")


def weighted_module(node: fx.Node, info: dict[fx.Node, NodeInfo]) -> nn.Module:
    """An nn.ConvNd / nn.Linear equal to a functional convolution / linear node whose weight (and bias) are
    constants (possibly computed from parameters, e.g. equalised learning rate or weight standardisation)."""
    cls = _WEIGHTED_MODULES[node.target]
    transposed = issubclass(cls, nn.modules.conv._ConvTransposeNd)
    names = ("input", "weight", "bias") if cls is nn.Linear else _CONV_T_ARGS if transposed else _CONV_ARGS
    args = {**dict(zip(names, node.args, strict=False)), **node.kwargs}

    def const(key):
        a = args.get(key)
        if isinstance(a, fx.Node):
            if info[a].tainted or info[a].value is None:
                raise ValueError("its weights depend on the input")
            return info[a].value
        return a

    w, b = const("weight"), const("bias")
    if cls is nn.Linear:
        module = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    else:
        groups = args.get("groups", 1)
        extra = {k: args[k] for k in ("stride", "padding", "dilation", "output_padding") if k in args}
        in_ch, out_ch = (w.shape[0], w.shape[1] * groups) if transposed else (w.shape[1] * groups, w.shape[0])
        module = cls(in_ch, out_ch, tuple(w.shape[2:]), groups=groups, bias=b is not None, device=w.device,
                     dtype=w.dtype, **extra)
    with torch.no_grad():
        module.weight.copy_(w)
        if b is not None:
            module.bias.copy_(b)
    return module.requires_grad_(False)


def is_conv(m: nn.Module | None, composite: Composite, name: str | None = None) -> bool:
    return m is not None and isinstance(composite.module_rule(m, name), reg.Conv)


_RESHAPES = {"flatten", "reshape", "view", torch.flatten, torch.reshape}


def _shape_use(user: fx.Node, node: fx.Node) -> bool:
    """``user`` reads only ``node``'s shape (``y.reshape_as(node)``, ``node.size()``, ``node.shape``, ``node.ndim`` —
    timm's BatchNormAct2d asserts ``x.ndim == 4`` before its batch norm)."""
    if user.op == "call_method" and user.target in ("reshape_as", "view_as", "expand_as"):
        return user.args[0] is not node
    return (user.op == "call_method" and user.target in ("size", "dim")) or \
        (user.op == "call_function" and user.target is getattr and user.args[1] in ("shape", "ndim"))


def _fold_target(gm: fx.GraphModule, src: fx.Node, info: dict[fx.Node, NodeInfo],
                 composite: Composite) -> fx.Node | None:
    """The node of the layer a batch norm reading ``src`` can be folded into: a convolution directly before it,
    or a linear layer before it through reshapes that keep its features last (LeViT's ``bn(x.flatten(0, 1))``:
    the BN sees (N, features)); None when the layer has other users."""
    node, path = src, [src]
    while node.op in ("call_method", "call_function") and node.target in _RESHAPES and len(node.users) == 1:
        if not isinstance(node.args[0], fx.Node):
            return None
        node = node.args[0]
        path.append(node)
    if node.op != "call_module" or sum(not _shape_use(u, node) for u in node.users) != 1:
        return None
    layer = module_of(gm, node)
    if is_conv(layer, composite, node.target):
        return node if node is src else None
    if not isinstance(layer, nn.Linear) or not isinstance(composite.module_rule(layer, node.target), reg.Epsilon):
        return None
    shapes = [info[n].shape for n in path]
    if any(not s for s in shapes) or len(shapes[0]) != 2 or any(s[-1] != layer.out_features for s in shapes):
        return None
    return node


def split_shared_convs(gm: fx.GraphModule, root: nn.Module, composite: Composite) -> None:
    """A convolution module called at several places (CoaT's convolutional position encodings, shared by the blocks
    of a stage) becomes one copy per call, so each use gets its own rule and its own units. A copy is named by the
    module's other name under the block that calls it (``serial_blocks1.1.cpe.proj`` for ``cpe1.proj`` called from
    ``serial_blocks1.1``), else ``<name>_<use>``; the first use keeps the module's own name only where no such alias
    exists."""
    calls: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and is_conv(module_of(gm, node), composite, node.target):
            calls.setdefault(node.target, []).append(node)
    names: dict[int, list[str]] = {}
    for name, m in root.named_modules(remove_duplicate=False):
        names.setdefault(id(m), []).append(name)
    for target, nodes in calls.items():
        if len(nodes) < 2:
            continue
        module = module_of(gm, nodes[0])
        aliases = names.get(id(module), [])
        for use, node in enumerate(nodes, 1):
            stack = [path for path, _ in (node.meta.get("nn_module_stack") or {}).values()]
            inside = [(len(p), a) for a in aliases for p in stack if a.startswith(p + ".")]
            name = max(inside)[1] if inside else f"{target}_{use}"
            if name in dict(gm.named_modules()):
                name = free_name(gm, f"{name}_{use}")
            gm.add_submodule(name, copy.deepcopy(module))
            node.target = name
        gm.delete_all_unused_submodules()


def _conv_after(gm: fx.GraphModule, bn: fx.Node, composite: Composite) -> fx.Node | None:
    """The convolution a batch norm feeds alone (through identities and dropout), if the BN can be folded into it
    exactly: a plain convolution without padding (a padded border would see the BN's shift where the input has
    zeros) and without groups — a pre-norm block's 1×1 convolution (timm's MbConvBlock in MaxViT and CoAtNet)."""
    node = bn
    while len(node.users) == 1:
        (user,) = node.users
        m = module_of(gm, user)
        if isinstance(m, (nn.Identity, nn.Dropout)):
            node = user
            continue
        padding = getattr(m, "padding", None)
        unpadded = padding == "valid" or (isinstance(padding, tuple) and not any(padding))
        if type(m) in (nn.Conv1d, nn.Conv2d, nn.Conv3d) and user.args[:1] == (node,) and len(user.args) == 1 and \
                unpadded and m.groups == 1 and is_conv(m, composite, user.target):
            return user
        return None
    return None


def fold_bn_before(conv: nn.Module, mean, var, gamma, beta, eps: float) -> None:
    """Fold a batch norm that feeds ``conv`` (unpadded, ungrouped) into it, in place: W' = W·γ/σ per input
    channel, b' = b + Σ W·(β − μγ/σ)."""
    with torch.no_grad():
        gamma = gamma if gamma is not None else torch.ones_like(var)
        beta = beta if beta is not None else torch.zeros_like(var)
        scale = gamma / torch.sqrt(var + eps)
        shift = beta - mean * scale
        w = conv.weight
        per_channel = (1, -1, *([1] * (w.dim() - 2)))
        extra = (w * shift.reshape(per_channel)).sum(tuple(range(1, w.dim())))
        w.copy_(w * scale.reshape(per_channel))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(extra)
        conv.bias = nn.Parameter((bias + extra).detach().clone(), requires_grad=False)


def canonicalize(gm: fx.GraphModule, info: dict[fx.Node, NodeInfo], problems: list[str], composite: Composite
                 ) -> tuple[dict[str, str], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Functional convolutions and linear layers → modules; BN after a convolution or linear layer folded (or, where
    nothing is before it to fold into, into an unpadded convolution it alone feeds). Returns
    {layer name: BN name} and {layer name: (scale, shift) of the BN folded into it}. A module made from a function
    takes the name of the module whose forward called the function when nothing else of that module remains in the
    graph (``stem.conv`` for a weight-standardising conv)."""
    made: list[tuple[fx.Node, str]] = []
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target in _WEIGHTED_MODULES and info[node].tainted:
            try:
                module = weighted_module(node, info)
            except ValueError as exc:
                problems.append(f"{describe(gm, node)}: {exc}")
                continue
            kind = "linear" if isinstance(module, nn.Linear) else "conv"
            name = free_name(gm, f"{scope_of(node)}.{kind}" if scope_of(node) else kind)
            gm.add_submodule(name, module)
            node.op, node.target, node.args, node.kwargs = "call_module", name, (node.args[0],), {}
            made.append((node, scope_of(node)))
    gm.graph.eliminate_dead_code()
    for node, scope in made:
        used = [n.target for n in gm.graph.nodes if n.op in ("call_module", "get_attr") and n is not node]
        if scope and not any(t == scope or t.startswith(scope + ".") for t in used) and \
                sum(s == scope for _, s in made) == 1:
            set_module(gm, scope, module_of(gm, node))
            node.target = scope
    for node in gm.graph.nodes:
        if node.kwargs.get("inplace") is True:
            node.kwargs = {**node.kwargs, "inplace": False}
    folded: dict[str, str] = {}
    affine: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for node in list(gm.graph.nodes):
        bn = module_of(gm, node)
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
        if params[0] is None or not (isinstance(src, fx.Node) and info[node].tainted):
            continue
        owner = _fold_target(gm, src, info, composite)
        if owner is not None:
            affine[owner.target] = fold_bn(module_of(gm, owner), *params)
            folded[owner.target] = node.target if node.op == "call_module" else scope_of(node)
        elif (after := _conv_after(gm, node, composite)) is not None:
            fold_bn_before(module_of(gm, after), *params)
        else:
            continue
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    return folded, affine
