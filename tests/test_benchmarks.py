"""``tff bench`` smoke tests on tiny settings: each prints one JSON object with positive throughputs,
the ratio of the two measured in the same run, and where it ran."""

import json

import pytest

from tffkit.cli import main

TINY = {
    "lrp": ["--arch", "tiny_resnet", "--batch-size", "4", "--image-size", "32", "--iters", "1", "--warmup", "1"],
    "rank": ["--arch", "tiny_resnet", "--batch-size", "8", "--images", "16", "--image-size", "32", "--preset", "full",
             "--iters", "1", "--workers", "0"],
    "lrpmax": ["--arch", "tiny_resnet", "--pairs", "16", "--loop-pairs", "4", "--images", "4", "--image-size", "32",
               "--k", "6", "--chunk", "8"],
    "train": ["--arch", "tiny_resnet", "--batch-size", "8", "--crop-size", "24", "--load-size", "32", "--steps", "2",
              "--warmup", "1", "--workers", "0"],
}
RATES = {"lrp": ("tffkit_lrp_img_s", "plain_gradient_img_s", "ratio_lrp_vs_plain"),
         "rank": ("rank_end_to_end_img_s", "plain_gradient_img_s", "ratio_rank_vs_plain"),
         "lrpmax": ("batched_pairs_per_s", "loop_pairs_per_s", "speedup"),
         "train": ("ours_images_per_s", "bare_images_per_s", "ratio")}


@pytest.mark.parametrize("name", sorted(TINY))
def test_bench_prints_json_with_rates_ratio_and_machine(name, capsys):
    assert main(["bench", name, "--device", "cpu", *TINY[name]]) == 0
    out = json.loads(capsys.readouterr().out)
    ours, baseline, ratio = RATES[name]
    assert out["benchmark"] == name and out[ours] > 0 and out[baseline] > 0
    assert out[ratio] == pytest.approx(out[ours] / out[baseline], rel=0.02, abs=2e-3)
    assert out["device"] == "cpu" and out["cpu_cores"] >= 1 and out["torch"]
