"""The engine on the detectors researchers use now (small configurations of each architecture; the full
models in a slow test): the copy's logits equal the detector's, relevance is finite and conserved as
stated, units are found, the detector is untouched; agreement with LXT on a ViT; two-class heads; the
logit self-check."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from tffkit.detectors import tiny_convnext, tiny_vit
from tffkit.lrp import Explainer, LogitMismatchError
from tffkit.lrp import registry as reg


def lively(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights that keep activations alive (a stand-in for trained ones): BN statistics, norm and
    layer-scale weights, biases and zero-initialised heads are re-drawn."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.2 - 0.1)
            elif p.dim() <= 1 or bool((p == p.reshape(-1)[0]).all()):  # norm weights, layer scales, zero heads
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.5 if p.dim() <= 1 else
                        torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def without_biases(model: nn.Module) -> nn.Module:
    """Every additive constant set to zero (biases, BN mean and β, position embeddings, class tokens,
    relative position biases), so every rule that is conservative conserves the logit exactly."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.zero_()
        for name, p in model.named_parameters():
            last = name.rsplit(".", 1)[-1]
            if any(s in last for s in ("bias", "pos", "token", "class_embedding")):
                p.zero_()
    return model


def _open_clip_tower(act: str = "gelu") -> nn.Module:
    open_clip = pytest.importorskip("open_clip")
    from open_clip.transformer import QuickGELU, VisionTransformer

    tower = VisionTransformer(image_size=32, patch_size=8, width=32, layers=2, heads=2, mlp_ratio=2.0,
                              output_dim=16, act_layer=QuickGELU if act == "quickgelu" else nn.GELU)
    assert open_clip is not None
    return nn.Sequential(tower, nn.Linear(16, 1))


def _timm(name: str, **kwargs) -> nn.Module:
    timm = pytest.importorskip("timm")
    return timm.create_model(name, pretrained=False, num_classes=1, **kwargs)


SMALL = {  # name → (builder, input size, unit kinds expected)
    "convnext_torchvision": (tiny_convnext, 32, {"conv", "neuron"}),
    "densenet_torchvision": (lambda: torchvision.models.DenseNet(8, (2, 2), 16, 2, num_classes=1), 32, {"conv"}),
    "vit_torchvision": (tiny_vit, 32, {"conv", "head", "residual", "neuron"}),
    "swin_torchvision": (lambda: torchvision.models.SwinTransformer([4, 4], 16, [2, 2], [2, 2], [4, 4], num_classes=1),
                         32, {"conv", "neuron"}),
    "vit_timm": (lambda: _timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2), 32,
                 {"conv", "head", "residual", "neuron"}),
    "convnext_timm": (lambda: _timm("convnext_atto", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32)), 32,
                      {"conv"}),  # its MLP is two 1×1 convolutions
    "tf_efficientnet_timm": (lambda: _timm("tf_efficientnet_b0"), 32, {"conv"}),  # 'same' padding, BatchNormAct2d
    "clip_vit_open_clip": (_open_clip_tower, 32, {"conv", "head", "residual", "neuron"}),
    "clip_vit_quickgelu": (lambda: _open_clip_tower("quickgelu"), 32, {"conv", "head", "residual", "neuron"}),
}


