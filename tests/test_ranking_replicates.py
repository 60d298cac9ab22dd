"""Replicates of a ranking carried to the headline numbers (docs/algorithms.md §10): ``tff rank --replicates N``
writes every replicate's ranking (ffrs_replicates.csv); ``tff dropout`` and ``tff color`` score each replicate's
top-k in their one pass and report the headline number over replicates. Checked against runs given one replicate's
ranking as an ordinary ranking file, and in the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tffkit.cli import main


@pytest.fixture(scope="module")
def ranked(tmp_path_factory, trained_tiny) -> tuple[Path, list[str]]:
    weights, data = trained_tiny
    out = tmp_path_factory.mktemp("ranking_replicates")
    common = ["--arch", "tiny_resnet", "--weights", str(weights), "--data", str(data), "--preset", "full",
              "--device", "cpu", "--workers", "0", "--no-progress", "--batch-size", "32"]
    assert main(["rank", *common, "--sets", "progan", "--min-prob", "0.5", "--k", "8", "--replicates", "4",
                 "--group-pattern", r"^(\d\d)\d\.png$", "--out", str(out / "rank")]) == 0
    return out, common


def _replicate_ranking(folder: Path, r: int, path: Path) -> Path:
    """Replicate ``r``'s ranking as an ordinary ffrs.csv (its order; ω only orders it)."""
    ranks = pd.read_csv(folder / "ffrs_replicates.csv").sort_values(f"r{r}")
    pd.DataFrame({"rank": ranks[f"r{r}"], "layer": ranks["layer"], "channel": ranks["channel"],
                  "omega": 1.0 / ranks[f"r{r}"]}).to_csv(path, index=False)
    return path


def test_each_replicate_ranking_is_written_and_agrees_with_the_stability(ranked):
    out, _ = ranked
    ranks = pd.read_csv(out / "rank" / "ffrs_replicates.csv")
    table = pd.read_csv(out / "rank" / "ffrs.csv")
    assert list(ranks["key"]) == list(table["key"])  # rows in the ranking's order
    for r in range(1, 5):  # each replicate ranks every unit once
        assert sorted(ranks[f"r{r}"]) == list(range(1, len(ranks) + 1))
    share = (ranks[[f"r{r}" for r in range(1, 5)]] <= 8).mean(axis=1)
    np.testing.assert_allclose(share, table["top_k_replicates"])


def test_dropout_scores_each_replicate_top_k_as_its_own_ranking_would(ranked, tmp_path):
    out, common = ranked
    args = ["dropout", *common, "--k", "4", "--random-repeats", "2", "--resamples", "40"]
    assert main([*args, "--ranking", str(out / "rank" / "ffrs.csv"), "--out", str(tmp_path / "all")]) == 0
    info = json.loads((tmp_path / "all" / "dropout.json").read_text())["ranking_replicates"]
    effects = pd.read_csv(tmp_path / "all" / "dropout_effects.csv")
    assert len(info) == 1 and info[0]["k"] == 4 and len(info[0]["per_replicate"]) == 4
    reps = effects[(effects["kind"] == "replicate") & (effects["set"] == "mean") & (effects["metric"] == "ap")]
    assert info[0]["replicates"]["median"] == pytest.approx(float(np.median(reps["delta"])))
    # dropout.csv and its tables are those of the ranking alone
    assert "replicate" not in set(pd.read_csv(tmp_path / "all" / "dropout.csv")["kind"])
    one = _replicate_ranking(out / "rank", 3, tmp_path / "r3.csv")
    assert main([*args, "--ranking", str(one), "--out", str(tmp_path / "r3")]) == 0
    alone = pd.read_csv(tmp_path / "r3" / "dropout_effects.csv")
    alone = alone[alone["kind"] == "top"].set_index(["set", "metric"])
    mine = effects[(effects["kind"] == "replicate") & (effects["replica"] == 3)].set_index(["set", "metric"])
    pd.testing.assert_series_equal(mine["delta"], alone.loc[mine.index, "delta"])
    side = {"yes": lambda r: r["high"] < 0, "no": lambda r: r["low"] > 0}
    row = mine.loc[("mean", "ap")]
    expected = next((w for w, test in side.items() if test(row)), "not shown")
    assert info[0]["per_replicate"][2] == expected


def test_color_share_of_each_replicate_top_k(ranked, tmp_path):
    out, common = ranked
    args = ["color", *common, "--sets", "gan_b", "--k", "6", "--min-prob", "0", "--resamples", "20"]
    assert main([*args, "--ranking", str(out / "rank" / "ffrs.csv"), "--out", str(tmp_path / "all")]) == 0
    info = json.loads((tmp_path / "all" / "color.json").read_text())["ranking_replicates"]
    one = _replicate_ranking(out / "rank", 2, tmp_path / "r2.csv")
    assert main([*args, "--ranking", str(one), "--out", str(tmp_path / "r2")]) == 0
    alone = pd.read_csv(tmp_path / "r2" / "colour_conditional_paired.csv").set_index("set")["effect_percent"]
    paired = pd.read_csv(tmp_path / "all" / "colour_conditional_paired.csv").set_index("set")
    assert {c["set"] for c in info} == set(alone.index)
    for c in info:
        assert c["per_replicate"][1] == pytest.approx(alone[c["set"]])
        assert c["all_sources"]["estimate"] == pytest.approx(paired.loc[c["set"], "effect_percent"])
        assert c["replicates"]["min"] <= c["replicates"]["median"] <= c["replicates"]["max"]
    # the top-k outputs are those of the ranking alone: k columns of activations
    acts = pd.read_csv(tmp_path / "all" / "activations_colour.csv")
    assert acts.shape[1] == 4 + 6
