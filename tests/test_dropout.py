"""Feature-map dropout: exact masks at both sites, tables, and the effect on a trained detector."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score

from conftest import run_torchrun
from lrp_helpers import pseudo_trained
from tffkit import distributed as tdist
from tffkit.analysis.dropout import dropped, score_variants, summarize
from tffkit.analysis.dropout_stats import curve_findings, dropout_effects
from tffkit.analysis.ffrs import ChannelSets
from tffkit.analysis.uncertainty import ClusterResampler, null_percentile
from tffkit.cli import main
from tffkit.data import find_samples
from tffkit.detectors import load_detector
from tffkit.evaluate import score_samples
from tffkit.lrp import Explainer
from tffkit.reference import paper_numbers
from tffkit.wording import effects_lines, paper_layout


def _capture(ex: Explainer, layer: str, x: torch.Tensor) -> torch.Tensor:
    got = {}
    handle = ex.module(layer).register_forward_hook(lambda m, i, o: got.__setitem__("out", o.detach().clone()))
    try:
        ex.forward(x)
    finally:
        handle.remove()
    return got["out"]


def test_masks_touch_exactly_the_chosen_channels_at_both_sites():
    model = pseudo_trained("tiny_resnet")
    ex = Explainer(model)
    x = torch.randn(2, 3, 32, 32)
    layer = "layer1.0.conv1"
    ref = _capture(ex, layer, x)
    for site in ("folded", "pre-bn"):
        with dropped(ex, [(layer, 3), (layer, 5)], site):
            out = _capture(ex, layer, x)
        fill = torch.zeros(2) if site == "folded" else ex.module(layer).pre_bn_zero[[3, 5]]
        assert torch.equal(out[:, [3, 5]], fill.reshape(1, 2, 1, 1).expand(2, 2, 32 // 4, 32 // 4))
        keep = [c for c in range(16) if c not in (3, 5)]
        assert torch.equal(out[:, keep], ref[:, keep])
    assert torch.equal(_capture(ex, layer, x), ref)  # hooks removed afterwards


def test_pre_bn_site_equals_zeroing_the_raw_conv_output():
    model = pseudo_trained("tiny_resnet")
    ex = Explainer(model)
    x = torch.randn(2, 3, 32, 32)
    conv = model.layer1[0].conv1

    def zero(m, i, o):
        o = o.clone()
        o[:, [2, 7]] = 0
        return o

    handle = conv.register_forward_hook(zero)
    with torch.no_grad():
        expected = model(x).reshape(-1)
    handle.remove()
    with dropped(ex, [("layer1.0.conv1", 2), ("layer1.0.conv1", 7)], "pre-bn"):
        got = ex.forward(x)
    assert torch.allclose(got, expected, atol=1e-5)


def test_one_pass_for_all_variants_equals_one_pass_each(trained_tiny):
    weights, data = trained_tiny
    ex = Explainer(load_detector("tiny_resnet", weights))
    samples = find_samples(data, ["gan_b"])
    ctx = tdist.DistContext(0, 1, torch.device("cpu"))
    variants = [None, ChannelSets("top-2", "top", 2, 0, (("layer1.0.conv1", 3), ("layer2.0.conv2", 1))),
                ChannelSets("low-1", "low", 1, 0, (("conv1", 0),))]
    args = dict(preset="full", batch_size=5, num_workers=0, progress=False)
    together, failed, n_small = score_variants(ex, variants, samples, ctx, "pre-bn", **args)
    assert failed == [] and len(together) == 3 and n_small == 0
    for variant, got in zip(variants, together, strict=True):
        with dropped(ex, variant.channels if variant else (), "pre-bn"):
            alone = score_samples(ex.model, samples, ctx, **args).table
        pd.testing.assert_frame_equal(got, alone[got.columns])  # score_samples adds the files' metadata
    assert not together[0]["logit"].equals(together[1]["logit"])


def test_top_k_hurts_more_than_random_k(tmp_path: Path, trained_tiny):
    weights, data = trained_tiny
    common = ["--arch", "tiny_resnet", "--weights", str(weights), "--data", str(data), "--preset", "full",
              "--device", "cpu", "--workers", "0", "--no-progress", "--batch-size", "32"]
    assert main(["rank", *common, "--sets", "progan", "--min-prob", "0.5", "--out", str(tmp_path / "rank")]) == 0
    assert main(["dropout", *common, "--ranking", str(tmp_path / "rank" / "ffrs.csv"), "--k-sweep", "8", "24",
                 "--random-repeats", "3", "--resamples", "200", "--out", str(tmp_path / "drop")]) == 0
    long = pd.read_csv(tmp_path / "drop" / "dropout.csv")
    assert set(long["variant"]) == {"baseline", "top-8", "random-8", "low-8", "top-24", "random-24", "low-24"}
    assert len(long[long["variant"] == "random-24"]) == 3 * 3  # replicas × sets
    mean_ap = long.groupby("variant")["ap"].mean()
    assert mean_ap["top-24"] < mean_ap["random-24"] - 0.05
    assert mean_ap["top-24"] < mean_ap["baseline"] - 0.05
    for f in ("dropout_summary.csv", "dropout_table.md", "dropout_table.tex", "ap_vs_k.png", "run.json"):
        assert (tmp_path / "drop" / f).stat().st_size > 0
    assert "random-24" in (tmp_path / "drop" / "dropout_table.md").read_text()
    # per-image scores with groups: the AP of dropout.csv and the intervals of dropout_effects.csv recompute from them
    wide = pd.read_csv(tmp_path / "drop" / "dropout_scores.csv", keep_default_na=False)
    assert {"group", "baseline", "top-24", "low-8", "random-24#r2"} <= set(wide.columns)
    for (variant, s), ap in long[long["replica"] == 0].set_index(["variant", "set"])["ap"].items():
        part = wide[wide["set"] == s]
        column = f"{variant}#r0" if variant.startswith("random") else variant
        assert np.isclose(average_precision_score(part["label"], part[column]), ap)
    effects = pd.read_csv(tmp_path / "drop" / "dropout_effects.csv")
    pd.testing.assert_frame_equal(effects, dropout_effects(wide, resamples=200, seed=0), check_dtype=False)
    top = effects[(effects["kind"] == "top") & (effects["k"] == 24) & (effects["set"] == "mean")
                  & (effects["metric"] == "ap")].iloc[0]
    null = (long[long["variant"] == "random-24"].groupby("replica")["ap"].mean()
            - long[long["variant"] == "baseline"]["ap"].mean())
    assert top["null_replicas"] == 3 and top["null_percentile"] == null_percentile(top["delta"], null)
    assert top["high"] < 0 and np.isclose(top["delta"], mean_ap["top-24"] - mean_ap["baseline"])
    info = json.loads((tmp_path / "drop" / "dropout.json").read_text())
    assert {c["set"] for c in info["curves"]} == set(long["set"]) | {"mean"} and info["resamples"] == 200
    run_torchrun(["dropout", *common, "--ranking", str(tmp_path / "rank" / "ffrs.csv"), "--k-sweep", "8", "24",
                  "--random-repeats", "3", "--resamples", "200", "--out", str(tmp_path / "drop2")])
    for name in ("dropout.csv", "dropout_effects.csv", "dropout_scores.csv"):
        assert (tmp_path / "drop2" / name).read_text() == (tmp_path / "drop" / name).read_text()


def test_pooled_random_k_is_one_ap_of_the_mean_probability(tmp_path: Path, trained_tiny):
    """--random-k pooled (the public protocol): per set one random-k row whose AP is that of the mean p(fake) of the
    masked models, each scored on its own; reproducible for a seed."""
    from dataclasses import replace

    import numpy as np
    from sklearn.metrics import average_precision_score

    from tffkit.analysis.ffrs import load_ranking, select_channels
    from tffkit.jobs.dropout import DropoutOptions, dropout

    weights, data = trained_tiny
    ex = Explainer(load_detector("tiny_resnet", weights))
    pairs = [(layer.name, c) for layer in ex.layers for c in range(layer.channels)]
    ranking = tmp_path / "ranking.csv"
    pd.DataFrame({"rank": range(1, len(pairs) + 1), "layer": [p[0] for p in pairs], "channel": [p[1] for p in pairs],
                  "omega": np.linspace(1, 0, len(pairs))}).to_csv(ranking, index=False)
    options = DropoutOptions(arch="tiny_resnet", weights=str(weights), sets=("gan_b", "gan_c"), k=40,
                             random_repeats=3, seed=5, preset="full", batch_size=32, device="cpu", workers=0,
                             progress=False, paper_code=True)
    long = dropout(data, ranking=ranking, options=options, out=tmp_path / "drop")
    random_rows = long[long["variant"] == "random-40"]
    assert len(random_rows) == 2 and set(random_rows["replica"]) == {0}
    assert json_settings(tmp_path / "drop")["random_k"] == "pooled"
    sets = [v for v in select_channels(load_ranking(ranking), 40, 3, 5, protocol="pooled") if v.kind == "random"]
    samples = find_samples(data, ["gan_b", "gan_c"])
    ctx = tdist.DistContext(0, 1, torch.device("cpu"))
    scores, _, _ = score_variants(ex, sets, samples, ctx, "pre-bn", preset="full", batch_size=32, num_workers=0,
                                  progress=False, prob_dtype="float32")
    mean = np.mean([s["prob"].to_numpy() for s in scores], axis=0)
    for _, row in random_rows.iterrows():
        part = (scores[0]["set"] == row["set"]).to_numpy()
        assert row["ap"] == average_precision_score(scores[0]["label"][part], mean[part])
    again = dropout(data, ranking=ranking, options=options)
    pd.testing.assert_frame_equal(again, long)
    ours = dropout(data, ranking=ranking, options=replace(options, paper_code=False))
    assert len(ours[ours["variant"] == "random-40"]) == 3 * 2  # replicas × sets, reported as mean ± std


def json_settings(folder: Path) -> dict:
    import json

    return json.loads((folder / "run.json").read_text())["settings"]


def test_paper_layout_shows_paper_numbers():
    long = pd.DataFrame([
        {"variant": "baseline", "kind": "baseline", "k": 0, "replica": 0, "set": "progan", "ap": 1.0, "acc": 1.0,
         "real_acc": 1.0, "fake_acc": 1.0, "cal_real_acc": 1.0, "cal_fake_acc": 1.0},
        {"variant": "top-114", "kind": "top", "k": 114, "replica": 0, "set": "progan", "ap": 0.7, "acc": 0.5,
         "real_acc": 1.0, "fake_acc": 0.0, "cal_real_acc": 0.9, "cal_fake_acc": 0.2}])
    paper = paper_numbers("dropout", "wang2020_resnet50_blur_jpg_prob0.5")
    text = paper_layout(summarize(long), "markdown", paper)
    assert "| top-114 | 70.0 | 90.0 | 20.0 |" in text
    assert "top-114 (paper)" in text and "baseline (paper) | 100.0 | 100.0 | 100.0" in text


def test_low_k_inside_a_tie_is_said(tmp_path: Path, trained_tiny):
    """A ranking whose last 100 maps share ω = 0: low-10 takes 10 of them by layer order, and the outputs say so."""
    weights, data = trained_tiny
    ex = Explainer(load_detector("tiny_resnet", weights))
    pairs = [(layer.name, c) for layer in ex.layers for c in range(layer.channels)]
    omega = [1.0 - i / len(pairs) for i in range(len(pairs) - 100)] + [0.0] * 100
    ranking = tmp_path / "ranking.csv"
    pd.DataFrame({"rank": range(1, len(pairs) + 1), "layer": [p[0] for p in pairs], "channel": [p[1] for p in pairs],
                  "omega": omega}).to_csv(ranking, index=False)
    assert main(["dropout", "--arch", "tiny_resnet", "--weights", str(weights), "--data", str(data), "--sets", "gan_b",
                 "--preset", "full", "--device", "cpu", "--workers", "0", "--no-progress", "--ranking", str(ranking),
                 "--k", "10", "--random-repeats", "1", "--out", str(tmp_path / "drop")]) == 0
    long = pd.read_csv(tmp_path / "drop" / "dropout.csv", keep_default_na=False)
    notes = dict(zip(long["variant"], long["note"], strict=False))
    assert "100 maps share ω = 0" in notes["low-10"] and "10 of them are in the low-10" in notes["low-10"]
    assert notes["top-10"] == "" and notes["baseline"] == ""
    assert "low-10 cut falls inside a tie" in (tmp_path / "drop" / "dropout_table.md").read_text()


def _wide(seed: int = 0, n_groups: int = 10, per_group: int = 4, replicas: int = 20) -> pd.DataFrame:
    """Two sets of fakes and reals in groups; top-5 lowers every fake's score, low-5 does nothing, random-5 a little."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in ("a", "b"):
        for label in (0, 1):
            for g in range(n_groups):
                level = rng.normal(1.5 * (2 * label - 1), 1.0)
                rows += [{"path": f"{s}{label}{g}{i}", "set": s, "class": "", "label": label, "group": f"{s}{label}{g}",
                          "logit": rng.normal(level, 0.5)} for i in range(per_group)]
    wide = pd.DataFrame(rows)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    wide["baseline"] = sig(wide["logit"])
    wide["top-5"] = sig(wide["logit"] - 2.0 * wide["label"])
    wide["low-5"] = wide["baseline"]
    for r in range(replicas):
        wide[f"random-5#r{r}"] = sig(wide["logit"] + rng.normal(0, 0.3, len(wide)))
    return wide.drop(columns="logit")


