"""Uncertainty (SPEC §10) on simulated data with a known answer, and against scipy / sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score

from tffkit.analysis.uncertainty import (
    ClusterResampler,
    WeightedOrder,
    average_precision,
    benjamini_hochberg,
    bootstrap,
    dominant_group,
    group_breakdown,
    null_percentile,
    paired_effect,
    wilcoxon_p,
)


def _clustered(rng, n_groups, per_group, group_sd, noise_sd=1.0):
    """Values whose mean is 0, with a shared offset per group (within-group correlation when group_sd > 0)."""
    offsets = rng.normal(0, group_sd, n_groups)
    values = np.repeat(offsets, per_group) + rng.normal(0, noise_sd, n_groups * per_group)
    return values, np.repeat(np.arange(n_groups), per_group)


def _coverage(group_sd, cluster, datasets=300, resamples=300):
    rng = np.random.default_rng(1)
    covered = 0
    for i in range(datasets):
        values, groups = _clustered(rng, 30, 10, group_sd)
        units = groups if cluster else np.arange(len(values))
        ci = bootstrap(lambda idx, v=values: v[idx].mean(), groups=units, resamples=resamples, seed=i)
        covered += ci.low <= 0.0 <= ci.high
    return covered / datasets


def test_cluster_interval_reaches_nominal_coverage_on_correlated_groups():
    assert _coverage(group_sd=1.0, cluster=True) >= 0.90


def test_image_level_interval_undercovers_correlated_groups():
    # the reason for the cluster bootstrap: treating 10 images of one group as 10 observations is overconfident
    assert _coverage(group_sd=1.0, cluster=False) < 0.75


def test_cluster_intervals_widen_with_correlation_and_match_iid_without():
    rng = np.random.default_rng(2)
    widths = {}
    for sd in (0.0, 1.0):
        w_cluster, w_iid = [], []
        for i in range(40):
            values, groups = _clustered(rng, 30, 10, sd)
            stat = lambda idx, v=values: v[idx].mean()  # noqa: E731
            a = bootstrap(stat, groups=groups, resamples=400, seed=i)
            b = bootstrap(stat, groups=np.arange(len(values)), resamples=400, seed=i)
            w_cluster.append(a.high - a.low)
            w_iid.append(b.high - b.low)
        widths[sd] = (np.mean(w_cluster), np.mean(w_iid))
    assert widths[0.0][0] == pytest.approx(widths[0.0][1], rel=0.15)
    assert widths[1.0][0] > 2.0 * widths[1.0][1]


def test_resamples_keep_groups_whole_and_stay_in_their_stratum():
    groups = ["a", "a", "a", "b", "b", "c", "d", "d"]
    strata = ["x", "x", "x", "x", "x", "y", "y", "y"]
    sampler = ClusterResampler(groups, strata=strata, resamples=50, seed=3)
    assert sampler.n_groups == 4
    for idx in sampler.draws():
        picked = [groups[i] for i in idx]
        assert sum(strata[i] == "x" for i in idx) in (4, 5, 6)  # two of {a (3), b (2)} drawn with replacement
        for g, size in (("a", 3), ("b", 2), ("c", 1), ("d", 2)):
            assert picked.count(g) % size == 0
    first = [list(i) for i in ClusterResampler(groups, strata=strata, resamples=5, seed=3).draws()]
    assert first == [list(i) for i in ClusterResampler(groups, strata=strata, resamples=5, seed=3).draws()]


def test_vector_statistic_uses_the_same_resamples_for_every_component():
    rng = np.random.default_rng(4)
    values, groups = _clustered(rng, 12, 5, 1.0)
    sampler = ClusterResampler(groups, resamples=200, seed=0)
    a, b = sampler.intervals(lambda idx: np.array([values[idx].mean(), values[idx].mean() + 1]))
    assert (a.low + 1, a.high + 1) == pytest.approx((b.low, b.high))
    single = sampler.interval(lambda idx: values[idx].mean())
    assert (single.low, single.high) == pytest.approx((a.low, a.high))


def test_average_precision_matches_sklearn_with_ties():
    rng = np.random.default_rng(5)
    for _ in range(20):
        labels = rng.integers(0, 2, 60)
        scores = np.round(rng.random(60), 1)  # many ties
        assert average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores))
    assert np.isnan(average_precision(np.ones(5), np.arange(5)))


def test_average_precisions_of_many_columns_match_sklearn_with_ties():
    from tffkit.analysis.uncertainty import average_precisions

    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(2, 40))
        labels = rng.integers(0, 2, n)
        scores = np.round(rng.random((n, 5)), int(rng.integers(1, 3)))  # coarse: many ties
        scores[:, 0] = 0.5  # one column all tied
        if 0 < labels.sum() < n:
            want = [average_precision_score(labels, scores[:, v]) for v in range(5)]
            np.testing.assert_allclose(average_precisions(labels, scores), want, rtol=1e-12)
            assert average_precisions(labels, scores).tolist() == [average_precision(labels, scores[:, v])
                                                                    for v in range(5)]  # the same bits
    assert np.isnan(average_precisions(np.zeros(4), np.random.default_rng(0).random((4, 3)))).all()


def test_paired_test_finds_a_shift_that_moods_test_misses():
    rng = np.random.default_rng(6)
    before = rng.normal(0, 1, 80)
    after = before + 0.15 + rng.normal(0, 0.05, 80)  # every image moves a little; the two distributions overlap
    assert stats.median_test(before, after)[1] > 0.05
    assert wilcoxon_p(before, after) < 1e-6
    assert wilcoxon_p(before, before) == 1.0


def test_paired_effect_is_median_difference_over_iqr():
    before = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    after = before - 1.0
    assert paired_effect(before, after) == pytest.approx(-1.0 / 2.0)
    assert paired_effect(np.ones(4), np.ones(4)) == 0.0
    assert paired_effect(np.ones(4), np.zeros(4)) == -np.inf


def test_benjamini_hochberg_matches_scipy_and_a_hand_example():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5])
    rejected, q = benjamini_hochberg(p, alpha=0.05)
    assert q == pytest.approx(stats.false_discovery_control(p))
    assert rejected.tolist() == [True, True, True, True, False]
    rng = np.random.default_rng(7)
    many = rng.random(200) ** 3
    assert benjamini_hochberg(many)[1] == pytest.approx(stats.false_discovery_control(many))


def test_null_percentile_and_group_breakdown():
    null = np.arange(20, dtype=float)
    assert null_percentile(100.0, null) == 100.0
    assert null_percentile(-1.0, null) == 0.0
    assert null_percentile(9.0, null) == pytest.approx(47.5)
    rows = group_breakdown(np.array([-90.0, -95.0, 1.0, -1.0]), ["p1", "p1", "p2", "p2"])
    assert [r["group"] for r in rows] == ["p1", "p2"] and rows[0]["value"] == pytest.approx(-92.5)
    assert dominant_group(rows)["group"] == "p1"
    assert dominant_group([{"group": "a", "n": 2, "value": 1.0}, {"group": "b", "n": 2, "value": 1.0}]) is None


def test_quantiles_from_multiplicities_equal_numpy_on_the_resampled_values():
    """Medians and percentiles of every resample from each image's multiplicity, bit for bit as numpy computes them
    on the resampled values themselves (groups of unequal size, ties, odd and even counts)."""
    rng = np.random.default_rng(7)
    values = rng.normal(size=(23, 4))
    values[rng.random(values.shape) < 0.3] = 0.0  # ties
    groups = [f"g{i}" for i in rng.integers(0, 7, 23)]
    sampler = ClusterResampler(groups, resamples=40, seed=1)
    order = WeightedOrder(values, sampler.multiplicities())
    found = {"median": order.median(), **{q: order.percentile(q) for q in (2.5, 25, 75, 97.5)}}
    for b, idx in enumerate(sampler.draws()):
        for q, got in found.items():
            expected = np.median(values[idx], axis=0) if q == "median" else np.percentile(values[idx], q, axis=0)
            assert np.array_equal(got[b], expected), (b, q)
    assert np.isnan(WeightedOrder(values, np.zeros((1, 23), dtype=int)).median()).all()  # an empty resample
    blocks = list(sampler.multiplicity_blocks(rows=15))
    assert [len(b) for b in blocks] == [15, 15, 10]
    assert np.array_equal(np.concatenate(blocks), sampler.multiplicities())
