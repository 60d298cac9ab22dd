"""Colour ablation: Mood's test and its aggregation against hand computations, Benjamini–Hochberg, the median
probability drop, the Table I.1 layout, exact merging of activations, and ``tff color`` end to end."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy.stats import false_discovery_control

from conftest import make_tree
from lrp_helpers import pseudo_trained
from tffkit import distributed as tdist
from tffkit.analysis import color as col
from tffkit.analysis.activations import MaxActivationTap
from tffkit.cli import main
from tffkit.data import find_samples, load_rgb, normalize
from tffkit.detectors import save_checkpoint
from tffkit.lrp import Explainer
from tffkit.metrics import metrics_table

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mood_test_matches_a_hand_computation():
    colour, gray = np.arange(10, 20.0), np.arange(10.0)
    stat, p, med = col.mood_test(colour, gray)
    # 2×2 table [[10, 0], [0, 10]] (above / not above the grand median 9.5), Yates-corrected chi² with 1 dof
    n = 20
    chi2 = n * (abs(10 * 10 - 0 * 0) - n / 2) ** 2 / (10 * 10 * 10 * 10)
    assert med == 9.5 and math.isclose(stat, chi2) and math.isclose(p, math.erfc(math.sqrt(chi2 / 2)))
    stat, p, _ = col.mood_test(np.arange(10.0), np.arange(10.0))
    assert stat == 0 and p == 1
    stat, p, med = col.mood_test(np.zeros(5), np.zeros(5))  # a dead T-FF: the test is undefined
    assert math.isnan(p) and med == 0


def test_percent_colour_conditional_on_constructed_samples():
    rng = np.random.default_rng(0)
    n, k = 30, 4
    gray = rng.normal(0, 1, (2 * n, k))
    colour = gray.copy()
    colour[:n, 0] += 10  # set A: T-FF 1 strongly colour-conditional
    colour[n:, :2] += 10  # set B: T-FF 1 and 2
    colour[:, 3] = gray[:, 3] = 0  # T-FF 4 never fires
    sets = ["A"] * n + ["B"] * n
    keys = [f"l.#{j}(T=4)" for j in range(k)]
    tests = col.mood_tests(colour, gray, sets, keys)
    assert len(tests) == 2 * k and tests["n"].eq(n).all()
    a = tests[tests["set"] == "A"].set_index("tff")
    assert a.loc[1, "p"] < 1e-10 and a.loc[2, "p"] == 1 and math.isnan(a.loc[4, "p"])
    assert a["colour_conditional"].tolist() == [True, False, False, False]
    summary = col.color_conditional_summary(tests, k).set_index("set")
    assert summary.loc["A", "count"] == 1 and summary.loc["A", "percent"] == 25.0
    assert summary.loc["B", "count"] == 2 and summary.loc["B", "percent"] == 50.0
    assert summary.loc["B", "bh_count"] == 2 and summary["k"].eq(k).all()


def test_benjamini_hochberg_by_hand_and_against_scipy():
    assert col.benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.2])).tolist() == [True, False, False, False]
    assert col.benjamini_hochberg(np.array([0.01, 0.02, 0.03, 0.04])).all()
    assert col.benjamini_hochberg(np.array([np.nan, 0.01])).tolist() == [False, True]
    p = np.random.default_rng(1).uniform(0, 0.1, 50) ** 2
    assert np.array_equal(col.benjamini_hochberg(p, 0.05), false_discovery_control(p) <= 0.05)


def test_median_probability_change_by_hand():
    def table(probs):
        return pd.DataFrame({"path": list("abcdef"), "set": ["g"] * 4 + ["h"] * 2, "label": [1, 1, 1, 1, 0, 1],
                             "prob": probs})

    colour = table([0.9, 0.8, 0.1, 0.6, 0.9, 0.5])
    gray = table([0.1, 0.2, 0.05, 0.3, 0.9, 0.5])
    probs, changes = col.median_probability_change(colour, gray, 0.2)
    assert probs["path"].tolist() == ["a", "b", "d", "f"]  # c below 0.2, e is real
    g = changes.set_index("set").loc["g"]
    assert (g["n"], g["median_colour"], g["median_grayscale"]) == (3, 0.8, 0.2)
    assert math.isclose(g["median_change_pct"], -75.0)  # negative: grayscale lowers p
    assert changes.set_index("set").loc["h", "median_change_pct"] == 0


def test_table_layout_of_colour_vs_grayscale():
    scores = pd.DataFrame({"set": ["A"] * 4 + ["B"] * 4, "class": [""] * 8, "label": [0, 0, 1, 1] * 2,
                           "prob": [0.1, 0.6, 0.7, 0.9, 0.2, 0.3, 0.4, 0.8]})
    gray = scores.assign(prob=[0.1, 0.2, 0.3, 0.4] * 2)
    tidy, wide = col.color_metrics_table({v: metrics_table(t, calibrate=False) for v, t in
                                          (("colour", scores), ("grayscale", gray))})
    assert list(wide.columns) == ["version", "A AP", "A real", "A fake", "B AP", "B real", "B fake"]
    assert wide["version"].tolist() == ["colour", "grayscale"]
    row = wide.set_index("version").loc["colour"]
    assert (row["A real"], row["A fake"], row["B real"], row["B fake"]) == (50.0, 100.0, 100.0, 50.0)
    assert len(tidy) == 2 * 2 * 3


def test_max_activations_merge_across_ranks(tmp_path, monkeypatch):
    tree = make_tree(tmp_path / "d", {"progan": ["car"], "stylegan": []}, n=3, size=24)
    samples = [s for s in find_samples(tree) if s.label == 1]
    ex = Explainer(pseudo_trained("tiny_resnet"))
    tffs = [("conv1", 1), ("layer2.0.conv2", 4), ("layer4.0.conv1", 7)]
    args = dict(preset="full", batch_size=2, num_workers=0, progress=False)
    idx, one = col.max_activations(ex, tffs, samples, tdist.DistContext(0, 1, torch.device("cpu")), **args)
    assert idx.tolist() == list(range(len(samples)))
    parts = []
    monkeypatch.setattr(col.tdist, "gather_objects", lambda obj: parts.append(obj) or [obj])
    for rank in range(2):
        col.max_activations(ex, tffs, samples, tdist.DistContext(rank, 2, torch.device("cpu")), **args)
    monkeypatch.setattr(col.tdist, "gather_objects", lambda obj: parts)
    idx2, two = col.max_activations(ex, tffs, samples, tdist.DistContext(0, 2, torch.device("cpu")), **args)
    assert np.array_equal(idx2, idx) and np.allclose(two, one, rtol=1e-5, atol=1e-6)  # batches differ
    x = normalize(torch.from_numpy(np.array(load_rgb(samples[4].path))).permute(2, 0, 1)[None])
    assert np.allclose(one[4], MaxActivationTap(ex, tffs).run(x)[0][0].numpy(), rtol=1e-5)


def _ranking(path: Path, tffs) -> Path:
    pd.DataFrame({"rank": range(1, len(tffs) + 1), "layer": [t[0] for t in tffs], "channel": [t[1] for t in tffs],
                  "omega": np.linspace(0.5, 0.1, len(tffs))}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("arch,preset,tffs", [
    ("tiny_resnet", "center224", [("conv1", 2), ("layer1.0.conv2", 3), ("layer3.0.downsample.0", 9)]),
    ("efficientnet_b0", "full", [("features.0.0", 4), ("features.2.0.block.1.0", 11)]),
])
def test_color_cli_writes_every_output(tmp_path, arch, preset, tffs):
    tree = make_tree(tmp_path / "d", {"progan": ["car", "cat"], "stylegan": []}, n=3, size=32)
    model = pseudo_trained(arch)
    out = tmp_path / "out"
    rc = main(["color", "--arch", arch, "--weights", str(save_checkpoint(tmp_path / "w.pth", model)),
               "--data", str(tree), "--ranking", str(_ranking(tmp_path / "r.csv", tffs)), "--k", str(len(tffs)),
               "--max-per-class", "2", "--min-prob", "0", "--preset", preset, "--device", "cpu", "--workers", "0",
               "--no-progress", "--batch-size", "4", "--out", str(out)])
    assert rc == 0
    files = ["color_metrics.csv", "table_color_gray.csv", "median_probability.csv", "median_probability.png",
             "probabilities.csv", "mood_tests.csv", "colour_conditional.csv", "table_colour_conditional.csv",
             "activations_colour.csv", "activations_grayscale.csv", "distributions_progan.png",
             "distributions_stylegan.png", "color.json", "run.json"]
    for name in files:
        assert (out / name).stat().st_size > 0, name
    wide = pd.read_csv(out / "table_color_gray.csv")
    assert wide["version"].tolist() == ["colour", "grayscale"] and "stylegan AP" in wide.columns
    tests = pd.read_csv(out / "mood_tests.csv")
    assert len(tests) == 2 * len(tffs) and tests["n"].tolist() == [4] * len(tffs) + [2] * len(tffs)
    acts = {v: pd.read_csv(out / f"activations_{v}.csv") for v in ("colour", "grayscale")}
    assert len(acts["colour"]) == 6 and not np.allclose(acts["colour"].iloc[:, 4:], acts["grayscale"].iloc[:, 4:])
    # the grayscale version is PIL's luma, replicated, before normalisation
    ex = Explainer(model)
    gray = Image.open(acts["grayscale"]["path"][0]).convert("L").convert("RGB")
    if preset == "center224":  # 32-px images: shorter side resized up to 224 (bilinear), then the centre crop
        gray = gray.resize((224, 224), Image.BILINEAR)
    crop = torch.from_numpy(np.array(gray)).permute(2, 0, 1)[None]
    expected = MaxActivationTap(ex, tffs).run(normalize(crop))[0][0].numpy()
    assert np.allclose(acts["grayscale"].iloc[0, 4:].to_numpy(float), expected, rtol=1e-4, atol=1e-5)
    summary = json.loads((out / "color.json").read_text())
    assert {r["set"] for r in summary["colour_conditional"]} == {"progan", "stylegan"}


def test_paired_test_finds_a_shift_that_moods_test_misses():
    """The same fakes with and without colour: a shift of 0.8 sd on every image is lost in Mood's unpaired test (it
    compares two spread samples) and found by the paired Wilcoxon test and the paired effect size (≈ 0.8/1.35)."""
    from tffkit.analysis.intervals import paired_tests

    rng = np.random.default_rng(0)
    n, k = 20, 100
    colour = rng.normal(0, 1, (n, k))
    keys = [str(j) for j in range(k)]
    shifted = col.mood_tests(colour, colour + 0.8 + rng.normal(0, 0.1, (n, k)), ["s"] * n, keys)
    paired = paired_tests(colour, colour + 0.8 + rng.normal(0, 0.1, (n, k)), ["s"] * n, keys)
    assert shifted["colour_conditional"].sum() <= 50
    assert paired["wilcoxon_conditional"].all() and paired["effect_conditional"].sum() >= 75
    null = paired_tests(colour, colour + rng.normal(0, 0.1, (n, k)), ["s"] * n, keys)  # no shift
    assert null["wilcoxon_conditional"].sum() <= 12 and not null["effect_conditional"].any()


def test_detector_wide_bh_pools_mood_and_wilcoxon_tests():
    from tffkit.analysis.intervals import detector_bh

    rng = np.random.default_rng(1)
    tests = pd.DataFrame({"p": rng.uniform(0, 0.2, 30), "wilcoxon_p": rng.uniform(0, 0.05, 30)})
    tests.loc[3, "p"] = np.nan  # an undefined Mood test is never rejected and not counted
    found = detector_bh(tests)
    pooled = np.r_[tests["p"].dropna(), tests["wilcoxon_p"]]
    q = false_discovery_control(pooled)
    assert int(found["bh_mood"].sum() + found["bh_wilcoxon"].sum()) == int((q <= 0.05).sum())
    assert not found.loc[3, "bh_mood"]
    assert (found["bh_wilcoxon"] <= (tests["wilcoxon_p"] <= 0.05)).all()  # BH never rejects more than raw


def test_effect_sizes_and_their_share_interval():
    from tffkit.analysis.intervals import effect_share_intervals
    from tffkit.analysis.uncertainty import ClusterResampler, paired_effect
    from tffkit.analysis.uncertainty import paired_effects as effect_sizes

    rng = np.random.default_rng(2)
    colour = rng.normal(0, 1, (40, 6))
    colour[:, 5] = 1.0  # constant: IQR 0
    gray = colour + np.array([0.0, 0.2, 0.9, -1.5, 0.1, 0.3])
    expected = [paired_effect(colour[:, j], gray[:, j]) for j in range(6)]
    assert np.allclose(effect_sizes(colour, gray), expected) and effect_sizes(colour, gray)[5] == np.inf
    sets = np.array(["a"] * 20 + ["b"] * 20)
    groups = [f"g{i // 4}" for i in range(40)]
    shares = effect_share_intervals(colour, gray, sets, groups, resamples=50, seed=4).set_index("set")
    for s in ("a", "b"):
        m = sets == s
        assert shares.loc[s, "estimate"] == 100 * np.mean(np.abs(effect_sizes(colour[m], gray[m])) >= 0.5)
        assert shares.loc[s, "groups"] == 5
    draws = []  # the same resamples by hand
    for idx in ClusterResampler(groups, strata=[0 if s == "a" else 1 for s in sets], resamples=50, seed=4).draws():
        sel = idx[sets[idx] == "a"]
        draws.append(100 * np.mean([abs(paired_effect(colour[sel, j], gray[sel, j])) >= 0.5 for j in range(6)]))
    assert np.isclose(shares.loc["a", "low"], np.percentile(draws, 2.5))


def test_median_change_interval_and_the_dominant_group_warning():
    """Two photographs: colour removal drops p by ≈ 95 pp on one and not at all on the other (the issue's demo)."""
    from tffkit.analysis.intervals import median_change_intervals

    rng = np.random.default_rng(3)
    colour = rng.uniform(0.9, 1.0, 100)
    gray = np.r_[colour[:50] - 0.95 + rng.uniform(0, 0.02, 50), colour[50:] + rng.normal(0, 0.01, 50)]
    probs = pd.DataFrame({"path": [f"{i}.png" for i in range(100)], "set": "s", "colour": colour,
                          "grayscale": gray.clip(0, 1), "group": ["photo1"] * 50 + ["photo2"] * 50})
    ci, groups = median_change_intervals(probs, resamples=200)
    row = ci.iloc[0]
    assert row["groups"] == 2 and row["dominant_group"] == "photo1" and row["dominant_share"] > 0.9
    assert np.isclose(row["estimate"], 100 * (np.median(probs["grayscale"]) - np.median(colour)))
    assert row["low"] < -90 and row["high"] > -5  # two groups: the interval spans both photographs' effects
    assert groups["group"].tolist() == ["photo1", "photo2"] and groups["median_change_pp"].iloc[0] < -90
    many = median_change_intervals(probs.assign(group=probs["path"]), resamples=50)[0].iloc[0]
    assert many["dominant_group"] == ""  # 100 groups: no per-group breakdown


def test_color_intervals_recompute_from_the_written_files(tmp_path):
    """probabilities.csv and activations_*.csv carry each fake's group: the written intervals are recomputed from
    them alone; mood_tests.csv has the paired columns and the detector-wide BH."""
    from tffkit.analysis.intervals import effect_share_intervals, median_change_intervals

    tffs = [("conv1", 2), ("layer1.0.conv2", 3), ("layer3.0.downsample.0", 9)]
    tree = make_tree(tmp_path / "d", {"progan": ["car", "cat"], "stylegan": []}, n=3, size=32)
    model = pseudo_trained("tiny_resnet")
    out = tmp_path / "out"
    assert main(["color", "--arch", "tiny_resnet", "--weights", str(save_checkpoint(tmp_path / "w.pth", model)),
                 "--data", str(tree), "--ranking", str(_ranking(tmp_path / "r.csv", tffs)), "--k", "3",
                 "--min-prob", "0", "--preset", "center224", "--device", "cpu", "--workers", "0", "--no-progress",
                 "--resamples", "30", "--bootstrap-seed", "5", "--out", str(out)]) == 0
    probs = pd.read_csv(out / "probabilities.csv", keep_default_na=False)
    # the class folder where there is one, else the image itself
    assert set(probs["group"]) == {"car", "cat"} | set(probs[probs["set"] == "stylegan"]["path"])
    ci, groups = median_change_intervals(probs, resamples=30, seed=5)
    cols = ["set", "estimate", "low", "high", "groups", "resamples", "seed"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "median_probability_ci.csv")[cols], ci[cols], check_dtype=False)
    assert len(pd.read_csv(out / "median_probability_groups.csv")) == len(groups)
    acts = {v: pd.read_csv(out / f"activations_{v}.csv", keep_default_na=False) for v in ("colour", "grayscale")}
    keys = [c for c in acts["colour"].columns if c not in ("path", "set", "class", "group")]
    shares = effect_share_intervals(acts["colour"][keys].to_numpy(float), acts["grayscale"][keys].to_numpy(float),
                                    acts["colour"]["set"], acts["colour"]["group"], resamples=30, seed=5)
    paired = pd.read_csv(out / "colour_conditional_paired.csv").set_index("set")
    for r in shares.itertuples():
        assert np.isclose(paired.loc[r.set, "effect_percent"], r.estimate)
        assert np.isclose(paired.loc[r.set, "effect_low"], r.low)
        assert np.isclose(paired.loc[r.set, "effect_high"], r.high)
    tests = pd.read_csv(out / "mood_tests.csv")
    assert {"wilcoxon_p", "effect", "effect_conditional", "bh_mood", "bh_wilcoxon"} <= set(tests.columns)
    assert (paired["wilcoxon_bh_count"] <= paired["wilcoxon_count"]).all()


def test_color_options_one_default_for_the_cli_and_the_study():
    from tffkit.jobs.color import ColorOptions
    from tffkit.jobs.options import default_of, from_config
    from tffkit.jobs.study_config import SCHEMA

    assert SCHEMA["steps.color"]["max_per_class"][1] == default_of(ColorOptions, "test_fakes") == 500
    o = from_config(ColorOptions, {"max_per_class": 8, "k": 3}, max_per_class=2)  # the step's key: the test fakes
    assert (o.test_fakes, o.max_per_class, o.k) == (8, 2, 3) and o.test_limit() == 2
    assert ColorOptions(test_fakes=None).test_limit() is None and ColorOptions().test_limit() == 500
