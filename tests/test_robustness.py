"""Robustness to perturbations (docs/algorithms.md §10): paired changes of AP and real/fake accuracy with intervals over
groups, and the real/fake asymmetry verdict — on simulated scores with known answers, then on a tiny detector."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from tffkit.analysis.intervals import metric_intervals
from tffkit.analysis.robustness import (
    asymmetry,
    paired_changes,
    paired_table,
    perturbations_of,
)


def _clean(seed: int = 0, groups: int = 8, per_group: int = 3) -> pd.DataFrame:
    """Two sets; per set and label ``groups`` groups of ``per_group`` images; p spread around 0.5."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in ("gan_a", "gan_b"):
        for label in (0, 1):
            for g in range(groups):
                for i in range(per_group):
                    p = rng.uniform(0.2, 0.75) if label == 0 else rng.uniform(0.3, 0.95)
                    rows.append({"path": f"{s}/{label}/{g}_{i}.png", "set": s, "label": label,
                                 "group": f"{s}{label}g{g}", "prob": p})
    return pd.DataFrame(rows)


def _changes(clean: pd.DataFrame, perturbed: dict[str, np.ndarray], resamples: int = 200) -> pd.DataFrame:
    tables = {name: clean.assign(prob=p) for name, p in perturbed.items()}
    return paired_changes(paired_table(clean, tables), list(perturbed), resamples=resamples, seed=3)


def test_identical_scores_change_nothing_exactly():
    clean = _clean()
    changes = _changes(clean, {"same": clean["prob"].to_numpy()})
    assert len(changes) == 3 * 3  # (2 sets + mean) × (AP, real, fake)
    assert (changes[["change", "low", "high"]].to_numpy() == 0).all()
    (verdict,) = asymmetry(changes)
    assert not verdict["shown"] and "Not shown" in verdict["verdict"] and "a change not shown" in verdict["verdict"]


def test_the_interval_is_paired():
    """A perturbation that moves every score but keeps its order and its side of 0.5 changes no metric in any
    resample: the paired interval is exactly 0 although the clean accuracies themselves vary over resamples."""
    clean = _clean()
    changes = _changes(clean, {"squeezed": 0.5 + 0.5 * (clean["prob"].to_numpy() - 0.5)})
    assert (changes[["change", "low", "high"]].to_numpy() == 0).all()
    unpaired = metric_intervals(clean, resamples=200, seed=3).query("metric == 'fake_acc'")
    assert (unpaired["high"] - unpaired["low"]).min() > 0.05


def test_lowered_scores_show_the_asymmetry_and_the_numbers_are_the_naive_ones():
    clean = _clean()
    p = clean["prob"].to_numpy()
    changes = _changes(clean, {"lower": np.clip(p - 0.3, 0, 1), "fakes_only": np.where(clean["label"] == 1, p / 3, p)})
    low = changes[changes["perturbation"] == "lower"].set_index(["set", "metric"])
    lowered = np.clip(p - 0.3, 0, 1)
    for s in ("gan_a", "gan_b"):
        m = (clean["set"] == s).to_numpy()
        y = clean["label"].to_numpy()[m]
        for metric, fn in (("ap", lambda q, y=y: average_precision_score(y, q)),
                           ("real_acc", lambda q, y=y: np.mean(q[y == 0] <= 0.5)),
                           ("fake_acc", lambda q, y=y: np.mean(q[y == 1] > 0.5))):
            row = low.loc[(s, metric)]
            assert row["clean"] == pytest.approx(fn(p[m])) and row["perturbed"] == pytest.approx(fn(lowered[m]))
            assert row["change"] == pytest.approx(fn(lowered[m]) - fn(p[m]))
            assert row["low"] <= row["change"] <= row["high"]
    assert low.loc[("mean", "fake_acc"), "change"] == pytest.approx(
        low.loc[[("gan_a", "fake_acc"), ("gan_b", "fake_acc")], "change"].mean())
    assert low.loc[("gan_a", "images")].iloc[0] == 48 and low.loc[("mean", "groups")].iloc[0] == 32
    verdicts = {v["perturbation"]: v for v in asymmetry(changes)}
    assert verdicts["lower"]["shown"] and "Fakes' accuracy falls while reals' rises" in verdicts["lower"]["verdict"]
    assert verdicts["lower"]["delta_fake_acc"]["high"] < 0 < verdicts["lower"]["delta_real_acc"]["low"]
    only = verdicts["fakes_only"]  # fakes fall, reals untouched: no asymmetry claimed
    assert not only["shown"] and only["delta_real_acc"] == {"change": 0.0, "low": 0.0, "high": 0.0}
    assert "lowers fakes' accuracy by" in only["verdict"] and "reals' accuracy by +0.0 pp" in only["verdict"]