def test_dropout_effects_are_paired_differences_with_a_null_percentile():
    wide = _wide()
    effects = dropout_effects(wide, resamples=200, seed=1).set_index(["kind", "k", "set", "metric"])
    top = effects.loc[("top", 5, "mean", "ap")]
    aps = {c: np.mean([average_precision_score(p["label"], p[c]) for _, p in wide.groupby("set")])
           for c in wide.columns[5:]}
    assert np.isclose(top["delta"], aps["top-5"] - aps["baseline"]) and top["high"] < 0
    null = [aps[f"random-5#r{r}"] - aps["baseline"] for r in range(20)]
    assert top["null_replicas"] == 20 and top["null_percentile"] == null_percentile(top["delta"], null) == 0.0
    assert np.isclose(top["null_low"], np.percentile(null, 2.5))
    low = effects.loc[("low", 5, "a", "ap")]
    assert low["delta"] == low["low"] == low["high"] == 0.0  # the same images and resamples: an exact 0 (paired)
    # the interval is the naive one over the same draws
    sampler = ClusterResampler(wide["group"], strata=wide["set"] + "/" + wide["label"].astype(str), resamples=200,
                               seed=1)
    draws = []
    for idx in sampler.draws():
        part = wide.iloc[idx]
        sub = part[part["set"] == "b"]
        fakes = sub[sub["label"] == 1]
        draws.append((fakes["top-5"] > 0.5).mean() - (fakes["baseline"] > 0.5).mean())
    fake = effects.loc[("top", 5, "b", "fake_acc")]
    assert np.isclose(fake["low"], np.percentile(draws, 2.5)) and np.isclose(fake["high"], np.percentile(draws, 97.5))
    assert effects.loc[("top", 5, "a", "ap"), "groups"] == 20


