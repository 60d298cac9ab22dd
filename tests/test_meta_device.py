"""Device hygiene without a GPU: every explainer, rule, tap and analysis model builds and runs on the
``meta`` device (shapes flow, no data), and the LRP/analysis code never creates a tensor without
naming its device — the class of bug that made every explainer crash off the CPU."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from lrp_helpers import pseudo_trained
from tffkit.analysis.activations import MaxActivationTap
from tffkit.analysis.dropout import DropPlan
from tffkit.analysis.ffrs import FFRSAccumulator, accumulate_batch
from tffkit.analysis.lrpmax import LRPMax
from tffkit.lrp import Explainer

SRC = Path(__file__).resolve().parents[1] / "src" / "tffkit"
FACTORIES = {"zeros", "ones", "full", "empty", "tensor", "arange", "eye", "rand", "randn", "randint", "randperm",
             "linspace", "logspace", "as_tensor", "zeros_like_", "empty_strided"}
META = torch.device("meta")


def _factory_calls_without_device(path: Path, root: Path = SRC) -> list[str]:
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FACTORIES
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                and not any(k.arg == "device" for k in node.keywords)):
            bad.append(f"{path.relative_to(root)}:{node.lineno} torch.{node.func.attr}(…)")
    return bad


def test_lrp_and_analysis_code_names_the_device_of_every_new_tensor():
    files = sorted((SRC / "lrp").glob("*.py")) + sorted((SRC / "analysis").glob("*.py"))
    bad = [b for f in files for b in _factory_calls_without_device(f)]
    assert not bad, "tensors created without an explicit device:\n" + "\n".join(bad)


def test_the_static_check_catches_a_missing_device(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import torch\na = torch.zeros(3)\nb = torch.zeros(3, device='cpu')\n")
    assert _factory_calls_without_device(f, tmp_path) == ["x.py:2 torch.zeros(…)"]


@pytest.mark.parametrize("arch", ["tiny_resnet", "tiny_resnet_bottleneck", "efficientnet_b0",
                                  "efficientnet_b0_lukemelas"])
def test_explainer_rules_and_taps_run_on_the_meta_device(arch):
    model = pseudo_trained(arch).to(META)
    ex = Explainer(model)
    assert ex.device.type == "meta"
    x = torch.randn(2, 3, 32, 32, device=META)
    seen = {}
    e = ex.explain(x, seed=torch.tensor([1.0, -1.0], device=META),
                   tap=lambda layer, rel, act: seen.__setitem__(layer.name, (rel.device, act.device)),
                   with_activation=True)
    assert e.input_relevance.device.type == "meta" and e.input_relevance.shape == x.shape
    assert len(seen) == len(ex.layers) and all(r.type == a.type == "meta" for r, a in seen.values())

    acc = FFRSAccumulator(ex.layers, META)
    probs = accumulate_batch(ex, acc, x, torch.tensor([1, 0], device=META), 0.9, with_reals=False)
    assert probs.device.type == acc.omega().device.type == "meta"

    layer = ex.layers[len(ex.layers) // 2]
    for site in ("folded", "pre-bn"):
        with DropPlan(ex, [(layer.name, 0), (layer.name, 1)], site).applied():
            assert ex.forward(x).device.type == "meta"

    tffs = [(layer.name, 0), (ex.layers[0].name, 1)]
    values, h, w = MaxActivationTap(ex, tffs).run(x)
    assert values.shape == (2, 2) and values.device.type == "meta"
    lrp = LRPMax(ex, chunk=2)
    rows, chans = torch.tensor([0, 1], device="cpu"), torch.tensor([0, 1], device="cpu")
    hw = torch.zeros(2, dtype=torch.long, device="cpu")
    maps = lrp.maps(x, rows, [t[0] for t in tffs], chans, hw, hw, torch.ones(2, device="cpu"))
    assert maps.shape == (2, 32, 32) and maps.device.type == "meta"
