"""Faithfulness of unit rankings: deletion curves, AOPC, sanity checks, on a detector trained to spot a planted
colour artefact (fakes have compressed saturation)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import run_torchrun, train_tiny
from tffkit.analysis.faithfulness import aopc_table, deletion_variants, k_grid, top_overlap
from tffkit.analysis.unit_scores import randomised_copy
from tffkit.jobs.faithfulness import FaithfulnessOptions, faithfulness
from tffkit.results import read_json

SIZE = 32
SATURATION = 0.6


def colour_image(rng: np.random.Generator, fake: bool) -> np.ndarray:
    """A smooth saturated colour field with texture; a fake has its saturation compressed to 30% (the planted
    artefact: nothing else tells it from a real)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    img = np.empty((3, SIZE, SIZE))
    for c in range(3):
        img[c] = 128 + 90 * np.sin(2 * np.pi * (xx * rng.uniform(0.3, 1.5) + yy * rng.uniform(0.3, 1.5))
                                   + rng.uniform(0, 2 * np.pi))
    img += rng.normal(0, 6, size=img.shape)
    if fake:
        gray = img.mean(0, keepdims=True)
        img = gray + SATURATION * (img - gray)
    return np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def colour_tree(root: Path, sets: list[str], n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for s in sets:
        for label_dir, fake in (("0_real", False), ("1_fake", True)):
            d = root / s / label_dir
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(colour_image(rng, fake)).save(d / f"{i:03d}.png")
    return root


def train_colour_detector(path: Path, seed: int = 0) -> Path:
    """tiny_resnet trained for a few seconds on the colour artefact."""
    from tffkit.detectors import save_checkpoint

    rng = np.random.default_rng(100 + seed)
    labels = np.arange(192) % 2
    x = torch.stack([torch.from_numpy(colour_image(rng, bool(f))).permute(2, 0, 1) for f in labels])
    return save_checkpoint(path, train_tiny(x, torch.tensor(labels, dtype=torch.float32), seed))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    base = tmp_path_factory.mktemp("faithfulness")
    source = colour_tree(base / "source", ["progan"], 24, seed=1)
    test = colour_tree(base / "test", ["progan", "other"], 16, seed=2)
    return train_colour_detector(base / "colour.pth"), source, test, base


@pytest.fixture(scope="module")
def run(planted, one_thread):
    weights, source, test, base = planted
    before = {k: v.clone() for k, v in torch.load(weights, weights_only=True)["model"].items()}
    options = FaithfulnessOptions(arch="tiny_resnet", weights=str(weights), ks=(1, 4, 16, 64, 256), top_k=16,
                                  resamples=200, randomise=(0.5, 1.0), min_prob=0.6, preset="full", batch_size=16,
                                  workers=0, progress=False, device="cpu")
    res = faithfulness(source=source, test=test, options=options, out=base / "out")
    return res, base / "out", before


def _replica_aopc(curves: pd.DataFrame, ranking: str, replica: int = 0) -> float:
    part = curves[(curves["ranking"] == "baseline") | ((curves["ranking"] == ranking) & (curves["replica"] == replica))]
    s = aopc_table(part)
    return float(s[(s["ranking"] == ranking) & (s["set"] == "all") & (s["metric"] == "ap")]["aopc"].iloc[0])


def test_ffrs_deletion_hurts_more_than_every_random_ranking(run):
    res, _, _ = run
    ffrs = _replica_aopc(res.curves, "ffrs")
    randoms = [_replica_aopc(res.curves, "random", r) for r in range(20)]  # the default null: 20 rankings
    assert ffrs > max(randoms), (ffrs, randoms)
    summary = res.summary.set_index(["ranking", "set", "metric"])
    assert summary.loc[("random", "all", "ap"), "replicas"] == 20
    row = summary.loc[("ffrs", "all", "ap")]
    assert row["null_percentile"] == 100 and row["aopc"] == pytest.approx(ffrs)
    assert row["aopc_low"] <= row["aopc"] <= row["aopc_high"] and row["diff_vs_random_shown"]
    assert "ratio_to_random" not in res.summary.columns


def test_each_rankings_null_percentile_is_its_place_among_the_random_aopcs(run):
    from tffkit.analysis.uncertainty import null_percentile

    res, _, _ = run
    for s in ("progan", "other", "all"):
        for m in ("ap", "fake_acc"):
            part = res.curves if s == "all" else res.curves[res.curves["set"] == s]
            null = []
            for r in range(20):
                sub = part[(part["ranking"] == "baseline") | ((part["ranking"] == "random") & (part["replica"] == r))]
                t = aopc_table(sub, [m])
                null.append(float(t[(t["ranking"] == "random") & (t["set"] == s)]["aopc"].iloc[0]))
            table = aopc_table(part, [m])
            got = res.summary.set_index(["ranking", "set", "metric"])
            for name in ("ffrs", "lrp-epsilon", "activation", "taylor"):
                aopc = float(table[(table["ranking"] == name) & (table["set"] == s)]["aopc"].iloc[0])
                assert got.loc[(name, s, m), "aopc"] == pytest.approx(aopc, abs=1e-9)
                assert got.loc[(name, s, m), "null_percentile"] == pytest.approx(null_percentile(aopc, null))
            assert got.loc[("random", s, m), "null_max"] == pytest.approx(max(null), abs=1e-9)


def test_intervals_recompute_from_the_written_per_image_file(run):
    from tffkit.analysis.deletion_stats import deletion_statistics

    res, out, _ = run
    images = pd.read_csv(out / "faithfulness_images.csv", keep_default_na=False, na_values=[""])
    assert len(images) == 2 * 2 * 16 and images["group"].nunique() == len(images)  # no groups: the image is the unit
    assert sum(c.startswith("p:") for c in images.columns) == 1 + 4 * 5 + 20 * 5
    again = deletion_statistics(images, resamples=200, seed=0)
    written = pd.read_csv(out / "faithfulness_summary.csv", keep_default_na=False, na_values=[""])
    for c in ("aopc", "aopc_low", "aopc_high", "null_percentile", "diff_vs_random_low", "diff_vs_ffrs_high"):
        assert np.allclose(written[c].to_numpy(float), again["summary"][c].to_numpy(float), equal_nan=True), c
    by_k = pd.read_csv(out / "faithfulness_by_k.csv")
    assert set(by_k["k"]) == {1, 4, 16, 64, 256} and (by_k["drop_low"] <= by_k["drop_pp"] + 1e-9).all()
    # row 0 of the resampled metrics is the curve itself: the same AP per k as faithfulness.csv
    ffrs = by_k[(by_k["ranking"] == "ffrs") & (by_k["metric"] == "ap")].set_index(["set", "k"])["value"]
    curve = res.curves[res.curves["ranking"] == "ffrs"].set_index(["set", "k"])["ap"]
    assert np.allclose(ffrs.sort_index().to_numpy(), curve.sort_index().to_numpy())
    # another seed: other resamples, the same estimates
    other = deletion_statistics(images, resamples=200, seed=1)["summary"]
    assert np.allclose(other["aopc"], written["aopc"]) and not np.allclose(other["aopc_low"], written["aopc_low"])


def test_weighted_ap_and_accuracy_equal_the_metrics_on_the_resampled_images():
    from sklearn.metrics import average_precision_score

    from tffkit.analysis.uncertainty import weighted_ap, weighted_fake_acc

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 40)
    scores = np.round(rng.random((40, 3)), 1)  # many ties
    for _ in range(20):
        idx = rng.integers(0, 40, 40)
        w = np.bincount(idx, minlength=40)[None]
        got = weighted_ap(labels, scores, w)[0]
        want = [average_precision_score(labels[idx], scores[idx, v]) for v in range(3)]
        assert np.allclose(got, want)
        acc = weighted_fake_acc(labels, scores, w)[0]
        assert np.allclose(acc, [(scores[idx, v][labels[idx] == 1] > 0.5).mean() for v in range(3)])
    assert np.isnan(weighted_ap(labels, scores, (labels == 1)[None].astype(float))).all()  # no reals: undefined


