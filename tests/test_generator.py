"""LRP into the generator (appendix M): the composed graph equals detector(preprocess(generator(z))), relevance
is conserved into the latent, the new rules hold in matrix form, neither network is modified, a planted
artefact channel is found and masking it hurts the detector more than random masking, runs are reproducible
and identical under two torchrun processes, and the generator checkpoint layouts load strictly and safely."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import run_torchrun
from lrp_helpers import pseudo_trained, randomise_batch_norm
from tffkit import distributed as tdist
from tffkit.analysis.generator import LatentSource, explain_generator
from tffkit.detectors import save_checkpoint
from tffkit.generation.compose import DetectorInput, GeneratorExplainer
from tffkit.generation.models import DCGANGenerator, ProGANGenerator, load_generator
from tffkit.lrp.rules import LRPConv

CPU = tdist.DistContext(0, 1, torch.device("cpu"))


def _progan() -> ProGANGenerator:
    torch.manual_seed(0)
    g = ProGANGenerator(16, (16, 8, 8)).eval()  # 4 → 8 → 16 px
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.2, 0.2)
    return g


def _dcgan() -> DCGANGenerator:
    torch.manual_seed(1)
    return randomise_batch_norm(DCGANGenerator(8, 4, 3).eval())


@pytest.mark.parametrize("make,size", [(_progan, 16), (_dcgan, 64)])
def test_composed_logits_equal_and_neither_network_is_modified(make, size):
    generator, detector = make(), pseudo_trained("tiny_resnet")
    before = [copy.deepcopy(m.state_dict()) for m in (generator, detector)]
    adapter = DetectorInput(size=32, crop=28)
    gex = GeneratorExplainer(generator, detector, adapter)
    z = LatentSource(3, gex.input_shape, seed=1).batch(range(3))
    with torch.no_grad():
        images = generator(z)
        want = detector(adapter(images)).reshape(-1)
    got_images, got = gex.images_and_logits(z)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    assert torch.allclose(got_images, (images + 1) / 2, atol=1e-6)
    assert {layer.name.split(".")[0] for layer in gex.units} == {"generator"}
    assert gex.output_layer in ("generator.toRGBLayers.2", "generator.main.12")  # the image's colour channels
    assert gex.output_layer not in {layer.name for layer in gex.units}
    res = explain_generator(gex, LatentSource(6, gex.input_shape), percent=10, repeats=2, min_prob=0.0,
                            batch_size=4)
    assert set(res["masking"]["kind"]) == {"baseline", "top", "random", "low", "matched"}
    assert torch.allclose(gex.logits(z), want, rtol=1e-5, atol=1e-6)  # masking is undone
    after = [m.state_dict() for m in (generator, detector)]
    assert all(torch.equal(b[k], a[k]) for b, a in zip(before, after, strict=True) for k in b)


@pytest.mark.parametrize("make", [_progan, _dcgan])
def test_relevance_reaches_the_latent_whole_without_biases(make):
    """With no additive constants (biases, BN mean and β) z⁺ (flat fallback), ε, pixel norm (the norm held
    constant), nearest upsampling, the output affine map (identity rule) and resizing are conservative: the
    latent receives the whole logit."""
    generator, detector = make().double(), pseudo_trained("tiny_resnet").double()
    with torch.no_grad():
        for m in (generator, detector):
            for name, p in m.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
            for b in m.modules():
                if isinstance(b, nn.BatchNorm2d):
                    b.running_mean.zero_()
    gex = GeneratorExplainer(generator, detector, DetectorInput(size=32), eps=1e-15, zplus_fallback="all")
    z = LatentSource(2, gex.input_shape, seed=3).batch(range(2)).double()
    totals = {}
    e = gex.explainer.explain(z, tap=lambda layer, rel, act: totals.__setitem__(layer.name, rel.sum().item()),
                              layers=gex.units)
    assert torch.allclose(e.input_relevance.flatten(1).sum(1), torch.ones(2, dtype=torch.float64), rtol=1e-6)
    assert all(abs(t - 2.0) < 1e-5 for t in totals.values())


def test_transposed_convolution_zplus_matches_matrix_form():
    torch.manual_seed(4)
    conv = nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1).double()
    x, eps = torch.randn(1, 3, 3, 3, dtype=torch.float64), 1e-6
    rel = torch.rand(conv(x).shape, dtype=torch.float64)
    xg = x.clone().requires_grad_(True)
    (got,) = torch.autograd.grad(LRPConv(conv, eps)(xg), xg, rel)

    def dense(w):
        return torch.autograd.functional.jacobian(
            lambda v: F.conv_transpose2d(v, w, None, 2, 1).reshape(-1), torch.zeros_like(x)).reshape(-1, x.numel())

    mp, mn = dense(conv.weight.clamp(min=0)), dense(conv.weight.clamp(max=0))
    v = x.reshape(-1)
    contrib = mp * v.clamp(min=0) + mn * v.clamp(max=0)
    expected = (contrib / (contrib.sum(1) + eps)[:, None] * rel.reshape(-1)[:, None]).sum(0)
    assert torch.allclose(got.reshape(-1), expected, atol=1e-12)


def test_pixel_norm_and_nearest_upsampling_pass_relevance():
    from tffkit.lrp import Explainer

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(4, 2, 1, bias=False), nn.Linear(2, 1, bias=False)

        def forward(self, x):
            from tffkit.generation.models import pixel_norm
            h = F.interpolate(pixel_norm(x), scale_factor=2, mode="nearest")
            return self.fc(self.conv(h).mean((2, 3)))

    model = Tiny().double().eval()
    ex = Explainer(model, input_shape=(4, 3, 3), eps=1e-15, zplus_fallback="all")
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    e = ex.explain(x)
    assert torch.allclose(e.input_relevance.sum((1, 2, 3)), torch.ones(2, dtype=torch.float64))


class Planted(nn.Module):
    """Latent → 4 maps of 8×8 → nearest ×2 → ``feat`` (4 channels) → ``rgb``. Channel 3 of the first layer is a
    fixed 8×8 checkerboard (its bias); ``feat`` channel 2 alone copies it, so only that unit carries the
    period-4 artefact into the image."""

    def __init__(self):
        super().__init__()
        self.fc, self.feat, self.rgb = nn.Linear(8, 4 * 64), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 3, 1)
        with torch.no_grad():
            checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1.0
            self.fc.weight[192:] = 0
            self.fc.bias[192:] = checker.reshape(-1)
            self.feat.weight[:, 3] = 0
            self.feat.weight[2] = 0
            self.feat.weight[2, 3, 1, 1] = 1.0
            self.feat.bias[2] = 0
            self.rgb.weight[:, 2] = 0.4
        self.tff_input_shape = (8,)

    def forward(self, z):
        x = F.leaky_relu(self.fc(z), 0.2).reshape(-1, 4, 8, 8)
        x = F.leaky_relu(self.feat(F.interpolate(x, scale_factor=2, mode="nearest")), 0.2)
        return torch.tanh(self.rgb(x))


def _trained_detector(generator: Planted) -> nn.Module:
    """A small CNN trained for a few seconds on generated images with the artefact (fake) and without (real)."""
    clean = copy.deepcopy(generator)
    with torch.no_grad():
        clean.rgb.weight[:, 2] = 0
    torch.manual_seed(5)
    det = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1))
    opt = torch.optim.Adam(det.parameters(), lr=1e-2)
    for _ in range(120):
        z = torch.randn(32, 8)
        with torch.no_grad():
            x = torch.cat([generator(z[:16]), clean(z[16:])])
        y = torch.cat([torch.ones(16), torch.zeros(16)])
        loss = F.binary_cross_entropy_with_logits(det(x).reshape(-1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return det.eval()


def test_the_planted_artefact_channel_ranks_first_and_masking_it_hurts_most(one_thread):
    generator = Planted().eval()
    gex = GeneratorExplainer(generator, _trained_detector(generator), DetectorInput(mean=(0.5,) * 3, std=(0.5,) * 3))
    source = LatentSource(32, (8,), seed=7)
    res = explain_generator(gex, source, percent=0.3, repeats=5, min_prob=0.9, batch_size=8)
    assert res["summary"]["fakes_used"] >= 12  # of the 16 ranking inputs
    assert res["ranking"]["key"].iloc[0] == "generator.feat.#2(T=4)"
    table = res["summary_table"].set_index("kind")
    assert table.loc["top", "median_prob"] < 0.5 < table.loc["baseline", "median_prob"]
    assert table.loc["top", "median_change_pp"] < table.loc["random", "median_change_pp"] - 30
    masking = res["masking"]
    top = masking[masking["kind"] == "top"]
    assert (top["mean_abs_change"] > 0).all() and np.isfinite(top["psnr_db"]).all()


def test_generator_job_is_reproducible_and_identical_under_two_processes(tmp_path, one_thread):
    """The one-process runs are this process with one thread, as each torchrun process has (one launch)."""
    generator = _progan()
    path = tmp_path / "progan.pth"
    torch.save({"avgG": generator.state_dict(), "netG": generator.state_dict()}, path)
    weights = save_checkpoint(tmp_path / "det.pth", pseudo_trained("tiny_resnet"))
    common = ["generator", "--generator", "progan", "--generator-weights", str(path), "--arch", "tiny_resnet",
              "--weights", str(weights), "--images", "12", "--batch-size", "4", "--min-prob", "0", "--percent", "10",
              "--random-repeats", "2", "--device", "cpu", "--resamples", "50"]
    from tffkit.cli import main

    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--out", str(tmp_path / "b")]) == 0
    run_torchrun([*common, "--out", str(tmp_path / "two")], nproc=2)
    for name in ("generator_ffrs.csv", "masking.csv", "masking_summary.csv", "masking_intervals.csv"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text(), name
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "two" / name).read_text(), name
    from tffkit.analysis.generator_stats import masking_intervals  # the intervals recompute from masking.csv

    again = masking_intervals(pd.read_csv(tmp_path / "a" / "masking.csv"), resamples=50)
    written = pd.read_csv(tmp_path / "a" / "masking_intervals.csv")
    assert np.allclose(again[["delta_pp", "low", "high"]], written[["delta_pp", "low", "high"]])
    table = pd.read_csv(tmp_path / "a" / "generator_ffrs.csv")
    assert table["layer"].str.startswith("generator.").all() and len(table) == 16 * 16 + 16 + 4 * 8  # no toRGB
    for figure in ("masking_boxplot.png", "top_units_per_layer.png"):
        assert (tmp_path / "a" / figure).stat().st_size > 0


class _Config:
    """Stands in for the GAN zoo's pickled training config."""

    def __reduce__(self):
        return (_boom, ())


