"""Composites as values (docs/lrp.md): the default reproduces the rule table, extensions never leak into other
explainers, first-layer and by-name overrides apply where the summary says, the zoo picks the input rule."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lrp_helpers import pseudo_trained
from tffkit.lrp import COMPOSITES, DEFAULT, Composite, ConvEpsilon, Explainer, Gamma, ZBox, ZPlus, named
from tffkit.lrp import registry as reg


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return pseudo_trained("tiny_resnet").double()


def _rules(ex: Explainer) -> dict[str, str]:
    return {r.module: r.rule for r in ex.rules() if r.op == "Conv2d"}


def _conv_rel(ex: Explainer, x: torch.Tensor) -> dict[str, torch.Tensor]:
    seen = {}
    e = ex.explain(x, tap=lambda layer, rel, act: seen.__setitem__(layer.name, rel.clone()))
    seen["input"] = e.input_relevance
    return seen


def test_with_returns_a_new_value_and_leaves_the_default_alone():
    before = dict(DEFAULT.modules)
    mine = DEFAULT.with_({nn.Conv2d: ConvEpsilon()}, layers={"fc": reg.Epsilon()}, first=Gamma(0.5), eps=1e-9)
    assert dict(DEFAULT.modules) == before and DEFAULT.first is None and DEFAULT.eps == 1e-6
    assert isinstance(mine.modules[nn.Conv2d], ConvEpsilon) and isinstance(mine.first, Gamma) and mine.eps == 1e-9
    assert isinstance(DEFAULT.modules[nn.Conv2d], ZPlus)
    with pytest.raises(TypeError):
        mine.modules[nn.Conv2d] = ZPlus()  # read-only tables
    with pytest.raises(ValueError, match="unknown composite"):
        named("fastest")
    with pytest.raises(ValueError, match="attention"):
        DEFAULT.with_(attention="linear")
    assert {"paper", "attnlrp", "cp-lrp"} <= set(COMPOSITES) and named("paper") is DEFAULT
    assert copy.deepcopy(mine) is mine  # an immutable value


def test_two_explainers_with_different_composites_do_not_affect_each_other(resnet):
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    plain = _conv_rel(Explainer(resnet), x)
    eps = Explainer(resnet, composite=DEFAULT.with_({nn.Conv2d: ConvEpsilon()}))
    again = Explainer(resnet)  # built after the other composite: unaffected
    assert set(_rules(eps).values()) == {"zbox (pixel bounds)", "epsilon"}  # the zoo's zβ at the pixels stays
    assert set(_rules(again).values()) == {"zbox (pixel bounds)", "zplus"}
    other, same = _conv_rel(eps, x), _conv_rel(again, x)
    assert all(torch.equal(plain[k], same[k]) for k in plain)
    assert not torch.allclose(plain["input"], other["input"], atol=1e-6)


def test_paper_composite_by_name_equals_the_default_and_the_old_options(resnet):
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    ref = _conv_rel(Explainer(resnet), x)
    for ex in (Explainer(resnet, composite="paper"), Explainer(resnet, input_rule=ZBox("exact")),
               Explainer(resnet, composite=DEFAULT.with_(first=ZBox()), zplus_fallback="depthwise")):
        got = _conv_rel(ex, x)
        assert all(torch.allclose(ref[k], got[k], rtol=1e-12, atol=1e-15) for k in ref)


def test_first_layer_and_by_name_overrides_apply_where_the_summary_says(resnet):
    comp = DEFAULT.with_(first=Gamma(0.5), layers={"layer2.*.conv2": ConvEpsilon(), "layer1.0.conv1": ZPlus("all")})
    ex = Explainer(resnet, composite=comp)
    rules = _rules(ex)
    assert rules["conv1"] == "gamma (γ = 0.5)" and ex.input_rule == "gamma"
    assert rules["layer2.0.conv2"] == "epsilon" and rules["layer1.0.conv1"] == "zplus + flat fallback"
    assert {k: v for k, v in rules.items() if k not in ("conv1", "layer2.0.conv2", "layer1.0.conv1")} and \
        all(v == "zplus" for k, v in rules.items() if k not in ("conv1", "layer2.0.conv2", "layer1.0.conv1"))
    # the modules run the rules the summary names
    assert ex.module("conv1").gamma == 0.5 and ex.module("layer2.0.conv2").epsilon
    assert ex.module("layer1.0.conv1").flat_fallback and not ex.module("layer1.0.conv2").flat_fallback
    # a by-name rule beats the first-layer rule
    ex2 = Explainer(resnet, composite=comp.with_(layers={"conv1": ConvEpsilon()}))
    assert _rules(ex2)["conv1"] == "epsilon"


def test_the_zoo_entry_not_the_class_picks_the_input_rule():
    from tffkit.detectors import build_detector, resolve

    assert resolve("wang2020").input_rule == "zbox" and resolve("npr2024").input_rule == "zplus"
    assert resolve("torchvision:resnet18").input_rule == "zbox"
    assert resolve("torchvision:efficientnet_b0").input_rule == "zplus"
    assert resolve("tiny_resnet").input_rule == "zbox" and resolve("tiny_vit").input_rule == "zplus"
    try:
        import timm  # noqa: F401 - timm's ResNet is not torchvision's class, and gets zβ all the same
    except ImportError:
        pass
    else:
        assert resolve("timm:resnet50").input_rule == "zbox"
        assert resolve("timm:vit_small_patch16_224").input_rule == "zplus"
    model = build_detector("tiny_resnet").double()
    assert model.tff_input_rule == "zbox"
    assert Explainer(model, input_shape=(3, 32, 32)).input_rule == "zbox"
    bare = copy.deepcopy(model)
    del bare.tff_input_rule  # the same class without the zoo's field: no isinstance fallback
    assert Explainer(bare, input_shape=(3, 32, 32)).input_rule == "zplus"
    bare.tff_input_rule = "epsilon"
    assert _rules(Explainer(bare, input_shape=(3, 32, 32)))["conv1"] == "epsilon"


class _Scale(nn.Module):
    def forward(self, x):
        return triple_it(x)


def triple_it(x):
    return 3 * x


class _Carrier(nn.Module):
    tff_lrp_rules = {triple_it: reg.Epsilon()}

    def __init__(self):
        super().__init__()
        self.conv, self.scale, self.fc = nn.Conv2d(3, 2, 1), _Scale(), nn.Linear(2, 1)

    def forward(self, x):
        return self.fc(F.relu(self.scale(self.conv(x))).mean((2, 3)))


def test_a_model_carries_the_rules_of_its_own_operations():
    model = _Carrier().eval()
    ex = Explainer(model, input_shape=(3, 4, 4))
    assert any(r.op == "triple_it" and r.rule == "epsilon" for r in ex.rules())
    assert triple_it in ex.composite.functions and triple_it not in DEFAULT.functions
    del _Carrier.tff_lrp_rules  # without it the function is traced through (a scaling: identity)
    try:
        plain = Explainer(_Carrier().eval(), input_shape=(3, 4, 4))
    finally:
        _Carrier.tff_lrp_rules = {triple_it: reg.Epsilon()}
    assert not any(r.op == "triple_it" for r in plain.rules())


def test_gamma_rule_matches_zennit():
    pytest.importorskip("zennit")
    from zennit.core import Composite as ZComposite
    from zennit.rules import Gamma as ZGamma

    torch.manual_seed(3)
    conv = nn.Conv2d(4, 5, 3, padding=1).double()
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    rel = torch.randn_like(conv(x))
    from tffkit.lrp.rules import LRPConv

    xg = x.clone().requires_grad_(True)
    (ours,) = torch.autograd.grad(LRPConv(conv, gamma=0.5)(xg), xg, rel)
    ref_conv = copy.deepcopy(conv)
    composite = ZComposite(module_map=lambda ctx, name, module: ZGamma(0.5, zero_params="bias")
                           if isinstance(module, nn.Conv2d) else None)
    with composite.context(ref_conv):
        xz = x.clone().requires_grad_(True)
        (theirs,) = torch.autograd.grad(ref_conv(xz), xz, rel)
    assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_composite_value_is_rejected_when_not_a_composite(resnet):
    with pytest.raises(TypeError, match="Composite"):
        Explainer(resnet, composite=42)
    assert isinstance(DEFAULT, Composite)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def test_attnlrp_composite_gives_lxt_maps_at_the_pixels(one_thread):
    """The ``attnlrp`` composite puts AttnLRP's ε rule on the patch embedding, so its pixel maps are LXT's; the paper
    composite's z⁺ there gives other maps (docs/lrp.md, "equal to LXT" and its condition)."""
    from test_lrp_architectures import _lxt_vit, lively
    from tffkit.detectors import tiny_vit

    torch.manual_seed(4)
    model = lively(tiny_vit()).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        logit, _ = _lxt_vit(model, xg, 1e-12)
        (ref,) = torch.autograd.grad(logit.reshape(-1), xg, torch.ones(2, dtype=torch.float64))
    attn = Explainer(model, composite="attnlrp", eps=1e-12)
    paper = Explainer(model, eps=1e-12)
    assert _rules(attn)["conv_proj"] == "epsilon" and _rules(paper)["conv_proj"] == "zplus"
    ours, theirs = attn.explain(x).input_relevance, paper.explain(x).input_relevance
    assert torch.allclose(ours, ref, rtol=1e-6, atol=1e-7 * ref.abs().max().item())
    r_attn, r_paper = _corr(ours, ref), _corr(theirs, ref)
    assert r_attn > 1 - 1e-9 and r_paper < 0.9, (r_attn, r_paper)
    cp = Explainer(model, composite="cp-lrp", eps=1e-12)
    assert cp.composite.attention == "cp" and _rules(cp)["conv_proj"] == "epsilon"


def test_cli_picks_the_composite_and_the_input_rule(tmp_path, capsys, one_thread):
    from tffkit.cli import main

    base = ["--random-weights", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "out"), "--show-rules"]
    assert main(["rank", "--arch", "tiny_vit", *base, "--composite", "attnlrp"]) == 0
    out = capsys.readouterr().out
    assert "composite attnlrp, input rule epsilon, attention attnlrp" in out
    assert any(line.startswith("conv_proj") and " epsilon" in line for line in out.splitlines())
    assert main(["rank", "--arch", "tiny_vit", *base, "--composite", "cp-lrp"]) == 0
    assert "composite cp-lrp, input rule epsilon, attention cp" in capsys.readouterr().out
    assert main(["rank", "--arch", "tiny_resnet", *base, "--input-rule", "gamma"]) == 0
    out = capsys.readouterr().out
    assert "composite paper, input rule gamma" in out and "gamma (γ = 0.25)" in out
