"""The relevance self-check (tffkit.lrp.check), batch norm folded after linear layers, re-parameterisable blocks
merged before tracing, and the rule table (Explainer.rules(), --show-rules)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lrp_helpers import calibrate_batch_norm, pseudo_trained
from test_lrp_architectures import lively
from test_lrp_models import TinyEfficientBlockNet
from tffkit.detectors import tiny_vit
from tffkit.lrp import DEFAULT, Explainer, RelevanceWarning, rewrite, trace
from tffkit.lrp import registry as reg


def _silent_explainer(model: nn.Module, **kwargs) -> Explainer:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RelevanceWarning)
        return Explainer(model, **kwargs)


HEALTHY = {
    "tiny_resnet": lambda: (pseudo_trained("tiny_resnet"), 64),
    "tiny_resnet_calibrated": lambda: (calibrate_batch_norm(pseudo_trained("tiny_resnet"), 64), 64),
    "tiny_vit": lambda: (lively(tiny_vit()), 32),
    "tiny_vit_calibrated": lambda: (calibrate_batch_norm(tiny_vit(), 32), 32),
    "efficient_block": lambda: (lively(TinyEfficientBlockNet()), 32),
    "efficient_block_calibrated": lambda: (calibrate_batch_norm(TinyEfficientBlockNet(), 32), 32),
}


@pytest.mark.parametrize("name", list(HEALTHY))
def test_self_check_is_silent_on_healthy_detectors(name, one_thread):
    torch.manual_seed(0)
    model, size = HEALTHY[name]()
    ex = _silent_explainer(model, input_shape=(3, size, size))
    check = ex.relevance_check
    assert check is not None and check.ok and check.layer is None
    assert set(check.ratios) == {layer.name for layer in ex.layers} | {"input"}
    assert max(check.ratios.values()) < 2.5  # measured ≤ 2.2 on healthy detectors; the limit is 5


class Amplify(nn.Module):
    """An identity in the forward; registered below with a rule that multiplies relevance (a broken rule)."""

    def forward(self, x):
        return x * 1.0


class _ScaleFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fn, factor):
        ctx.factor = factor
        return fn(x)

    @staticmethod
    def backward(ctx, relevance):
        return relevance * ctx.factor, None, None


class _Broken(reg.Rule):
    def __init__(self, factor: float):
        self.factor = factor

    def run(self, op, call, tensors, args, kwargs):
        return _ScaleFn.apply(tensors[0], call, self.factor)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.amp, self.conv2 = nn.Conv2d(3, 4, 3), Amplify(), nn.Conv2d(4, 4, 3)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 1)

    def forward(self, x):
        h = torch.relu(self.conv2(self.amp(torch.relu(self.conv1(x)))))
        return self.fc(self.pool(h).flatten(1))


@pytest.mark.parametrize("factor,kind", [(1e4, "explodes"), (float("nan"), "is not finite")])
def test_self_check_warns_where_a_broken_rule_makes_relevance_insane(factor, kind):
    torch.manual_seed(1)
    model = lively(_Net())
    with pytest.warns(RelevanceWarning, match=f"relevance {kind} at unit layer 'conv1'.*last sane one above it: "
                                              "'conv2'"):
        ex = Explainer(model, input_shape=(3, 12, 12), composite=DEFAULT.with_({Amplify: _Broken(factor)}))
    assert ex.relevance_check.layer == "conv1" and not ex.relevance_check.ok
    assert any(r.op == "Amplify" and r.rule == "_Broken" for r in ex.rules())
    conservative = DEFAULT.with_({Amplify: _Broken(1.0)})  # the same rule, conservative: silent
    assert _silent_explainer(model, input_shape=(3, 12, 12), composite=conservative).relevance_check.ok


def test_no_check_no_relevance_pass():
    ex = Explainer(lively(_Net()), input_shape=(3, 12, 12), check=False)
    assert ex.relevance_check is None


class LinearNorm(nn.Module):
    """timm LeViT's linear layer and batch norm: features last, the BN over ``x.flatten(0, 1)``."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.linear, self.bn = nn.Linear(n_in, n_out, bias=False), nn.BatchNorm1d(n_out)

    def forward(self, x):
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


