"""The rules for modern architectures against their formulas in naive matrix form (float64) and against
LXT 2.1 (AttnLRP's reference implementation): LayerNorm, GroupNorm, softmax, products of two tensors,
attention, differences, standalone batch norm, user-registered modules."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tffkit.lrp import Explainer
from tffkit.lrp import registry as reg
from tffkit.lrp.rules import EpsilonFn, EpsilonSumFn, SoftmaxFn
from tffkit.lrp.transformer import attention, group_norm_linear, layer_norm_linear, norm_rule, product

EPS = 1e-6


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def stab(z):
    return z + EPS * torch.where(z >= 0, 1.0, -1.0)


def lrp(fn, inputs, rel):
    inputs = [x.clone().requires_grad_(True) for x in inputs]
    return torch.autograd.grad(fn(*inputs), inputs, rel)


def test_layer_norm_rule_is_the_epsilon_rule_of_the_layer_with_sigma_held_constant():
    torch.manual_seed(0)
    ln = nn.LayerNorm(6)
    ln.weight.data.uniform_(0.5, 1.5)
    ln.bias.data.uniform_(-0.3, 0.3)
    x, rel = torch.randn(2, 3, 6), torch.randn(2, 3, 6)
    (got,) = lrp(lambda t: norm_rule(t, ln, layer_norm_linear(1, ln.weight, ln.bias, ln.eps), EPS), [x], rel)
    sigma = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + ln.eps)
    centring = torch.eye(6) - torch.full((6, 6), 1 / 6)  # y_j = γ_j/σ Σ_i C_ji x_i + β_j
    for b in range(2):
        for t in range(3):
            v = x[b, t]
            jac = ln.weight[:, None] / sigma[b, t] * centring  # (out j, in i)
            y = jac @ v + ln.bias
            expected = (jac * v[None, :] * (rel[b, t] / stab(y))[:, None]).sum(0)
            assert torch.allclose(got[b, t], expected, atol=1e-12)
    assert torch.allclose(norm_rule(x, ln, layer_norm_linear(1, ln.weight, ln.bias, ln.eps), EPS), ln(x))


def test_group_norm_rule_matches_its_matrix_form():
    torch.manual_seed(1)
    gn = nn.GroupNorm(2, 4)
    gn.weight.data.uniform_(0.5, 1.5)
    gn.bias.data.uniform_(-0.3, 0.3)
    x, rel = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    (got,) = lrp(lambda t: norm_rule(t, gn, group_norm_linear(2, gn.weight, gn.bias, gn.eps), EPS), [x], rel)
    g = x.reshape(2, 8)
    sigma = torch.sqrt(g.var(-1, unbiased=False) + gn.eps)
    jac = torch.zeros(16, 16)
    for grp in range(2):
        block = (torch.eye(8) - 1 / 8) / sigma[grp]
        jac[grp * 8:(grp + 1) * 8, grp * 8:(grp + 1) * 8] = block
    gamma = gn.weight.repeat_interleave(4)
    jac = gamma[:, None] * jac
    v = x.reshape(-1)
    y = jac @ v + gn.bias.repeat_interleave(4)
    expected = (jac * v[None, :] * (rel.reshape(-1) / stab(y))[:, None]).sum(0)
    assert torch.allclose(got.reshape(-1), expected, atol=1e-12)


def test_softmax_rule():
    torch.manual_seed(2)
    x, rel = torch.randn(3, 5), torch.randn(3, 5)
    (got,) = lrp(lambda t: SoftmaxFn.apply(t, lambda u: torch.softmax(u, -1), -1), [x], rel)
    s = torch.softmax(x, -1)
    expected = torch.stack([x[b] * (rel[b] - s[b] * rel[b].sum()) for b in range(3)])
    assert torch.allclose(got, expected, atol=1e-12)


def test_product_of_two_tensors_splits_relevance_uniformly():
    torch.manual_seed(3)
    a, b, rel = torch.randn(2, 3, 4), torch.randn(2, 4, 5), torch.randn(2, 3, 5)
    ra, rb = lrp(lambda p, q: product(torch.matmul, p, q, EPS), [a, b], rel)
    z = a @ b
    share = rel / (2 * stab(z))  # (B, i, j); each term a_ik b_kj gets half of its part of R_ij
    terms = a[:, :, :, None] * b[:, None, :, :]  # (B, i, k, j)
    assert torch.allclose(ra, (terms * share[:, :, None, :]).sum(3), atol=1e-12)
    assert torch.allclose(rb, (terms * share[:, :, None, :]).sum(1), atol=1e-12)
    # with one constant factor the product is linear: the ε rule gives it all relevance
    (only,) = lrp(lambda p: product(torch.matmul, p, b, EPS), [a], rel)
    assert torch.allclose(only, (terms * (rel / stab(z))[:, :, None, :]).sum(3), atol=1e-12)


def test_difference_shares_by_signed_contributions():
    a, b, r = torch.randn(6), torch.randn(6), torch.randn(6)
    ra, rb = lrp(lambda p, q: EpsilonSumFn.apply(p, q, EPS, -1.0), [a, b], r)
    z = stab(a - b)
    assert torch.allclose(ra, a * r / z) and torch.allclose(rb, -b * r / z)


def test_cp_attention_holds_the_weights_constant():
    torch.manual_seed(4)
    q, k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    rel = torch.randn(1, 2, 3, 4)
    qkv = [t.clone().requires_grad_(True) for t in (q, k, v)]
    rq, rk, rv = torch.autograd.grad(attention(*qkv, mode="cp", eps=EPS), qkv, rel, allow_unused=True)
    assert rq is None and rk is None  # no relevance through the attention weights
    w = torch.softmax(q @ k.transpose(-2, -1) / 2.0, -1)
    z = w @ v
    expected = (w[..., :, :, None] * v[..., None, :, :] * (rel / stab(z))[..., :, None, :]).sum(2)
    assert torch.allclose(rv, expected, atol=1e-12)


def _lxt():
    return pytest.importorskip("lxt.explicit.functional")


def test_rules_agree_with_lxt():
    """Our ε-linear, LayerNorm, softmax and matmul rules equal LXT's (its ε is +ε, so use a tiny one)."""
    lf = _lxt()
    tiny = 1e-12
    torch.manual_seed(5)
    x, w, bias = torch.randn(2, 4, 6), torch.randn(5, 6), torch.randn(5)
    rel = torch.randn(2, 4, 5)
    (ours,) = lrp(lambda t: EpsilonFn.apply(t, lambda u: F.linear(u, w, bias), tiny), [x], rel)
    (theirs,) = lrp(lambda t: lf.linear_epsilon(t, w, bias, tiny), [x], rel)
    assert torch.allclose(ours, theirs, rtol=1e-8, atol=1e-10)

    ln = nn.LayerNorm(6)
    ln.weight.data.uniform_(0.5, 1.5)
    ln.bias.data.uniform_(-0.3, 0.3)
    rel6 = torch.randn(2, 4, 6)
    (ours,) = lrp(lambda t: norm_rule(t, ln, layer_norm_linear(1, ln.weight, ln.bias, ln.eps), tiny), [x], rel6)
    (theirs,) = lrp(lambda t: lf.layer_norm_grad_fn.apply(t, ln.weight, ln.bias, ln.eps, tiny), [x], rel6)
    assert torch.allclose(ours, theirs, rtol=1e-8, atol=1e-10)

    (ours,) = lrp(lambda t: SoftmaxFn.apply(t, lambda u: torch.softmax(u, -1), -1), [x], rel6)
    (theirs,) = lrp(lambda t: lf.softmax(t, -1), [x], rel6)
    assert torch.allclose(ours, theirs, rtol=1e-8, atol=1e-10)

    a, b, r = torch.randn(2, 3, 4), torch.randn(2, 4, 5), torch.randn(2, 3, 5)
    ours = lrp(lambda p, q: product(torch.matmul, p, q, tiny), [a, b], r)
    theirs = lrp(lambda p, q: lf.matmul(p, q, False, tiny), [a, b], r)
    assert all(torch.allclose(o, t, rtol=1e-8, atol=1e-10) for o, t in zip(ours, theirs, strict=True))


