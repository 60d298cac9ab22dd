"""Cross-fitted folds pooled and replicates summarised (tffkit.analysis.replicates): the pooled statistics equal the
single-study ones on one fold, paired differences of identical detectors are exactly 0, folds may not share a
group, and a claim over replicates is "yes" only when every replicate shows it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tffkit.analysis.intervals import effect_share_intervals, median_change_intervals
from tffkit.analysis.replicates import over_replicates, pooled_color, verdict


def _fold(rng: np.random.Generator, photos: list[str], shift: float, k: int = 6, per: int = 10) -> dict:
    groups = np.repeat(photos, per)
    sets = np.tile(["a", "b"], len(groups) // 2)
    colour = rng.uniform(0.5, 1, len(groups))
    gray = np.clip(colour - shift + rng.normal(0, 0.1, len(groups)), 0, 1)
    acts = rng.normal(0, 1, (len(groups), k))
    return {"probabilities": pd.DataFrame({"set": sets, "group": groups, "colour": colour, "grayscale": gray}),
            "colour": acts, "grayscale": acts - shift * rng.uniform(0, 2, k), "sets": sets, "groups": groups}


def test_one_fold_matches_the_single_study_intervals():
    rng = np.random.default_rng(0)
    a, b = _fold(rng, list("pqrs"), 0.3), _fold(rng, list("pqrs"), 0.0)
    table = pooled_color({"u": [a], "c": [b]}, resamples=200, seed=1).set_index(["set", "detector", "statistic"])
    single = median_change_intervals(a["probabilities"], resamples=200, seed=1)[0].set_index("set")
    shares = effect_share_intervals(a["colour"], a["grayscale"], a["sets"], a["groups"], resamples=200,
                                    seed=1).set_index("set")
    for s in ("a", "b"):
        assert table.loc[(s, "u", "change"), "estimate"] == pytest.approx(single.loc[s, "estimate"])
        assert table.loc[(s, "u", "share"), "estimate"] == pytest.approx(shares.loc[s, "estimate"])
        assert table.loc[(s, "u", "change"), "groups"] == 4


def test_identical_detectors_differ_by_exactly_zero_and_folds_pool():
    rng = np.random.default_rng(1)
    folds = [_fold(rng, list("pqrs"), 0.4), _fold(rng, list("tuvw"), 0.4)]
    table = pooled_color({"u": folds, "c": folds}, resamples=200)
    diff = table[table["statistic"].str.endswith("difference")]
    assert (diff[["estimate", "low", "high"]].to_numpy() == 0).all()
    change = table[(table["statistic"] == "change") & (table["detector"] == "u")]
    assert (change["groups"] == 8).all() and (change["high"] < 0).all()  # both folds' photographs, a clear fall
    pooled = pd.concat([f["probabilities"] for f in folds])
    expected = median_change_intervals(pooled, resamples=10)[0].set_index("set")["estimate"]
    assert change.set_index("set")["estimate"].to_dict() == pytest.approx(expected.to_dict())


def test_a_paired_difference_is_found_where_the_detectors_differ():
    rng = np.random.default_rng(2)
    strong = [{**f, "grayscale": f["colour"] - 1.5} for f in (_fold(rng, list("pqrs"), 0.4),
                                                                _fold(rng, list("tuvw"), 0.4))]
    weak = [{**f, "probabilities": f["probabilities"].assign(grayscale=f["probabilities"]["colour"] - 0.05),
             "grayscale": f["colour"] - 0.01} for f in strong]
    table = pooled_color({"u": strong, "c": weak}, resamples=300).set_index(["set", "statistic"])
    for s in ("a", "b"):
        assert table.loc[(s, "change_difference"), "low"] > 0  # the second falls less
        assert table.loc[(s, "share_difference"), "low"] > 0  # the first has more conditional units


def test_folds_must_not_share_a_group():
    rng = np.random.default_rng(3)
    folds = [_fold(rng, list("pq"), 0.2), _fold(rng, list("qr"), 0.2)]
    with pytest.raises(ValueError, match="group 'q' is in fold 0 and in fold 1"):
        pooled_color({"u": folds, "c": folds}, resamples=10)


def test_verdicts_and_ranges_over_replicates():
    assert verdict(["yes", "yes", "yes"]) == "yes"
    assert verdict(["no", "no"]) == "no"
    assert verdict(["yes", "not shown", "yes"]) == "yes in 2, not shown in 1 of 3 replicates"
    assert verdict(["yes", "no", "not shown"]) == "yes in 1, no in 1, not shown in 1 of 3 replicates"
    assert over_replicates([3.0, None, 1.0, 2.0, float("nan")]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert over_replicates([])["n"] == 0
