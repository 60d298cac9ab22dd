"""Forward passes of many variants of one traced model that change the outputs of a few modules each (units
dropped by forward hooks): everything upstream of the changed modules is computed once per batch and reused.

For each variant the *changed* nodes are the calls of its modules and everything that depends on them; the rest
of the graph has the values of the unchanged model. One recording pass per batch returns the logits and the
values the variants read across that border (the *frontier*); each variant then runs only its changed nodes, as a
graph module of its own (compiled once) that takes the frontier as inputs. The same operations run on the same
values, so every logit equals the full forward's bit for bit (tested). A frontier held for the batch costs memory:
values are kept, the deepest first, while their bytes for the first batch fit ``budget_bytes`` (measured on one of
its images, never holding them all); a variant that needs a value not kept
runs the full forward, and so does every variant of a graph with an in-place operation (a value written in place
is not an edge of the graph, so what depends on it cannot be read off).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
import torch.fx as fx

BUDGET_BYTES = 2 << 30  # frontier values kept per batch (2 GiB)
_INPLACE = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv, operator.setitem}


def _mutates(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` may write into one of its inputs (an in-place operator, method, function or module)."""
    if node.op == "call_module":
        return getattr(gm.get_submodule(node.target), "inplace", False) is True
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return (node.target in _INPLACE or node.kwargs.get("inplace") is True
            or (node.op in ("call_method", "call_function") and name.endswith("_") and not name.startswith("_")))


class PartialForward:
    """Runs variant ``v`` of ``gm`` (its forward hooks change the outputs of ``changed[v]``, qualified module
    names) from the values of the unchanged model upstream of those modules. Use: ``values = pf.record(x)``
    (the unchanged model: ``values[0]`` is its output), then, with variant ``v``'s hooks applied,
    ``pf.run(v, x, values)``."""

    def __init__(self, gm: fx.GraphModule, changed: Sequence[Sequence[str]], budget_bytes: int = BUDGET_BYTES):
        self.gm, self.budget = gm, budget_bytes
        self.nodes = list(gm.graph.nodes)
        self.order = {n: i for i, n in enumerate(self.nodes)}
        self._calls: dict[str, list[fx.Node]] = {}  # module name → the nodes calling it
        for n in self.nodes:
            if n.op == "call_module":
                self._calls.setdefault(n.target, []).append(n)
        in_place = any(_mutates(gm, n) for n in self.nodes)
        self.changed = [None if in_place else self._changed(names) for names in changed]
        self.frontiers = [None if c is None else self._frontier(c) for c in self.changed]
        self._suffix: dict[int, fx.GraphModule] = {}
        self.kept: list[fx.Node] | None = None  # decided on the first batch
        self._slot: dict[fx.Node, int] = {}  # a kept value's position in record's list
        self._recorder: fx.GraphModule | None = None

    def _changed(self, names: Sequence[str]) -> set[fx.Node] | None:
        """The calls of the modules (or of a module containing them) and every node downstream; None when a
        module is not called by a node of the graph (the variant runs the full forward)."""
        roots = set()
        for name in names:
            parts = name.split(".")  # the module's own calls and those of every module containing it
            hits = [n for i in range(1, len(parts) + 1) for n in self._calls.get(".".join(parts[:i]), ())]
            if not hits:
                return None
            roots.update(hits)
        out, stack = set(), list(roots)
        while stack:
            node = stack.pop()
            if node not in out:
                out.add(node)
                stack.extend(node.users)
        return out if self.nodes[-1] in out else set()  # a change that does not reach the output changes nothing

    def _frontier(self, changed: set[fx.Node]) -> list[fx.Node]:
        """The unchanged values the changed nodes read (parameters and constants are read from the module)."""
        seen = {a for n in changed for a in n.all_input_nodes if a not in changed and a.op != "get_attr"}
        return sorted(seen, key=self.order.__getitem__)

    def _choose(self, sizes: dict[fx.Node, int]) -> list[fx.Node]:
        """The frontier values kept: the deepest first while their bytes fit the budget."""
        kept, total = [], 0
        for node in sorted(sizes, key=self.order.__getitem__, reverse=True):
            if total + sizes[node] <= self.budget:
                kept.append(node)
                total += sizes[node]
        return sorted(kept, key=self.order.__getitem__)

    def _recording(self, nodes: Sequence[fx.Node]) -> fx.GraphModule:
        """The model's graph returning (its output, *the values of ``nodes``)."""
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for node in self.nodes:
            if node.op == "output":
                graph.output((fx.map_arg(node.args[0], env.__getitem__), *(env[n] for n in nodes)))
            else:
                env[node] = graph.node_copy(node, env.__getitem__)
        return fx.GraphModule(self.gm, graph)

    def record(self, x: torch.Tensor) -> list:
        """The unchanged model on ``x``: [its output, *the kept frontier values]."""
        if self.kept is None:  # sizes from one image of the first batch, times its batch size
            wanted = sorted({n for f in self.frontiers if f for n in f}, key=self.order.__getitem__)
            probe = self._recording(wanted)(x[:1])[1:]
            self.kept = self._choose({n: v.numel() * v.element_size() * len(x) if isinstance(v, torch.Tensor) else 0
                                      for n, v in zip(wanted, probe, strict=True)})
            self._slot = {n: i + 1 for i, n in enumerate(self.kept)}
            self._recorder = self._recording(self.kept)
        return list(self._recorder(x))

    def run(self, v: int, x: torch.Tensor, values: list) -> torch.Tensor:
        """Variant ``v``'s output (its hooks applied by the caller) from ``record``'s ``values`` of this batch."""
        changed, frontier = self.changed[v], self.frontiers[v]
        if changed is not None and not changed:  # nothing changed: the unchanged model's output
            return values[0]
        if changed is None or any(n not in self._slot for n in frontier):
            return self.gm(x)
        if v not in self._suffix:
            self._suffix[v] = self._suffix_module(changed, frontier)
        return self._suffix[v](*(values[self._slot[n]] for n in frontier))

    def _suffix_module(self, changed: set[fx.Node], frontier: list[fx.Node]) -> fx.GraphModule:
        """The changed nodes as a graph of their own whose inputs are the frontier values."""
        graph = fx.Graph()
        env = {node: graph.placeholder(f"frontier_{node.name}") for node in frontier}
        for node in self.nodes:
            if node.op == "get_attr" and any(u in changed for u in node.users):
                env[node] = graph.node_copy(node, env.__getitem__)
            elif node.op == "output":
                graph.output(fx.map_arg(node.args[0], env.__getitem__))
            elif node in changed:
                env[node] = graph.node_copy(node, env.__getitem__)
        return fx.GraphModule(self.gm, graph)
