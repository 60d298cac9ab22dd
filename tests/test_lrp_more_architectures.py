"""MaxViT, open_clip's ModifiedResNet, CoaT and MobileViT: the operations they need (einsum against its matrix form,
``F.multi_head_attention_forward`` against ``nn.MultiheadAttention``'s rule), a convolution shared by several
blocks, tracing with concrete shapes, and small configurations of each architecture with calibrated batch norm
(the full models in a slow test)."""

from __future__ import annotations

import copy
import types
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lrp_helpers import calibrate_batch_norm
from test_lrp_architectures import lively, without_biases
from tffkit.lrp import Explainer, RelevanceWarning, UnsupportedLayerError
from tffkit.lrp import registry as reg
from tffkit.lrp.kinds import LRPOp, RuleConfig, Site

EPS = 1e-9


def _stab(z: torch.Tensor) -> torch.Tensor:
    return z + EPS * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def _einsum_lrp(equation: str, *xs: torch.Tensor, live: tuple[int, ...], rel: torch.Tensor):
    """The Einsum rule run as the engine runs it (resolved on a site, wrapped in an LRPOp), backward from ``rel``."""
    node = types.SimpleNamespace(args=(equation, *xs), kwargs={}, target=torch.einsum)
    site = Site(node, None, torch.einsum, tuple(i + 1 for i in live), {i + 1: tuple(xs[i].shape) for i in live},
                None, RuleConfig(EPS))
    rule = reg.Einsum().resolve(site)
    op = rule.module(site)
    assert isinstance(op, LRPOp)
    inputs = [x.clone().requires_grad_(i in live) for i, x in enumerate(xs)]
    out = op(equation, *inputs)
    grads = torch.autograd.grad(out, [inputs[i] for i in live], rel)
    return rule, out, grads


