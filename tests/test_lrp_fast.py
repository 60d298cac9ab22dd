"""The fast composite (LRP as one Gradient × Input pass) against the relevance-form rules it replaces, against LXT's
efficient mode, and beside other composites in one process."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lrp_helpers import pseudo_trained
from test_lrp_architectures import lively, without_biases
from tffkit.detectors import tiny_vit
from tffkit.lrp import Explainer


def _close(a: torch.Tensor, b: torch.Tensor, rel: float) -> bool:
    return bool((a - b).abs().max() <= rel * b.abs().max())


def _both(model, shape, attention, eps, x):
    """Input relevance and every unit layer's relevance, by the relevance-form rules and by the fast path."""
    out = []
    for comp in ("attnlrp", "fast"):
        options = {"conv_rule": "epsilon", "input_rule": "epsilon"} if comp == "attnlrp" else {}
        ex = Explainer(model, composite=comp, attention=attention, eps=eps, input_shape=shape, **options)
        taps = {}
        e = ex.explain(x, tap=lambda layer, rel, _a, taps=taps: taps.__setitem__(layer.name, rel))
        out.append((ex, e.input_relevance, taps))
    return out


def _timm_vit():
    timm = pytest.importorskip("timm")
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1, img_size=32, patch_size=8,
                             depth=2)


@pytest.mark.parametrize(("attention", "build", "dtype"), [
    ("attnlrp", tiny_vit, torch.float32), ("cp", tiny_vit, torch.float32),
    # timm's position embedding nearly cancels some patch features of this random ViT, where the relevance form's
    # division by z loses fp32 digits (6e-4 at the pixels): compared in float64
    ("attnlrp", _timm_vit, torch.float64), ("cp", _timm_vit, torch.float64)])
def test_fast_path_equals_the_rules_on_a_vit(attention, build, dtype, one_thread):
    """ε (linear layers, patch embedding, sums), identity (GELU), LayerNorm (σ constant), uniform and softmax (AttnLRP)
    or CP attention (torchvision's nn.MultiheadAttention; timm's F.scaled_dot_product_attention): the gradient form
    gives the relevance-form rules' relevance at the pixels and at every unit layer, to fp32 precision (the fast path
    omits ε inside the network, so both use a small one)."""
    torch.manual_seed(0)
    model, x = lively(build()).to(dtype), torch.randn(3, 3, 32, 32, dtype=dtype)
    eps = 1e-9 if dtype == torch.float32 else 1e-12
    (slow, ra, ta), (fast, rb, tb) = _both(model, (3, 32, 32), attention, eps, x)
    assert [(r.module, r.op, r.unit) for r in fast.rules()] == [(r.module, r.op, r.unit) for r in slow.rules()]
    assert [layer.name for layer in fast.layers] == [layer.name for layer in slow.layers]
    assert {layer.kind for layer in fast.layers} == {"conv", "head", "residual", "neuron"}
    assert _close(rb, ra, 1e-5), (rb - ra).abs().max() / ra.abs().max()
    for name, rel in ta.items():
        assert _close(tb[name], rel, 1e-5), name
    labels = {r.rule for r in fast.rules()}
    assert "identity (gradient form, ×y/x)" in labels and "norm (σ detached, gradient form)" in labels


def test_fast_path_equals_the_epsilon_rules_on_a_cnn(one_thread):
    """A ResNet under ε on every convolution (BN folded), identity on ReLU, ε sums and pooling: the same relevance
    in float64 (tiny ε) to 1e-8 and in float32 to 5e-5 (rounding over 10 layers)."""
    torch.manual_seed(1)
    model = pseudo_trained("tiny_resnet")
    x = torch.randn(2, 3, 64, 64)
    (_, ra, ta), (fast, rb, tb) = _both(model, (3, 64, 64), "attnlrp", 1e-9, x)
    assert _close(rb, ra, 5e-5) and all(_close(tb[n], r, 5e-5) for n, r in ta.items())
    model64 = model.double()
    (_, ra, _), (_, rb, _) = _both(model64, (3, 64, 64), "attnlrp", 1e-12, x.double())
    assert _close(rb, ra, 1e-8)
    assert set(fast.rules_summary().split()) >= {"epsilon", "Conv2d"}


def test_fast_path_conserves_the_logit_without_biases(one_thread):
    """With every additive constant zero, CP-LRP in gradient form is conservative: the pixels receive the logit."""
    torch.manual_seed(2)
    model = without_biases(lively(tiny_vit())).double()
    ex = Explainer(model, composite="fast", attention="cp", eps=1e-15)
    e = ex.explain(torch.randn(2, 3, 32, 32, dtype=torch.float64), seed=lambda logits: logits)
    assert torch.allclose(e.input_relevance.sum((1, 2, 3)), e.logits, rtol=1e-8)


