"""The LRP engine: explain a batch from the logit (or from chosen neurons) with taps on every layer.

A *tap* is a callback ``tap(layer, relevance, activation)`` run inside the backward pass at a
feature-map layer, so analyses reduce relevance on the device (per-channel sums, maxima, argmax)
without keeping maps. ``activation`` is the layer's output when ``with_activation=True``.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from ..heads import default_input_shape, input_rule_of, normalization_of
from . import registry as reg
from .check import RelevanceCheck, check_relevance
from .composite import Composite
from .convs import FALLBACKS, Conv, ConvEpsilon, ZBox, ZPlus
from .convs import conv_rule as conv_rule_named
from .fastfn import gradient_seed
from .registry import RuleConfig, named
from .rewrite import FeatureLayer, build_explainable
from .rules import gradient_mode, in_gradient_mode
from .summary import RuleEntry, rules_text

Tap = Callable[[FeatureLayer, torch.Tensor, "torch.Tensor | None"], None]
ForwardTap = Callable[[FeatureLayer, torch.Tensor], None]
PAPER_CODE_BOUNDS = (-2.118, 2.640)  # scalar pixel bounds used by the public code (ImageNet-normalised)
INPUT_RULES = ("zbox", "zplus", "epsilon", "gamma")


def _conv_rule_name(comp: Composite) -> str:
    rule = comp.modules.get(nn.Conv2d)
    return rule.name if isinstance(rule, Conv) else "zplus"


def input_bounds(bounds: str = "exact", mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 channels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (low, high) of normalised pixels: ``exact`` (0−μ)/σ, (1−μ)/σ from the detector's normalisation
    ``mean``/``std``, or the ``paper-code`` scalars (for ``channels`` channels, default ``len(mean)``)."""
    if bounds == "exact":
        if mean is None or std is None:
            raise ValueError("exact pixel bounds need the detector's normalisation: pass mean= and std= (its "
                             "Preprocessing's; tffkit.inputs.explainer_for does)")
        m = torch.tensor(mean, dtype=torch.float64, device="cpu")
        s = torch.tensor(std, dtype=torch.float64, device="cpu")
        return (0 - m) / s, (1 - m) / s
    if bounds == "paper-code":
        n = channels if channels is not None else len(mean) if mean is not None else None
        if n is None:
            raise ValueError("paper-code pixel bounds need the number of channels (channels= or mean=)")
        return (torch.full((n,), PAPER_CODE_BOUNDS[0], device="cpu"),
                torch.full((n,), PAPER_CODE_BOUNDS[1], device="cpu"))
    raise ValueError(f"unknown bounds {bounds!r}; use 'exact' or 'paper-code'")


@dataclass
class Explanation:
    """Logits of the batch (B,) and, when asked for, the input relevance (B, C, H, W)."""

    logits: torch.Tensor
    input_relevance: torch.Tensor | None


