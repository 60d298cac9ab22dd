"""``tff rank`` → ``tff dropout`` → ``tff lrpmax`` → ``tff color`` unchanged on a ViT and a ConvNeXt detector:
units beyond conv channels (MLP neurons, residual-stream dimensions, attention heads) are ranked, dropped
and explained, with readable keys."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_tree
from tffkit.analysis.dropout import DropPlan
from tffkit.cli import main
from tffkit.detectors import build_detector, save_checkpoint
from tffkit.lrp import Explainer


@pytest.mark.parametrize("arch,kinds", [("tiny_vit", {"conv", "neuron", "residual", "head"}),
                                        ("tiny_convnext", {"conv", "neuron"})])
def test_rank_dropout_lrpmax_color_run_on_transformer_and_convnext_units(tmp_path, arch, kinds, one_thread):
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "w.pth", build_detector(arch))
    data = make_tree(tmp_path / "d", {"progan": [], "stylegan": []}, n=6, size=32)
    common = ["--arch", arch, "--weights", str(weights), "--data", str(data), "--preset", "full", "--device", "cpu",
              "--workers", "0", "--no-progress", "--batch-size", "4"]
    assert main(["rank", *common, "--min-prob", "0", "--k", "6", "--out", str(tmp_path / "rank")]) == 0
    ranking = pd.read_csv(tmp_path / "rank" / "ffrs.csv")
    assert set(ranking["unit"]) == kinds
    assert ranking["key"].str.match(r"^.+\.#\d+\(T=\d+\)$").all()
    assert ranking["omega"].between(0, 1).all()  # ranked by kind (the default): ω falls within each kind
    assert ranking.groupby("unit")["omega"].apply(lambda w: w.is_monotonic_decreasing).all()

    assert main(["dropout", *common, "--ranking", str(tmp_path / "rank" / "ffrs.csv"), "--k-sweep", "4",
                 "--random-repeats", "2", "--out", str(tmp_path / "dropout")]) == 0
    table = pd.read_csv(tmp_path / "dropout" / "dropout.csv")
    assert {"baseline", "top", "random", "low"} <= set(table["kind"])

    assert main(["lrpmax", *common, "--ranking", str(tmp_path / "rank" / "ffrs.csv"), "--k", "3", "--per-tff", "2",
                 "--show", "1", "--out", str(tmp_path / "lrpmax")]) == 0
    index = pd.read_csv(tmp_path / "lrpmax" / "lrpmax_index.csv")
    assert len(index) == 3 * 2 * 2 and np.isfinite(index["map_sum"]).all()
    assert list(index["key"].unique()) == list(ranking["key"].head(3))

    assert main(["color", *common, "--ranking", str(tmp_path / "rank" / "ffrs.csv"), "--k", "3",
                 "--out", str(tmp_path / "color")]) == 0
    assert len(pd.read_csv(tmp_path / "color" / "mood_tests.csv")) == 3 * 2
    assert json.loads((tmp_path / "rank" / "ffrs.json").read_text())["n_feature_maps"] == len(ranking)


def test_dropping_a_token_unit_zeroes_it_along_its_dimension():
    torch.manual_seed(1)
    ex = Explainer(build_detector("tiny_vit").eval())
    neuron = next(layer for layer in ex.layers if layer.kind == "neuron")
    head = next(layer for layer in ex.layers if layer.kind == "head")
    seen = {}
    x = torch.randn(2, 3, 32, 32)
    base = ex.forward(x)
    with DropPlan(ex, [(neuron.name, 5), (head.name, 1)]).applied():  # hooks added after the drop see its result
        hooks = [ex.module(layer.name).register_forward_hook(
            lambda _m, _i, out, n=layer.name: seen.__setitem__(n, out)) for layer in (neuron, head)]
        dropped = ex.forward(x)
    for h in hooks:
        h.remove()
    assert (seen[neuron.name][..., 5] == 0).all() and (seen[neuron.name][..., 4] != 0).any()
    assert (seen[head.name][:, 1] == 0).all() and (seen[head.name][:, 0] != 0).any()
    assert not torch.allclose(base, dropped)