class _PreActivation(nn.Module):
    """DenseNet-style: BN that follows no convolution (a per-channel affine map), then ReLU and a conv."""

    def __init__(self):
        super().__init__()
        self.conv0, self.conv1 = nn.Conv2d(3, 2, 3), nn.Conv2d(3, 2, 3)
        self.bn, self.conv2, self.fc = nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.Linear(4, 1)

    def forward(self, x):
        h = torch.cat([self.conv0(x), self.conv1(x)], 1)  # the BN input is no convolution's output
        return self.fc(self.conv2(F.relu(self.bn(h))).mean((2, 3)))


def _capture(seen: dict):
    """A forward hook recording the relevance at a module's input ('in') and output ('out')."""

    def hook(_m, inp, out):
        inp[0].register_hook(lambda g: seen.__setitem__("in", g))
        out.register_hook(lambda g: seen.__setitem__("out", g))
    return hook


def test_standalone_batch_norm_passes_relevance_unchanged():
    model = _PreActivation().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2)
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.uniform_(-0.2, 0.2)
    ex = Explainer(model, input_shape=(3, 6, 6))
    seen = {}
    x = torch.randn(2, 3, 6, 6)
    handle = ex.model.get_submodule("bn").register_forward_hook(_capture(seen))
    ex.explain(x)
    handle.remove()
    assert torch.allclose(seen["in"], seen["out"])


class _Untraceable(nn.Module):
    """y = 2x + 1 written with data-dependent control flow, which torch.fx cannot trace."""

    def forward(self, x):
        if x.sum() > -1e9:
            return 2 * x + 1
        return x


class _WithCustom(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.custom, self.fc = nn.Conv2d(3, 2, 1), _Untraceable(), nn.Linear(2, 1)

    def forward(self, x):
        return self.fc(self.custom(self.conv(x)).mean((2, 3)))


def test_a_module_registered_by_the_user_is_explained_by_its_rule():
    from tffkit.lrp import UnsupportedLayerError

    model = _WithCustom().eval()
    with pytest.raises(UnsupportedLayerError, match="_Untraceable"):
        Explainer(model, input_shape=(3, 4, 4))
    ex = Explainer(model, input_shape=(3, 4, 4), composite=reg.DEFAULT.with_({_Untraceable: reg.Epsilon()}))
    x = torch.randn(2, 3, 4, 4)
    seen = {}
    handle = ex.model.get_submodule("custom").register_forward_hook(_capture(seen))
    ex.explain(x)
    handle.remove()
    with torch.no_grad():
        h = model.conv(x)
    assert torch.allclose(seen["in"], 2 * h * seen["out"] / stab(2 * h + 1))  # ε rule of y = 2x + 1
