"""Intervals of ``tff evaluate`` (SPEC §10): AP and accuracies per set and their mean with cluster-bootstrap intervals
over groups, equal to a naive recomputation with sklearn and recomputable from scores.csv alone."""

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score

from tffkit.analysis.intervals import metric_intervals
from tffkit.analysis.uncertainty import ClusterResampler
from tffkit.cli import main
from tffkit.detectors import build_detector, save_checkpoint
from tffkit.metrics import metrics_table


def _scores(seed: int = 0, n_groups: int = 6, per_group: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s, shift in (("a", 1.0), ("b", 0.3)):
        for label in (0, 1):
            for g in range(n_groups):
                centre = rng.normal(shift * (2 * label - 1), 1.0)  # a group shares its level: correlated images
                rows += [{"path": f"{s}/{label}/{g}/{i}.png", "set": s, "class": "", "label": label,
                          "group": f"{s}-{label}-{g}", "prob": 1 / (1 + np.exp(-rng.normal(centre, 0.3)))}
                         for i in range(per_group)]
    return pd.DataFrame(rows)


def test_metric_intervals_match_sklearn_and_a_naive_bootstrap():
    scores = _scores()
    found = metric_intervals(scores, resamples=60, seed=3).set_index(["set", "metric"])
    table = metrics_table(scores, calibrate=False).set_index("set")
    for s in ("a", "b", "mean"):
        for m in ("ap", "acc", "real_acc", "fake_acc"):
            assert np.isclose(found.loc[(s, m), "estimate"], table.loc[s, m], rtol=1e-12), (s, m)
    # the same resamples, recomputed naively with sklearn
    sampler = ClusterResampler(scores["group"], strata=scores["set"] + "/" + scores["label"].astype(str),
                               resamples=60, seed=3)
    aps = {"a": [], "b": []}
    for idx in sampler.draws():
        part = scores.iloc[idx]
        for s in aps:
            sub = part[part["set"] == s]
            aps[s].append(average_precision_score(sub["label"], sub["prob"]))
    for s in aps:
        assert np.isclose(found.loc[(s, "ap"), "low"], np.percentile(aps[s], 2.5))
        assert np.isclose(found.loc[(s, "ap"), "high"], np.percentile(aps[s], 97.5))
    mean = (np.array(aps["a"]) + np.array(aps["b"])) / 2
    assert np.isclose(found.loc[("mean", "ap"), "high"], np.percentile(mean, 97.5))
    assert found.loc[("a", "ap"), "groups"] == 12 and found.loc[("mean", "ap"), "groups"] == 24


def test_intervals_over_groups_are_wider_than_over_images():
    """Five images per group share their level: resampling images (each its own group) understates the spread."""
    scores = _scores(seed=1, n_groups=8, per_group=10)
    by_group = metric_intervals(scores, resamples=300).set_index(["set", "metric"])
    by_image = metric_intervals(scores.assign(group=scores["path"]), resamples=300).set_index(["set", "metric"])
    width = lambda t: (t["high"] - t["low"]).loc[("mean", "ap")]  # noqa: E731
    assert width(by_group) > 1.5 * width(by_image)


def test_evaluate_writes_groups_and_recomputable_intervals(tmp_path: Path, tree: Path, capsys):
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "tiny.pth", build_detector("tiny_resnet"))
    out = tmp_path / "out"
    rc = main(["evaluate", "--arch", "tiny_resnet", "--weights", str(weights), "--data", str(tree), "--preset",
               "full", "--device", "cpu", "--workers", "0", "--no-progress", "--resamples", "40",
               "--bootstrap-seed", "7", "--out", str(out)])
    assert rc == 0 and "95% intervals over groups" in capsys.readouterr().out
    scores = pd.read_csv(out / "scores.csv", keep_default_na=False)
    assert "group" in scores and scores["group"].str.len().gt(0).all()
    written = pd.read_csv(out / "metrics_ci.csv")
    assert written["resamples"].eq(40).all() and written["seed"].eq(7).all()
    pd.testing.assert_frame_equal(written, metric_intervals(scores, resamples=40, seed=7), check_dtype=False)
    assert main(["evaluate", "--arch", "tiny_resnet", "--data", str(tree), "--resamples", "0", "--out",
                 str(tmp_path / "o")]) == 2
    assert "--resamples" in capsys.readouterr().err
