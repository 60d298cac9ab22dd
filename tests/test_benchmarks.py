"""``tff bench`` smoke tests on tiny settings: each prints one JSON object with positive throughputs,
the ratio of the two measured in the same run, and where it ran."""

import json

import pytest

from tffkit.benchmarks.suite import TARGETS, run_suite
from tffkit.cli import main

TINY = {
    "lrp": ["--arch", "tiny_resnet", "--batch-size", "4", "--image-size", "32", "--iters", "1", "--warmup", "1"],
    "rank": ["--arch", "tiny_resnet", "--batch-size", "8", "--images", "16", "--image-size", "32", "--preset", "full",
             "--iters", "1", "--workers", "0"],
    "lrpmax": ["--arch", "tiny_resnet", "--pairs", "16", "--loop-pairs", "4", "--images", "4", "--image-size", "32",
               "--k", "6", "--chunk", "8"],
    "train": ["--arch", "tiny_resnet", "--batch-size", "8", "--crop-size", "24", "--load-size", "32", "--steps", "2",
              "--warmup", "1", "--workers", "0"],
    "generator": ["--arch", "tiny_resnet", "--depths", "8", "8", "--batch-size", "2", "--iters", "1", "--warmup", "1"],
}
RATES = {"lrp": ("tffkit_lrp_img_s", "plain_gradient_img_s", "ratio_lrp_vs_plain"),
         "rank": ("rank_img_s", "plain_gradient_img_s", "ratio_rank_vs_plain"),
         "lrpmax": ("batched_pairs_per_s", "loop_pairs_per_s", "speedup"),
         "train": ("ours_images_per_s", "bare_images_per_s", "ratio"),
         "generator": ("tffkit_lrp_img_s", "plain_gradient_img_s", "ratio_lrp_vs_plain")}


@pytest.mark.parametrize("name", sorted(TINY))
def test_bench_prints_json_with_rates_ratio_and_machine(name, capsys):
    assert main(["bench", name, "--device", "cpu", *TINY[name]]) == 0
    out = json.loads(capsys.readouterr().out)
    ours, baseline, ratio = RATES[name]
    assert out["benchmark"] == name and out[ours] > 0 and out[baseline] > 0
    assert out[ratio] == pytest.approx(out[ours] / out[baseline], rel=0.02, abs=2e-3)
    assert out["device"] == "cpu" and out["cpu_cores"] >= 1 and out["torch"]


@pytest.mark.tier2  # seven benchmark processes
def test_suite_runs_every_benchmark_and_checks_the_targets(tmp_path):
    doc = run_suite("cpu", tmp_path, {name: args for name, args in TINY.items()})
    assert set(doc["results"]) == {"lrp", "lrp_vit", "rank", "lrpmax", "train_fp32", "train_bf16", "generator"}
    assert not [r for r in doc["results"].values() if "error" in r]
    assert doc["results"]["train_bf16"]["amp"] == "bf16" and len(doc["checks"]) == len(TARGETS)
    for check in doc["checks"]:
        if check["key"] == "memory_ratio_lrp_vs_plain":  # device memory: CUDA only
            assert check["value"] is None and check["met"] is None
        else:
            assert check["value"] > 0 and isinstance(check["met"], bool)
    table = (tmp_path / "bench.md").read_text()
    assert "LRP-max (image, neuron) pairs/s" in table and "not measured" in table
    assert json.loads((tmp_path / "bench.json").read_text())["checks"] == doc["checks"]
