"""FF-RS (ω): closed-form values, ranking ties, public rankings, torchrun exactness."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from conftest import run_torchrun
from lrp_helpers import pseudo_trained
from tffkit.analysis.ffrs import FFRSAccumulator, load_ranking, ranking_table, select_channels
from tffkit.cli import main
from tffkit.lrp import Explainer, FeatureLayer

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


class OneConv(nn.Module):
    """1×1 conv (positive weights) → ReLU → global average → linear with weights (1, −0.5)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[0.5, 1.0, 0.2], [0.3, 0.1, 0.9]]).reshape(2, 3, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, -0.5]]))
            self.fc.bias.fill_(0.1)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


def test_omega_closed_form():
    net = OneConv().double()
    x = torch.rand(3, 3, 4, 4, dtype=torch.float64) + 0.1  # positive inputs → positive conv outputs
    ex = Explainer(net)
    acc = FFRSAccumulator(ex.layers, torch.device("cpu"))
    acc.set_batch(torch.zeros(3, dtype=torch.long))
    ex.explain(x, 1.0, tap=acc, input_relevance=False)
    y = net.conv(x)  # relevance at y is y_c·w_c / z  ⇒  ω_c = [w_c > 0]·|w_c|Σy_c / Σ_c' |w_c'|Σy_c'
    w = net.fc.weight.reshape(-1)
    mass = (y.sum((2, 3)) * w.abs())
    expected = (mass * (w > 0)) / mass.sum(1, keepdim=True)
    assert torch.allclose(acc.omega()[0], expected.mean(0), atol=1e-9)
    assert acc.omega()[0, 1] == 0  # never positive → exactly zero