@pytest.mark.parametrize("name", list(SMALL))
def test_architecture_builds_matches_logits_and_leaves_detector_untouched(name, one_thread):
    build, size, kinds = SMALL[name]
    torch.manual_seed(0)
    model = lively(build())
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ref = model(x).reshape(-1)
    ex = Explainer(model, input_shape=(3, size, size))
    assert torch.allclose(ex.forward(x), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    seen = {}
    e = ex.explain(x, seed=torch.tensor([1.0, -1.0]), tap=lambda layer, rel, act: seen.__setitem__(layer.name, rel))
    assert torch.isfinite(e.input_relevance).all() and all(torch.isfinite(r).all() for r in seen.values())
    assert set(seen) == {layer.name for layer in ex.layers}
    assert {layer.kind for layer in ex.layers} == kinds
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", list(SMALL))
def test_relevance_is_conserved_without_biases(name, one_thread):
    """With every additive constant zero, z⁺ (with the flat fallback), ε, the LayerNorm rule, the identity
    rule and CP attention are conservative: the input receives the whole logit (seed 1 per image; ε tiny,
    since without biases these random networks have logits down to 1e-9: with ε = 1e-15 the 49 batch norms
    folded into timm's tf_efficientnet_b0 lose 4e-6 of it)."""
    build, size, _ = SMALL[name]
    torch.manual_seed(1)
    model = without_biases(lively(build())).double()
    # flat fallback everywhere: with 8 input channels a 1×1 conv neuron can have no positive contribution
    ex = Explainer(model, input_shape=(3, size, size), attention="cp", eps=1e-20, zplus_fallback="all")
    e = ex.explain(torch.randn(2, 3, size, size, dtype=torch.float64))
    assert torch.allclose(e.input_relevance.sum((1, 2, 3)), torch.ones(2, dtype=torch.float64), rtol=1e-6)


def test_attnlrp_on_a_vit_loses_relevance_only_through_the_softmax(one_thread):
    """AttnLRP's softmax rule is not conservative (it credits the softmax's implicit bias); every other rule
    is. Without biases the last block's output holds the whole logit, and the input receives less than it
    (the share lost in the softmaxes; measured 0.4–0.5 on this random ViT) but more than nothing."""
    torch.manual_seed(5)
    model = without_biases(lively(tiny_vit())).double()
    totals = {}
    e = Explainer(model, eps=1e-15).explain(torch.randn(4, 3, 32, 32, dtype=torch.float64), tap=lambda layer, rel, act:
                                            totals.__setitem__(layer.name, rel.sum(tuple(range(1, rel.dim())))))
    assert torch.allclose(totals["encoder.layers.encoder_layer_1.residual2"], torch.ones(4, dtype=torch.float64))
    share = e.input_relevance.sum((1, 2, 3))
    assert (share < 1).all() and 0.1 < share.mean() < 0.9, share


def _lxt_vit(model: torchvision.models.VisionTransformer, x: torch.Tensor, eps: float):
    """The same ViT written with LXT's explicit AttnLRP functions (an independent implementation)."""
    lf = pytest.importorskip("lxt.explicit.functional")
    lr = pytest.importorskip("lxt.explicit.rules")
    n, d = len(x), model.hidden_dim
    h = lr.epsilon_lrp(model.conv_proj, eps, x).reshape(n, d, -1).permute(0, 2, 1)
    h = torch.cat([model.class_token.expand(n, -1, -1), h], 1)
    h = lf.add2(h, model.encoder.pos_embedding.expand_as(h), False, eps)
    blocks = []
    for block in model.encoder.layers:
        att = block.self_attention
        heads, hd = att.num_heads, d // att.num_heads
        y = lf.layer_norm_grad_fn.apply(h, block.ln_1.weight, block.ln_1.bias, block.ln_1.eps, eps)
        w, b = att.in_proj_weight.chunk(3), att.in_proj_bias.chunk(3)
        scale = hd ** -0.5  # folded into the query projection: LXT has no rule for a scalar product
        q, k, v = (lf.linear_epsilon(y, w[i] * f, b[i] * f, eps).reshape(n, -1, heads, hd).transpose(1, 2)
                   for i, f in ((0, scale), (1, 1.0), (2, 1.0)))
        a = lf.softmax(lf.matmul(q, k.transpose(-1, -2), False, eps), -1)
        ctx = lf.matmul(a, v, False, eps).transpose(1, 2).reshape(n, -1, d)
        h = lf.add2(lf.linear_epsilon(ctx, att.out_proj.weight, att.out_proj.bias, eps), h, False, eps)
        y = lf.layer_norm_grad_fn.apply(h, block.ln_2.weight, block.ln_2.bias, block.ln_2.eps, eps)
        m = lr.identity(torch.nn.functional.gelu, lf.linear_epsilon(y, block.mlp[0].weight, block.mlp[0].bias, eps))
        h = lf.add2(h, lf.linear_epsilon(m, block.mlp[3].weight, block.mlp[3].bias, eps), False, eps)
        blocks.append(h)
        h = h.clone()  # LXT's LayerNorm backward differentiates its input again: hooks on h would fire twice
    ln = model.encoder.ln
    h = lf.layer_norm_grad_fn.apply(h, ln.weight, ln.bias, ln.eps, eps)
    return lf.linear_epsilon(h[:, 0], model.heads.head.weight, model.heads.head.bias, eps), blocks


def test_vit_relevance_agrees_with_lxt(one_thread):
    """Input relevance and every block's relevance equal those of LXT's AttnLRP (ε rule on the patch
    embedding in both; float64; LXT stabilises with +ε, so both use a tiny ε)."""
    eps = 1e-12
    torch.manual_seed(4)
    model = lively(tiny_vit()).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    ex = Explainer(model, input_rule="epsilon", eps=eps)
    ours = {}
    e = ex.explain(x, tap=lambda layer, rel, act: ours.__setitem__(layer.name, rel))
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        logit, blocks = _lxt_vit(model, xg, eps)
        theirs = []
        for h in blocks:
            h.register_hook(theirs.append)
        (ref,) = torch.autograd.grad(logit.reshape(-1), xg, torch.ones(2, dtype=torch.float64))
    assert torch.allclose(logit.reshape(-1), e.logits)
    assert torch.allclose(e.input_relevance, ref, rtol=1e-6, atol=1e-7 * ref.abs().max().item())
    assert len(theirs) == len(model.encoder.layers)
    for i, rel in enumerate(reversed(theirs)):  # hooks fire from the last block to the first
        got = ours[f"encoder.layers.encoder_layer_{i}.residual2"]
        assert torch.allclose(got, rel, rtol=1e-6, atol=1e-7 * rel.abs().max().item()), i


class _TwoHeads(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, classes)

    def forward(self, x):
        return self.head(self.trunk(x))


def test_two_class_detector_is_explained_through_its_log_odds():
    torch.manual_seed(2)
    two = _TwoHeads(2).double().eval()
    one = _TwoHeads(1).double().eval()
    one.trunk.load_state_dict(two.trunk.state_dict())
    with torch.no_grad():
        one.head.weight.copy_(two.head.weight[1:] - two.head.weight[:1])
        one.head.bias.copy_(two.head.bias[1:] - two.head.bias[:1])
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    ex2, ex1 = Explainer(two, input_shape=(3, 8, 8), eps=1e-12), Explainer(one, input_shape=(3, 8, 8), eps=1e-12)
    with torch.no_grad():
        out = two(x)
    assert torch.allclose(ex2.forward(x), out[:, 1] - out[:, 0])  # sigmoid of it is softmax(out)[:, 1]
    seeds = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    assert torch.allclose(ex2.explain(x, seeds).input_relevance, ex1.explain(x, seeds).input_relevance, atol=1e-9)
    flipped = Explainer(two, input_shape=(3, 8, 8), fake_index=0)
    assert torch.allclose(flipped.forward(x), out[:, 0] - out[:, 1])


class StdConv(nn.Conv2d):
    """A convolution that standardises its weights in the forward (as in BiT / timm StdConv2d)."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return nn.functional.conv2d(x, w, self.bias, self.stride, self.padding)


class BNReLU(nn.BatchNorm2d):
    """Batch norm and ReLU fused in one module."""

    def forward(self, x):
        return torch.relu(super().forward(x))


class _Fused(nn.Module):
    def __init__(self, conv_cls=nn.Conv2d, bn_cls=nn.BatchNorm2d):
        super().__init__()
        self.conv1, self.bn1 = conv_cls(3, 8, 3, padding=1), bn_cls(8)
        self.conv2, self.fc = nn.Conv2d(8, 4, 3), nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(self.conv2(self.bn1(self.conv1(x))).mean((2, 3)))


@pytest.mark.parametrize("conv_cls,bn_cls,base", [(StdConv, nn.BatchNorm2d, reg.ZPlus()),
                                                  (nn.Conv2d, BNReLU, reg.BatchNorm())])
def test_subclasses_with_their_own_forward_are_traced_and_a_wrong_rule_is_refused(conv_cls, bn_cls, base):
    torch.manual_seed(3)
    model = lively(_Fused(conv_cls, bn_cls))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = model(x).reshape(-1)
    ex = Explainer(model, input_shape=(3, 8, 8))  # traced into, so computed as written
    assert torch.allclose(ex.forward(x), ref, rtol=1e-5, atol=1e-6)
    unfitting = reg.DEFAULT.with_({conv_cls if conv_cls is not nn.Conv2d else bn_cls: base})  # now a leaf
    with pytest.raises(LogitMismatchError, match="first layer that differs is 'conv1'"):
        Explainer(model, input_shape=(3, 8, 8), composite=unfitting)


ISSUE_MODELS = ["tv.convnext_tiny", "tv.densenet121", "tv.inception_v3", "tv.vit_b_16", "tv.swin_t",
                "timm.efficientnet_b0", "timm.tf_efficientnet_b0", "timm.xception41", "timm.convnext_tiny",
                "timm.vit_small_patch16_224", "timm.deit_tiny_patch16_224", "clip.ViT-B-16", "clip.ViT-L-14"]


def _full(name: str) -> tuple[nn.Module, int]:
    family, arch = name.split(".", 1)
    if family == "tv":
        kwargs = {"aux_logits": False} if arch == "inception_v3" else {}
        return getattr(torchvision.models, arch)(weights=None, num_classes=1, **kwargs), (
            224 if arch in ("vit_b_16", "swin_t") else 96)
    if family == "timm":
        return _timm(arch), 224 if "patch" in arch else 96
    open_clip = pytest.importorskip("open_clip")
    tower = open_clip.create_model(arch, pretrained=None).visual
    return nn.Sequential(tower, nn.Linear(tower.output_dim, 1)), 224


@pytest.mark.slow
@pytest.mark.parametrize("name", ISSUE_MODELS)
def test_full_architectures_build_with_equal_logits_and_finite_relevance(name):
    model, size = _full(name)
    model = lively(model)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        ref = model(x).reshape(-1)
    ex = Explainer(model, input_shape=(3, size, size))
    e = ex.explain(x)
    assert torch.allclose(e.logits, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    assert torch.isfinite(e.input_relevance).all()


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("attention", ["attnlrp", "cp"])
def test_gradient_mode_gives_the_detectors_own_gradient(name, attention, one_thread):
    """In gradient mode every rule runs its operation plainly: the input gradient and a unit layer's gradient
    equal autograd's on the detector itself (attention weights, gates and norms included)."""
    build, size, _ = SMALL[name]
    torch.manual_seed(2)
    model = lively(build()).double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64, requires_grad=True)
    seed = torch.tensor([1.0, -0.5], dtype=torch.float64)
    (expected,) = torch.autograd.grad(model(x).reshape(-1), x, seed)
    ex = Explainer(model, input_shape=(3, size, size), attention=attention)
    seen = {}
    e = ex.gradient(x, seed, tap=lambda layer, g, act: seen.__setitem__(layer.name, (g, act)), with_activation=True)
    assert torch.allclose(e.input_relevance, expected, rtol=1e-8, atol=1e-10 * expected.abs().max().item())
    assert set(seen) == {layer.name for layer in ex.layers} and all(a is not None for _, a in seen.values())
    relevance = ex.explain(x, seed).input_relevance  # outside the block the rules are back
    assert not torch.allclose(relevance, expected, atol=1e-6)