def _boom():
    raise RuntimeError("unpickling ran code")


def test_gan_zoo_layout_loads_strictly_and_a_pickled_config_needs_trust(tmp_path):
    generator = _progan()
    zoo = {f"{k.rsplit('.', 1)[0]}.module.{k.rsplit('.', 1)[1]}": v for k, v in generator.state_dict().items()}
    plain = tmp_path / "plain.pth"
    torch.save({"netG": zoo}, plain)
    loaded = load_generator("progan", plain)
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(loaded(z), generator(z))
    assert loaded.depths == (16, 8, 8) and loaded.latent == 16
    pickled = tmp_path / "pickled.pth"
    with open(pickled, "wb") as f:
        torch.save({"config": _Config(), "avgG": generator.state_dict()}, f, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(ValueError, match="--trust-checkpoint"):
        load_generator("progan", pickled)  # weights_only: nothing is unpickled, nothing runs
    with pytest.raises(ValueError, match="unpickling ran code"):
        load_generator("progan", pickled, trust=True)  # the opt-in really unpickles
    dcgan = _dcgan()
    torch.save(dcgan.state_dict(), tmp_path / "dcgan.pth")
    assert load_generator("dcgan", tmp_path / "dcgan.pth").main[0].weight.shape == (8, 32, 4, 4)
    with pytest.raises(ValueError, match="not a DCGAN"):
        load_generator("dcgan", plain)


def test_detector_input_takes_the_detectors_normalisation():
    from tffkit.detectors import load_detector
    from tffkit.preprocess import CLIP_MEAN, CLIP_STD

    adapter = DetectorInput.for_detector(load_detector("univfd2023@tiny", random_weights=True))
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    expected = ((x + 1) / 2 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    assert torch.allclose(adapter(x), expected, atol=1e-6)
    assert torch.allclose(DetectorInput.for_detector(nn.Identity())(x), DetectorInput()(x))  # ImageNet otherwise


class _Spy:
    """A latent source that records which inputs each phase of the step generates."""

    def __init__(self, source):
        self.source, self.phase, self.seen = source, "rank", {"rank": set(), "eval": set()}
        self.shape = source.shape

    def __len__(self):
        return len(self.source)

    def batch(self, indices):
        self.seen[self.phase].update(int(i) for i in indices)
        return self.source.batch(indices)


def test_the_step_never_evaluates_on_an_input_it_ranked_on(monkeypatch, one_thread):
    from tffkit.analysis import generator as gen

    generator = Planted().eval()
    gex = GeneratorExplainer(generator, _trained_detector(generator), DetectorInput(mean=(0.5,) * 3, std=(0.5,) * 3))
    spy = _Spy(LatentSource(20, (8,), seed=7))
    ranking = gen.rank_generator

    def rank_then_evaluate(*args, **kwargs):
        out = ranking(*args, **kwargs)
        spy.phase = "eval"
        return out

    monkeypatch.setattr(gen, "rank_generator", rank_then_evaluate)
    res = gen.explain_generator(gex, spy, percent=0.3, repeats=2, min_prob=0.5, batch_size=8)
    assert spy.seen["rank"] == set(range(0, 20, 2)) and spy.seen["eval"] == set(range(1, 20, 2))
    assert set(res["masking"]["index"]) == set(range(1, 20, 2)) and set(res["rank_probs"]["index"]) == \
        set(range(0, 20, 2))
    assert res["summary"]["halves"]["rank_inputs"] == res["summary"]["halves"]["eval_inputs"] == 10
    # input i is the same latent in either half: the evaluation's unmasked p equals a direct forward
    z = LatentSource(20, (8,), seed=7).batch([3])
    base = res["masking"][(res["masking"]["kind"] == "baseline") & (res["masking"]["index"] == 3)]["prob"].iloc[0]
    assert base == pytest.approx(float(torch.sigmoid(gex.logits(z))[0]), rel=1e-6)


def test_psnr_matched_masks_match_the_top_masks_image_change(one_thread):
    from tffkit.analysis.generator_stats import match_size

    calls = []

    def falling(m):  # a mask of m units: 40 dB − 0.1 dB per unit
        calls.append(m)
        return 40.0 - 0.1 * m

    assert match_size(falling, 30.04, 1, 1000) == (100, pytest.approx(30.0))
    assert len(set(calls)) <= 13  # bisection: about log2(1000) + 2 evaluations
    assert match_size(falling, 0.0, 1, 200) == (200, pytest.approx(20.0))  # unreachable: the largest, reported
    assert match_size(falling, 45.0, 1, 200) == (1, pytest.approx(39.9))
    generator = Planted().eval()
    gex = GeneratorExplainer(generator, _trained_detector(generator), DetectorInput(mean=(0.5,) * 3, std=(0.5,) * 3))
    res = explain_generator(gex, LatentSource(32, (8,), seed=7), percent=2, repeats=3, min_prob=0.5,
                            batch_size=8, psnr_tolerance=1.0)
    match, masking = res["summary"]["psnr_match"], res["masking"]
    top = masking[masking["kind"] == "top"]["psnr_db"].median()
    assert match["top_psnr_db"] == pytest.approx(top)
    for r, m in enumerate(match["sizes"]):
        part = masking[(masking["kind"] == "matched") & (masking["replica"] == r)]
        assert (part["k"] == m).all() and part["psnr_db"].median() == pytest.approx(match["matched_psnr_db"][r])
    assert match["matched"] == all(abs(g) <= 1.0 for g in match["gap_db"])
    same_size = masking[masking["kind"] == "random"]["psnr_db"].median()
    # matched masks change the image as much as the top mask (within the tolerance or as near as reachable),
    # far more than random masks of the top mask's size
    assert abs(match["matched_psnr_db"][0] - top) < abs(same_size - top)


def test_delta_p_intervals_over_inputs_and_the_known_answer(tmp_path):
    from scipy.special import comb

    from tffkit.analysis.generator_stats import known_answer, masking_intervals

    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        p0 = rng.uniform(0.6, 1.0)
        rows.append({"index": 2 * i + 1, "kind": "baseline", "replica": 0, "prob": p0})
        rows.append({"index": 2 * i + 1, "kind": "top", "replica": 0, "prob": p0 - 0.3 + rng.normal(0, 0.05)})
        for r in range(2):
            rows.append({"index": 2 * i + 1, "kind": "random", "replica": r, "prob": p0 + rng.normal(0, 0.05)})
            rows.append({"index": 2 * i + 1, "kind": "matched", "replica": r, "prob": p0 - 0.3 + rng.normal(0, 0.05)})
    per_image = pd.DataFrame(rows)
    iv = masking_intervals(per_image, resamples=500).set_index("mask")
    assert iv.loc["top", "inputs"] == 40 and iv.loc["top", "low"] < -30 < iv.loc["top", "high"]
    assert iv.loc["top − random", "shown"] and iv.loc["top − random", "high"] < 0
    assert not iv.loc["top − matched", "shown"]  # same mean change: no direction
    want = per_image.pivot_table(index="index", columns="kind", values="prob", aggfunc="mean")
    assert iv.loc["random", "delta_pp"] == pytest.approx(100 * (want["random"] - want["baseline"]).mean())
    # ten units, two near the upsampling layer, both in the top-2: P = 1 / C(10, 2)
    layers = ["up"] * 2 + ["other"] * 8
    got = known_answer(["up", "up"], layers, ["up"])
    assert got["p_value"] == pytest.approx(1 / comb(10, 2)) and got["recovered"] and got["expected"] == 0.4
    assert not known_answer(["other", "up"], layers, ["up"])["recovered"]
    assert known_answer(["other", "other"], layers, ["up"])["p_value"] == 1.0


def test_report_section_carries_intervals_and_never_a_direction_it_did_not_show(tmp_path, one_thread):
    from tffkit.jobs.generator import write_generator
    from tffkit.report.html import _figures
    from tffkit.report.section_generator import section_generator
    from tffkit.results import write_json

    generator = Planted().eval()
    gex = GeneratorExplainer(generator, _trained_detector(generator), DetectorInput(mean=(0.5,) * 3, std=(0.5,) * 3))
    res = explain_generator(gex, LatentSource(24, (8,), seed=7), percent=0.3, repeats=2, min_prob=0.5, batch_size=8,
                            near=["generator.feat"], resamples=200)
    write_generator(res, tmp_path / "generator" / "planted")
    summary = res["summary"]
    summary["delta_pp"]["top − matched"] = {"delta_pp": -2.0, "low": -5.0, "high": 1.0, "shown": False}
    write_json(tmp_path / "generator" / "generators.json", {"planted": summary})
    section = section_generator(tmp_path, _figures)
    body, sentence = section["body"], section["sentence"]
    assert "recovered for 1 of 1" in sentence and "planted 1 / 1 (chance 0.0" in sentence
    assert "against PSNR-matched random masks (the fair comparison: an equal image change) it is not shown for 1" \
        in sentence
    assert "lower for 1 (planted)" in sentence  # top − random: shown, lower
    for text in ("top: Δp (pp) [95%]", "random, PSNR-matched: Δp (pp) [95%]", "PSNR gap to top (dB)",
                 "inputs ranked / evaluated", "12 / 12", "not shown (-2.0 [-5.0, +1.0] pp)"):
        assert text in body, text
    assert section_generator(tmp_path / "nothing", _figures) is None


def test_the_cli_the_study_and_the_api_share_one_default_per_option():
    """tff generator's flags and the study's steps.generator keys are GeneratorOptions' fields with its defaults."""
    import argparse

    from tffkit.cli.generator import add_arguments
    from tffkit.jobs.generator import GeneratorOptions
    from tffkit.jobs.options import default_of
    from tffkit.jobs.study_config import SCHEMA

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--generator", "dcgan", "--generator-weights", "g.pth", "--out", "o"])
    keys = ("images", "percent", "random_repeats", "min_prob", "seed", "psnr_tolerance", "resamples")
    for key in keys:
        assert getattr(args, key) == default_of(GeneratorOptions, key) == SCHEMA["steps.generator"][key][1], key
    assert list(SCHEMA["steps.generator"]) == ["enabled", "generators", *keys]  # study.json keeps its key order
    assert args.batch_size == 16 and tuple(args.out_range) == (-1.0, 1.0) and not hasattr(args, "preset")