def test_a_curve_that_rises_is_reported_not_monotone():
    from tffkit.analysis.deletion_stats import BASELINE, column, deletion_statistics

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 30)
    base = np.where(labels == 1, rng.uniform(0.3, 1.0, 60), rng.uniform(0.0, 0.7, 60))
    images = pd.DataFrame({"path": [f"{i}" for i in range(60)], "set": "a", "label": labels,
                           "group": [f"g{i // 3}" for i in range(60)], BASELINE: base})
    noisy = base + np.where(labels == 1, -0.3, 0.3)  # k = 1 hurts, k = 2 recovers above the undropped model
    images[column("x", 0, 1)] = noisy
    images[column("x", 0, 2)] = np.where(labels == 1, 1.0, 0.0)
    for r in range(3):
        for k in (1, 2):
            images[column("random", r, k)] = base + rng.normal(0, 0.01, 60)
    stats = deletion_statistics(images, resamples=100)
    assert stats["monotone"] == {"x": {"ap": {"a": False}, "fake_acc": {"a": False}}}
    rise = stats["rises"]["x"]["ap"]["a"]
    assert [r["k"] for r in rise] == [2] and rise[0]["above_baseline"] and stats["groups"] == 20


def test_topk_stability_has_its_known_answer():
    from tffkit.analysis.unit_scores import topk_stability

    # two buckets: the full ranking's top-1 is unit 0; only a resample drawing bucket 1 twice (p = 1/4) has unit 1
    sums, counts = np.array([[3.0, 0.0, 1.0], [0.0, 2.0, 1.0]]), np.array([1, 1])
    got = topk_stability(sums, counts, [1, 2], resamples=4000, seed=0)
    assert got["buckets"] == 2 and abs(got["top_k_kept"][1] - 0.75) < 0.03
    # top-2 on all = {0, 1} (the tie of units 1 and 2 by unit order); bucket 0 twice: {0, 2}, bucket 1 twice:
    # {1, 2} (each keeps 1 of 2, Jaccard 1/3), once each: {0, 1}
    assert abs(got["top_k_kept"][2] - 0.75) < 0.03
    assert abs(got["jaccard"][1] - 0.75) < 0.03 and abs(got["jaccard"][2] - (0.5 + 0.5 / 3)) < 0.03
    same = topk_stability(np.tile([5.0, 1.0, 3.0], (6, 1)), np.ones(6), [1, 2], resamples=50)
    assert same["top_k_kept"] == {1: 1.0, 2: 1.0} and same["jaccard"] == {1: 1.0, 2: 1.0}
    empty_bucket = topk_stability(np.vstack([sums, np.zeros(3)]), np.array([1, 1, 0]), [1], resamples=4000)
    assert empty_bucket["buckets"] == 2 and abs(empty_bucket["top_k_kept"][1] - 0.75) < 0.03


