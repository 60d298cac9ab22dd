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


@pytest.mark.tier2  # two study runs
def test_bench_uncertainty_runs_a_study_as_given_and_lean(tmp_path, trained_tiny, capsys):
    """Each run of the study in its own folder, alternating; the lean config changes only the intervals' resamples
    and the null distributions' sizes; the overhead is the ratio of the medians."""
    import yaml

    from tffkit.benchmarks.uncertainty import lean, markdown

    weights, data = trained_tiny
    cfg = {"name": "t", "out": str(tmp_path / "unused"), "preset": "full", "device": "cpu", "workers": 0,
           "detector": {"arch": "tiny_resnet", "weights": str(weights)},
           "data": {"source": str(data), "source_sets": ["progan"], "test": str(data), "train_set": ["progan"]},
           "steps": {"rank": {"min_prob": 0.5, "k": 4}, "dropout": {"k_sweep": [4], "random_repeats": 3},
                     "lrpmax": {"enabled": False}, "color": {"enabled": False}}}
    small = lean(cfg)
    assert small["uncertainty"] == {"resamples": 1} and small["steps"]["dropout"] == {"k_sweep": [4],
                                                                                      "random_repeats": 0}
    assert "faithfulness" not in small["steps"] and cfg["steps"]["dropout"]["random_repeats"] == 3  # a copy
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["bench", "uncertainty", "--config", str(path), "--label", "tiny", "--repeats", "1", "--warmup", "0",
                 "--out", str(tmp_path / "u.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == json.loads((tmp_path / "u.json").read_text()) and not (tmp_path / "unused").exists()
    (study,) = out["studies"]
    default, small_run = study["runs"]["default"][0], study["runs"]["lean"][0]
    assert {"evaluate", "rank", "dropout"} <= set(default["steps_s"]) and small_run["wall_s"] > 0
    assert study["overhead"] == pytest.approx(default["wall_s"] / small_run["wall_s"] - 1, abs=1e-3)
    assert (tmp_path / "u.md").read_text() == markdown(out) and "| tiny |" in markdown(out)


def test_docs_show_the_committed_uncertainty_benchmark():
    from pathlib import Path

    from tffkit.benchmarks.uncertainty import MARKERS, markdown
    from tffkit.results import marked_text

    root = Path(__file__).resolve().parents[1]
    doc = json.loads((root / "bench_out" / "uncertainty.json").read_text())
    assert marked_text((root / "docs" / "algorithms.md").read_text(), MARKERS) == markdown(doc)
    assert (root / "bench_out" / "uncertainty.md").read_text() == markdown(doc)
    assert [s["label"] for s in doc["studies"]] == ["demo whole study (seed 0, fold 0)",
                                                     "demo headline study (seed 1, fold 0)"]
    # the demo as a whole: the whole study's difference once, the headline study's once per other replicate
    summary = json.loads((root / "docs" / "demo_summary.json").read_text())
    whole, headline = (s["median_wall_s"]["default"] - s["median_wall_s"]["lean"] for s in doc["studies"])
    added = whole + len(summary["timing"]["headline_steps_s"]) * headline
    text = " ".join((root / "docs" / "algorithms.md").read_text().split())  # the prose's line breaks as spaces
    assert (f"`tff demo` in {summary['elapsed_s']:.0f} s" in text and f"{added:.0f} s, **"
            f"{100 * added / (summary['elapsed_s'] - added):.0f}%** added to its wall" in text)