def test_non_monotone_curves_and_raised_ap_are_findings():
    summary = pd.DataFrame([{"kind": kind, "k": k, "set": s, "ap": ap} for s, curve in
                            (("a", [0.9, 0.8, 0.85, 0.5]), ("b", [0.9, 0.95, 0.96, 0.97]))
                            for kind, k, ap in zip(["baseline", "top", "top", "top"], [0, 4, 8, 16], curve,
                                                   strict=True)])
    effects = pd.DataFrame([{"kind": "top", "k": k, "set": "b", "metric": "ap", "delta": d, "low": lo, "high": hi,
                             "null_replicas": 0, "null_percentile": np.nan, "null_low": np.nan, "null_high": np.nan}
                            for k, d, lo, hi in ((4, 0.05, 0.01, 0.08), (8, 0.06, -0.01, 0.1), (16, 0.07, 0.02, 0.1))])
    found = {c["set"]: c for c in curve_findings(summary, effects)}
    assert not found["a"]["monotone"] and found["a"]["rises_at"] == [8] and found["a"]["raises_ap"] == []
    assert not found["b"]["monotone"] and found["b"]["raises_ap"] == [4, 16] and found["b"]["ks"] == [4, 8, 16]
    lines = effects_lines(effects, list(found.values()), where="b")
    assert "not shown" in lines[1] and "raises AP by 6.0 pp" not in lines[1]  # k = 8: interval includes 0
    assert lines[0].startswith("k = 4: dropping the top-4 units raises AP by 5.0 pp [1.0, 8.0]")
    assert "Finding: dropping the top-k units raises AP (interval above 0) on b (k = 4, 16)" in lines[-2]
    assert lines[-1] == ("Not monotone: the top-k AP rises from the previous k (baseline at k = 0) on a (k = 8); "
                         "b (k = 4, 8, 16); the mean over sets (k = 8).")