def test_groups_fall_into_buckets_exactly_or_hashed():
    from tffkit.analysis.unit_scores import group_buckets

    b, n, hashed = group_buckets(["b", "a", "b", "c"])
    assert list(b) == [1, 0, 1, 2] and n == 3 and not hashed
    units = [f"photo{i % 300}" for i in range(900)]
    b, n, hashed = group_buckets(units, max_buckets=256)
    assert hashed and n == 256 and b.min() >= 0 and b.max() < 256 and len(set(b)) > 150  # 177 expected
    assert all(b[i] == b[i + 300] for i in range(600))  # one group, one bucket
    assert np.array_equal(b, group_buckets(units)[0])  # deterministic


def test_randomised_detector_ranks_differently_and_halves_agree(run):
    res, _, _ = run
    sanity = res.sanity
    full = [s for s in sanity["randomised"] if s["fraction"] == 1.0][0]
    assert full["top_module"] == "fc" and full["modules_redrawn"] > [s for s in sanity["randomised"]
                                                                      if s["fraction"] == 0.5][0]["modules_redrawn"]
    halves = sanity["split_half"]["ffrs"]
    assert full["spearman"] < 0.5 < halves["spearman"]
    assert full["top_k_overlap"] < halves["top_k_overlap"]
    assert sum(sanity["fakes_per_half"]) > 0 and min(sanity["fakes_per_half"]) > 0
    for name, boot in sanity["bootstrap"].items():  # each source fake its own group: one bucket each
        assert boot["buckets"] == sum(sanity["fakes_per_half"]) and boot["resamples"] == 200, name
        assert all(0 <= v <= 1 for v in [*boot["top_k_kept"].values(), *boot["jaccard"].values()])
        assert all(boot["jaccard"][k] <= boot["top_k_kept"][k] for k in boot["jaccard"])
    assert sanity["bootstrap"]["ffrs"]["top_k_kept"][16] > sanity["bootstrap"]["ffrs"]["jaccard"][16] > 0.3


