"""A study's replicates (docs/algorithms.md §10): training seeds of the colour-robust detector
(``steps.color_robust.replicates``) with the colour claims judged per seed and over seeds, and ranking replicates
(``steps.rank.replicates``) carried to dropout and colour — each number checked against the step files it comes
from, and both shown in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tffkit.jobs.study import ConfigError, load_config, run_study
from tffkit.results import file_sha256


def _config(tmp: Path, weights: Path, data: Path, **color_robust) -> dict:
    train = {"data": str(data), "val": str(data), "max_epochs": 1, "batch_size": 16, "crop_size": 24,
             "load_size": 32}
    return {"name": "seeds", "out": str(tmp / "study"), "preset": "full", "device": "cpu", "workers": 0,
            "batch_size": 32, "detector": {"arch": "tiny_resnet", "weights": str(weights)},
            "data": {"source": str(data), "source_sets": ["progan"], "test": str(data), "train_set": ["progan"],
                     "group_pattern": r"^(\d\d)\d\.png$"},
            "uncertainty": {"resamples": 50},
            "steps": {"rank": {"min_prob": 0.5, "k": 6, "replicates": 3},
                      "dropout": {"k_sweep": [4], "random_repeats": 2}, "lrpmax": {"enabled": False},
                      "color": {"k": 6, "min_prob": 0.0},
                      "color_robust": {"enabled": True, "train": train, "replicates": 2, **color_robust}}}


def test_replicates_need_training_and_the_universal_colour_step(tmp_path: Path, trained_tiny):
    weights, data = trained_tiny
    cfg = _config(tmp_path, weights, data)
    cfg["steps"]["color_robust"] = {"enabled": True, "weights": str(weights), "replicates": 2}
    with pytest.raises(ConfigError, match="steps.color_robust.replicates: training seeds need 'train'"):
        load_config(cfg)
    cfg = _config(tmp_path, weights, data, replicates=0)
    with pytest.raises(ConfigError, match="steps.color_robust.replicates: must be at least 1"):
        load_config(cfg)
    cfg = _config(tmp_path, weights, data)
    cfg["steps"]["color"] = {"enabled": False}
    with pytest.raises(ConfigError, match="enable steps.color"):
        load_config(cfg)


@pytest.mark.tier2  # trains two detectors
def test_a_study_with_training_seeds_and_ranking_replicates(tmp_path: Path, trained_tiny):
    weights, data = trained_tiny
    report = run_study(_config(tmp_path, weights, data), progress=False)
    out = report.parent
    cr = out / "color_robust"
    first, second = cr / "train" / "model_best.pth", cr / "seed1" / "train" / "model_best.pth"
    assert file_sha256(first) != file_sha256(second)  # two seeds, two detectors
    rep = json.loads((cr / "replicates.json").read_text())
    assert rep["replicates"] == ["seed 0", "seed 1"] and len(rep["claims"]) == 3
    for claim in rep["claims"]:
        assert set(claim["per_replicate"]) == {"seed 0", "seed 1"}
        if claim["holds"] == "yes":
            assert set(claim["per_replicate"].values()) == {"yes"}
    rows = pd.DataFrame(rep["rows"], columns=rep["columns"]).set_index(["set", "statistic"])
    for seed, run in (("seed 0", cr), ("seed 1", cr / "seed1")):  # each seed's numbers are its own step files'
        ci = pd.read_csv(run / "color" / "median_probability_ci.csv").set_index("set")
        ap = pd.read_csv(run / "evaluate" / "metrics_ci.csv").query("metric == 'ap'").set_index("set")
        for name in ci.index:
            cell = rows.loc[(name, "colour-robust Δ median p(fake), pp"), seed]
            assert cell.startswith(f"{ci.loc[name, 'estimate']:+.1f} ")
            assert rows.loc[(name, "colour-robust AP, %"), seed].startswith(f"{100 * ap.loc[name, 'estimate']:.1f} ")
    page = report.read_text()
    assert "Replicates: the headline claims" in page and "training seeds" in page
    assert "Replicates of the ranking" in page and "dropping the top-4" in page
    drop = json.loads((out / "dropout" / "dropout.json").read_text())["ranking_replicates"]
    assert len(drop[0]["per_replicate"]) == 3
    assert len(json.loads((out / "color" / "color.json").read_text())["ranking_replicates"][0]["per_replicate"]) == 3
