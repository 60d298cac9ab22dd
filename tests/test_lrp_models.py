"""Whole-model LRP: conservation, agreement with zennit and with a naive implementation, invariants."""

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import SqueezeExcitation

from lrp_helpers import pseudo_trained
from tffkit.lrp import Explainer, UnsupportedLayerError, input_bounds
from tffkit.lrp.trace import fold_batchnorm
from tffkit.preprocess import IMAGENET_MEAN, IMAGENET_STD

ARCHS = ["tiny_resnet", "tiny_resnet_bottleneck", "resnet18", "resnet50", "efficientnet_b0",
         "efficientnet_b0_lukemelas"]


@pytest.fixture(scope="module")
def explainer_of():
    """``arch`` → model = pseudo_trained(arch) with ``before`` (its state), ``rng`` (the global RNG state right after
    it was built), ``x`` (2 × 3 × 64 × 64, drawn then) and ``ref`` (its logits for x), then ``explainer`` =
    Explainer(model): built once for the module, as building an explainer runs the full-size detector. A test restores
    ``rng`` to draw the input it drew when it built its own (building an explainer draws no random numbers)."""
    cache = {}

    def get(arch: str) -> SimpleNamespace:
        if arch not in cache:
            model = pseudo_trained(arch)
            before = {k: v.clone() for k, v in model.state_dict().items()}
            rng = torch.get_rng_state()
            x = torch.randn(2, 3, 64, 64)
            with torch.no_grad():
                ref = model(x).reshape(-1)
            cache[arch] = SimpleNamespace(model=model, before=before, rng=rng, x=x, ref=ref, explainer=Explainer(model))
        return cache[arch]
    return get


@pytest.mark.parametrize("arch", ARCHS)
def test_folded_logits_equal_detector_and_detector_untouched(arch, explainer_of):
    built = explainer_of(arch)
    model, before, x, ref, ex = built.model, built.before, built.x, built.ref, built.explainer
    assert torch.allclose(ex.forward(x), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    ex.explain(x, seed=torch.tensor([1.0, -1.0]), tap=lambda *a: None)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not isinstance(m, type(ex.module(ex.layers[0]))) for m in model.modules())


def test_feature_map_counts_match_the_paper(explainer_of):
    ex = explainer_of("resnet50").explainer
    assert (len(ex.layers), ex.n_channels) == (53, 26560)
    for arch in ("efficientnet_b0", "efficientnet_b0_lukemelas"):
        ex = explainer_of(arch).explainer
        assert (len(ex.layers), ex.n_channels) == (49, 21008)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "tiny_resnet"])
def test_resnet_conservation(arch):
    model = pseudo_trained(arch).double()
    ex = Explainer(model)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    totals = {}
    e = ex.explain(x, tap=lambda layer, rel, act: totals.__setitem__(layer.name, rel.sum((1, 2, 3))))
    f, b = e.logits, model.fc.bias.item()
    assert torch.allclose(e.input_relevance.sum((1, 2, 3)), (f - b) / f, rtol=1e-4)
    assert torch.allclose(totals["conv1"], (f - b) / f, rtol=1e-4)
    # inside every block relevance is conserved from the last conv down to the first
    for name, block in model.named_modules():
        convs = [f"{name}.{n}" for n, m in block.named_children() if isinstance(m, nn.Conv2d)]
        if len(convs) >= 2:
            for c in convs[1:]:
                assert torch.allclose(totals[c], totals[convs[0]], rtol=1e-4), (name, c)


@pytest.mark.parametrize("arch", ["efficientnet_b0", "efficientnet_b0_lukemelas"])
def test_efficientnet_keeps_most_relevance(arch, explainer_of):
    built = explainer_of(arch)
    model = built.model
    torch.set_rng_state(built.rng)
    e = built.explainer.explain(torch.randn(1, 3, 224, 224))
    fc = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    expected = (e.logits - fc.bias) / e.logits
    ratio = (e.input_relevance.sum((1, 2, 3)) / expected).item()
    assert 0.95 <= ratio <= 1.0 + 1e-4