def test_outputs_and_detector_file_untouched(run, planted):
    res, out, before = run
    for f in ("faithfulness.csv", "faithfulness_summary.csv", "faithfulness.json", "unit_scores.csv",
              "deletion_curves.png", "run.json", "faithfulness_by_k.csv", "faithfulness_images.csv"):
        assert (out / f).stat().st_size > 0, f
    after = torch.load(planted[0], weights_only=True)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    curves = pd.read_csv(out / "faithfulness.csv")
    assert set(curves["ranking"]) == {"baseline", "ffrs", "lrp-epsilon", "activation", "taylor", "random"}
    assert sorted(curves[curves["ranking"] == "ffrs"]["k"].unique()) == [1, 4, 16, 64, 256]
    info = read_json(out / "faithfulness.json")
    assert set(info["verdicts"]) == {"ffrs", "lrp-epsilon", "activation", "taylor", "random"}
    assert "× random" not in info["verdicts"]["ffrs"] and "percentile 100 of 20 random" in info["verdicts"]["ffrs"]
    assert "mean of 20 seeded rankings" in info["verdicts"]["random"]
    assert info["intervals"]["resamples"] == 200 and info["intervals"]["test_groups"] == 64
    units = pd.read_csv(out / "unit_scores.csv")
    assert sorted(units["taylor_rank"]) == list(range(1, len(units) + 1))


def test_aopc_by_hand():
    rows = [("baseline", 0, 0, "a", 0.9, 1.0), ("baseline", 0, 0, "b", 0.8, 0.5),
            ("ffrs", 1, 0, "a", 0.7, 0.5), ("ffrs", 2, 0, "a", 0.5, 0.25),
            ("ffrs", 1, 0, "b", 0.8, 0.5), ("ffrs", 2, 0, "b", 0.6, 0.0),
            ("random", 1, 0, "a", 0.9, 1.0), ("random", 2, 0, "a", 0.8, 1.0),
            ("random", 1, 1, "a", 0.85, 1.0), ("random", 2, 1, "a", 0.9, 0.5),
            ("random", 1, 0, "b", 0.8, 0.5), ("random", 2, 0, "b", 0.8, 0.5),
            ("random", 1, 1, "b", 0.7, 0.5), ("random", 2, 1, "b", 0.8, 0.5)]
    curves = pd.DataFrame(rows, columns=["ranking", "k", "replica", "set", "ap", "fake_acc"])
    s = aopc_table(curves).set_index(["ranking", "set", "metric"])
    # ffrs on a: mean(0.9 − 0.7, 0.9 − 0.5) = 0.3 → 30 pp; on b: mean(0, 0.2) = 10 pp; all sets: 20 pp
    assert s.loc[("ffrs", "a", "ap"), "aopc"] == pytest.approx(30.0)
    assert s.loc[("ffrs", "b", "ap"), "aopc"] == pytest.approx(10.0)
    assert s.loc[("ffrs", "all", "ap"), "aopc"] == pytest.approx(20.0)
    assert s.loc[("ffrs", "a", "fake_acc"), "aopc"] == pytest.approx(62.5)
    # random replicas on a: 5 and 2.5 pp; on b: 0 and 5 pp; all sets per replica 2.5 and 3.75 pp
    assert s.loc[("random", "a", "ap"), "aopc"] == pytest.approx(3.75)
    assert s.loc[("random", "a", "ap"), "aopc_std"] == pytest.approx(1.25)
    assert s.loc[("random", "all", "ap"), "aopc"] == pytest.approx(3.125)
    assert s.loc[("random", "all", "ap"), "aopc_std"] == pytest.approx(0.625)
    assert "ratio_to_random" not in s.columns  # never a ratio to the null's mean