class _Tokens(nn.Module):
    """Patch convolution → tokens → (LinearNorm → ReLU) × 2 → mean → Linear → BN1d (2-D) → ReLU → Linear."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4, bias=False)
        self.lin1, self.lin2 = LinearNorm(8, 16), LinearNorm(16, 8)
        self.fc1, self.bn, self.fc2 = nn.Linear(8, 6, bias=False), nn.BatchNorm1d(6), nn.Linear(6, 1, bias=False)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.relu(self.lin2(torch.relu(self.lin1(t)))).mean(1)
        return self.fc2(torch.relu(self.bn(self.fc1(t))))


def _scale_shift(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def test_batch_norm_after_a_linear_layer_is_folded_and_relevance_is_the_epsilon_rules(one_thread):
    """Every BN after a linear layer (LeViT's flattened form and the plain 2-D one) is folded into it: the copy has
    no batch norm left, its logits equal the detector's, and the relevance entering a folded layer's input is the
    ε rule's with the folded bias b' = β − μγ/σ: Σ_i R_i = Σ_j R_j (z_j − b'_j)/z_j (unfolded, the BN passed
    relevance unchanged and Σ_i R_i was Σ_j R_j)."""
    torch.manual_seed(2)
    model = calibrate_batch_norm(_Tokens(), 16).double()
    with torch.no_grad():
        for bn in (model.lin1.bn, model.lin2.bn, model.bn):
            bn.bias.uniform_(-0.5, 0.5)
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    ex = Explainer(model, input_shape=(3, 16, 16), input_rule="epsilon", eps=1e-12)
    assert not any(n.op == "call_module" and isinstance(ex.model.get_submodule(n.target), nn.BatchNorm1d)
                   for n in ex.model.graph.nodes)
    assert not any("BatchNorm" in r.op or "batch norm" in r.rule for r in ex.rules())
    with torch.no_grad():
        assert torch.allclose(ex.forward(x), model(x).reshape(-1), rtol=1e-10)
    seen = {}
    ex.explain(x, tap=lambda layer, rel, act: seen.__setitem__(layer.name, (rel, act)), with_activation=True)
    pairs = (("patch", "lin1.linear", model.lin1.bn), ("lin1.linear", "lin2.linear", model.lin2.bn),
             ("lin2.linear", "fc1", model.bn))
    for below, layer, bn in pairs:
        rel, z = seen[layer]
        shift = _scale_shift(bn)[1]
        expected = (rel * (z - shift) / z).sum(tuple(range(1, z.dim())))
        got = seen[below][0].sum(tuple(range(1, seen[below][0].dim())))
        assert torch.allclose(got, expected, rtol=1e-8), layer
        assert not torch.allclose(got, rel.sum(tuple(range(1, z.dim()))), rtol=1e-3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class _RepNet(nn.Module):
    """Two of timm's MobileOne blocks (FastViT's re-parameterisable convolution: k×k, 1×1 scale and identity BN
    branches) and a head."""

    def __init__(self):
        super().__init__()
        from timm.models.fastvit import MobileOneBlock

        self.b1 = MobileOneBlock(3, 8, 3, num_conv_branches=2, act_layer=nn.ReLU)
        self.b2 = MobileOneBlock(8, 8, 3, num_conv_branches=2, act_layer=nn.ReLU)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 1)

    def forward(self, x):
        return self.fc(self.pool(self.b2(self.b1(x))).flatten(1))


def test_reparameterisable_blocks_are_merged_on_the_copy_only(one_thread):
    pytest.importorskip("timm")
    torch.manual_seed(3)
    model = calibrate_batch_norm(_RepNet(), 16)
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x).reshape(-1)
    ex = _silent_explainer(model, input_shape=(3, 16, 16))
    assert torch.allclose(ex.forward(x), ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
    convs = [r.module for r in ex.rules() if r.op == "Conv2d"]
    assert convs == ["b1.reparam_conv", "b2.reparam_conv"]  # one convolution per block, no branch sums
    assert not any(r.op == "add" for r in ex.rules())
    after = model.state_dict()  # the detector keeps its branches and weights
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert model.b1.reparam_conv is None and len(model.b1.conv_kxk) == 2


def test_unmerged_fastvit_relevance_explodes_and_is_reported(monkeypatch, one_thread):
    """A small FastViT (random weights, calibrated BN): merged, relevance is sane (measured: 0.87–0.90 of the logit
    reaches the input, mass ≤ 0.1 of the scale); explained branch by branch, 205× the logit reaches the input and
    the mass is 8.6× the scale, which the check reports."""
    pytest.importorskip("timm")
    from timm.models.fastvit import FastVit

    torch.manual_seed(2)
    model = calibrate_batch_norm(FastVit(layers=(1, 1, 1, 1), embed_dims=(16, 32, 64, 128), mlp_ratios=(2,) * 4,
                                         num_classes=1, token_mixers=("repmixer",) * 3 + ("attention",)), 64, seed=1)
    merged = _silent_explainer(model, input_shape=(3, 64, 64)).relevance_check
    assert merged.ok and all(0.5 < s < 1.0 for s in merged.input_share), merged.input_share
    monkeypatch.setattr(rewrite, "reparameterize", lambda module: None)
    with pytest.warns(RelevanceWarning, match="relevance explodes at"):
        unmerged = Explainer(model, input_shape=(3, 64, 64)).relevance_check
    assert max(abs(s) for s in unmerged.input_share) > 10


def test_rules_list_every_operation_on_the_relevance_path_of_a_resnet(one_thread):
    ex = _silent_explainer(pseudo_trained("tiny_resnet"), input_shape=(3, 32, 32))
    rows = ex.rules()
    by_module = {(r.module, r.op): r.rule for r in rows}
    assert by_module[("conv1", "Conv2d")] == "zbox (pixel bounds)"
    assert by_module[("maxpool", "MaxPool2d")].startswith("gradient")
    assert by_module[("fc", "Linear")] == by_module[("avgpool", "AdaptiveAvgPool2d")] == "epsilon"
    convs = [r for r in rows if r.op == "Conv2d"]
    assert all(r.rule == "zplus" for r in convs[1:]) and all(r.unit for r in convs)
    assert [r.layer for r in rows if r.unit] == [layer.name for layer in ex.layers]
    assert {r.rule for r in rows if r.op == "add"} == {"epsilon (sum)"}
    assert {r.rule for r in rows if r.op == "ReLU"} == {"identity"}
    # every operation of the traced copy that relevance passes through is listed exactly once
    path = [n.name for n in ex.model.graph.nodes if n.op not in ("placeholder", "output", "get_attr")]
    assert sorted(r.node for r in rows) == sorted(path)
    text = ex.rules_summary()
    assert text.splitlines()[0].startswith(f"{len(rows)} operation(s) on the relevance path, {len(ex.layers)} of")
    assert "layer1.0.conv2  " in text and "zbox (pixel bounds)" in text
    eps = _silent_explainer(pseudo_trained("tiny_resnet"), input_shape=(3, 32, 32), conv_rule="epsilon",
                            input_rule="epsilon")
    assert {r.rule for r in eps.rules() if r.op == "Conv2d"} == {"epsilon"}


def test_show_rules_prints_the_table_and_exits(tmp_path, capsys, one_thread):
    from tffkit.cli import main

    for command in ("rank", "explain"):
        src = ["--data", str(tmp_path / "none")] if command == "rank" else ["--images", str(tmp_path / "x.png")]
        assert main([command, "--arch", "tiny_resnet", "--random-weights", *src, "--out", str(tmp_path / "out"),
                     "--show-rules"]) == 0
        out = capsys.readouterr().out
        assert "operation(s) on the relevance path" in out and "zbox (pixel bounds)" in out
        assert "relevance self-check: sane" in out
        assert not (tmp_path / "out").exists()


def _without_linear_folding(monkeypatch):
    original = trace._fold_target

    def conv_only(gm, src, info, composite):
        node = original(gm, src, info, composite)
        return None if node is not None and isinstance(trace.module_of(gm, node), nn.Linear) else node
    monkeypatch.setattr(trace, "_fold_target", conv_only)


@pytest.mark.slow
@pytest.mark.parametrize("name,size", [("levit_128", 224), ("fastvit_t8", 256)])
def test_levit_and_fastvit_explain_with_sane_relevance(name, size, monkeypatch):
    """The full timm models (random weights, calibrated BN): folded/merged, the self-check is silent and a sane share
    of the logit reaches the input (measured −0.09/0.66 and 0.91/0.95 on the probe images); explained as before
    (BN after linear layers unfolded, blocks unmerged; measured 59× and −21× the logit) the check warns."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = calibrate_batch_norm(timm.create_model(name, pretrained=False, num_classes=1), size)
    check = _silent_explainer(model, input_shape=(3, size, size)).relevance_check
    assert check.ok and all(abs(s) < 2 for s in check.input_share), check.input_share
    if name == "levit_128":
        _without_linear_folding(monkeypatch)
    else:
        monkeypatch.setattr(rewrite, "reparameterize", lambda module: None)
    with pytest.warns(RelevanceWarning, match="relevance explodes at"):
        Explainer(model, input_shape=(3, size, size))