def _zennit_relevance(model: nn.Module, x: torch.Tensor, layer_names):
    from zennit.attribution import Gradient
    from zennit.composites import SpecialFirstLayerMapComposite, layer_map_base
    from zennit.rules import Epsilon, ZBox, ZPlus
    from zennit.torchvision import ResNetCanonizer
    from zennit.types import Convolution

    net = copy.deepcopy(model).eval()
    for parent in net.modules():
        kids = list(parent.named_children())
        for (_, c1), (n2, c2) in zip(kids, kids[1:], strict=False):
            if isinstance(c1, nn.Conv2d) and isinstance(c2, nn.BatchNorm2d):
                fold_batchnorm(c1, c2)
                setattr(parent, n2, nn.Identity())
    low, high = input_bounds("exact", IMAGENET_MEAN, IMAGENET_STD)
    low = low.to(x.dtype).reshape(1, 3, 1, 1).expand_as(x)
    high = high.to(x.dtype).reshape(1, 3, 1, 1).expand_as(x)
    composite = SpecialFirstLayerMapComposite(
        layer_map=layer_map_base(1e-6) + [(Convolution, ZPlus(stabilizer=1e-6, zero_params="bias")),
                                          (nn.Linear, Epsilon(epsilon=1e-6))],
        first_map=[(Convolution, ZBox(low, high, stabilizer=1e-6, zero_params="bias"))],
        canonizers=[ResNetCanonizer()])
    layer_rel = {}

    def capture(name):
        def hook(module, inputs, output):
            output.register_hook(lambda g: layer_rel.__setitem__(name, g.detach()))
        return hook

    with Gradient(model=net, composite=composite) as attributor:
        handles = [net.get_submodule(n).register_forward_hook(capture(n)) for n in layer_names]
        out, rel = attributor(x, torch.ones(x.shape[0], 1, dtype=x.dtype))
        for h in handles:
            h.remove()
    return rel, layer_rel


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_agrees_with_zennit(arch):
    model = pseudo_trained(arch).double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    ex = Explainer(model)
    ours = {}
    e = ex.explain(x, tap=lambda layer, rel, act: ours.__setitem__(layer.name, rel.detach()))
    names = [layer.name for layer in ex.layers]
    ref_in, ref_layers = _zennit_relevance(model, x, names)

    def close(a, b):
        return (a - b).abs().max() <= 1e-4 * b.abs().max()

    assert close(e.input_relevance, ref_in)
    assert set(ref_layers) == set(names)
    bad = [n for n in names if not close(ours[n], ref_layers[n])]
    assert not bad, bad


class TinyEfficientBlockNet(nn.Module):
    """Stem → SiLU → depthwise → SiLU → squeeze-excitation → 1×1 project → residual → pool → linear."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.dw, self.bn1 = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(4)
        self.se = SqueezeExcitation(4, 2)
        self.proj, self.bn2 = nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 1)

    def forward(self, x):
        h = F.silu(self.bn0(self.stem(x)))
        y = self.se(F.silu(self.bn1(self.dw(h))))
        y = self.bn2(self.proj(y)) + h
        return self.fc(torch.flatten(self.pool(y), 1))


def _naive_lrp(net: TinyEfficientBlockNet, x: torch.Tensor, flat: bool = False) -> torch.Tensor:
    """The same rules written out with dense matrices, layer by layer (one image)."""
    eps = 1e-6

    def stab(z):
        return z + eps * torch.where(z >= 0, 1.0, -1.0)

    def folded(conv, bn):
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return conv.weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale

    def matrix(conv, w, shape):
        def f(v):
            return F.conv2d(v, w, None, conv.stride, conv.padding, 1, conv.groups).reshape(-1)
        return torch.autograd.functional.jacobian(f, torch.zeros(shape, dtype=x.dtype)).reshape(-1, shape.numel())

    def zplus(conv, w, inp, rel):
        mp, mn = matrix(conv, w.clamp(min=0), inp.shape), matrix(conv, w.clamp(max=0), inp.shape)
        v = inp.reshape(-1)
        contrib = mp * v.clamp(min=0) + mn * v.clamp(max=0)
        z = contrib.sum(1)
        out = (contrib / stab(z)[:, None] * rel.reshape(-1)[:, None]).sum(0)
        if flat and conv.groups > 1:  # flat rule where no input contributes: R_j split evenly over its window
            window = matrix(conv, torch.ones_like(w), inp.shape)
            out = out + (window / window.sum(1, keepdim=True) * ((z == 0) * rel.reshape(-1))[:, None]).sum(0)
        return out.reshape(inp.shape)

    w0, b0 = folded(net.stem, net.bn0)
    w1, b1 = folded(net.dw, net.bn1)
    w2, b2 = folded(net.proj, net.bn2)
    z0 = F.conv2d(x, w0, b0, padding=1)
    h = F.silu(z0)
    a1 = F.silu(F.conv2d(h, w1, b1, padding=1, groups=4))
    g = net.se(a1) / a1  # the gate values
    s = a1 * g
    p = F.conv2d(s, w2, b2)
    y = p + h
    pooled = y.mean((2, 3))
    z = net.fc(pooled)
    r_pooled = pooled * net.fc.weight * (1.0 / stab(z))  # seed 1, ε rule with bias
    r_y = y / y[0, 0].numel() * (r_pooled / stab(pooled)).reshape(1, -1, 1, 1)
    r_p, r_h = p * r_y / stab(y), h * r_y / stab(y)
    r_s = zplus(net.proj, w2, s, r_p)  # gate: all to the signal; SiLU: pass
    r_h = r_h + zplus(net.dw, w1, h, r_s)
    return zplus(net.stem, w0, x, r_h)


@pytest.mark.parametrize("fallback", ["none", "depthwise"])
def test_efficientnet_style_block_matches_naive_rules(fallback):
    torch.manual_seed(23)  # a seed where some depthwise windows have no positive contribution
    net = TinyEfficientBlockNet().double().eval()
    with torch.no_grad():
        for bn in (net.bn0, net.bn1, net.bn2):
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    ex = Explainer(net, zplus_fallback=fallback, input_shape=(3, 5, 5))
    assert ex.input_rule == "zplus" and [layer.name for layer in ex.layers] == ["stem", "dw", "proj"]
    ours = ex.explain(x).input_relevance
    assert torch.allclose(ours, _naive_lrp(net, x, flat=fallback == "depthwise"), atol=1e-10)
    assert not torch.allclose(ours, _naive_lrp(net, x, flat=fallback != "depthwise"), atol=1e-6)


def test_single_image_equals_in_batch():
    ex = Explainer(pseudo_trained("tiny_resnet").double())
    x = torch.randn(4, 3, 48, 48, dtype=torch.float64)
    seeds = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    batch = ex.explain(x, seeds).input_relevance
    for i in range(4):
        assert torch.allclose(ex.explain(x[i:i + 1], seeds[i]).input_relevance[0], batch[i], atol=1e-12)


def test_paper_code_bounds_change_only_pixels():
    model = pseudo_trained("tiny_resnet").double()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    taps = {}
    maps = {}
    for bounds in ("exact", "paper-code"):
        got = {}
        maps[bounds] = Explainer(model, bounds=bounds).explain(
            x, tap=lambda layer, rel, act, got=got: got.__setitem__(layer.name, rel)).input_relevance
        taps[bounds] = got
    assert not torch.allclose(maps["exact"], maps["paper-code"])
    assert all(torch.allclose(taps["exact"][n], taps["paper-code"][n]) for n in taps["exact"])


class _Odd(nn.Module):
    """Three operations without a rule: a function, a tensor method and a torch.nn module."""

    def __init__(self):
        super().__init__()
        self.conv, self.lrn, self.fc = nn.Conv2d(3, 4, 3), nn.LocalResponseNorm(2), nn.Linear(4, 1)

    def forward(self, x):
        h = torch.exp(self.conv(x))
        return self.fc(self.lrn(h.erf()).mean((2, 3)))


def test_every_unsupported_operation_is_reported_at_once_with_its_place():
    with pytest.raises(UnsupportedLayerError) as err:
        Explainer(_Odd(), input_shape=(3, 8, 8))
    text = str(err.value)
    assert "3 operation(s)" in text
    assert "module LocalResponseNorm at 'lrn'" in text
    assert "function 'exp'" in text and "method 'erf'" in text
    assert "test_lrp_models.py" in text and "torch.exp(self.conv(x))" in text  # the source line


def _saved_bytes(fn, resident: set[int]) -> int:
    """Bytes of the distinct storages autograd saves for the backward of ``fn()`` (resident ones excluded)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in resident:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@pytest.mark.parametrize("arch,size", [("resnet18", 64), ("efficientnet_b0", 64), ("tiny_vit", 32),
                                       ("tiny_convnext", 32)])
