"""LRP-max: conservation from a seeded neuron, batched = one-at-a-time, top-N selection and its exact merge,
patch boxes, and the ``tff lrpmax`` / ``tff bench lrpmax`` commands end to end on tiny detectors."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_tree, run_torchrun
from lrp_helpers import pseudo_trained
from tffkit import distributed as tdist
from tffkit.analysis import lrpmax as lm
from tffkit.cli import main
from tffkit.data import find_samples
from tffkit.detectors import save_checkpoint
from tffkit.lrp import Explainer

pytestmark = pytest.mark.usefixtures("one_thread")


def _tffs(ex: Explainer, step: int = 2) -> list[tuple[str, int]]:
    return [(layer.name, (5 * i) % layer.channels) for i, layer in enumerate(ex.layers)][::step]


def _pairs(ex, x, tffs):
    v, h, w = lm.MaxActivationTap(ex, tffs).run(x)
    b, k = v.shape
    rows = torch.arange(b).repeat_interleave(k)
    j = torch.arange(k).repeat(b)
    return rows, [tffs[t][0] for t in j.tolist()], torch.tensor([tffs[t][1] for t in j.tolist()]), \
        h.reshape(-1), w.reshape(-1), v.reshape(-1).clamp(min=0)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    ex = Explainer(pseudo_trained("tiny_resnet").double())
    return ex, torch.randn(2, 3, 32, 32, dtype=torch.float64)


def test_max_activation_tap_matches_the_maps(tiny):
    ex, x = tiny
    tffs = _tffs(ex)
    acts = {}
    ex.forward(x, tap=lambda layer, a: acts.__setitem__(layer.name, a))
    v, h, w = lm.MaxActivationTap(ex, tffs).run(x)
    for j, (layer, c) in enumerate(tffs):
        m = acts[layer][:, c]
        assert torch.equal(v[:, j], m.flatten(1).amax(1))
        assert torch.equal(m[torch.arange(2), h[:, j], w[:, j]], v[:, j])


def test_lrpmax_map_sums_to_the_seeded_relevance_and_batched_equals_single(tiny):
    ex, x = tiny
    tffs = _tffs(ex, 3) + [("layer2.0.downsample.0", 3)]
    rows, layers, chans, h, w, seed = _pairs(ex, x, tffs)
    assert (seed > 0).sum() >= len(seed) // 2
    batched = lm.LRPMax(ex, chunk=7).maps(x, rows, layers, chans, h, w, seed)
    assert torch.allclose(batched.sum((1, 2)), seed, rtol=1e-5, atol=1e-12)  # ResNet: conservation
    single = lm.LRPMax(ex, chunk=1).maps(x, rows, layers, chans, h, w, seed)
    assert torch.allclose(batched, single, rtol=1e-10, atol=1e-14)
    # the map of one pair is the input relevance of a seed placed by hand at that neuron only
    p = len(tffs) + 1
    seeds = {layers[p]: torch.zeros(1, *lm.LRPMax(ex).shapes(x)[layers[p]], dtype=x.dtype)}
    seeds[layers[p]][0, chans[p], h[p], w[p]] = seed[p]
    assert torch.allclose(ex.explain_neurons(x[rows[p]:rows[p] + 1], seeds).sum(1)[0], batched[p], atol=1e-14)


def test_relevance_variant_seeds_the_argmax_of_the_logit_relevance(tiny):
    ex, x = tiny
    tffs = _tffs(ex, 3)
    rows, layers, chans, *_ = _pairs(ex, x, tffs)
    h, w, value = lm.LRPMax(ex).relevance_argmax(x, rows, layers, chans)
    rel = {}
    ex.explain(x, 1.0, tap=lambda layer, r, a: rel.__setitem__(layer.name, r))
    for p in range(len(layers)):
        m = rel[layers[p]][rows[p], chans[p]].clamp(min=0)
        assert value[p] == m.max() and m[h[p], w[p]] == m.max()
    maps = lm.LRPMax(ex, chunk=16).maps(x, rows, layers, chans, h, w, value)
    assert torch.allclose(maps.sum((1, 2)), value, rtol=1e-5, atol=1e-12)


@pytest.fixture(scope="module")
def effnet():
    return Explainer(pseudo_trained("efficientnet_b0"))


def test_efficientnet_batched_equals_single(effnet):
    torch.manual_seed(1)
    ex = effnet
    x = torch.randn(2, 3, 32, 32)
    tffs = [("features.0.0", 3), ("features.2.0.block.1.0", 7)]
    rows, layers, chans, h, w, seed = _pairs(ex, x, tffs)
    seed = seed + 0.5  # every pair seeded, even where the map is non-positive
    batched = lm.LRPMax(ex, chunk=4).maps(x, rows, layers, chans, h, w, seed)
    single = lm.LRPMax(ex, chunk=1).maps(x, rows, layers, chans, h, w, seed)
    assert torch.allclose(batched, single, rtol=1e-4, atol=1e-6 * float(single.abs().max()))
    assert (batched.sum((1, 2)) / seed).min() > 0.5


def test_relevance_bbox_on_a_synthetic_map():
    rmap = np.zeros((10, 12))
    rmap[2:5, 3:9] = 1.0  # 18 pixels at 1
    rmap[6, 10] = 4.0  # one strong pixel
    rmap[8, 1] = -5.0  # negative: ignored
    rmap[0, 0] = 0.5  # weak positive: below the 75th percentile
    assert lm.relevance_bbox(rmap) == (3, 2, 11, 7)  # x0, y0, x1, y1 (exclusive)
    assert lm.relevance_bbox(rmap, q=99) == (10, 6, 11, 7)
    assert lm.relevance_bbox(-np.abs(rmap)) is None


def test_paper_code_patch_box_is_the_public_codes():
    """The public box: negatives zeroed, pixels above the 75th percentile of the whole map (zeros included), the last
    selected row and column excluded (a slice [min:max]); the whole image when nothing is selected."""
    rmap = np.zeros((10, 12))
    rmap[2:5, 3:9] = 1.0
    rmap[6, 10] = 4.0
    rmap[8, 1] = -5.0
    rmap[0, 0] = 0.5  # 20 of 120 pixels positive: the percentile of the whole map is 0, every positive pixel counts
    assert lm.relevance_bbox(rmap, box="paper-code") == (0, 0, 10, 6)  # rows 0–6, columns 0–10, ends dropped
    ramp = np.arange(1.0, 121.0).reshape(10, 12)  # all positive: the top quarter (values > 90.25) is rows 7–9
    assert np.percentile(ramp, 75) == 90.25
    assert lm.relevance_bbox(ramp, box="paper-code") == (0, 7, 11, 9)
    assert lm.relevance_bbox(ramp) == (0, 7, 12, 10)  # ours: ≥ the percentile of the positive values, ends past
    assert lm.relevance_bbox(-np.abs(rmap), box="paper-code") == (0, 0, 12, 10)
    assert lm.relevance_bbox(np.zeros((10, 12)), box="paper-code") == (0, 0, 12, 10)
    one = np.zeros((10, 12))
    one[6, 10] = 1.0  # an empty slice in the public code: the one row and column are kept
    assert lm.relevance_bbox(one, box="paper-code") == (10, 6, 11, 7)
    with pytest.raises(ValueError, match="patch box"):
        lm.relevance_bbox(rmap, box="public")


def test_running_top_n_and_exact_merge():
    gen = torch.Generator().manual_seed(0)
    n_img, k, n = 40, 3, 5
    values = torch.randint(0, 6, (n_img, k), generator=gen).double()  # many ties
    group = torch.randint(0, 2, (n_img,), generator=gen)
    h = torch.randint(0, 4, (n_img, k), generator=gen)
    index = torch.arange(n_img)

    def run(ids):
        top = lm.RunningTopN(2, k, n, torch.device("cpu"))
        for s in range(0, len(ids), 7):
            b = ids[s:s + 7]
            top.update(group[b], values[b], index[b], h[b], h[b])
        return top.state()

    one = run(torch.arange(n_img))
    for g in range(2):
        for j in range(k):
            cand = sorted((-values[i, j].item(), i) for i in range(n_img) if group[i] == g)[:n]
            assert one["index"][g, j].tolist() == [i for _, i in cand]
            assert one["h"][g, j].tolist() == [h[i, j].item() for _, i in cand]
    merged = lm.merge_top([run(torch.arange(r, n_img, 3).flip(0)) for r in range(3)], n)
    assert all(np.array_equal(merged[key], one[key]) for key in one)


def test_top_images_merge_across_ranks_equals_one_process(tmp_path, monkeypatch):
    tree = make_tree(tmp_path / "d", {"progan": ["car", "cat"], "stylegan": []}, n=3, size=24)
    samples = [s for s in find_samples(tree) if s.label == 1]
    ex = Explainer(pseudo_trained("tiny_resnet"))
    tffs = _tffs(ex, 3)
    args = dict(preset="full", batch_size=2, num_workers=0, progress=False)
    sets = ["progan", "stylegan"]
    one = lm.top_images(ex, tffs, samples, sets, 2, tdist.DistContext(0, 1, torch.device("cpu")), **args)
    states = []
    monkeypatch.setattr(lm.tdist, "gather_objects", lambda obj: states.append(obj) or [obj])
    for rank in range(2):
        lm.top_images(ex, tffs, samples, sets, 2, tdist.DistContext(rank, 2, torch.device("cpu")), **args)
    merged = lm.merge_top([s for s in states if isinstance(s, dict)], 2)  # (the other gather counts small images)
    assert np.array_equal(merged["index"].ravel(), one["index"].to_numpy())
    assert np.allclose(merged["values"].ravel(), one["activation"].to_numpy())
    assert len(one) == len(sets) * len(tffs) * 2


def _ranking(ex: Explainer, path: Path, tffs) -> Path:
    pd.DataFrame({"rank": range(1, len(tffs) + 1), "layer": [t[0] for t in tffs], "channel": [t[1] for t in tffs],
                  "omega": np.linspace(0.5, 0.1, len(tffs))}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("preset,variant,k,per_tff", [("full", "activation", 3, 2), ("center224", "relevance", 2, 1)])
def test_lrpmax_cli_writes_every_output(tmp_path, preset, variant, k, per_tff):
    tree = make_tree(tmp_path / "d", {"progan": ["car", "cat"], "stylegan": []}, n=2, size=32)
    model = pseudo_trained("tiny_resnet")
    ex = Explainer(model)
    ranking = _ranking(ex, tmp_path / "ffrs.csv", _tffs(ex, 3))
    out = tmp_path / "out"
    rc = main(["lrpmax", "--arch", "tiny_resnet", "--weights", str(save_checkpoint(tmp_path / "w.pth", model)),
               "--ranking", str(ranking), "--k", str(k), "--data", str(tree), "--per-tff", str(per_tff), "--show", "2",
               "--variant", variant, "--preset", preset, "--rows-per-figure", "2", "--device", "cpu",
               "--workers", "0", "--no-progress", "--batch-size", "3", "--out", str(out)])
    assert rc == 0
    index = pd.read_csv(out / "lrpmax_index.csv")
    assert len(index) == k * 2 * per_tff and set(index["set"]) == {"progan", "stylegan"}
    assert list(index["key"].unique()) == [f"{layer}.#{c}(T={ex.by_name[layer].channels})" for layer, c in
                                           _tffs(ex, 3)[:k]]
    assert (index.groupby(["tff", "set"])["activation"].apply(lambda a: a.is_monotonic_decreasing)).all()
    assert np.allclose(index["map_sum"], index["seed"], rtol=1e-2, atol=1e-6)  # float32; exact test above
    assert ((index["bbox_x1"] > index["bbox_x0"]) | (index["bbox_x0"] == -1)).all()
    collages = [f"collage_{i + 1:02d}.png" for i in range((k + 1) // 2)]
    assert sorted(p.name for p in out.glob("collage_*.png")) == collages
    for rel in list(index["patch"]) + list(index["overlay"]) + collages:
        assert (out / rel).stat().st_size > 0, rel
    summary = json.loads((out / "lrpmax.json").read_text())
    assert summary["pairs"] == len(index) and summary["variant"] == variant
    assert json.loads((out / "run.json").read_text())["command"] == "lrpmax"


def test_lrpmax_on_efficientnet(tmp_path, effnet):
    tree = make_tree(tmp_path / "d", {"biggan": []}, n=2, size=32)
    samples = [s for s in find_samples(tree) if s.label == 1]
    ex = effnet
    tffs = [("features.1.0.block.0.0", 2), ("features.3.0.block.0.0", 5)]
    ctx = tdist.DistContext(0, 1, torch.device("cpu"))
    args = dict(preset="full", batch_size=2, num_workers=0, progress=False)
    top = lm.top_images(ex, tffs, samples, ["biggan"], 2, ctx, **args)
    seen = []
    table = lm.compute_lrpmax(ex, tffs, samples, top, ctx, on_pair=lambda row, img, m: seen.append(m.shape), **args)
    assert len(table) == 4 and seen == [(32, 32)] * 4
    assert (table["map_sum"] <= table["seed"] * (1 + 1e-4)).all()


def test_bench_lrpmax_cpu(capsys):
    rc = main(["bench", "lrpmax", "--arch", "tiny_resnet", "--device", "cpu", "--pairs", "8", "--loop-pairs", "2",
               "--images", "2", "--image-size", "32", "--chunk", "8", "--k", "3"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["pairs"] == 8 and res["batched_pairs_per_s"] > 0 and res["speedup"] > 0


def test_torchrun_two_processes_match_one(tmp_path):
    tree = make_tree(tmp_path / "d", {"progan": ["car", "cat"], "stylegan": []}, n=3, size=32)
    model = pseudo_trained("tiny_resnet")
    ex = Explainer(model)
    common = ["--arch", "tiny_resnet", "--weights", str(save_checkpoint(tmp_path / "w.pth", model)), "--data",
              str(tree), "--ranking", str(_ranking(ex, tmp_path / "r.csv", _tffs(ex, 3))), "--k", "3", "--per-tff",
              "2", "--preset", "full", "--device", "cpu", "--workers", "0", "--no-progress", "--batch-size", "2"]
    assert main(["lrpmax", *common, "--out", str(tmp_path / "one")]) == 0
    run_torchrun(["lrpmax", *common, "--out", str(tmp_path / "two")])  # a free port, not a fixed one
    one, two = (pd.read_csv(tmp_path / d / "lrpmax_index.csv") for d in ("one", "two"))
    floats = ["map_sum", "seed", "activation"]
    assert one.drop(columns=floats).equals(two.drop(columns=floats))
    assert np.allclose(one[floats], two[floats], rtol=1e-5)
    assert sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.png")) == \
        sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*.png"))


def test_lrpmax_study_step_is_configured_by_the_options():
    from tffkit.jobs.lrpmax import LRPMaxOptions
    from tffkit.jobs.options import from_config
    from tffkit.jobs.study_config import CHOICES, SCHEMA

    keys = {"k", "per_tff", "show", "variant", "max_per_class", "neuron_seed", "patch_box"}
    assert keys <= set(SCHEMA["steps.lrpmax"])
    assert CHOICES["steps.lrpmax.variant"] == ("activation", "relevance")
    o = from_config(LRPMaxOptions, {"k": 3, "per_tff": 2, "bounds": "exact"}, attention="cp")
    assert (o.k, o.per_tff, o.show, o.bounds, o.attention) == (3, 2, 5, "exact", "cp")