def test_images_are_matched_by_path_and_missing_ones_left_out():
    clean = _clean(groups=2, per_group=2)
    shuffled = clean.sample(frac=1, random_state=0).iloc[1:]  # one image failed under the perturbation
    paired = paired_table(clean, {"x": shuffled.assign(prob=shuffled["prob"] + 1)})
    assert len(paired) == len(clean) - 1
    assert np.allclose(paired["x"] - paired["none"], 1)


def test_perturbation_names():
    found = perturbations_of(jpeg=[75, 50], resize=[0.5], blur=[1.0], grayscale=True)
    assert list(found) == ["jpeg75", "jpeg50", "resize0.5", "blur1", "gray"]
    assert found["blur1"].blur == 1.0 and found["gray"].grayscale


def test_run_robustness_scores_as_evaluate_does(tmp_path: Path, trained_tiny, one_thread):
    """The step's perturbed metrics are evaluate's with the same perturbation; the clean scores can come from
    evaluate's scores.csv (no clean pass)."""
    from tffkit.jobs.evaluate import EvaluateOptions, evaluate
    from tffkit.jobs.robustness import RobustnessOptions, robustness

    weights, data = trained_tiny
    common = dict(arch="tiny_resnet", weights=str(weights), preset="full", device="cpu", workers=0, progress=False,
                  max_per_class=4)
    clean = evaluate(data, options=EvaluateOptions(**common, resamples=10), out=tmp_path / "clean")
    gray = evaluate(data, options=EvaluateOptions(**common, resamples=10, grayscale=True), out=tmp_path / "gray")
    res = robustness(data, options=RobustnessOptions(**common, jpeg=(30,), resize=(), blur=(), grayscale=True,
                                                     resamples=20), out=tmp_path / "rob", clean_scores=clean.scores)
    table = pd.read_csv(tmp_path / "rob" / "robustness.csv").set_index(["perturbation", "set", "metric"])
    for version, ev in (("clean", clean), ("perturbed", gray)):
        m = ev.metrics[ev.metrics["class"] == "all"].set_index("set")
        for s in ("progan", "gan_b", "gan_c"):
            for metric in ("ap", "real_acc", "fake_acc"):
                assert table.loc[("gray", s, metric), version] == pytest.approx(m.loc[s, metric]), (version, s)
    scores = pd.read_csv(tmp_path / "rob" / "scores.csv")
    assert sorted(scores["perturbation"].unique()) == ["gray", "jpeg30", "none"] and len(scores) == 3 * 24
    assert [v["perturbation"] for v in res["asymmetry"]] == ["jpeg30", "gray"]
    js = json.loads((tmp_path / "rob" / "robustness.json").read_text())
    assert js["asymmetry"] == asymmetry(table.reset_index())  # the verdicts follow from the written table
    assert sorted((v["set"], v["perturbation"]) for v in js["asymmetry_per_set"]) == sorted(
        (s, n) for s in ("progan", "gan_b", "gan_c") for n in ("jpeg30", "gray"))


def test_study_config_of_the_step(tmp_path: Path, trained_tiny):
    from tffkit.jobs.study import ConfigError, load_config

    weights, data = trained_tiny
    cfg = {"out": str(tmp_path / "s"), "detector": {"arch": "tiny_resnet", "weights": str(weights)},
           "data": {"source": str(data), "test": str(data)}}
    loaded = load_config(cfg)["steps"]["robustness"]
    assert not loaded["enabled"] and (loaded["jpeg"], loaded["resize"], loaded["blur"]) == ([75, 50], [0.5], [1.0])
    assert loaded["grayscale"]
    cfg["steps"] = {"robustness": {"enabled": True, "jpeg": [101], "resize": [0], "blur": []}}
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert "steps.robustness.jpeg: 101 is not allowed" in str(err.value)
    assert "steps.robustness.resize: 0 is not allowed" in str(err.value)
    cfg["steps"] = {"robustness": {"enabled": True, "jpeg": [], "resize": [], "blur": [], "grayscale": False}}
    with pytest.raises(ConfigError, match="steps.robustness: no perturbation"):
        load_config(cfg)