def test_accumulator_matches_the_naive_formula_over_batches_groups_and_layer_subsets():
    """Deferred per-batch reduction (Σ R and Σ |R| per layer, shares once per batch) equals ω and the retained share
    computed image by image from the relevance maps, for two groups, excluded images and a subset of layers."""
    torch.manual_seed(0)
    ex = Explainer(pseudo_trained("tiny_resnet").double())
    layers = ex.layers[::3]
    acc = FFRSAccumulator(layers, torch.device("cpu"), groups=2)
    naive_sum = {layer.name: torch.zeros(2, layer.channels, dtype=torch.float64) for layer in layers}
    naive_kept = torch.zeros(2, len(layers), dtype=torch.float64)
    counts = torch.zeros(2)
    for group in ([0, 1, -1], [1, 1, 0, 0]):
        g = torch.tensor(group)
        x = torch.randn(len(group), 3, 32, 32, dtype=torch.float64)
        maps = {}
        acc.set_batch(g)
        seed = torch.where(g == 0, 1.0, torch.where(g == 1, -1.0, 0.0)).double()

        def tap(layer, rel, act, maps=maps):
            maps[layer.name] = rel.detach().clone()
            acc(layer, rel, act)

        ex.explain(x, seed, tap=tap, layers=layers, input_relevance=False)
        for i, gi in enumerate(group):
            if gi < 0:
                continue
            counts[gi] += 1
            for j, layer in enumerate(layers):
                r = maps[layer.name][i]
                naive_sum[layer.name][gi] += r.clamp(min=0).sum((1, 2)) / r.abs().sum()
                naive_kept[gi, j] += r.sum() * (1 if gi == 0 else -1)
    omega = acc.omega()
    expected = torch.cat([naive_sum[layer.name] for layer in layers], 1) / counts[:, None]
    torch.testing.assert_close(omega, expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(acc.retained_share(), naive_kept / counts[:, None], rtol=0, atol=1e-9)
    assert acc.counts.tolist() == [3, 3]



def test_replicates_are_weighted_means_of_the_fakes_omega_in_the_same_pass():
    """Each replicate (a resampled source set) is the mean of the fakes' per-image ω weighted by how often each
    image is drawn — accumulated in the same pass as ω; a replicate drawing every fake once is ω itself."""
    torch.manual_seed(1)
    ex = Explainer(pseudo_trained("tiny_resnet").double())
    layers = ex.layers[::4]
    acc = FFRSAccumulator(layers, torch.device("cpu"), groups=2, replicates=3)
    per_image, weights = [], []
    batches = (([0, 0, 1], [[1, 1, 1], [2, 0, 5], [0, 1, 0]]), ([0, -1, 0], [[1, 4, 1], [0, 3, 1], [3, 0, 0]]))
    for group, draw in batches:
        g, m = torch.tensor(group), torch.tensor(draw)  # draw: per replicate, each image's count
        x = torch.randn(len(group), 3, 32, 32, dtype=torch.float64)
        maps = {}
        seed = torch.where(g == 0, 1.0, torch.where(g == 1, -1.0, 0.0)).double()

        def tap(layer, rel, act, maps=maps):
            maps[layer.name] = rel.detach().clone()
            acc(layer, rel, act)

        acc.set_batch(g, m)
        ex.explain(x, seed, tap=tap, layers=layers, input_relevance=False)
        for i, gi in enumerate(group):
            if gi == 0:  # only the fakes count in the replicates
                r = [maps[layer.name][i] for layer in layers]
                per_image.append(torch.cat([ri.clamp(min=0).sum((1, 2)) / ri.abs().sum() for ri in r]))
                weights.append(m[:, i].double())
    w, omega_i = torch.stack(weights, 1), torch.stack(per_image)  # (replicates, fakes), (fakes, units)
    expected = (w @ omega_i) / w.sum(1, keepdim=True)
    torch.testing.assert_close(acc.replicate_omega(), expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(acc.replicate_omega()[0], acc.omega()[0], rtol=0, atol=0)  # every fake once
    assert acc.replicate_counts.tolist() == w.sum(1).long().tolist()


def test_rank_replicates_report_the_stability_of_the_top_k(tmp_path: Path, trained_tiny):
    """--replicates N: each unit's share of the resampled source sets whose top-k holds it, and the top-k's overlap
    over them; the ranking itself is unchanged, and the same seed gives the same files."""
    import json

    weights, data = trained_tiny
    common = ["rank", "--arch", "tiny_resnet", "--weights", str(weights), "--data", str(data), "--preset", "full",
              "--device", "cpu", "--workers", "0", "--no-progress", "--min-prob", "0.5", "--k", "8",
              "--group-pattern", r"^(\d\d)\d\.png$"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    for name in ("a", "b"):
        assert main([*common, "--replicates", "6", "--out", str(tmp_path / name)]) == 0
    plain, rep = pd.read_csv(tmp_path / "plain" / "ffrs.csv"), pd.read_csv(tmp_path / "a" / "ffrs.csv")
    pd.testing.assert_frame_equal(plain, rep.drop(columns=["top_k_replicates"]))
    assert rep["top_k_replicates"].between(0, 1).all() and rep["top_k_replicates"].sum() == pytest.approx(8)
    info = json.loads((tmp_path / "a" / "ffrs.json").read_text())["replicates"]
    assert info["replicates"] == 6 and 0 <= info["top_k_overlap"]["min"] <= info["top_k_overlap"]["max"] <= 1
    assert info["top_k_in_95_percent"] == int((rep["top_k_replicates"].head(8) >= 0.95).sum())
    assert (tmp_path / "a" / "ffrs.csv").read_bytes() == (tmp_path / "b" / "ffrs.csv").read_bytes()


def omega_of_non_positive_maps(device: str) -> tuple:
    """ω and the retained share of float32 relevance on ``device`` where channels 0 and 2 of layer ``a`` and all of
    layer ``b`` are ≤ 0 everywhere (values over six decades, so Σ R and Σ |R| round differently)."""
    gen = torch.Generator().manual_seed(0)
    layers = [FeatureLayer("a", 3, 0), FeatureLayer("b", 2, 1)]
    acc = FFRSAccumulator(layers, torch.device(device), groups=2)
    acc.set_batch(torch.tensor([0, 0, 1, 0], device=device))
    scale = torch.logspace(-3, 3, 56 * 56)
    a = -torch.rand(4, 3, 56, 56, generator=gen) * scale.reshape(56, 56)
    a[:, 1] = torch.randn(4, 56, 56, generator=gen)  # mixed signs
    b = -torch.rand(4, 2, 28, 28, generator=gen) * scale[::4].reshape(28, 28)
    acc(layers[0], a.to(device), None)
    acc(layers[1], b.to(device), None)
    expected = a[:, 1].clamp(min=0).double().sum((1, 2)) / a.double().abs().sum((1, 2, 3))
    return acc.omega().cpu(), acc.retained_share().cpu(), expected, (a, b)


def test_omega_is_exactly_zero_without_positive_relevance():
    omega, retained, expected, (a, b) = omega_of_non_positive_maps("cpu")
    assert omega[:, [0, 2, 3, 4]].eq(0).all()  # exactly, not rounding noise of (Σ R + Σ |R|) / 2
    torch.testing.assert_close(omega[0, 1], expected[[0, 1, 3]].mean(), rtol=1e-6, atol=0)
    torch.testing.assert_close(omega[1, 1], expected[2], rtol=1e-6, atol=0)
    kept = torch.stack([a.double().sum((1, 2, 3)), b.double().sum((1, 2, 3))], 1)  # Σ R = 2 Σ R⁺ − Σ |R|
    torch.testing.assert_close(retained[0], kept[[0, 1, 3]].mean(0), rtol=1e-5, atol=0)
    torch.testing.assert_close(retained[1], -kept[2], rtol=1e-5, atol=0)


def test_ranking_ties_and_keys():
    layers = [FeatureLayer("a", 3, 0), FeatureLayer("b", 2, 1)]
    omega = np.array([0.1, 0.3, 0.1, 0.3, 0.0])
    t = ranking_table(layers, omega)
    assert list(zip(t["layer"], t["channel"], strict=True)) == [("a", 1), ("b", 0), ("a", 0), ("a", 2), ("b", 1)]
    assert t["key"].iloc[0] == "a.#1(T=3)" and list(t["rank"]) == [1, 2, 3, 4, 5]


def test_random_k_disjoint_reproducible():
    layers = [FeatureLayer("a", 50, 0), FeatureLayer("b", 30, 1)]
    t = ranking_table(layers, np.random.default_rng(0).random(80))
    sets = select_channels(t, 10, random_repeats=3, seed=7)
    top = set(sets[0].channels)
    randoms = [s for s in sets if s.kind == "random"]
    assert len(randoms) == 3 and all(len(set(s.channels)) == 10 and not (set(s.channels) & top) for s in randoms)
    assert randoms[0].channels != randoms[1].channels
    again = select_channels(t, 10, random_repeats=3, seed=7)
    assert [s.channels for s in again] == [s.channels for s in sets]
    assert [s.channels for s in select_channels(t, 10, 3, seed=8)][2] != sets[2].channels
    assert set(sets[1].channels) == set(zip(t["layer"][-10:], t["channel"][-10:], strict=True))


def test_public_random_k_draw_is_seeded_and_follows_the_public_protocol():
    """The public draw: choices with replacement over all maps, distinct ones visited in one order shared by the
    replicas (the set's hash order), top-k skipped, the first k kept — reproducible here, from (seed, k)."""
    import random

    layers = [FeatureLayer("a", 300, 0), FeatureLayer("b", 200, 1)]
    t = ranking_table(layers, np.random.default_rng(0).random(500))
    sets = select_channels(t, 20, random_repeats=5, seed=3, protocol="pooled")
    assert [s.kind for s in sets] == ["top", "low"] + ["random"] * 5
    assert [s.channels for s in sets] == [s.channels for s in select_channels(t, 20, 5, seed=3, protocol="pooled")]
    assert sets[2].channels != select_channels(t, 20, 5, seed=4, protocol="pooled")[2].channels
    top = set(sets[0].channels)
    randoms = [set(s.channels) for s in sets[2:]]
    assert all(len(r) == 20 and not r & top for r in randoms)
    # the replicas share the visiting order, so they overlap far more than independent draws would (≈ 20·20/480)
    overlap = np.mean([len(a & b) for i, a in enumerate(randoms) for b in randoms[i + 1:]])
    assert overlap > 8
    # the same draw, written out step by step
    rng = random.Random("tffkit random-k 3 20")
    visit = list(range(500))
    rng.shuffle(visit)
    pairs = list(zip(t["layer"], t["channel"], strict=True))
    for got in sets[2:]:
        drawn = set(rng.choices(range(500), k=500))
        assert 0.55 < len(drawn) / 500 < 0.7  # with replacement: about 1 − 1/e distinct
        first = [m for m in visit if m in drawn and m >= 20][:20]
        assert set(got.channels) == {pairs[m] for m in first}
    with pytest.raises(ValueError, match="random-k protocol"):
        select_channels(t, 20, protocol="public")


@pytest.mark.skipif(not (REFERENCE / "original_omega_resnet50_progan_val_fake.csv").exists(),
                    reason="shared reference rankings not present")
@pytest.mark.parametrize("arch,name", [("resnet50", "resnet50"), ("efficientnet_b0_lukemelas", "efficientnet_b0")])
def test_public_rankings_fit_our_layer_names(arch, name):
    from lrp_helpers import pseudo_trained

    ex = Explainer(pseudo_trained(arch))
    r = load_ranking(REFERENCE / f"original_omega_{name}_progan_val_fake.csv", ex.layers)
    assert len(r) == ex.n_channels and r["omega"].is_monotonic_decreasing
    with pytest.raises(ValueError, match="layers this detector does not have"):
        load_ranking(REFERENCE / "original_omega_resnet50_progan_val_fake.csv",
                     Explainer(pseudo_trained("resnet18")).layers)


def test_rank_cli_and_torchrun_identical(tmp_path: Path, trained_tiny):
    """Batches are the same whatever the world size (ranks take whole batches), so 1 and 2 processes give
    byte-identical ω; with per-image sharding the last batches differ in size and the float values in their bits.
    Batches of 10 over 48 fakes: the ranks take 3 and 2 batches, the last one short. The one-process run is this
    process with one thread, as each torchrun process has (one launch checks the rank pass)."""
    weights, data = trained_tiny
    common = ["--arch", "tiny_resnet", "--weights", str(weights), "--data", str(data), "--preset", "full",
              "--device", "cpu", "--workers", "0", "--no-progress", "--min-prob", "0.5", "--k", "20",
              "--batch-size", "10"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["rank", *common, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    run_torchrun(["rank", *common, "--out", str(tmp_path / "two")], nproc=2)
    one, two = (pd.read_csv(tmp_path / name / "ffrs.csv") for name in ("one", "two"))
    assert (tmp_path / "one" / "ffrs.csv").read_bytes() == (tmp_path / "two" / "ffrs.csv").read_bytes(), \
        f"{int((one['omega'] != two['omega']).sum())} ω differ"
    t = pd.read_csv(tmp_path / "one" / "ffrs.csv")
    assert list(t.columns) == ["rank", "layer", "channel", "omega", "key", "unit"] and len(t) == 720
    assert set(t["unit"]) == {"conv"}
    assert t["omega"].between(0, 1).all() and t["omega"].is_monotonic_decreasing
    import json
    summary = json.loads((tmp_path / "one" / "ffrs.json").read_text())
    assert summary["fakes_used"] + summary["fakes_skipped_not_confident"] == 48
    assert sum(summary["top_k_per_layer"].values()) == 20
    assert (tmp_path / "one" / "topk_per_layer.png").stat().st_size > 0
    # the relevance budget: per layer, the mean over confident fakes of the layer's total relevance (seed 1)
    budget = pd.read_csv(tmp_path / "one" / "relevance_budget.csv")
    assert list(budget["layer"])[0] == "conv1" and len(budget) == 12
    from tffkit.data import find_samples, load_rgb, normalize
    from tffkit.detectors import load_detector

    fakes = [s for s in find_samples(data) if s.label == 1]
    x = torch.stack([torch.from_numpy(np.array(load_rgb(s.path))).permute(2, 0, 1) for s in fakes])
    totals = {}
    e = Explainer(load_detector("tiny_resnet", weights)).explain(
        normalize(x), tap=lambda layer, rel, act: totals.__setitem__(layer.name, rel.double().sum((1, 2, 3))))
    kept = torch.sigmoid(e.logits.double()) >= 0.5
    assert int(kept.sum()) == summary["fakes_used"]
    for layer, share in zip(budget["layer"], budget["retained_share_fakes"], strict=True):
        assert share == pytest.approx(totals[layer][kept].mean().item(), rel=1e-5, abs=1e-7), layer
    assert summary["lowest_retained_share"]["share"] == pytest.approx(budget["retained_share_fakes"].min(), abs=1e-6)


def test_rank_without_confident_fakes_explains(tmp_path: Path, trained_tiny, capsys):
    weights, data = trained_tiny
    # a random detector scores every image near p = 0.5 (--min-prob may not exceed 1)
    rc = main(["rank", "--arch", "tiny_resnet", "--random-weights", "--data", str(data), "--preset", "full",
               "--device", "cpu", "--workers", "0", "--no-progress", "--min-prob", "0.999", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "no fake reached p ≥ 0.999" in err and "median" in err


def test_ties_are_reported():
    from tffkit.analysis.ffrs import cut_tie, tie_note, tie_summary

    omega = np.array([0.5, 0.4, 0.4, 0.4, 0.2, 0.0, 0.0, 0.0, 0.0])
    assert cut_tie(omega, 1) is None and cut_tie(omega, 4) is None
    assert cut_tie(omega, 2) == {"omega": 0.4, "tied_maps": 3, "before_cut": 1, "first_rank": 2, "last_rank": 4}
    s = tie_summary(omega, 2)
    assert s["tied_values"] == 2 and s["maps_in_ties"] == 7 and s["largest_tie"] == {"omega": 0.0, "maps": 4}
    assert s["top_k_cut"]["tied_maps"] == 3 and s["low_k_cut"]["before_cut"] == 2  # low-2 takes 2 of the 4 zeros
    assert "2 of them are in the low-2" in tie_note("low", 2, s["low_k_cut"])
    assert tie_summary(omega, 4)["top_k_cut"] is None and tie_summary(omega, 4)["low_k_cut"] is None  # all 4 zeros
    assert "3 of them are in the low-3" in tie_note("low", 3, tie_summary(omega, 3)["low_k_cut"])


def test_rank_reports_ties_and_lists_unreadable_files(tmp_path: Path, trained_tiny, capsys):
    import json
    import shutil

    weights, data = trained_tiny
    root = tmp_path / "data"
    shutil.copytree(data / "progan", root / "progan")
    bad = root / "progan" / "1_fake" / "zz_broken.png"
    bad.write_bytes(b"not a png")
    assert main(["rank", "--arch", "tiny_resnet", "--weights", str(weights), "--data", str(root), "--preset", "full",
                 "--device", "cpu", "--workers", "0", "--no-progress", "--min-prob", "0.5", "--k", "700",
                 "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert str(bad) in printed  # listed, not only counted
    t = pd.read_csv(tmp_path / "out" / "ffrs.csv")
    ties = json.loads((tmp_path / "out" / "ffrs.json").read_text())["ties"]
    counts = t["omega"].value_counts()
    assert ties["tied_values"] == int((counts > 1).sum()) and ties["maps_in_ties"] == int(counts[counts > 1].sum())
    omega = t["omega"].to_numpy()
    assert (ties["low_k_cut"] is not None) == bool(omega[719 - 700] == omega[720 - 700])


def test_confident_fakes_per_group_and_the_fragile_ranking_warning():
    from tffkit.analysis.rank import confident_groups

    labels = np.array([1] * 40 + [0] * 5)
    prob = np.r_[np.full(20, 0.95), np.full(15, 0.99), np.float32(0.9), np.full(4, 0.5), np.full(5, 0.99)]
    groups = ["a"] * 20 + ["b"] * 16 + ["c"] * 4 + ["a"] * 5
    found = confident_groups(groups, labels, prob, 0.9, "pattern")
    assert found["confident_fakes_per_group"] == {"a": 20, "b": 16}  # p = float32(0.9) counts, as on the device
    assert found["confident_fakes_groups"] == 2 and found["ranking_warning"] is None
    one = confident_groups(["a"] * 45, labels, prob, 0.9, "pattern")
    assert "one group (a)" in one["ranking_warning"] and "fewer than" not in one["ranking_warning"]
    few = confident_groups(groups, labels, prob, 0.97, "pattern")
    assert few["confident_fakes_per_group"] == {"b": 15} and "only 15 confident fakes" in few["ranking_warning"]
    no_groups = confident_groups([""] * 45, labels, prob, 0.9, "image")  # each image its own group: no table
    assert no_groups["confident_fakes_per_group"] is None and no_groups["confident_fakes_groups"] == 36


def test_rank_writes_groups_and_warns(tmp_path: Path, trained_tiny, capsys):
    weights, data = trained_tiny
    common = ["rank", "--arch", "tiny_resnet", "--weights", str(weights), "--data", str(data), "--sets", "gan_b",
              "--preset", "full", "--device", "cpu", "--workers", "0", "--no-progress", "--min-prob", "0.5"]
    import json

    assert main([*common, "--group-pattern", r"^0(\d)\d\.png$", "--out", str(tmp_path / "two")]) == 0
    summary = json.loads((tmp_path / "two" / "ffrs.json").read_text())
    per_group = summary["confident_fakes_per_group"]
    assert set(per_group) <= {"0", "1"} and sum(per_group.values()) == summary["fakes_used"]
    assert summary["confident_fakes_groups"] == len(per_group) and summary["group_source"] == "file-name pattern"
    assert f"only {summary['fakes_used']} confident fakes" in summary["ranking_warning"]  # at most 16 fakes
    assert "warning: the ranking rests on only" in capsys.readouterr().out
    assert main([*common, "--group-pattern", r"^(0)\d\d\.png$", "--out", str(tmp_path / "one")]) == 0
    assert "one group (0)" in json.loads((tmp_path / "one" / "ffrs.json").read_text())["ranking_warning"]
