"""Composites: which LRP rule every module type, function, tensor method and named layer gets — as a value.

A :class:`Composite` is immutable: :meth:`Composite.with_` returns an extended copy, so two explainers with
different composites in one process never affect each other (as zennit's ``Composite`` instances and LXT's
per-family composites). The default (:data:`tffkit.lrp.registry.DEFAULT`, named ``paper``) is the rule table of
:mod:`.registry`; :func:`named` gives the composites a user can pick by name::

    from tffkit.lrp import Explainer, composites
    from tffkit.lrp.registry import Epsilon, Gradient, Identity, ZPlus, ConvEpsilon

    mine = composites.named("paper").with_(
        {MyFusedLinearBlock: Epsilon(),          # a module type (kept as a leaf, not traced into)
         my_activation: Identity(activation=True),  # a function called in a forward
         "timm.layers.SomeUntraceablePad": Gradient()},  # a module class by qualified name (no import)
        layers={"head.fc": Epsilon(), "stages.0.*": ZPlus(fallback="all")},  # by layer name (fnmatch)
        first=ConvEpsilon())                      # the convolution(s) reading the pixels
    Explainer(model, composite=mine)

A module whose class (or a base class) has a rule is a leaf of the traced graph unless its class overrides
``forward`` below the class with the rule — then it is traced into. A module may carry ``tff_lrp_rules`` (a mapping
of targets to rules, as above): the Explainer extends its composite with them, so a model brings the rules of its
own operations without touching any global table.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from .kinds import Rule, Trace

_KEEP: Any = object()


def _frozen(d: Mapping | None = None) -> Mapping:
    return MappingProxyType(dict(d or {}))


def qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _table(target: Any) -> str:
    """Which table a rule target belongs to: ``modules``, ``named``, ``methods`` or ``functions``."""
    if isinstance(target, type) and issubclass(target, nn.Module):
        return "modules"
    if isinstance(target, str):
        return "named" if "." in target else "methods"
    if getattr(target, "__objclass__", None) is torch.Tensor or getattr(target, "__qualname__", "").startswith(
            "Tensor."):
        return "methods"
    if callable(target):
        return "functions"
    raise TypeError(f"cannot give a rule to {target!r}")


@dataclass(frozen=True)
class Composite:
    """The rules of an explanation. ``modules`` (class → rule), ``functions`` (callable → rule), ``methods``
    (tensor method name → rule), ``named`` (qualified class or function name → rule); ``layers``: rules by
    layer name (the module path as :meth:`~tffkit.lrp.Explainer.rules` lists it; ``fnmatch`` patterns), above
    the type's rule; ``first``: the rule of the convolutions reading the input (None: their type's rule);
    ``eps``: the ε of every ε-stabilised rule; ``attention``: ``attnlrp`` or ``cp`` (CP-LRP); ``fast``: every rule
    is computed in gradient form, one Gradient × Input backward pass (:mod:`.fast`, the ``fast`` composite)."""

    name: str = "custom"
    modules: Mapping[type, Rule] = field(default_factory=_frozen)
    functions: Mapping[Callable, Rule] = field(default_factory=_frozen)
    methods: Mapping[str, Rule] = field(default_factory=_frozen)
    named: Mapping[str, Rule] = field(default_factory=_frozen)
    layers: Mapping[str, Rule] = field(default_factory=_frozen)
    first: Rule | None = None
    eps: float = 1e-6
    attention: str = "attnlrp"
    fast: bool = False

    def with_(self, rules: Mapping[Any, Rule] | None = None, *, layers: Mapping[str, Rule] | None = None,
              first: Rule | None = _KEEP, eps: float | None = None, attention: str | None = None,
              name: str | None = None, fast: bool | None = None) -> Composite:
        """A copy with ``rules`` (module classes, qualified names, functions, tensor methods or method names → rule)
        and ``layers`` (layer name or pattern → rule) added or replaced, and the other fields given changed."""
        tables = {t: dict(getattr(self, t)) for t in ("modules", "functions", "methods", "named")}
        for target, rule in (rules or {}).items():
            if not isinstance(rule, Rule):
                raise TypeError(f"rule must be a tffkit.lrp.registry.Rule, got {rule!r}")
            table = _table(target)
            key = target.__name__ if table == "methods" and not isinstance(target, str) else target
            tables[table][key] = rule
        changes: dict[str, Any] = {t: _frozen(v) for t, v in tables.items()}
        if layers:
            if not all(isinstance(r, Rule) for r in layers.values()):
                raise TypeError("every layer rule must be a tffkit.lrp.registry.Rule")
            changes["layers"] = _frozen({**self.layers, **layers})
        if first is not _KEEP:
            changes["first"] = first
        for key, value in (("eps", eps), ("attention", attention), ("name", name), ("fast", fast)):
            if value is not None:
                changes[key] = value
        if changes.get("attention", self.attention) not in ("attnlrp", "cp"):
            raise ValueError(f"unknown attention rule {changes['attention']!r}; use attnlrp or cp")
        return replace(self, **changes)

    def with_convs(self, rule: Rule | Callable[[Rule], Rule]) -> Composite:
        """A copy in which every convolution type (every entry with a convolution rule) gets ``rule`` (or
        ``rule(old)`` when ``rule`` is a function of the old rule)."""
        from .convs import Conv

        def new(old: Rule) -> Rule:
            return old if not isinstance(old, Conv) else rule if isinstance(rule, Rule) else rule(old)
        out = {t: {k: new(r) for k, r in getattr(self, t).items()} for t in ("modules", "functions", "named")}
        return replace(self, **{t: _frozen(v) for t, v in out.items()})

    def extended_by(self, model: nn.Module) -> Composite:
        """This composite with the ``tff_lrp_rules`` the model's modules carry (a module's own operations)."""
        extra: dict[Any, Rule] = {}
        for m in model.modules():
            extra.update(getattr(m, "tff_lrp_rules", None) or {})
        return self.with_(extra) if extra else self

    def concrete(self, rule: Rule, site: Any) -> Rule:
        """The rule that runs at ``site``: ``rule`` resolved there, in gradient form when the composite is fast."""
        rule = rule.resolve(site)
        if self.fast:
            from .fast import to_fast
            return to_fast(rule)
        return rule

    # lookups -----------------------------------------------------------------------------------------------
    def module_rule(self, module: nn.Module, name: str | None = None) -> Rule | None:
        """The rule of ``module`` (its layer name first, then the most specific class with a rule), or None when
        it is to be traced into: no class with a rule, or a class below it overrides ``forward``."""
        if name is not None and (rule := self.layer_rule(name)) is not None:
            return rule
        for cls in type(module).__mro__:
            rule = self.modules.get(cls) or self.named.get(qualname(cls))
            if rule is not None:
                same = all(getattr(type(module), a, None) is getattr(cls, a, None)
                           for a in ("forward", "_conv_forward"))
                return rule if same and not isinstance(rule, Trace) else None
        return None

    def has_rule_base(self, module: nn.Module) -> bool:
        """Whether some class of ``module``'s MRO has a rule (then an overriding subclass is traced into)."""
        return any(c in self.modules or qualname(c) in self.named for c in type(module).__mro__)

    def layer_rule(self, name: str) -> Rule | None:
        """The by-name rule of layer ``name`` (exact name first, then the first matching pattern)."""
        if not self.layers:
            return None
        if name in self.layers:
            return self.layers[name]
        return next((r for p, r in self.layers.items() if fnmatch.fnmatchcase(name, p)), None)

    def function_rule(self, target: Callable) -> Rule | None:
        """The rule of a function called in the graph (by identity, then by qualified name)."""
        try:
            rule = self.functions.get(target)
        except TypeError:  # unhashable
            rule = None
        if rule is None:
            rule = self.named.get(f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}")
        return rule

    def method_rule(self, name: str) -> Rule | None:
        """The rule of a tensor method called in the graph."""
        return self.methods.get(name)

    def __copy__(self) -> Composite:
        return self  # immutable

    def __deepcopy__(self, memo: dict) -> Composite:
        return self

    def __repr__(self) -> str:
        return (f"Composite({self.name!r}: {len(self.modules) + len(self.named)} module, {len(self.functions)} "
                f"function, {len(self.methods)} method rules, {len(self.layers)} by name, first={self.first!r}, "
                f"eps={self.eps:g}, attention={self.attention!r}{', fast' if self.fast else ''})")

