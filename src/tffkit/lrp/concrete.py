"""Tracing with concrete shapes, for detectors whose forward branches on the input's size (timm's MobileViT block:
``if new_h != H: x = F.interpolate(...)``), which torch.fx's symbolic tracing cannot follow.

:class:`ConcreteTracer` runs every operation on real tensors while it records it, twice: on the probe batch and on
its first image alone. A tensor's ``shape`` / ``size()`` / ``dim()`` then answer with plain integers wherever the
two runs agree, so Python control flow on sizes takes the branch the probe takes; a size that differs between the
runs depends on the batch size and stays symbolic (a ``size`` node), so the graph still takes any batch size. The
spatial sizes are fixed: such a copy explains images of the probe's size only (``concrete_shapes`` on the graph).
Control flow on tensor *values* still fails, as it should — no single graph stands for it.
"""

from __future__ import annotations

import contextlib
import operator
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from .composite import Composite
from .trace import Tracer, failing_module, traceable_batch_norm


def _untraced():
    """fx's patches (module calls, wrapped functions) undone while the real values are computed."""
    revert = getattr(fx._symbolic_trace, "_maybe_revert_all_patches", None)
    return revert() if revert is not None else contextlib.nullcontext()


class _ShapeProxy(fx.Proxy):
    """A proxy whose ``shape``, ``size()``, ``dim()`` and ``ndim`` come from :class:`ConcreteTracer`'s runs."""

    def __getattr__(self, k: str) -> Any:
        if k in ("shape", "size", "dim", "ndim") and isinstance(self.tracer, ConcreteTracer):
            dims = self.tracer.dims(self)
            if dims is not None:
                if k == "shape":
                    return torch.Size(dims) if all(isinstance(d, int) for d in dims) else tuple(dims)
                if k == "size":
                    return lambda dim=None: (torch.Size(dims) if all(isinstance(d, int) for d in dims)
                                             else tuple(dims)) if dim is None else dims[dim]
                return len(dims) if k == "ndim" else (lambda: len(dims))
        return super().__getattr__(k)


class ConcreteTracer(Tracer):
    """:class:`~tffkit.lrp.trace.Tracer` that runs each recorded operation on ``example`` and on ``example[:1]``."""

    def __init__(self, composite: Composite, example: torch.Tensor):
        super().__init__(composite)
        self.inputs = (example, example[:1])
        self.values: dict[fx.Node, tuple[Any, Any]] = {}

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ShapeProxy(node, self)

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None) -> fx.Node:
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        if kind != "output":
            try:
                with torch.no_grad(), _untraced():
                    self.values[node] = (self._run(node, 0), self._run(node, 1))
            except Exception:  # noqa: BLE001 - a value we cannot compute only keeps its sizes symbolic
                pass
        return node

    def _run(self, node: fx.Node, which: int) -> Any:
        args = fx.node.map_arg(node.args, lambda n: self.values[n][which])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: self.values[n][which])
        if node.op == "placeholder":
            return self.inputs[which]
        if node.op == "get_attr":
            return operator.attrgetter(node.target)(self.root)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return self.root.get_submodule(node.target)(*args, **kwargs)

    def dims(self, proxy: fx.Proxy) -> list[int | fx.Proxy] | None:
        """The sizes of ``proxy``'s tensor: integers, or ``size`` proxies along dimensions that follow the batch."""
        a, b = self.values.get(proxy.node, (None, None))
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.dim() != b.dim():
            return None
        return [sa if sa == sb else self.create_proxy("call_method", "size", (proxy, i), {})
                for i, (sa, sb) in enumerate(zip(a.shape, b.shape, strict=True))]


class SizeGuard:
    """Forward pre-hook of a copy traced with concrete shapes: refuses, in one line, images of another size."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape

    def __call__(self, module: nn.Module, args: tuple) -> None:
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"this detector was traced with concrete shapes (its forward branches on sizes), for "
                             f"inputs of shape {self.shape}; got {tuple(x.shape[1:])} — build the explainer with "
                             "input_shape set to the images' size")


class UntraceableError(ValueError):
    """torch.fx cannot trace the detector, not even with concrete shapes."""


def trace_model(net: nn.Module, composite: Composite, example: torch.Tensor) -> fx.GraphModule:
    """The fx graph of ``net``: traced symbolically, or where that fails (control flow on sizes) with concrete
    shapes (``concrete_shapes`` is then True on the graph). Raises :class:`UntraceableError` naming the module."""
    try:
        with traceable_batch_norm():
            gm = fx.GraphModule(net, Tracer(composite).trace(net))
        gm.concrete_shapes = False
        return gm
    except Exception as exc:  # noqa: BLE001 - any tracing failure: try concrete shapes
        symbolic = exc
    try:
        with traceable_batch_norm():
            gm = fx.GraphModule(net, ConcreteTracer(composite, example).trace(net))
        gm.concrete_shapes = True
        gm.register_forward_pre_hook(SizeGuard(tuple(example.shape[1:])))
        return gm
    except Exception as exc:  # noqa: BLE001 - reported with the module that failed
        raise UntraceableError(
            f"the detector cannot be traced by torch.fx, not even with concrete shapes ({type(exc).__name__}: "
            f"{exc}){failing_module(exc) or failing_module(symbolic)}: its control flow depends on tensor values. "
            "Move the branching code into a small function of its own and give that function a rule "
            "(Composite.with_, docs/lrp.md); a rule for a whole module that contains layers would hide those "
            "layers from LRP") from exc