def test_one_default_per_option_for_the_cli_the_study_and_the_function():
    """tff dropout, a study's dropout step and DropoutOptions share their defaults: --k 114 with --k-sweep unset (the
    study's k_sweep null means [k] too); the study keeps its keys (site for --site)."""
    import argparse

    from tffkit.analysis.dropout_stats import RANDOM_REPEATS
    from tffkit.cli import dropout as cli
    from tffkit.jobs.dropout import DropoutOptions
    from tffkit.jobs.study_config import SCHEMA

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    args = p.parse_args(["--data", "d", "--ranking", "r", "--out", "o"])
    o = DropoutOptions()
    assert (args.k, args.k_sweep, args.random_repeats, args.seed) == (o.k, o.k_sweep, o.random_repeats, o.seed)
    assert (o.k, o.k_sweep, o.random_repeats, list(o.train_set)) == (114, None, RANDOM_REPEATS, args.train_set)
    assert o.ks == [114] and DropoutOptions(k_sweep=(8, 24)).ks == [8, 24]
    schema = SCHEMA["steps.dropout"]
    assert {"k_sweep", "random_repeats", "seed", "site", "prob_dtype", "cal_compare", "random_k"} <= set(schema)
    assert (schema["k"][1], schema["k_sweep"][1], schema["random_repeats"][1]) == (114, None, RANDOM_REPEATS)