def _lxt_rules():
    """LXT 2.1's efficient-mode rules (``lxt/efficient/rules.py``: implicit identity rule, gradient division, stop
    gradient), loaded from its file: the package's ``__init__`` imports its LLM patches, which need ``transformers``."""
    import importlib.util

    lxt = pytest.importorskip("lxt")
    path = Path(lxt.__file__).parent / "efficient" / "rules.py"
    if not path.exists():
        pytest.skip("LXT without its efficient mode")
    spec = importlib.util.spec_from_file_location("_lxt_efficient_rules", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lxt_efficient_vit(model, x: torch.Tensor, attention: str) -> torch.Tensor:
    """torchvision's ViT as LXT's efficient mode writes it (its patches for ViT, GELU, LayerNorm and attention, here
    as one forward): identity rule on GELU, LayerNorm with σ detached, attention with the q, k, v gradients divided
    by 4, 4, 2 (AttnLRP) or q, k detached (CP-LRP), every linear map native. Returns the logits."""
    lr = _lxt_rules()
    n, d = len(x), model.hidden_dim

    def layer_norm(ln, t):
        mean = t.mean(-1, keepdim=True)
        std = ((t - mean) ** 2).mean(-1, keepdim=True).add(ln.eps).sqrt()
        return (t - mean) / lr.stop_gradient(std) * ln.weight + ln.bias

    h = model.conv_proj(x).reshape(n, d, -1).permute(0, 2, 1)
    h = torch.cat([model.class_token.expand(n, -1, -1), h], 1) + model.encoder.pos_embedding
    for block in model.encoder.layers:
        att = block.self_attention
        heads = att.num_heads
        q, k, v = (t.reshape(n, -1, heads, d // heads).transpose(1, 2) for t in
                   F.linear(layer_norm(block.ln_1, h), att.in_proj_weight, att.in_proj_bias).chunk(3, -1))
        if attention == "cp":
            q, k = lr.stop_gradient(q), lr.stop_gradient(k)
        else:
            q, k, v = lr.divide_gradient(q, 4), lr.divide_gradient(k, 4), lr.divide_gradient(v, 2)
        ctx = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, -1, d)
        h = h + att.out_proj(ctx)
        m = lr.identity_rule_implicit(F.gelu, block.mlp[0](layer_norm(block.ln_2, h)))
        h = h + block.mlp[3](m)
    return model.heads(layer_norm(model.encoder.ln, h)[:, 0])


@pytest.mark.parametrize("attention", ["attnlrp", "cp"])
def test_fast_composite_equals_lxt_efficient_mode_on_a_vit(attention, one_thread):
    """Our fast composite gives the pixel relevance of LXT's efficient mode (Gradient × Input with LXT's rules;
    float64; relevance y at the logit in both: seed 1 for LXT, whose Gradient × Input starts from y · 1; LXT's
    identity rule stabilises with +1e-10, ours with ±ε, ε tiny)."""
    torch.manual_seed(3)
    model = lively(tiny_vit()).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    e = Explainer(model, composite="fast", attention=attention, eps=1e-12).explain(x, seed=lambda logits: logits)
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        y = _lxt_efficient_vit(model, xg, attention).reshape(-1)
        (g,) = torch.autograd.grad(y, xg, torch.ones_like(y))  # Gradient × Input: relevance y at the logit
    assert torch.allclose(y, e.logits)
    ref = xg.detach() * g
    assert _close(e.input_relevance, ref, 1e-7), (e.input_relevance - ref).abs().max() / ref.abs().max()


def test_explainers_with_different_composites_do_not_affect_each_other(one_thread):
    """A fast and a relevance-form explainer built and used in turn in one process give what each gives alone, and
    the fast one's gradient mode is the model's plain input gradient."""
    torch.manual_seed(4)
    model, x = lively(tiny_vit()), torch.randn(2, 3, 32, 32)
    alone_slow = Explainer(model, composite="attnlrp").explain(x).input_relevance
    alone_fast = Explainer(model, composite="fast").explain(x).input_relevance
    fast, slow = Explainer(model, composite="fast"), Explainer(model, composite="attnlrp")
    for _ in range(2):
        assert torch.equal(fast.explain(x).input_relevance, alone_fast)
        assert torch.equal(slow.explain(x).input_relevance, alone_slow)
    assert not torch.equal(alone_fast, alone_slow)  # ε inside the network differs (1e-6): not the same numbers
    taps, no_input = {}, {}
    fast.explain(x, tap=lambda layer, rel, _a: taps.__setitem__(layer.name, rel))
    e = fast.explain(x, tap=lambda layer, rel, _a: no_input.__setitem__(layer.name, rel), input_relevance=False)
    assert e.input_relevance is None and no_input.keys() == taps.keys()  # the patch embedding's units included
    assert all(torch.equal(no_input[k], taps[k]) for k in taps)
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        (plain,) = torch.autograd.grad(model(xg).sum(), xg)
    assert torch.allclose(fast.gradient(x).input_relevance, plain, rtol=1e-4, atol=1e-6)
    layer = "encoder.layers.encoder_layer_0.mlp.0"  # relevance placed at neurons (LRP-max): R seeds, not gradients
    seed = torch.zeros_like(taps[layer])
    seed[0, 3, 5], seed[1, 1, 7] = 1.0, -2.0
    neurons = [ex.explain_neurons(x, {layer: seed}) for ex in (slow, fast)]
    assert _close(neurons[1], neurons[0], 1e-3) and neurons[0].abs().sum() > 0  # ε = 1e-6 in both: 1e-3


def test_rules_without_a_gradient_form_run_converted_inside_a_fast_model(one_thread):
    """zβ at the pixels and z⁺ in one hidden convolution of a fast model run in relevance form between conversions
    (R = y · g at the output, g = R / x at the input): the relevance of the relevance-form composite with the same
    rules, where no input is within ε of zero."""
    from tffkit.lrp import ZPlus, named

    torch.manual_seed(5)
    model, x = pseudo_trained("tiny_resnet"), torch.randn(2, 3, 64, 64)
    shape, hidden = (3, 64, 64), {"layer1.0.conv2": ZPlus()}
    slow = Explainer(model, composite=named("paper").with_(layers=hidden), conv_rule="epsilon", input_rule="zbox",
                     eps=1e-9, input_shape=shape)
    fast = Explainer(model, composite=named("fast").with_(layers=hidden), input_rule="zbox", eps=1e-9,
                     input_shape=shape)
    labels = {r.module: r.rule for r in fast.rules()}
    assert labels["conv1"] == "zbox (pixel bounds)" and labels["layer1.0.conv2"] == "zplus"
    ta, tb = {}, {}
    ra = slow.explain(x, tap=lambda layer, rel, _a: ta.__setitem__(layer.name, rel)).input_relevance
    rb = fast.explain(x, tap=lambda layer, rel, _a: tb.__setitem__(layer.name, rel)).input_relevance
    assert _close(rb, ra, 5e-5) and all(_close(tb[n], r, 5e-5) for n, r in ta.items())


FAITHFULNESS_MARKERS = ("<!-- faithfulness-composites -->", "<!-- /faithfulness-composites -->")


def faithfulness_table(runs: list[dict]) -> str:
    """docs/lrp.md's table of AOPC per composite, from docs/faithfulness_composites.json (collected from the
    faithfulness_summary.csv of each run)."""
    def iv(v):
        return f"{v[0]:.1f} [{v[1]:.1f}, {v[2]:.1f}]"
    lines = ["| detector | composite | attention | FF-RS AOPC, AP (pp) | FF-RS AOPC, fake acc. (pp) | "
             "\\|gradient × activation\\| AOPC, AP | random AOPC, AP (mean of 10) |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['arch']} | `{r['composite']}` | {r['attention']} | {iv(r['ffrs_ap'])} | "
                     f"{iv(r['ffrs_fake_acc'])} | {iv(r['taylor_ap'])} | {iv(r['random_ap'])} |")
    return "\n".join(lines) + "\n"


def test_docs_show_the_committed_faithfulness_by_composite():
    import json

    root = Path(__file__).resolve().parents[1]
    runs = json.loads((root / "docs" / "faithfulness_composites.json").read_text())
    text = (root / "docs" / "lrp.md").read_text()
    start, end = FAITHFULNESS_MARKERS
    assert text[text.index(start) + len(start): text.index(end)].strip("\n") + "\n" == faithfulness_table(runs)


def test_faithfulness_ranks_by_the_composite_asked_for():
    """``tff faithfulness --composite`` reaches the explainer as the other commands' LRP options do: the attention
    rule only where it changes the composite's."""
    from tffkit.jobs.faithfulness import FaithfulnessOptions

    assert FaithfulnessOptions().lrp() == {"composite": "paper", "attention": "attnlrp"}
    assert FaithfulnessOptions(composite="cp-lrp").lrp() == {"composite": "cp-lrp", "attention": None}
    assert FaithfulnessOptions(composite="fast", attention="cp").lrp() == {"composite": "fast", "attention": "cp"}
