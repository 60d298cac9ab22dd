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


def test_share_intervals_resample_photographs_and_match_the_summary() -> None:
    """The planted check's shares with intervals over the images' source photographs: the estimates are the
    summary's shares; a unit whose colour response comes from one photograph of ten has a wide interval, a unit
    that responds on every photograph a narrow one."""
    from tffkit.analysis.planted import share_intervals

    truth = _truth()
    rng = np.random.default_rng(1)
    n = len(truth)
    fake = truth["label"].to_numpy() == 1
    photo = np.arange(n) % 10  # ten photographs, each in every (set, label)
    gray = rng.normal(0, 1, (n, 4))
    color = gray + rng.normal(0, 0.1, (n, 4))
    color[:, 0] += 2.0 * fake  # responds on every photograph
    color[:, 1] += 8.0 * (fake & (photo == 0))  # one photograph carries it all
    per_set = planted_responses(color, gray, truth, list("abcd"))
    table = summarise(per_set)
    got = share_intervals(color, gray, truth, [f"p{i}" for i in photo], resamples=300, seed=0)
    assert got["colour"]["estimate"] == pytest.approx((table["colour_effect"].abs() >= 0.5).mean())
    for family in ("tconv", "nearest"):
        assert got["upsampling"][family]["estimate"] == pytest.approx((table[f"upsampling_{family}"].abs() >= 0.5)
                                                                      .mean())
    assert got["groups"] == 10 * 4 and got["resamples"] == 300  # ten photographs in each of the four strata
    assert got["colour"]["low"] <= got["colour"]["estimate"] <= got["colour"]["high"]
    one = share_intervals(color[:, 1:2], gray[:, 1:2], truth, [f"p{i}" for i in photo], resamples=300, seed=0)
    every = share_intervals(color[:, :1], gray[:, :1], truth, [f"p{i}" for i in photo], resamples=300, seed=0)
    assert one["colour"]["high"] - one["colour"]["low"] == 1.0  # 0 or 1: whether the photograph was drawn
    assert every["colour"]["low"] == every["colour"]["high"] == 1.0


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
    iv = {"estimate": 1.0, "low": 0.4, "high": 1.0, "groups": 12}
    js = json.loads((folder / "planted.json").read_text())
    (folder / "planted.json").write_text(json.dumps({**js, "share_intervals": {
        "colour": iv, "upsampling": {"tconv": {**iv, "estimate": 0.0, "low": 0.0, "high": 0.5}, "nearest": iv},
        "groups": 12, "resamples": 1000}}))
    sentence = section_planted(tmp_path, ["tconv"])["sentence"]
    assert "1 (100% [40, 100]) respond to the planted colour artefact" in sentence
    assert "tconv† 0 (0% [0, 50])" in sentence and "intervals over the 12 groups" in sentence


def test_the_planted_job_checks_the_listed_images_and_the_study_reads_its_options(tmp_path: Path, one_thread) -> None:
    """jobs.planted on a tiny benchmark (two sets, a ranking from tff rank): the files, the images it could match
    to the ground truth, k from tff rank's default when not given; the study's steps.planted keys are PlantedOptions'
    (max_per_class may be null)."""
    from conftest import make_tree
    from lrp_helpers import pseudo_trained
    from tffkit.detectors import save_checkpoint
    from tffkit.jobs.options import default_of
    from tffkit.jobs.planted import PlantedOptions, planted
    from tffkit.jobs.rank import RankOptions, rank
    from tffkit.jobs.study_config import SCHEMA

    bench = tmp_path / "bench"
    test = make_tree(bench / "test", {"tconv": [], "nearest": []}, n=4, seed=3)
    rows = [{"path": p.relative_to(bench).as_posix(), "family": p.parts[-3] if "1_fake" in p.parts else "",
             "format": "png"} for p in sorted(test.rglob("*.png")) if p.stem != "003"]  # one image per folder unlisted
    pd.DataFrame(rows).to_csv(bench / "ground_truth.csv", index=False)
    (bench / "benchmark.json").write_text(json.dumps({"version": 1, "artefacts": {"colour": 1.0}}))
    weights = save_checkpoint(tmp_path / "det.pth", pseudo_trained("tiny_resnet"))
    detector = dict(arch="tiny_resnet", weights=str(weights), device="cpu", workers=0, progress=False)
    rank(test, options=RankOptions(**detector, min_prob=0.0, k=4), out=tmp_path / "rank")
    res = planted(test, ranking=tmp_path / "rank" / "ffrs.csv", options=PlantedOptions(**detector, preset="full"),
                  out=tmp_path / "planted")
    assert {"planted.csv", "planted_sets.csv", "planted.json", "run.json"} <= {p.name for p in
                                                                              (tmp_path / "planted").iterdir()}
    n_units = len(pd.read_csv(tmp_path / "rank" / "ffrs.csv"))
    assert res["n_images"] == 12 and res["k"] == min(default_of(RankOptions, "k"), n_units)
    assert set(res["per_set"]["set"]) == {"tconv", "nearest"} and not res["format_confound"]
    assert json.loads((tmp_path / "planted" / "planted.json").read_text())["n_images"] == 12
    schema = SCHEMA["steps.planted"]
    assert schema["max_per_class"] == ((int, type(None)), default_of(PlantedOptions, "max_per_class"))
    assert schema["k"][1] is None and schema["min_effect"] == (float, 0.5) and "sets" not in schema


@pytest.mark.slow
def test_a_fresh_demo_reproduces_the_committed_summary(tmp_path: Path) -> None:
    """The demo as shipped (about 15 minutes on the 2-core machine): its summary — every claim's verdict per seed and
    every per-seed statistic — is the committed docs/demo_summary.json the README's figures come from (on a machine
    of the kind that made it, with the same threads: docs/reproducibility.md says what else changes them), its
    rankings rest on ≥ 30 confident fakes from more than one photograph, and the planted check and the replicate
    section are in the report."""
    import json

    from tffkit.demo.study import run_demo

    report = run_demo(tmp_path / "demo", device="cpu", progress=False)
    fresh = json.loads((tmp_path / "demo" / "summary.json").read_text())
    committed = json.loads((Path(__file__).resolve().parents[1] / "docs" / "demo_summary.json").read_text())
    assert [c["per_seed"] for c in fresh["claims"]] == [c["per_seed"] for c in committed["claims"]]
    for seed, rep in committed["replicates"].items():
        for name, stats in rep["sets"].items():
            for key, value in stats.items():
                assert fresh["replicates"][seed]["sets"][name][key]["estimate"] == pytest.approx(
                    value["estimate"], abs=0.05), (seed, name, key)
    for rep in fresh["replicates"].values():
        for rankings in rep["rankings"].values():
            assert all(r["fakes_used"] >= 30 and r["groups"] > 1 for r in rankings), rankings
    assert (report.parent / "planted" / "universal" / "planted.csv").is_file()
    page = report.read_text()
    assert "Planted artefacts" in page and "Replicates: the headline claims" in page
