"""The published LRP implementations ``tff bench compare`` times beside ours, each as a step that computes the input
relevance of a batch: zennit 0.5.1 (ResNets: ``EpsilonGammaBox``, ``EpsilonPlusFlat``, with its ResNet canonizer)
and LXT 2.1 on torchvision's ViT (efficient mode — Gradient × Input with its rule functions, CP-LRP as its ViT
patches or AttnLRP as its LLM patches — and explicit AttnLRP). LXT's ``monkey_patch`` and explicit ``Composite``
import ``transformers`` (not a dependency of tffkit), so the ViT forward is written out here with LXT's own rule
functions, as its patches would make torchvision's modules run. A step is None with a reason when the library is
missing or the model is not of the family the reference supports."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

Step = Callable[[], None]


def _lxt_efficient_rules() -> ModuleType:
    """``lxt/efficient/rules.py`` loaded from its file (the ``lxt.efficient`` package imports ``transformers``)."""
    import lxt

    path = Path(lxt.__file__).parent / "efficient" / "rules.py"
    spec = importlib.util.spec_from_file_location("_tffkit_lxt_efficient_rules", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"no LXT efficient rules at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _vit_forward(model: nn.Module, x: torch.Tensor, *, norm: Callable, attend: Callable, gelu: Callable,
                 linear: Callable, add: Callable) -> torch.Tensor:
    """torchvision's ``VisionTransformer`` forward (eval) with each operation given: ``norm(ln, t)``, ``attend(q, k,
    v)`` on (B, heads, L, d), ``gelu(t)``, ``linear(t, weight, bias)``, ``add(a, b)``."""
    n, d = len(x), model.hidden_dim
    h = model.conv_proj(x).reshape(n, d, -1).permute(0, 2, 1)
    h = torch.cat([model.class_token.expand(n, -1, -1), h], 1)
    h = add(h, model.encoder.pos_embedding.expand_as(h))
    for block in model.encoder.layers:
        att = block.self_attention
        heads = att.num_heads
        y = norm(block.ln_1, h)
        q, k, v = (linear(y, w, b).reshape(n, -1, heads, d // heads).transpose(1, 2) for w, b in
                   zip(att.in_proj_weight.chunk(3), att.in_proj_bias.chunk(3), strict=True))
        ctx = attend(q, k, v).transpose(1, 2).reshape(n, -1, d)
        h = add(h, linear(ctx, att.out_proj.weight, att.out_proj.bias))
        m = gelu(linear(norm(block.ln_2, h), block.mlp[0].weight, block.mlp[0].bias))
        h = add(h, linear(m, block.mlp[3].weight, block.mlp[3].bias))
        h = h.clone()  # LXT's explicit LayerNorm differentiates its input again
    h = norm(model.encoder.ln, h)
    return linear(h[:, 0], model.heads.head.weight, model.heads.head.bias)


def lxt_vit_step(model: nn.Module, x: torch.Tensor, mode: str) -> tuple[Step | None, str]:
    """LXT on torchvision's ViT: ``mode`` ``efficient-cp``, ``efficient-attnlrp`` or ``explicit-attnlrp``."""
    from torchvision.models import VisionTransformer

    if not isinstance(model, VisionTransformer):
        return None, "LXT's ViT rules are written for torchvision's VisionTransformer"
    try:
        if mode.startswith("efficient"):
            lr = _lxt_efficient_rules()
        else:
            import lxt.explicit.functional as lf
            import lxt.explicit.rules as lxr
    except ImportError as exc:
        return None, f"LXT not importable ({exc})"
    if mode.startswith("efficient"):
        def norm(ln, t):
            mean = t.mean(-1, keepdim=True)
            std = ((t - mean) ** 2).mean(-1, keepdim=True).add(ln.eps).sqrt()
            return (t - mean) / lr.stop_gradient(std) * ln.weight + ln.bias

        def attend(q, k, v):
            if mode == "efficient-cp":
                q, k = lr.stop_gradient(q), lr.stop_gradient(k)
            else:
                q, k, v = lr.divide_gradient(q, 4), lr.divide_gradient(k, 4), lr.divide_gradient(v, 2)
            return F.scaled_dot_product_attention(q, k, v)

        ops = {"norm": norm, "attend": attend, "gelu": lambda t: lr.identity_rule_implicit(F.gelu, t),
               "linear": F.linear, "add": torch.add}
    else:
        eps = 1e-6

        def attend(q, k, v):
            scores = lf.matmul(q, k.transpose(-1, -2) * q.shape[-1] ** -0.5, False, eps)
            return lf.matmul(lf.softmax(scores, -1), v, False, eps)

        ops = {"norm": lambda ln, t: lf.layer_norm_grad_fn.apply(t, ln.weight, ln.bias, ln.eps, eps),
               "attend": attend, "gelu": lambda t: lxr.identity(F.gelu, t),
               "linear": lambda t, w, b: lf.linear_epsilon(t, w, b, eps), "add": lambda a, b: lf.add2(a, b, False, eps)}

    def step() -> None:
        xg = x.detach().requires_grad_(True)
        y = _vit_forward(model, xg, **ops).reshape(-1)
        (g,) = torch.autograd.grad(y, xg, torch.ones_like(y))
        if mode.startswith("efficient"):
            g.mul_(x)  # Gradient × Input
    return step, ""


def zennit_step(model: nn.Module, x: torch.Tensor, composite: str, bounds: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[Step | None, str]:
    """zennit on a torchvision ResNet: ``composite`` ``EpsilonGammaBox`` (zβ at the pixels within ``bounds``, γ on
    the convolutions, ε on the dense layers) or ``EpsilonPlusFlat``; input relevance for output relevance 1."""
    try:
        from zennit import composites
        from zennit.attribution import Gradient
        from zennit.torchvision import ResNetCanonizer
    except ImportError as exc:
        return None, f"zennit not importable ({exc})"
    from torchvision.models.resnet import ResNet

    if not isinstance(model, ResNet):
        return None, "zennit's ResNet canonizer needs a torchvision ResNet"
    if composite == "EpsilonGammaBox":
        shape = (1, -1, 1, 1)
        low, high = (b.to(x.device, x.dtype).reshape(shape).expand_as(x) for b in bounds)
        comp = composites.EpsilonGammaBox(low=low, high=high, canonizers=[ResNetCanonizer()])
    else:
        comp = composites.EpsilonPlusFlat(canonizers=[ResNetCanonizer()])
    attributor = Gradient(model=model, composite=comp)
    attributor.__enter__()  # the rules stay registered for the timed calls (this process only runs this step)
    grad_out = torch.ones(x.shape[0], 1, device=x.device, dtype=x.dtype)

    def step() -> None:
        attributor(x, grad_out)
    return step, ""
