"""The public code's behaviours as switches (issue 16): each switch on hand-built inputs, where the two
behaviours differ exactly as documented, and ``--paper-code`` setting every switch through the CLI and the study."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score

from conftest import make_tree
from lrp_helpers import pseudo_trained
from tffkit import distributed as tdist
from tffkit.analysis import activations as act
from tffkit.analysis import color as col
from tffkit.analysis import lrpmax as lm
from tffkit.cli import main
from tffkit.conventions import SWITCHES, resolve
from tffkit.data import find_samples, normalize
from tffkit.detectors import save_checkpoint
from tffkit.lrp import Explainer
from tffkit.metrics import binary_metrics, metrics_table, probabilities

pytestmark = pytest.mark.usefixtures("one_thread")


def test_resolve_takes_the_preset_unless_a_switch_is_given():
    ours = resolve(False, prob_dtype=None, cal_compare=None)
    assert ours == {"paper_code": False, "prob_dtype": "float64", "cal_compare": "ge"}
    theirs = resolve(True, **{name: None for name in SWITCHES})
    assert theirs == {"paper_code": True, **{name: sw.paper_code for name, sw in SWITCHES.items()}}
    assert resolve(True, dropout_site="folded", bounds=None) == {"paper_code": True, "dropout_site": "folded",
                                                                 "bounds": "paper-code"}
    with pytest.raises(ValueError, match="prob_dtype must be one of"):
        resolve(False, prob_dtype="float16")


def test_float32_probabilities_saturate_tie_and_change_ap():
    # three confident images (logits 18, 20, 25): distinct in float64, all exactly 1.0 in float32
    labels = np.array([1, 0, 1, 0, 1])
    logits = np.array([18.0, 20.0, 25.0, 1.0, -2.0])
    p64, p32 = probabilities(logits, "float64"), probabilities(logits, "float32")
    assert len(set(p64)) == 5 and p64.max() < 1
    assert p32.tolist()[:3] == [1.0, 1.0, 1.0]
    assert np.array_equal(p32, torch.sigmoid(torch.tensor(logits, dtype=torch.float32)).double().numpy())
    m64, m32 = binary_metrics(labels, p64), binary_metrics(labels, p32)
    assert math.isclose(m64["ap"], average_precision_score(labels, p64))
    assert math.isclose(m32["ap"], average_precision_score(labels, p32))
    assert math.isclose(m64["ap"], (1 + 2 / 3 + 3 / 5) / 3)  # 25 (fake) ranks above 20 (real)
    assert math.isclose(m32["ap"], 2 / 3 * 2 / 3 + 3 / 5 * 1 / 3)  # the three tie at 1.0
    assert (m64["n_saturated"], m64["n_tied"]) == (0, 0)
    assert (m32["n_saturated"], m32["n_tied"]) == (3, 3)
    scores = pd.DataFrame({"set": "A", "class": "", "label": labels, "prob": p32})
    table = metrics_table(scores)
    assert table.loc[table["set"] == "mean", "n_saturated"].item() == 3
    assert probabilities(np.array([-800.0, 800.0]), "float64").tolist() == [0.0, 1.0]


def test_calibrated_threshold_image_flips_between_ge_and_gt():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    probs = np.array([0.1, 0.2, 0.6, 0.5, 0.7, 0.8, 0.9])
    ge, gt = binary_metrics(labels, probs, cal_compare="ge"), binary_metrics(labels, probs, cal_compare="gt")
    assert ge["cal_threshold"] == gt["cal_threshold"] == 0.7  # the fake scored 0.7 sets the threshold
    assert (ge["cal_fake_acc"], gt["cal_fake_acc"]) == (0.75, 0.5)  # … and counts as fake only with ≥
    assert ge["cal_real_acc"] == gt["cal_real_acc"] == 1.0
    assert ge["fake_acc"] == gt["fake_acc"] == 0.75  # threshold 0.5 is always p > 0.5


@pytest.fixture(scope="module")
def negative_gamma_model():
    """A tiny ResNet with BN γ < 0 on channel 3 of layer1.0.bn1 (channel 5 stays positive)."""
    model = pseudo_trained("tiny_resnet")
    with torch.no_grad():
        model.layer1[0].bn1.weight[3] = -1.2
    return model


def test_pre_bn_site_reads_the_raw_conv_output(negative_gamma_model):
    model = negative_gamma_model
    ex = Explainer(model)
    torch.manual_seed(3)
    x = torch.randn(6, 3, 32, 32)
    layer, tffs = "layer1.0.conv1", [("layer1.0.conv1", 3), ("layer1.0.conv1", 5)]
    assert act.bn_scale(ex, tffs).tolist()[0] < 0 < act.bn_scale(ex, tffs).tolist()[1]
    raw = {}
    handle = model.layer1[0].conv1.register_forward_hook(lambda m, i, o: raw.__setitem__("out", o.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    folded, fh, fw = act.MaxActivationTap(ex, tffs, "folded").run(x)
    pre, ph, pw = act.MaxActivationTap(ex, tffs, "pre-bn").run(x)
    expected = raw["out"][:, [3, 5]].flatten(2).amax(2)  # the original, unfolded conv module
    assert torch.allclose(pre, expected, rtol=1e-4, atol=1e-5)
    scale, zero = (getattr(ex.module(layer), b)[[3, 5]] for b in ("pre_bn_scale", "pre_bn_zero"))
    # γ > 0: the same neuron, the value rescaled — Mood's test is unchanged
    assert torch.equal(ph[:, 1], fh[:, 1]) and torch.equal(pw[:, 1], fw[:, 1])
    assert torch.allclose(pre[:, 1], (folded[:, 1] - zero[1]) / scale[1], rtol=1e-4, atol=1e-5)
    a, b = pre[:, 1].double().numpy(), folded[:, 1].double().numpy()
    assert col.mood_test(a[:3], a[3:])[1] == col.mood_test(b[:3], b[3:])[1]
    # γ < 0: the raw maximum sits where the folded map is lowest, not at its maximum
    acts = {}
    ex.forward(x, tap=lambda lay, act: acts.__setitem__(lay.name, act), layers=[layer])
    folded_min = acts[layer][:, 3].flatten(1).amin(1)
    assert torch.allclose(pre[:, 0], (folded_min - zero[0]) / scale[0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(pre[:, 0], (folded[:, 0] - zero[0]) / scale[0], rtol=1e-3)
    assert not (torch.equal(ph[:, 0], fh[:, 0]) and torch.equal(pw[:, 0], fw[:, 0]))


def test_pre_bn_site_refuses_channels_with_zero_gamma():
    model = pseudo_trained("tiny_resnet")
    with torch.no_grad():
        model.layer1[0].bn1.weight[2] = 0.0
    with pytest.raises(ValueError, match="BN γ = 0"):
        act.MaxActivationTap(Explainer(model), [("layer1.0.conv1", 2)], "pre-bn")


def test_lrpmax_seed_one_times_activation_equals_the_default_map(tmp_path, negative_gamma_model):
    tree = make_tree(tmp_path / "d", {"progan": []}, n=3, size=32)
    samples = [s for s in find_samples(tree) if s.label == 1]
    ex = Explainer(negative_gamma_model)
    tffs = [("conv1", 1), ("layer1.0.conv1", 5), ("layer2.0.conv2", 4)]
    ctx = tdist.DistContext(0, 1, torch.device("cpu"))
    args = dict(preset="full", batch_size=3, num_workers=0, progress=False)
    top = lm.top_images(ex, tffs, samples, ["progan"], 2, ctx, **args)
    maps = {}
    for seed in ("activation", "one"):
        got = {}
        table = lm.compute_lrpmax(ex, tffs, samples, top, ctx, neuron_seed=seed,
                                  on_pair=lambda row, img, m, got=got: got.__setitem__(
                                      (row["tff"], row["index"]), m), **args)
        maps[seed] = (table, got)
    (t_act, m_act), (t_one, m_one) = maps["activation"], maps["one"]
    assert (t_one["seed"] == 1).all() and np.allclose(t_act["seed"], t_act["activation"].clip(lower=0))
    assert (t_act["activation"] > 0).sum() >= len(t_act) // 2
    for (j, i), m in m_act.items():
        a = float(top[(top["tff"] == j) & (top["index"] == i)]["activation"].iloc[0])
        assert np.allclose(m_one[(j, i)] * max(a, 0.0), m, rtol=1e-4, atol=1e-6 * np.abs(m).max() + 1e-12)
    # the pre-BN site ranks the images by the raw maximum; the seed stays the folded maximum (see the next test)
    pre = lm.top_images(ex, [("layer1.0.conv1", 3)], samples, ["progan"], 3, ctx, "pre-bn", **args)
    t = lm.compute_lrpmax(ex, [("layer1.0.conv1", 3)], samples, pre, ctx, site="pre-bn", **args)
    folded = lm.top_images(ex, [("layer1.0.conv1", 3)], samples, ["progan"], 3, ctx, **args).set_index("index")
    assert np.allclose(t["seed"], folded.loc[t["index"], "activation"].clip(lower=0), rtol=1e-6)


def test_lrpmax_paper_code_seeds_the_positive_folded_argmax_of_a_negative_gamma_channel(tmp_path,
                                                                                         negative_gamma_model):
    """γ < 0 (channel 3): images ranked by the raw maximum, but the seed neuron is the argmax of the positive part of
    the folded map, as in the public code; channel 7 (β = −1000) has no positive folded value: an all-zero map."""
    import copy

    model = copy.deepcopy(negative_gamma_model)
    with torch.no_grad():
        model.layer1[0].bn1.bias[7] = -1e3
    tree = make_tree(tmp_path / "d", {"progan": []}, n=4, size=32)
    samples = [s for s in find_samples(tree) if s.label == 1]
    ex, layer = Explainer(model), "layer1.0.conv1"
    tffs = [(layer, 3), (layer, 7)]
    ctx = tdist.DistContext(0, 1, torch.device("cpu"))
    args = dict(preset="full", batch_size=4, num_workers=0, progress=False)
    top = lm.top_images(ex, tffs, samples, ["progan"], 4, ctx, "pre-bn", **args)
    seen = []
    table = lm.compute_lrpmax(ex, tffs, samples, top, ctx, neuron_seed="one", site="pre-bn", patch_box="paper-code",
                              on_pair=lambda row, img, m: seen.append((row, img, m)), **args)
    assert len(seen) == len(table) == 8
    n_positive = 0
    for row, img, rmap in seen:
        x = normalize(img[None])
        acts = {}
        ex.forward(x, tap=lambda lay, a, acts=acts: acts.__setitem__(lay.name, a), layers=[ex.by_name[layer]])
        c = tffs[int(row["tff"])][1]
        fmap = acts[layer][0, c]
        raw_h, raw_w = int(row["h"]), int(row["w"])  # where the raw (pre-BN) map peaks: the folded minimum
        if c == 7:
            assert fmap.max() < 0 and row["seed"] == 0 and not rmap.any()  # z = 0: an all-zero map
            assert row["bbox"] == (0, 0, 32, 32)  # the public box of an empty map: the whole image
            continue
        assert fmap.max() > 0
        n_positive += 1
        width = fmap.shape[1]
        pos = int(torch.argmax(fmap.clamp(min=0)))
        assert (row["seed_h"], row["seed_w"]) == (pos // width, pos % width) != (raw_h, raw_w)
        assert row["seed"] == 1
        seeds = {layer: torch.zeros(1, 16, *fmap.shape)}
        seeds[layer][0, c, pos // width, pos % width] = 1.0
        expected = ex.explain_neurons(x, seeds).sum(1)[0].double().numpy()
        assert np.allclose(rmap, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    assert n_positive == 4


def test_random_resized_crop_is_torchvisions_seeded_per_image(tmp_path):
    """The public ranking crop: boxes drawn as torchvision's RandomResizedCrop.get_params draws them (same
    distribution), the crop resized as torchvision resizes a PIL image, and one draw per (seed, dataset index)."""
    from collections import Counter

    from PIL import Image
    from torchvision.transforms import InterpolationMode, RandomResizedCrop
    from torchvision.transforms import functional as tvf

    from tffkit.data import ImageDataset
    from tffkit.preprocess import Preprocessing, random_resized_crop, random_resized_crop_box

    blank = Image.new("RGB", (256, 256))
    torch.manual_seed(0)
    n = 4000
    theirs = Counter(tuple(RandomResizedCrop.get_params(blank, (0.99, 1.0), (0.99, 1.0))[2:]) for _ in range(n))
    rng = np.random.default_rng(0)
    boxes = [random_resized_crop_box(256, 256, rng) for _ in range(n)]
    ours = Counter(b[2:] for b in boxes)
    assert {k for k, c in theirs.items() if c > 0.02 * n} == {k for k, c in ours.items() if c > 0.02 * n}
    assert all(abs(ours[k] - c) < 0.03 * n for k, c in theirs.items())
    assert all(0 <= top <= 256 - h and 0 <= left <= 256 - w for top, left, h, w in boxes)
    assert len({(top, left) for top, left, _, _ in boxes}) > 4  # the position varies too
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (256, 240, 3), dtype=np.uint8))
    top, left, h, w = random_resized_crop_box(240, 256, np.random.default_rng(7))
    expected = tvf.resized_crop(img, top, left, h, w, [224, 224], InterpolationMode.BILINEAR)
    got = random_resized_crop(img, 224, np.random.default_rng(7))
    assert np.array_equal(np.asarray(got), np.asarray(expected))
    # in the data pipeline: seeded by (seed, dataset index) — the same image gets the same crop in any pass
    tree = make_tree(tmp_path / "d", {"progan": []}, n=3, size=128)
    samples = find_samples(tree)

    def crops(prep):
        return [ImageDataset(samples, preprocessing=prep)[i][0] for i in range(len(samples))]

    prep = Preprocessing(crop=112, crop_mode="random-resized", crop_seed=3)
    first, again = crops(prep), ImageDataset(samples, preprocessing=prep)[2][0]
    other_seed = crops(Preprocessing(crop=112, crop_mode="random-resized"))
    centre = crops(Preprocessing(crop=112))
    assert first[2].shape == (3, 112, 112) and torch.equal(first[2], again)
    assert not all(torch.equal(a, b) for a, b in zip(first, other_seed, strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(first, centre, strict=True))  # resized, not cut out
    assert "random resized crop 112" in prep.describe() and prep.to_dict()["crop_mode"] == "random-resized"


def test_rank_paper_code_takes_the_random_resized_crop(tmp_path):
    from tffkit.jobs.rank import RankOptions, rank

    data = make_tree(tmp_path / "d", {"progan": []}, n=3, size=256)
    weights = save_checkpoint(tmp_path / "w.pth", pseudo_trained("tiny_resnet"))
    args = dict(arch="tiny_resnet", weights=str(weights), min_prob=0.0, k=4, preset="center224", batch_size=8,
                device="cpu", workers=0, progress=False, paper_code=True)
    paper = rank(data, options=RankOptions(**args)).ranking
    same = rank(data, options=RankOptions(**args)).ranking
    other = rank(data, options=RankOptions(**args, seed=1)).ranking
    centre = rank(data, options=RankOptions(**args, rank_crop="center")).ranking
    pd.testing.assert_frame_equal(paper, same)
    assert not np.array_equal(paper["omega"], other["omega"]) and not np.array_equal(paper["omega"], centre["omega"])


def test_median_change_in_points_and_percent_with_one_sign(monkeypatch):
    def table(probs):
        return pd.DataFrame({"path": list("abcdefg"), "set": ["g"] * 3 + ["h"] * 2 + ["u"] * 2,
                             "label": 1, "prob": probs})

    colour = table([0.9, 0.8, 0.6, 0.4, 0.4, 0.5, 0.5])
    gray = table([0.1, 0.2, 0.3, 0.5, 0.5, 0.5, 0.5])
    probs, changes = col.median_probability_change(colour, gray, 0.2)
    c = changes.set_index("set")
    assert list(changes.columns) == col.MEDIAN_COLUMNS
    assert math.isclose(c.loc["g", "median_change_pp"], -60.0) and math.isclose(c.loc["g", "median_change_pct"], -75.0)
    assert math.isclose(c.loc["h", "median_change_pp"], 10.0) and math.isclose(c.loc["h", "median_change_pct"], 25.0)
    assert c.loc["u", "median_change_pp"] == 0
    from tffkit.report import figures_tff

    seen = []
    monkeypatch.setattr(figures_tff, "save_figure", lambda fig, path: seen.append(fig))
    figures_tff.probability_boxplot(probs, changes, "unused.png")
    assert [t.get_text() for t in seen[0].axes[0].texts] == ["-60.0 pp", "+10.0 pp", "+0.0 pp"]


def test_report_states_the_same_signed_change(tmp_path):
    from tffkit.report.html import section_color

    folder = tmp_path / "color"
    folder.mkdir()
    pd.DataFrame({"version": ["colour", "grayscale"], "A AP": [90.0, 60.0]}).to_csv(
        folder / "table_color_gray.csv", index=False)
    pd.DataFrame([{"set": "A", "n": 3, "median_colour": 0.8, "median_grayscale": 0.2, "median_change_pp": -60.0,
                   "median_change_pct": -75.0}]).to_csv(folder / "median_probability.csv", index=False)
    sec = section_color(tmp_path, {"detector": {}, "data": {"train_set": []}}, "color", "t")
    assert "lowers" in sec["sentence"] and "A -60.0 pp (-75.0%)" in sec["sentence"]
    assert "change of the median (pp)" in sec["body"] and "median_drop" not in sec["body"]


def _ranking(path: Path, tffs) -> Path:
    pd.DataFrame({"rank": range(1, len(tffs) + 1), "layer": [t[0] for t in tffs], "channel": [t[1] for t in tffs],
                  "omega": np.linspace(0.5, 0.1, len(tffs))}).to_csv(path, index=False)
    return path


def _settings(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())["settings"]


PAPER = {name: sw.paper_code for name, sw in SWITCHES.items()}


@pytest.mark.tier2  # every command end to end (tier 1 runs each command in its own tests)
def test_paper_code_flag_sets_every_switch_of_every_command(tmp_path, negative_gamma_model):
    tree = make_tree(tmp_path / "d", {"progan": [], "stylegan": []}, n=3, size=32)
    weights = str(save_checkpoint(tmp_path / "w.pth", negative_gamma_model))
    ranking = str(_ranking(tmp_path / "r.csv", [("layer1.0.conv1", 3), ("conv1", 2)]))
    common = ["--arch", "tiny_resnet", "--weights", weights, "--device", "cpu", "--workers", "0", "--no-progress",
              "--preset", "full", "--batch-size", "6", "--paper-code"]
    commands = {
        "evaluate": (["--data", str(tree)], ("prob_dtype", "cal_compare")),
        "dropout": (["--data", str(tree), "--ranking", ranking, "--k", "1", "--random-repeats", "1"],
                    ("dropout_site", "prob_dtype", "cal_compare", "random_k")),
        "lrpmax": (["--data", str(tree), "--ranking", ranking, "--k", "2", "--per-tff", "1", "--show", "1"],
                   ("neuron_seed", "bounds", "activation_site", "zplus_fallback", "patch_box")),
        "color": (["--data", str(tree), "--ranking", ranking, "--k", "2", "--min-prob", "0"],
                  ("activation_site", "prob_dtype")),
        "rank": (["--data", str(tree), "--min-prob", "0", "--k", "4"], ("bounds", "zplus_fallback", "rank_crop")),
        "explain": (["--data", str(tree), "--max-per-class", "1"], ("bounds", "zplus_fallback")),
    }
    for name, (extra, names) in commands.items():
        out = tmp_path / name
        assert main([name, *common, *extra, "--out", str(out)]) == 0, name
        assert _settings(out) == {"paper_code": True, **{n: PAPER[n] for n in names}}, name
    scores = pd.read_csv(tmp_path / "evaluate" / "scores.csv")
    assert np.array_equal(scores["prob"], probabilities(scores["logit"].to_numpy(), "float32"))
    assert {"n_saturated", "n_tied"} <= set(pd.read_csv(tmp_path / "evaluate" / "metrics.csv").columns)
    assert {"n_saturated", "n_tied"} <= set(pd.read_csv(tmp_path / "dropout" / "dropout.csv").columns)
    index = pd.read_csv(tmp_path / "lrpmax" / "lrpmax_index.csv")
    assert set(index["seed"]) <= {0.0, 1.0} and (index["seed"] == 1).any() and set(index["neuron_seed"]) == {"one"}
    assert set(index["activation_site"]) == {"pre-bn"}
    summary = json.loads((tmp_path / "lrpmax" / "lrpmax.json").read_text())
    assert (summary["neuron_seed"], summary["bounds"], summary["activation_site"]) == ("one", "paper-code", "pre-bn")
    assert summary["patch_box"] == "paper-code"
    assert summary["n_negative_gamma"] == 1 and summary["negative_gamma_keys"] == ["layer1.0.conv1.#3(T=16)"]
    colour = json.loads((tmp_path / "color" / "color.json").read_text())
    assert colour["activation_site"] == "pre-bn" and colour["n_negative_gamma"] == 1
    tests = pd.read_csv(tmp_path / "color" / "mood_tests.csv")
    assert tests["negative_gamma"].tolist() == [True, False] * 2 and set(tests["activation_site"]) == {"pre-bn"}

    # an explicit switch overrides the preset; without --paper-code every switch is ours
    out = tmp_path / "dropout_folded"
    assert main(["dropout", *common, *commands["dropout"][0], "--site", "folded", "--out", str(out)]) == 0
    assert _settings(out) == {"paper_code": True, "dropout_site": "folded", "prob_dtype": "float32",
                              "cal_compare": "gt", "random_k": "pooled"}
    out = tmp_path / "evaluate_ours"
    assert main(["evaluate", *common[:-1], "--data", str(tree), "--out", str(out)]) == 0
    assert _settings(out) == {"paper_code": False, "prob_dtype": "float64", "cal_compare": "ge"}


def test_study_paper_code_key_reaches_every_step(tmp_path, trained_tiny):
    from tffkit.jobs.study import ConfigError, load_config, run_study

    weights, data = trained_tiny
    cfg = {"name": "t", "out": str(tmp_path / "study"), "preset": "full", "device": "cpu", "workers": 0,
           "batch_size": 48, "paper_code": True, "detector": {"arch": "tiny_resnet", "weights": str(weights)},
           "data": {"source": str(data), "source_sets": ["progan"], "test": str(data), "sets": ["progan", "gan_b"],
                    "train_set": ["progan"], "max_per_class": 4},
           "steps": {"rank": {"min_prob": 0.5, "k": 4}, "dropout": {"k_sweep": [2], "random_repeats": 1},
                     "lrpmax": {"k": 2, "per_tff": 1, "show": 1, "bounds": "exact"},
                     "color": {"k": 2, "max_per_class": 4}}}
    run_study(cfg, progress=False)
    out = Path(cfg["out"])
    expected = {"evaluate": ("prob_dtype", "cal_compare"), "rank": ("bounds", "zplus_fallback", "rank_crop"),
                "dropout": ("dropout_site", "prob_dtype", "cal_compare", "random_k"),
                "lrpmax": ("neuron_seed", "bounds", "activation_site", "zplus_fallback", "patch_box"),
                "color": ("activation_site", "prob_dtype")}
    for step, names in expected.items():
        want = {"paper_code": True, **{n: PAPER[n] for n in names}}
        if step == "lrpmax":
            want["bounds"] = "exact"  # set explicitly in the step: overrides the preset
        assert _settings(out / step) == want, step
    assert "the public code" in (out / "report.html").read_text()
    with pytest.raises(ConfigError, match="steps.lrpmax.neuron_seed"):
        load_config({**cfg, "steps": {"lrpmax": {"neuron_seed": "two"}}})