def test_lrp_saves_at_most_twice_the_plain_gradient(arch, size):
    """The memory side of the LRP benchmark: activations kept for the backward (the bulk of peak memory)."""
    from tffkit.analysis.ffrs import FFRSAccumulator

    model = pseudo_trained(arch)
    for p in model.parameters():
        p.requires_grad_(False)
    explainer = Explainer(model)
    x = torch.randn(2, 3, size, size)
    resident = {t.untyped_storage().data_ptr() for m in (model, explainer.model)
                for t in [*m.parameters(), *m.buffers()]}

    def plain():
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xg).sum(), xg)

    acc = FFRSAccumulator(explainer.layers, x.device)
    acc.set_batch(torch.zeros(2, dtype=torch.long))
    ours = _saved_bytes(lambda: explainer.explain(x, 1.0, tap=acc, input_relevance=False), resident)
    assert 0 < ours <= 2 * _saved_bytes(plain, resident)


def test_cli_reports_unsupported_operations_in_one_message_not_a_traceback(tmp_path, monkeypatch, capsys):
    from conftest import make_tree
    from tffkit import detectors
    from tffkit.cli import main

    monkeypatch.setitem(detectors.ARCHITECTURES, "odd", _Odd)
    weights = detectors.save_checkpoint(tmp_path / "w.pth", _Odd())
    data = make_tree(tmp_path / "d", {"progan": []}, n=2, size=8)
    rc = main(["rank", "--arch", "odd", "--weights", str(weights), "--data", str(data), "--preset", "full",
               "--device", "cpu", "--workers", "0", "--no-progress", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("tff rank: error: LRP has no rule for 3 operation(s)")
    assert "Traceback" not in err and "module LocalResponseNorm at 'lrn'" in err


def test_gradient_mode_passes_through_the_squeeze_excitation_gate():
    """The gate's relevance rule detaches the gate; gradient mode must not (its gradient flows through both)."""
    torch.manual_seed(23)
    net = TinyEfficientBlockNet().double().eval()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad(net(x).sum(), x)
    got = Explainer(net, input_shape=(3, 5, 5)).gradient(x).input_relevance
    assert torch.allclose(got, expected, atol=1e-12)