def test_grid_variants_and_overlap():
    assert k_grid(100) == [1, 2, 4, 8, 16, 32, 64] and k_grid(1000, 16) == [1, 2, 4, 8, 16]
    with pytest.raises(ValueError):
        k_grid(1)
    order = [("a", i) for i in range(10)]
    variants = deletion_variants({"ffrs": order, "taylor": order[::-1]}, [1, 3], random_repeats=2, seed=4)
    assert variants[0] is None and len(variants) == 1 + 2 * 2 + 2 * 2
    assert variants[2].channels == tuple(order[:3]) and variants[3].channels == (("a", 9),)
    r0 = [v for v in variants[1:] if v.kind == "random" and v.replica == 0]
    assert set(r0[0].channels) <= set(r0[1].channels)  # nested in k
    again = deletion_variants({"ffrs": order, "taylor": order[::-1]}, [1, 3], random_repeats=2, seed=4)
    assert [v.channels for v in again[1:]] == [v.channels for v in variants[1:]]  # seeded
    assert top_overlap(order, order[::-1], 5) == 0 and top_overlap(order, order, 3) == 1


@pytest.mark.parametrize("arch", ["tiny_resnet", "tiny_vit"])
def test_source_scores_leave_the_detector_untouched_and_work_on_any_units(arch, one_thread):
    from lrp_helpers import pseudo_trained
    from tffkit import distributed as tdist
    from tffkit.analysis.unit_scores import SCORED, source_scores
    from tffkit.data import Preprocessing, Sample
    from tffkit.lrp import Explainer

    tmp = Path(__import__("tempfile").mkdtemp())
    samples = []
    rng = np.random.default_rng(0)
    for i in range(6):
        path = tmp / f"{i}.png"
        Image.fromarray(colour_image(rng, True)).save(path)
        samples.append(Sample(str(path), 1, "s", ""))
    model = pseudo_trained(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ex = Explainer(model, input_shape=(3, SIZE, SIZE))
    scores = source_scores(model, ex, samples, tdist.init("cpu"), Preprocessing(), min_prob=0.0, randomise=(1.0,),
                           explainer_kwargs={"input_shape": (3, SIZE, SIZE)}, preset="full", batch_size=4,
                           num_workers=0, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert scores.counts == [3, 3]
    for name in SCORED:
        s = scores.score(name)
        assert s.shape == (ex.n_channels,) and np.isfinite(s).all() and s.max() > 0
    assert not np.allclose(scores.score("ffrs"), scores.randomised[0]["omega"])
    copy_, names = randomised_copy(model, 1.0, seed=0)
    assert len(names) == sum(1 for m in model.modules() if next(m.parameters(recurse=False), None) is not None)
    pairs = zip(model.parameters(), copy_.parameters(), strict=True)
    assert all(not torch.equal(p, q) for p, q in pairs if p.numel() > 1 and p.std() > 1e-6)  # constants stay


CLI_ARGS = ["--arch", "tiny_resnet", "--preset", "full", "--device", "cpu", "--workers", "0", "--no-progress",
            "--min-prob", "0.6", "--k", "2", "8", "32", "--random-repeats", "2", "--randomise", "1.0", "--top-k", "8",
            "--batch-size", "12", "--max-per-class", "10", "--source-max-per-class", "12"]


def _cli(planted, out: Path) -> list[str]:
    weights, source, test, _ = planted
    return ["faithfulness", *CLI_ARGS, "--weights", str(weights), "--data", str(test), "--source", str(source),
            "--out", str(out)]


def test_one_default_null_size_for_the_cli_the_study_and_the_function():
    import argparse
    import functools

    from tffkit.analysis import faithfulness as fa
    from tffkit.analysis.uncertainty import RESAMPLES
    from tffkit.cli import faithfulness as cli
    from tffkit.jobs.options import default_of
    from tffkit.jobs.study_config import SCHEMA

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    args = p.parse_args(["--arch", "x", "--data", "d", "--source", "s", "--out", "o"])
    default = functools.partial(default_of, FaithfulnessOptions)
    assert args.random_repeats == default("random_repeats") == fa.RANDOM_REPEATS >= 20
    assert SCHEMA["steps.faithfulness"]["random_repeats"][1] == fa.RANDOM_REPEATS
    assert args.resamples == default("resamples") == RESAMPLES == SCHEMA["steps.faithfulness"]["resamples"][1]
    with pytest.raises(ValueError, match="random-repeats"):
        faithfulness(source="s", test="d", options=FaithfulnessOptions(arch="tiny_resnet", random_repeats=1))


def test_top_k_defaults_to_the_k_of_tff_rank():
    """--top-k unset (the CLI, the options and a study's top_k null) is tff rank's k (in a study: steps.rank.k)."""
    import argparse

    from tffkit.cli import faithfulness as cli
    from tffkit.jobs.options import default_of
    from tffkit.jobs.rank import RankOptions
    from tffkit.jobs.study_config import SCHEMA

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    args = p.parse_args(["--data", "d", "--source", "s", "--out", "o"])
    assert args.top_k is None and SCHEMA["steps.faithfulness"]["top_k"][1] is None
    assert FaithfulnessOptions().top_k_used == default_of(RankOptions, "k") == 114
    assert FaithfulnessOptions(top_k=8).top_k_used == 8


def test_cli_writes_every_output(planted, tmp_path, capsys):
    from tffkit.cli import main

    assert main(_cli(planted, tmp_path / "one")) == 0
    text = capsys.readouterr().out
    assert "FF-RS (ω): AOPC" in text and "random: AOPC" in text and "Spearman ρ" in text
    for f in ("faithfulness.csv", "faithfulness_summary.csv", "faithfulness.json", "unit_scores.csv",
              "deletion_curves.png", "run.json"):
        assert (tmp_path / "one" / f).stat().st_size > 0, f
    assert read_json(tmp_path / "one" / "run.json")["command"] == "faithfulness"


@pytest.mark.slow
def test_two_processes_give_the_same_curves(planted, tmp_path):
    """About a minute on 2 CPU cores (torchrun start-up dominates)."""
    from tffkit.cli import main

    assert main(_cli(planted, tmp_path / "one")) == 0
    run_torchrun(_cli(planted, tmp_path / "two"))
    for f in ("faithfulness.csv", "faithfulness_summary.csv", "unit_scores.csv", "faithfulness_by_k.csv",
              "faithfulness_images.csv"):
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f
    assert read_json(tmp_path / "one" / "faithfulness.json")["sanity"] == \
        read_json(tmp_path / "two" / "faithfulness.json")["sanity"]


def test_report_section_shows_the_table_verdicts_and_checks(run, tmp_path):
    import shutil

    from tffkit.report.html import _figures
    from tffkit.report.section_faithfulness import section_faithfulness

    _, out, _ = run
    shutil.copytree(out, tmp_path / "faithfulness")
    section = section_faithfulness(tmp_path, _figures, ["progan"])
    body, sentence = section["body"], section["sentence"]
    assert "FF-RS (ω): AOPC" in sentence and "× random" not in sentence and "top-16 overlap" in sentence
    assert "Spearman ρ" in sentence and "re-drawn" in sentence and "percentile 100 of 20 random rankings" in sentence
    assert "200 cluster-bootstrap resamples of the 64 groups" in sentence and "bootstrap resamples of the source" \
        in sentence
    for text in ("AOPC of AP, mean over test sets (pp) [95% interval]", "progan†: AOPC of AP (pp)",
                 "other: AOPC of AP (pp)", "|gradient × activation|", "LRP-ε", "mean activation",
                 "split halves: Spearman ρ", "Cascading randomisation", "percentile among the random rankings",
                 "against the random mean", "bootstrap: top-16 kept (%)", "AP curve not monotone on",
                 "Every k: the drop of AP", "other: AP drop (pp)"):
        assert text in body, text
    assert "× random" not in body and "higher (+" in body
    assert [f["file"] for f in section["figures"]] == ["deletion_curves.png"]
    assert section_faithfulness(tmp_path / "nothing", _figures) is None