class _Unruled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 1)

    def forward(self, x):
        h = self.conv(x)
        for _ in range(3):  # both reach fx through __torch_function__, i.e. from torch's overrides module
            h = F.softsign(h)
            h = F.tanhshrink(h)
        return self.fc(h.mean((2, 3)))


def test_unsupported_functions_are_grouped_by_kind_and_point_at_the_models_line():
    from tffkit.lrp import UnsupportedLayerError

    with pytest.raises(UnsupportedLayerError) as info:
        Explainer(_Unruled(), input_shape=(3, 8, 8))
    lines = str(info.value).splitlines()
    assert lines[0] == "LRP has no rule for 6 operation(s) of _Unruled:" and len(lines) == 4
    for name, code in (("softsign", "h = F.softsign(h)"), ("tanhshrink", "h = F.tanhshrink(h)")):
        line = next(ln for ln in lines if f"function '{name}'" in ln)
        assert "no rule — 3 uses, at " in line and "test_relevance_check.py:" in line and code in line, line
    assert "overrides.py" not in str(info.value)


class _Odd(_Net):
    tff_input_shape = (3, 12, 12)


def test_rank_repeats_the_warning_and_records_the_check_in_ffrs_json(tmp_path, monkeypatch, capsys):
    import json

    from conftest import make_tree
    from tffkit import detectors
    from tffkit.cli import main

    monkeypatch.setitem(detectors.ARCHITECTURES, "odd", _Odd)
    torch.manual_seed(4)
    weights = detectors.save_checkpoint(tmp_path / "w.pth", lively(_Odd()))
    data = make_tree(tmp_path / "d", {"progan": []}, n=2, size=16)  # the smallest side scored
    args = ["rank", "--arch", "odd", "--weights", str(weights), "--data", str(data), "--preset", "full",
            "--min-prob", "0", "--device", "cpu", "--workers", "0", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "sane")]) == 0
    assert "relevance self-check" not in capsys.readouterr().out
    sane = json.loads((tmp_path / "sane" / "ffrs.json").read_text())["relevance_check"]
    assert sane["ok"] and sane["problem"] is None and len(sane["input_share"]) == 2
    monkeypatch.setattr(Amplify, "tff_lrp_rules", {Amplify: _Broken(1e4)}, raising=False)  # the model's own rule
    assert main([*args, "--out", str(tmp_path / "broken")]) == 0
    out = capsys.readouterr().out
    assert "warning (relevance self-check): relevance explodes at unit layer 'conv1'" in out
    broken = json.loads((tmp_path / "broken" / "ffrs.json").read_text())["relevance_check"]
    assert not broken["ok"] and broken["first_bad_layer"] == "conv1"
