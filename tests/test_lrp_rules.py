"""Each LRP rule against its formula written naively with dense matrices (float64)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tffkit.lrp.rules import LRPConv, LRPEpsilon, epsilon_sum, gate
from tffkit.lrp.trace import fold_batchnorm

EPS = 1e-6


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def dense(conv: nn.Conv2d, weight: torch.Tensor, shape) -> torch.Tensor:
    """The conv (without bias) as a matrix (out_dim × in_dim)."""
    def f(x):
        return F.conv2d(x, weight, None, conv.stride, conv.padding, conv.dilation, conv.groups).reshape(-1)
    return torch.autograd.functional.jacobian(f, torch.zeros(shape)).reshape(-1, int(torch.tensor(shape).prod()))


def lrp(module: nn.Module, x: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (out,) = torch.autograd.grad(module(x), x, rel)
    return out


@pytest.mark.parametrize("groups,stride", [(1, 1), (4, 1), (2, 2)])
def test_zplus_general_matches_matrix_form(groups, stride):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, stride=stride, padding=1, groups=groups, bias=True)
    x = torch.randn(1, 4, 5, 5)
    y = conv(x)
    rel = torch.rand_like(y)
    wp, wn = conv.weight.clamp(min=0), conv.weight.clamp(max=0)
    mp, mn = dense(conv, wp, x.shape), dense(conv, wn, x.shape)
    xv = x.reshape(-1)
    contrib = mp * xv.clamp(min=0) + mn * xv.clamp(max=0)  # (out, in)
    z = contrib.sum(1)
    expected = (contrib / (z + EPS * torch.where(z >= 0, 1.0, -1.0))[:, None] * rel.reshape(-1)[:, None]).sum(0)
    assert torch.allclose(lrp(LRPConv(conv), x, rel).reshape(-1), expected, atol=1e-12)
    # with non-negative inputs the fast path gives the same as the general form
    xp = x.abs()
    assert torch.allclose(lrp(LRPConv(conv, nonneg_input=True), xp, rel), lrp(LRPConv(conv), xp, rel), atol=1e-12)


def test_zbox_matches_matrix_form():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=True)
    low, high = torch.tensor([-2.0, -1.5, -1.8]), torch.tensor([2.2, 2.4, 2.6])
    x = torch.rand(1, 3, 4, 4) * 3 - 1.5
    rel = torch.rand_like(conv(x))
    m = dense(conv, conv.weight, x.shape)
    mp, mn = dense(conv, conv.weight.clamp(min=0), x.shape), dense(conv, conv.weight.clamp(max=0), x.shape)
    lv = low.reshape(3, 1, 1).expand(3, 4, 4).reshape(-1)
    hv = high.reshape(3, 1, 1).expand(3, 4, 4).reshape(-1)
    contrib = m * x.reshape(-1) - mp * lv - mn * hv
    z = contrib.sum(1)
    expected = (contrib / (z + EPS * torch.where(z >= 0, 1.0, -1.0))[:, None] * rel.reshape(-1)[:, None]).sum(0)
    got = lrp(LRPConv(conv, low=low, high=high), x, rel).reshape(-1)
    assert torch.allclose(got, expected, atol=1e-12)
    assert torch.isclose(got.sum(), rel.sum(), rtol=1e-4)  # zβ is conservative (up to ε)


def test_epsilon_linear_keeps_bias_in_denominator():
    torch.manual_seed(2)
    lin = nn.Linear(6, 2)
    x = torch.randn(3, 6)
    rel = torch.randn(3, 2)
    z = x @ lin.weight.T + lin.bias
    expected = x[:, :, None] * lin.weight.T[None] * (rel / (z + EPS * torch.where(z >= 0, 1.0, -1.0)))[:, None, :]
    got = lrp(LRPEpsilon(lin), x, rel)
    assert torch.allclose(got, expected.sum(2), atol=1e-12)
    assert torch.allclose(got.sum(1), (rel * (z - lin.bias) / z).sum(1), rtol=1e-4)


def test_epsilon_avgpool_and_sum_and_gate():
    torch.manual_seed(3)
    x = torch.randn(2, 3, 4, 4)
    rel = torch.randn(2, 3, 1, 1)
    z = x.mean((2, 3), keepdim=True)
    got = lrp(LRPEpsilon(nn.AdaptiveAvgPool2d(1)), x, rel)
    assert torch.allclose(got, x / 16 * rel / (z + EPS * torch.sign(z)), atol=1e-10)
    a, b = torch.randn(5), torch.randn(5)
    a.requires_grad_(True)
    b.requires_grad_(True)
    r = torch.randn(5)
    ra, rb = torch.autograd.grad(epsilon_sum(a, b), (a, b), r)
    s = a + b
    assert torch.allclose(ra, a * r / (s + EPS * torch.sign(s)))
    assert torch.allclose(ra + rb, r * s / (s + EPS * torch.sign(s)))
    sig, g = torch.randn(4, requires_grad=True), torch.rand(4, requires_grad=True)
    out = gate(sig, g)
    assert torch.allclose(out, sig * g)
    (rs,) = torch.autograd.grad(out, sig, r[:4])
    assert torch.equal(rs, r[:4])


def test_fold_batchnorm_equals_conv_bn():
    torch.manual_seed(4)
    conv, bn = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4, eps=1e-3).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.2, 3)
    bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.uniform_(-1, 1)
    x = torch.randn(2, 3, 6, 6)
    ref = bn(conv(x))
    fold_batchnorm(conv, bn)
    assert torch.allclose(conv(x), ref, atol=1e-12)


@pytest.mark.parametrize("groups,stride", [(1, 1), (4, 1), (2, 2)])
def test_epsilon_conv_matches_matrix_form_with_bias_in_denominator(groups, stride):
    """conv_rule='epsilon' (LRP-ε): R_i = Σ_j x_i w_ij R_j / (z_j + b_j ± ε), signed inputs and weights."""
    torch.manual_seed(5)
    conv = nn.Conv2d(4, 4, 3, stride=stride, padding=1, groups=groups, bias=True)
    x = torch.randn(1, 4, 5, 5)
    rel = torch.rand_like(conv(x))
    contrib = dense(conv, conv.weight, x.shape) * x.reshape(-1)  # (out, in)
    z = contrib.sum(1) + conv.bias.repeat_interleave(rel[0, 0].numel())
    expected = (contrib / (z + EPS * torch.where(z >= 0, 1.0, -1.0))[:, None] * rel.reshape(-1)[:, None]).sum(0)
    module = LRPConv(conv)
    module.epsilon = True
    assert torch.allclose(lrp(module, x, rel).reshape(-1), expected, atol=1e-12)


def test_explainer_conv_rule_epsilon_switches_hidden_convolutions_only():
    from lrp_helpers import pseudo_trained
    from tffkit.lrp import Explainer

    model = pseudo_trained("tiny_resnet").double()
    zplus, eps = Explainer(model), Explainer(model, conv_rule="epsilon")
    convs = [layer.name for layer in eps.layers if layer.kind == "conv"]
    assert not any(zplus.module(n).epsilon for n in convs)
    assert [n for n in convs if not eps.module(n).epsilon] == ["conv1"]  # the pixels keep zβ
    x = torch.randn(2, 3, 32, 32)
    seen = {}
    last = convs[-1]  # only the sum, pooling and head lie above it: the same rules under both
    for name, ex in (("zplus", zplus), ("epsilon", eps)):
        ex.explain(x, tap=lambda layer, rel, act, name=name: seen.__setitem__((name, layer.name), rel),
                   layers=["conv1", last])
    assert torch.allclose(seen["zplus", last], seen["epsilon", last])
    assert not torch.allclose(seen["zplus", "conv1"], seen["epsilon", "conv1"], atol=1e-6)
    with pytest.raises(ValueError, match="conv_rule"):
        Explainer(model, conv_rule="alpha-beta")
