"""Planted-artefact check (tffkit.analysis.planted) and its report section; the demo's direction (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tffkit.analysis.planted import find_ground_truth, planted_responses, summarise
from tffkit.report.section_planted import section_planted


def _truth() -> pd.DataFrame:
    rows = [{"set": s, "label": lab, "family": s if lab else ""} for s in ("tconv", "nearest") for lab in (0, 1)
            for _ in range(200)]
    return pd.DataFrame(rows)


def test_responses_recover_what_each_unit_was_built_to_see() -> None:
    truth = _truth()
    rng = np.random.default_rng(0)
    n = len(truth)
    fake = truth["label"].to_numpy() == 1
    tconv = fake & (truth["set"].to_numpy() == "tconv")
    gray = rng.normal(0, 1, (n, 3))
    gray[:, 1] += 2.0 * tconv  # unit 2 fires on tconv fakes whatever the colour
    colour = gray + rng.normal(0, 0.1, (n, 3))
    colour[:, 0] += 2.0 * fake  # unit 1 fires on fakes in colour only: the colour artefact
    per_set = planted_responses(colour, gray, truth, ["a", "b", "c"])
    assert len(per_set) == 3 * 2 and (per_set["n_fake"] == 200).all()
    mood = pd.DataFrame({"tff": [1, 1, 2, 2, 3, 3], "colour_conditional": [True, True, False, False, False, True]})
    table = summarise(per_set, mood).set_index("tff")
    assert table.loc[1, "responds_to"] == "colour" and table.loc[1, "colour_effect"] > 1.5
    assert table.loc[2, "responds_to"] == "upsampling (tconv)" and table.loc[2, "upsampling_tconv"] > 1.5
    assert abs(table.loc[2, "upsampling_nearest"]) < 0.5 and abs(table.loc[2, "colour_effect"]) < 0.5
    assert table.loc[3, "responds_to"] == "none of the planted artefacts"
    assert table["mood_colour_conditional_sets"].tolist() == [2, 0, 1]
    lower = summarise(per_set.assign(colour_effect=-per_set["colour_effect"])).set_index("tff")
    assert lower.loc[1, "responds_to"] == "colour, lower on fakes"


def test_ground_truth_is_found_next_to_the_test_data(tmp_path: Path) -> None:
    (tmp_path / "bench" / "test" / "tconv").mkdir(parents=True)
    assert find_ground_truth(tmp_path / "bench" / "test") is None
    (tmp_path / "bench" / "benchmark.json").write_text("{}")
    (tmp_path / "bench" / "ground_truth.csv").write_text("path\n")
    assert find_ground_truth(tmp_path / "bench" / "test") == (tmp_path / "bench").absolute()
    assert find_ground_truth(tmp_path / "bench" / "test" / "tconv") == (tmp_path / "bench").absolute()
    assert find_ground_truth(tmp_path) is None


def test_report_section_says_the_effects_were_planted(tmp_path: Path) -> None:
    assert section_planted(tmp_path) is None
    folder = tmp_path / "planted" / "universal"
    folder.mkdir(parents=True)
    pd.DataFrame([{"tff": 1, "key": "conv1.#3(T=16)", "colour_effect": 0.9, "upsampling_tconv": 0.1,
                   "upsampling_nearest": 0.7, "responds_to": "colour + upsampling (nearest)"}]).to_csv(
        folder / "planted.csv", index=False)
    (folder / "planted.json").write_text(json.dumps(
        {"benchmark": "/b", "artefacts": {"colour": 1.0, "colour_design": {"chroma_gain": 2.0}}, "min_effect": 0.5,
         "activation_site": "folded", "share_upsampling": {"tconv": 0.0, "nearest": 1.0}}))
    section = section_planted(tmp_path, ["tconv"])
    assert "planted by design, not discovered" in section["sentence"]
    assert "1 respond to the planted colour artefact" in section["sentence"] and "nearest 1" in section["sentence"]
    assert "colour + upsampling (nearest)" in section["body"] and "tconv†" in section["body"]


@pytest.mark.slow
def test_demo_reproduces_the_papers_colour_direction(tmp_path: Path) -> None:
    """The demo as shipped (about 10 minutes): grayscale lowers the universal detector's median p on the unseen
    families more than the colour-robust detector's, the colour-robust detector keeps more AP on grayscale images of
    its training family, most of the universal detector's top T-FF are colour-conditional and markedly fewer of the
    colour-robust one's, and the planted check ran (the paper's direction, not its numbers). At scale 0.3 (6 epochs)
    the detectors are undertrained and the direction does not hold (measured: −12.8 pp universal, −26.7 pp CR)."""
    from tffkit.demo.study import run_demo

    report = run_demo(tmp_path / "demo", scale=1.0, seed=0, device="cpu", progress=False)
    study = report.parent

    def unseen_change(folder: Path) -> float:
        m = pd.read_csv(folder / "median_probability.csv")
        return float(m.loc[m["set"] != "tconv", "median_change_pp"].mean())

    def gray_ap(folder: Path, family: str = "tconv") -> float:
        m = pd.read_csv(folder / "color_metrics.csv")
        row = (m["set"] == family) & (m["metric"] == "ap") & (m["version"] == "grayscale")
        return float(m.loc[row, "value"].iloc[0])

    def colour_conditional(folder: Path) -> float:
        return float(pd.read_csv(folder / "colour_conditional.csv")["percent"].mean())

    universal, robust = unseen_change(study / "color"), unseen_change(study / "color_robust" / "color")
    assert universal < -10 and universal < robust, (universal, robust)
    assert gray_ap(study / "color_robust" / "color") > gray_ap(study / "color")
    # most of the universal detector's top T-FF are colour-conditional, fewer of the colour-robust one's (true of the
    # shipped seed; the README says which training seeds it does not hold for)
    shares = colour_conditional(study / "color"), colour_conditional(study / "color_robust" / "color")
    assert shares[0] > 50 and shares[0] - shares[1] >= 10, shares
    assert (study / "planted" / "universal" / "planted.csv").is_file()
    assert "Planted artefacts" in report.read_text()
