"""Unit kinds ranked separately (docs/algorithms.md §3): a top-k of a transformer is not decided by layer width."""

import numpy as np
import pytest
import torch

from tffkit.analysis.ffrs import FFRSAccumulator, accumulate_batch, ranking_table
from tffkit.lrp import FeatureLayer


def test_kinds_merge_by_their_within_kind_quantile():
    layers = [FeatureLayer("h", 2, 0, kind="head"), FeatureLayer("n", 8, 1, dim=2, kind="neuron")]
    omega = np.array([0.5, 0.4, *np.linspace(0.1, 0.03, 8)])
    merged = ranking_table(layers, omega, unit_ranking="by-kind")
    # quantiles (p + ½)/n: neurons 1/16, 3/16, 5/16, …; heads 1/4, 3/4
    assert list(zip(merged["layer"], merged["channel"], strict=True)) == [
        ("n", 0), ("n", 1), ("h", 0), ("n", 2), ("n", 3), ("n", 4), ("n", 5), ("h", 1), ("n", 6), ("n", 7)]
    assert list(merged["rank"]) == list(range(1, 11))
    flat = ranking_table(layers, omega, unit_ranking="global")
    assert list(flat["layer"][:2]) == ["h", "h"]
    for kind in ("head", "neuron"):  # within a kind the order is the descending-ω order
        assert list(merged[merged["unit"] == kind]["omega"]) == sorted(omega[:2] if kind == "head" else omega[2:],
                                                                      reverse=True)
    with pytest.raises(ValueError, match="unit_ranking"):
        ranking_table(layers, omega, unit_ranking="width")


def test_one_kind_keeps_the_omega_order():
    layers = [FeatureLayer("a", 30, 0), FeatureLayer("b", 20, 1)]
    omega = np.random.default_rng(0).random(50)
    omega[[3, 40]] = omega[7]  # ties broken by layer order then channel, as before
    a, b = ranking_table(layers, omega, unit_ranking="by-kind"), ranking_table(layers, omega)
    assert a.equals(b)


def test_tiny_vit_top_k_is_no_longer_all_heads(one_thread):
    from test_lrp_architectures import lively
    from tffkit.detectors import tiny_vit
    from tffkit.lrp import Explainer

    torch.manual_seed(0)
    ex = Explainer(lively(tiny_vit()))
    acc = FFRSAccumulator(ex.layers, torch.device("cpu"))
    accumulate_batch(ex, acc, torch.randn(8, 3, 32, 32), torch.ones(8, dtype=torch.long), 0.0, False)
    omega = acc.omega().numpy()[0]
    n_heads = sum(layer.channels for layer in ex.layers if layer.kind == "head")
    flat = ranking_table(ex.layers, omega, unit_ranking="global")
    assert set(flat.head(n_heads)["unit"]) == {"head"}  # one ω order: the 2-head layers win on width alone
    merged = ranking_table(ex.layers, omega, unit_ranking="by-kind")
    top = merged.head(2 * n_heads)["unit"]
    assert (top != "head").sum() >= n_heads and {"neuron", "residual"} <= set(top)


def test_tff_rank_ranks_kinds_separately_by_default(tmp_path, one_thread):
    import json

    from conftest import make_tree
    from tffkit.cli import main

    data = make_tree(tmp_path / "d", {"progan": []}, n=3, size=32)
    args = ["rank", "--arch", "tiny_vit", "--random-weights", "--data", str(data), "--preset", "full", "--min-prob",
            "0", "--k", "4", "--device", "cpu", "--workers", "0", "--no-progress"]
    torch.manual_seed(0)  # the random weights
    assert main([*args, "--out", str(tmp_path / "kinds")]) == 0
    torch.manual_seed(0)
    assert main([*args, "--unit-ranking", "global", "--out", str(tmp_path / "flat")]) == 0
    kinds = json.loads((tmp_path / "kinds" / "ffrs.json").read_text())
    flat = json.loads((tmp_path / "flat" / "ffrs.json").read_text())
    assert kinds["unit_ranking"] == "by-kind" and flat["unit_ranking"] == "global"
    assert flat["top_k_unit_kinds"] == {"head": 4}  # width decides one ω order
    assert "head" not in kinds["top_k_unit_kinds"] and sum(kinds["top_k_unit_kinds"].values()) == 4