def test_einsum_rule_matches_matrix_form():
    """One relevance-carrying operand: the ε rule of the linear map, R_i = Σ_j x_i W_ij R_j / (z_j ± ε). Two (q·kᵀ
    written as einsum): the uniform rule, each factor half of Σ_j c_ij R_j / (z_j ± ε) over the products c."""
    torch.manual_seed(0)
    x, w = torch.randn(3, 5, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    rel = torch.randn(3, 4, dtype=torch.float64)
    rule, z, (got,) = _einsum_lrp("bi,ij->bj", x, w, live=(0,), rel=rel)
    assert isinstance(rule, reg.Epsilon) and torch.allclose(z, x @ w)
    contrib = x[:, :, None] * w[None]  # (b, i, j)
    assert torch.allclose(got, (contrib * (rel / _stab(z))[:, None, :]).sum(2), atol=1e-12)
    q, k = torch.randn(2, 3, 4, 6, dtype=torch.float64), torch.randn(2, 3, 5, 6, dtype=torch.float64)
    rel = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    rule, z, (rq, rk) = _einsum_lrp("bhid,bhjd->bhij", q, k, live=(0, 1), rel=rel)
    assert isinstance(rule, reg.Uniform) and torch.allclose(z, q @ k.transpose(-1, -2))
    c = q[:, :, :, None, :] * k[:, :, None, :, :]  # (b, h, i, j, d)
    share = c * (rel / _stab(z))[..., None] / 2
    assert torch.allclose(rq, share.sum(3), atol=1e-12) and torch.allclose(rk, share.sum(2), atol=1e-12)
    assert torch.allclose(rq.sum() + rk.sum(), rel.sum(), rtol=1e-6)  # conservative (up to ε)


class _ModuleAttention(nn.Module):
    """Tokens → nn.MultiheadAttention (sequence first) → mean → logit."""

    def __init__(self):
        super().__init__()
        self.embed, self.mha, self.fc = nn.Linear(6, 8), nn.MultiheadAttention(8, 2), nn.Linear(8, 1)

    def forward(self, x):
        t = self.embed(x.flatten(2).transpose(1, 2)).transpose(0, 1)  # (L, B, E)
        return self.fc(self.mha(t, t, t, need_weights=False)[0].mean(0))


class _FunctionalAttention(_ModuleAttention):
    """The same weights through F.multi_head_attention_forward with separate projection weights (open_clip's
    attention pooling calls it so), the query a mean token prepended to the keys, as there."""

    def forward(self, x):
        t = self.embed(x.flatten(2).transpose(1, 2)).transpose(0, 1)
        t = torch.cat([t.mean(0, keepdim=True), t])
        q_w, k_w, v_w = self.mha.in_proj_weight.chunk(3)
        out, _ = F.multi_head_attention_forward(
            query=t[:1], key=t, value=t, embed_dim_to_check=8, num_heads=2, in_proj_weight=None,
            in_proj_bias=self.mha.in_proj_bias, bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=self.mha.out_proj.weight, out_proj_bias=self.mha.out_proj.bias,
            use_separate_proj_weight=True, q_proj_weight=q_w, k_proj_weight=k_w, v_proj_weight=v_w,
            training=self.training, need_weights=False)
        return self.fc(out[0])


class _ModuleAttentionPooled(_ModuleAttention):
    def forward(self, x):
        t = self.embed(x.flatten(2).transpose(1, 2)).transpose(0, 1)
        t = torch.cat([t.mean(0, keepdim=True), t])
        return self.fc(self.mha(t[:1], t, t, need_weights=False)[0][0])


@pytest.mark.parametrize("attention", ["attnlrp", "cp"])
def test_functional_multi_head_attention_has_the_rules_of_the_module(attention, one_thread):
    """The function with the module's weights gives the module's logits, heads and relevance (input and per head)."""
    torch.manual_seed(1)
    module = lively(_ModuleAttentionPooled()).double()
    functional = _FunctionalAttention().double()
    functional.load_state_dict(module.state_dict())
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    explained = []
    for model in (module, functional):
        ex = Explainer(model, input_shape=(6, 3, 3), attention=attention, eps=1e-12)
        heads = [layer for layer in ex.layers if layer.kind == "head"]
        assert len(heads) == 1 and heads[0].channels == 2
        seen = {}
        e = ex.explain(x, tap=lambda layer, r, a, seen=seen: seen.__setitem__(layer.kind, r))
        explained.append((e, seen["head"]))
    (e1, h1), (e2, h2) = explained
    assert torch.allclose(e1.logits, e2.logits, rtol=1e-10)
    assert torch.allclose(e1.input_relevance, e2.input_relevance, rtol=1e-8, atol=1e-14)
    assert torch.allclose(h1, h2, rtol=1e-8, atol=1e-14)
    ex = Explainer(functional, input_shape=(6, 3, 3), attention=attention)
    row = next(r for r in ex.rules() if r.op == "multi_head_attention_forward")
    assert row.rule == f"attention ({attention})" and row.layer == "attention"
    xg = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(functional(xg).sum(), xg)
    assert torch.allclose(ex.gradient(x).input_relevance, expected, rtol=1e-8, atol=1e-14)  # gradient mode


class _PosEnc(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(4, 4, 3, padding=1, groups=4)

    def forward(self, x):
        return x + self.proj(x)


class _Block(nn.Module):
    def __init__(self, shared: _PosEnc):
        super().__init__()
        self.pe, self.conv = shared, nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return torch.relu(self.conv(self.pe(x)))


class _Shared(nn.Module):
    """CoaT's layout: one position-encoding convolution held by the stage and by each of its blocks."""

    def __init__(self):
        super().__init__()
        self.stem, self.pe = nn.Conv2d(3, 4, 3), _PosEnc()
        self.blocks = nn.Sequential(_Block(self.pe), _Block(self.pe))
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def test_a_convolution_shared_by_blocks_gets_one_copy_per_use(one_thread):
    """Each use becomes a unit layer named by the block that calls it; ε rules without biases conserve the logit
    (so each copy passes exactly its own use's relevance); the detector keeps one shared convolution."""
    torch.manual_seed(2)
    model = without_biases(lively(_Shared())).double()
    ex = Explainer(model, input_shape=(3, 8, 8), input_rule="epsilon", conv_rule="epsilon", eps=1e-15)
    names = [layer.name for layer in ex.layers]
    assert names == ["stem", "blocks.0.pe.proj", "blocks.0.conv", "blocks.1.pe.proj", "blocks.1.conv"]
    assert ex.model.get_submodule("blocks.0.pe.proj") is not ex.model.get_submodule("blocks.1.pe.proj")
    e = ex.explain(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    assert torch.allclose(e.input_relevance.sum((1, 2, 3)), torch.ones(2, dtype=torch.float64), rtol=1e-8)
    assert model.blocks[0].pe.proj is model.blocks[1].pe.proj is model.pe.proj


class _SizeBranch(nn.Module):
    """MobileViT's pattern: resize when the map is not a multiple of the patch size, fold patches into the batch."""

    def __init__(self):
        super().__init__()
        self.conv, self.mix, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 4), nn.Linear(4, 1)

    def forward(self, x):
        x = self.conv(x)
        b, c, h, w = x.shape
        if h % 4:
            x = F.interpolate(x, size=(h // 4 * 4 + 4, w // 4 * 4 + 4), mode="bilinear")
        p = x.reshape(b, c, -1, 4).permute(0, 2, 3, 1).reshape(b * x.shape[2] * x.shape[3] // 4, 4, c)
        p = torch.relu(self.mix(p)).reshape(b, -1, c)
        return self.fc(p.mean(1))


class _ValueBranch(_SizeBranch):
    def forward(self, x):
        x = self.conv(x)
        if x.sum() > 0:
            x = -x
        return self.fc(x.mean((2, 3)))


def test_size_dependent_control_flow_is_traced_with_concrete_shapes(one_thread):
    """Sizes are concrete (the branch the probe takes), the batch stays symbolic (any batch size gives the detector's
    logits); a branch on values is refused in one line that does not advise a rule for a whole module."""
    torch.manual_seed(3)
    model = lively(_SizeBranch())
    ex = Explainer(model, input_shape=(3, 10, 10))
    assert ex.model.concrete_shapes and ex.relevance_check.ok
    for batch in (1, 5):
        x = torch.randn(batch, 3, 10, 10)
        with torch.no_grad():
            assert torch.allclose(ex.forward(x), model(x).reshape(-1), atol=1e-6)
        assert torch.isfinite(ex.explain(x).input_relevance).all()
    with pytest.raises(ValueError, match=r"traced with concrete shapes .* \(3, 10, 10\); got \(3, 12, 12\)"):
        ex.explain(torch.randn(2, 3, 12, 12))
    assert not Explainer(lively(_Shared()), input_shape=(3, 8, 8)).model.concrete_shapes
    with pytest.raises(UnsupportedLayerError) as info:
        Explainer(_ValueBranch(), input_shape=(3, 10, 10))
    text = str(info.value)
    assert "not even with concrete shapes" in text and "_ValueBranch" in text and "\n" not in text
    assert "kept as one operation" not in text and "small function" in text


class _PreNorm(nn.Module):
    """A pre-norm residual block (timm's MbConvBlock): x + conv(BN(x)), the BN feeding a 1×1 or a padded 3×3 conv."""

    def __init__(self, kernel: int):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.down, self.conv = nn.Identity(), nn.Conv2d(4, 4, kernel, padding=kernel // 2)
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + self.conv(self.down(self.bn(x)))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("kernel", [1, 3])
def test_batch_norm_before_an_unpadded_convolution_is_folded_into_it(kernel, one_thread):
    """Where nothing is before a BN to fold it into (the residual stream), it is folded into the 1×1 convolution it
    feeds (the copy's logits equal the detector's: checked while building); before a padded convolution it stays."""
    torch.manual_seed(4)
    model = calibrate_batch_norm(_PreNorm(kernel), 8)
    ex = Explainer(model, input_shape=(3, 8, 8))
    unfolded = [r.module for r in ex.rules() if "not folded" in r.rule]
    assert unfolded == ([] if kernel == 1 else ["bn"])
    assert model.bn.running_var.ne(1).any()  # the detector keeps its BN


def _maxvit_torchvision():
    from torchvision.models.maxvit import MaxVit

    return MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[8, 16], block_layers=[1, 1],
                  head_dim=4, stochastic_depth_prob=0.0, num_classes=1)


def _modified_resnet():
    from open_clip.modified_resnet import ModifiedResNet

    return nn.Sequential(ModifiedResNet(layers=[1, 1, 1, 1], output_dim=16, heads=2, image_size=64, width=8),
                         nn.Linear(16, 1))


def _timm(name: str, **kwargs):
    timm = pytest.importorskip("timm")
    return timm.create_model(name, pretrained=False, num_classes=1, **kwargs)


def _coat():
    pytest.importorskip("timm")
    from timm.models.coat import CoaT

    return CoaT(img_size=32, patch_size=4, embed_dims=(8, 8, 16, 16), serial_depths=(2, 2, 1, 1), num_heads=2,
                crpe_window={3: 1, 5: 1}, mlp_ratios=(2, 2, 2, 2), num_classes=1)


SMALL = {  # name → (builder, input size, unit kinds, traced with concrete shapes)
    "maxvit_torchvision": (_maxvit_torchvision, 32, {"conv", "neuron"}, False),  # swapaxes, einsum
    "maxvit_timm": (lambda: _timm("test_maxvit", img_size=64), 64, {"conv", "neuron", "head"}, False),  # windows
    "modified_resnet_open_clip": (_modified_resnet, 64, {"conv", "head"}, False),  # multi_head_attention_forward
    "coat_lite_timm": (_coat, 32, {"conv", "residual", "neuron"}, False),  # shared convolutions
    "mobilevit_timm": (lambda: _timm("mobilevit_xxs"), 48, {"conv"}, True),  # 48 px: the block's resize branch
}


@pytest.mark.parametrize("name", list(SMALL))
def test_small_architectures_explain_with_sane_relevance(name, one_thread):
    """Calibrated BN: the copy builds (logits checked), the relevance self-check is silent, relevance is finite for a
    batch of another size, every unit layer has the batch first, the detector is untouched."""
    pytest.importorskip("open_clip")
    build, size, kinds, concrete = SMALL[name]
    torch.manual_seed(0)
    model = calibrate_batch_norm(build(), size)
    before = copy.deepcopy(model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RelevanceWarning)
        ex = Explainer(model, input_shape=(3, size, size))
    assert ex.relevance_check.ok and all(abs(s) < 10 for s in ex.relevance_check.input_share)
    assert {layer.kind for layer in ex.layers} == kinds and ex.model.concrete_shapes == concrete
    x = torch.randn(3, 3, size, size)
    seen = {}
    e = ex.explain(x, tap=lambda layer, r, a: seen.__setitem__(layer.name, r))
    with torch.no_grad():
        ref = model(x).reshape(-1)
    assert torch.allclose(e.logits, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
    assert torch.isfinite(e.input_relevance).all() and all(r.shape[0] == 3 for r in seen.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


FULL = {
    "tv.maxvit_t": 224, "timm.maxvit_tiny_tf_224": 224, "clip.RN50": 224, "timm.coat_lite_tiny": 224,
    "timm.mobilevit_xxs": 256,
}  # timm coat_tiny (parallel blocks) builds too, but its ε-sums between scales reach 5.0–5.6× and the check warns


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FULL))
def test_full_architectures_explain_with_sane_relevance(name):
    """The full models (random weights, calibrated BN): the self-check is silent and a sane share of the logit
    reaches the input (measured in docs/lrp.md)."""
    family, arch = name.split(".", 1)
    size = FULL[name]
    if family == "tv":
        import torchvision

        model = getattr(torchvision.models, arch)(weights=None, num_classes=1)
    elif family == "timm":
        model = _timm(arch)
    else:
        open_clip = pytest.importorskip("open_clip")
        tower = open_clip.create_model(arch, pretrained=None).visual
        model = nn.Sequential(tower, nn.Linear(tower.output_dim, 1))
    torch.manual_seed(0)
    model = calibrate_batch_norm(model, size)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RelevanceWarning)
        check = Explainer(model, input_shape=(3, size, size)).relevance_check
    assert check.ok and all(abs(s) < 10 for s in check.input_share), check.input_share