class Explainer:
    """LRP for a detector (docs/algorithms.md), built on a BN-folded, rule-annotated copy; the detector is never
    modified. A two-class detector is explained through its log-odds ``out[fake_index] − out[other]``.

    ``composite``: the rules (:class:`~tffkit.lrp.composite.Composite` or a name: ``paper``, the default;
    ``attnlrp``; ``cp-lrp``), extended by the ``tff_lrp_rules`` the model's modules carry. The other rule options
    are shorthands applied on top of it:
    ``input_rule``: the rule of the convolutions reading the pixels, ``zbox`` (zβ with pixel bounds, ``bounds``
    ``exact`` or ``paper-code``), ``zplus`` (their type's rule: z⁺, or ε under
    ``conv_rule='epsilon'``), ``epsilon`` (ε rule, bias in the denominator), ``gamma``, a rule object
    (:mod:`~tffkit.lrp.convs`) or ``auto``: the composite's ``first`` rule, else the one the detector's zoo entry
    asks for (its ``input_rule`` field: zβ for the paper's ResNets), else ``zplus``.
    ``attention``: ``attnlrp`` or ``cp`` (attention weights held constant). ``zplus_fallback``:
    where a z⁺ neuron has no positive input, spread its relevance evenly over its window in ``depthwise``
    convolutions (default), in ``all`` convolutions, or ``none`` (lost, as in the paper's code).
    ``conv_rule``: the rule of every convolution, ``zplus`` (β = 0, the paper's) or ``epsilon`` (ε rule, bias in
    the denominator; LRP-ε, a comparison ranking in ``tff faithfulness``); a zβ input rule is kept.
    ``mean``/``std``: the detector's input normalisation, which gives zβ's ``exact`` pixel bounds: the caller
    passes its preprocessing's (:func:`tffkit.inputs.explainer_for` does); without them the normalisation the
    detector carries is used (``tff_normalization``, attached when the zoo builds or loads it:
    :func:`tffkit.heads.normalization_of`), else building a zβ input rule fails saying so.
    ``input_shape``: (C, H, W) of the probe batch used to trace the detector and check the copy's logits
    (default: :func:`default_input_shape`). With ``check`` the copy's logits must equal the detector's on the probe
    batch and its relevance there is checked (:mod:`.check`: a :class:`~tffkit.lrp.check.RelevanceWarning` names
    the layer where it stops being sane; the outcome is ``relevance_check``). :meth:`rules` lists every rule.
    """

    def __init__(self, model: nn.Module, input_rule: str | Conv = "auto", bounds: str = "exact",
                 eps: float | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, attention: str | None = None,
                 zplus_fallback: str | None = None, input_shape: Sequence[int] | None = None, fake_index: int = 1,
                 check: bool = True, conv_rule: str | None = None, composite: Composite | str | None = None):
        comp = self._composite(model, composite, input_rule, eps, attention, zplus_fallback, conv_rule)
        if bounds not in ("exact", "paper-code"):
            raise ValueError(f"unknown bounds {bounds!r}; use 'exact' or 'paper-code'")
        param = next(iter(model.parameters()), None)
        device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
        input_shape = default_input_shape(model) if input_shape is None else input_shape
        if isinstance(comp.first, ZBox) and comp.first.low is None:
            if mean is None or std is None:
                mean, std = normalization_of(model) or (mean, std)
            low, high = input_bounds(comp.first.bounds or bounds, mean, std, channels=input_shape[0])
            comp = comp.with_(first=comp.first.with_bounds(low.to(device, dtype), high.to(device, dtype)))
        self.composite = comp
        self.input_rule = comp.first.name if isinstance(comp.first, Conv) else _conv_rule_name(comp)
        self.bounds, self.eps, self.conv_rule = bounds, comp.eps, _conv_rule_name(comp)
        self.config = RuleConfig(comp.eps, comp.attention)
        example = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0), device="cpu")
        example = example.to(device, dtype)
        self.model, self.layers = build_explainable(model, example, comp, fake_index=fake_index, check=check)
        self.model.to(device)
        self.by_name = {layer.name: layer for layer in self.layers}
        self._truncated: dict[tuple[str, ...], fx.GraphModule] = {}
        self.relevance_check: RelevanceCheck | None = None
        if check and example.device.type != "meta":
            self.relevance_check = check_relevance(self, example)

    @staticmethod
    def _composite(model: nn.Module, composite: Composite | str | None, input_rule: str | Conv, eps: float | None,
                   attention: str | None, zplus_fallback: str | None, conv_rule: str | None) -> Composite:
        """The composite the options describe: ``composite`` (a value or a name; default ``paper``) extended by the
        model's own ``tff_lrp_rules``, then the shorthand options on top."""
        comp = named(composite) if isinstance(composite, str) else composite if composite is not None else reg.DEFAULT
        if not isinstance(comp, Composite):
            raise TypeError(f"composite must be a tffkit.lrp.Composite or a name, got {composite!r}")
        comp = comp.extended_by(model).with_(eps=eps, attention=attention)
        if zplus_fallback is not None:
            if zplus_fallback not in FALLBACKS:
                raise ValueError(f"unknown zplus_fallback {zplus_fallback!r}; use depthwise, all or none")
            comp = comp.with_convs(lambda r: ZPlus(zplus_fallback) if isinstance(r, ZPlus) else r)
            if isinstance(comp.first, ZPlus):
                comp = comp.with_(first=ZPlus(zplus_fallback))
        if conv_rule is not None:
            if conv_rule not in ("zplus", "epsilon"):
                raise ValueError(f"unknown conv_rule {conv_rule!r}; use zplus or epsilon")
            fallback = zplus_fallback or "depthwise"
            comp = comp.with_convs(lambda r: ConvEpsilon() if conv_rule == "epsilon" else
                                   r if isinstance(r, ZPlus) else ZPlus(fallback))
        if isinstance(input_rule, Conv):
            return comp.with_(first=input_rule)
        if input_rule == "auto":  # the composite's, else the zoo entry's (a field, as timm's first_conv)
            if comp.first is not None:
                return comp
            input_rule = input_rule_of(model)
        if input_rule not in INPUT_RULES:
            raise ValueError(f"unknown input_rule {input_rule!r}; use auto, {', '.join(INPUT_RULES)}")
        # zplus: the convolutions' own rule (z⁺ in the paper composite, ε under conv_rule='epsilon')
        return comp.with_(first=None if input_rule == "zplus" else
                          conv_rule_named(input_rule, fallback=zplus_fallback or "depthwise"))

    def rules(self) -> list[RuleEntry]:
        """Every operation on the relevance path in forward order: module path, operation, rule, unit layer or not."""
        return list(getattr(self.model, "lrp_rules", []))

    def rules_summary(self) -> str:
        """:meth:`rules` as an aligned text table (what ``--show-rules`` prints)."""
        return rules_text(self.rules())

    def print_summary(self) -> None:
        print(self.rules_summary())

    @property
    def device(self) -> torch.device:
        return next(itertools.chain(self.model.buffers(), self.model.parameters())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(itertools.chain(self.model.buffers(), self.model.parameters())).dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Explainer:
        """Move (and optionally cast, e.g. to float64 for tests) the explainable model."""
        self.model.to(device=device, dtype=dtype)
        self._truncated.clear()
        return self

    def module(self, layer: str | FeatureLayer) -> nn.Module:
        """The explainable module producing ``layer``'s feature maps."""
        return self.model.get_submodule(layer if isinstance(layer, str) else layer.name)

    @property
    def n_channels(self) -> int:
        """Total number of feature maps over all layers."""
        return sum(layer.channels for layer in self.layers)

    @contextlib.contextmanager
    def _hooks(self, layers: Sequence[FeatureLayer], hook: Callable[[FeatureLayer, torch.Tensor], None],
               model: nn.Module | None = None) -> Iterator[None]:
        root = model or self.model
        handles = [root.get_submodule(layer.name).register_forward_hook(
            lambda _m, _i, out, layer=layer: hook(layer, out)) for layer in layers]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _select(self, layers: Sequence[str | FeatureLayer] | None) -> list[FeatureLayer]:
        if layers is None:
            return list(self.layers)
        unknown = [x for x in layers if (x if isinstance(x, str) else x.name) not in self.by_name]
        if unknown:
            raise KeyError(f"not feature-map layers of this model: {unknown}")
        return [self.by_name[x if isinstance(x, str) else x.name] for x in layers]

    @torch.no_grad()
    def forward(self, x: torch.Tensor, tap: ForwardTap | None = None,
                layers: Sequence[str | FeatureLayer] | None = None) -> torch.Tensor:
        """Logits (B,) of the folded model; ``tap(layer, activation)`` sees each chosen layer's output."""
        if tap is None:
            return self.model(x).reshape(-1)
        with self._hooks(self._select(layers), tap):
            return self.model(x).reshape(-1)

    def explain(self, x: torch.Tensor, seed: float | torch.Tensor | Callable[[torch.Tensor], torch.Tensor] = 1.0,
                tap: Tap | None = None, layers: Sequence[str | FeatureLayer] | None = None,
                with_activation: bool = False, input_relevance: bool = True) -> Explanation:
        """LRP from the logit with relevance ``seed`` per image (+1 fake, −1 real, a (B,) tensor, or a
        function of the logits giving it — 0 leaves an image unexplained). Without ``input_relevance``
        the backward stops at the first layer's output (taps still run)."""
        x = x.detach().requires_grad_(True)
        chosen = self._select(layers) if tap is not None else []
        first = [m for m in self.model.modules() if getattr(m, "reads_input", False)]
        try:
            for m in first:
                m.skip_backward = not input_relevance
            fast = self._fast()
            with torch.enable_grad(), self._relevance_hooks(chosen, tap, with_activation, fast=fast):
                logits = self.model(x).reshape(-1)
                seeds = seed(logits.detach()) if callable(seed) else seed
                if isinstance(seeds, torch.Tensor):
                    seeds = seeds.to(logits.device, logits.dtype, non_blocking=True).expand_as(logits)
                else:  # a number: filled on the device (no host-to-device copy, no sync)
                    seeds = torch.full_like(logits, float(seeds))
                if fast:  # gradient form: g = R / logit flows back, relevance is activation ⊙ g
                    seeds = gradient_seed(seeds, logits, self.eps)
                (rel,) = torch.autograd.grad(logits, x, seeds, allow_unused=True)
                rel = rel * x.detach() if fast and rel is not None else rel
        finally:
            for m in first:
                m.skip_backward = False
        return Explanation(logits.detach(), rel if input_relevance else None)

    def _fast(self) -> bool:
        """Whether this explanation runs in gradient form (a fast composite, outside :meth:`gradient`)."""
        return self.composite.fast and not in_gradient_mode()

    def gradient(self, x: torch.Tensor, seed: float | torch.Tensor | Callable[[torch.Tensor], torch.Tensor] = 1.0,
                 tap: Tap | None = None, layers: Sequence[str | FeatureLayer] | None = None,
                 with_activation: bool = False) -> Explanation:
        """As :meth:`explain`, but every rule runs its operation plainly (:func:`~tffkit.lrp.rules.gradient_mode`):
        taps see the gradient of seed · logit at each layer, and ``input_relevance`` is the input gradient."""
        with gradient_mode():
            return self.explain(x, seed, tap, layers, with_activation, input_relevance=True)

    def explain_neurons(self, x: torch.Tensor, seeds: Mapping[str, torch.Tensor], tap: Tap | None = None,
                        layers: Sequence[str | FeatureLayer] | None = None) -> torch.Tensor:
        """Input relevance (B, C, H, W) when relevance ``seeds[layer]`` (B, C_l, H_l, W_l) is placed at layers.

        Rows are independent, so one batch may seed different layers for different images (the others
        zero). The forward stops at the deepest seeded layer.
        """
        names = tuple(sorted(seeds, key=lambda n: self.by_name[n].index))
        in_graph = {n.target for n in self.model.graph.nodes if n.op == "call_module"}
        model = self._truncated_model(names) if all(n in in_graph for n in names) else self.model
        x = x.detach().requires_grad_(True)
        chosen = self._select(layers) if tap is not None else []
        found: dict[str, torch.Tensor] = {}
        fast = self._fast()
        with torch.enable_grad(), self._relevance_hooks(chosen, tap, False, model, fast=fast), \
                self._hooks([self.by_name[n] for n in names], lambda layer, out: found.__setitem__(layer.name, out),
                            model):
            model(x)
            outs = [found[n] for n in names]
            grads = [seeds[n].to(outs[i].dtype) for i, n in enumerate(names)]
            if fast:
                grads = [gradient_seed(r, out, self.eps) for r, out in zip(grads, outs, strict=True)]
            (rel,) = torch.autograd.grad(outs, x, grads)
        return rel * x.detach() if fast else rel

    @contextlib.contextmanager
    def _relevance_hooks(self, layers: Sequence[FeatureLayer], tap: Tap | None, with_activation: bool,
                         model: nn.Module | None = None, *, fast: bool = False) -> Iterator[None]:
        if tap is None or not layers:
            yield
            return

        def on_forward(layer: FeatureLayer, out: torch.Tensor) -> None:
            act = out.detach() if with_activation else None
            if fast:  # what flows back is g: the layer's relevance is its output ⊙ g
                value = out.detach()
                out.register_hook(lambda g: tap(layer, g * value, act))
            else:
                out.register_hook(lambda rel: tap(layer, rel, act))

        with self._hooks(layers, on_forward, model):
            yield

    def _truncated_model(self, names: tuple[str, ...]) -> fx.GraphModule:
        """The explainable graph cut after the given layers, returning their outputs (cached)."""
        if names not in self._truncated:
            graph = copy_graph(self.model.graph)
            wanted = {n.target: n for n in graph.nodes if n.op == "call_module" and n.target in names}
            missing = [n for n in names if n not in wanted]
            if missing:
                raise KeyError(f"layers {missing} not found in the explainable graph")
            old_out = next(n for n in graph.nodes if n.op == "output")
            graph.erase_node(old_out)
            graph.output(tuple(wanted[n] for n in names))
            gm = fx.GraphModule(self.model, graph)
            gm.graph.eliminate_dead_code()
            gm.recompile()
            self._truncated[names] = gm
        return self._truncated[names]


def copy_graph(graph: fx.Graph) -> fx.Graph:
    """A deep copy of an fx graph (nodes re-created, same targets)."""
    new = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    out = new.graph_copy(graph, env)
    new.output(out)
    return new
