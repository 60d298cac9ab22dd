"""``tff bench compare``: one row per method with its rate, the ratio to the plain gradient measured in the same run
and its memory; the comparison table in docs/benchmarks.md and the README's line are the committed compare.json's."""

import csv
import json
from pathlib import Path

import pytest

from tffkit.benchmarks.compare import headline, markdown, marked, run_one
from tffkit.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_a_method_row_has_its_rate_and_memory(one_thread):
    """One method measured in this process (what each worker process of the command does)."""
    row = run_one("tiny_resnet", "tffkit:fast", "cpu", 2, 32, 1, 1)
    assert row["img_s"] > 0 and row["memory"] in ("rss", "not measured") and row["rules"]
    assert row["ratio_vs_plain"] == pytest.approx(row["img_s"] / row["plain_img_s"], rel=0.01)
    assert run_one("tiny_resnet", "lxt:efficient-cp", "cpu", 2, 32, 1, 1)["note"].startswith("LXT's ViT rules")


@pytest.mark.tier2  # three processes
def test_compare_writes_rows_with_rates_ratios_and_memory(tmp_path, capsys):
    assert main(["bench", "compare", "--archs", "tiny_resnet", "--methods", "tffkit:fast", "--batch-size", "2",
                 "--image-size", "32", "--iters", "1", "--warmup", "1", "--device", "cpu", "--out",
                 str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "compare.json").read_text())
    rows = {r["method"]: r for r in doc["rows"]}
    assert set(rows) == {"plain", "tffkit:fast"} and doc["device"] == "cpu" and doc["cpu_cores"] >= 1
    plain, fast = rows["plain"], rows["tffkit:fast"]
    assert plain["img_s"] > 0 and fast["img_s"] > 0 and plain["ratio_vs_plain"] > 0
    assert fast["ratio_vs_plain"] == pytest.approx(fast["img_s"] / fast["plain_img_s"], rel=0.01)
    assert fast["memory"] in ("rss", "not measured")
    with open(tmp_path / "compare.csv") as f:
        assert [r["method"] for r in csv.DictReader(f)] == ["plain", "tffkit:fast"]
    assert (tmp_path / "compare.md").read_text() == markdown(doc) == capsys.readouterr().out


def test_docs_and_readme_show_the_committed_comparison():
    doc = json.loads((ROOT / "bench_out" / "compare.json").read_text())
    assert marked((ROOT / "docs" / "benchmarks.md").read_text()) == markdown(doc)
    assert marked((ROOT / "README.md").read_text()) == headline(doc)
    assert {r["arch"] for r in doc["rows"]} == {"resnet50", "vit_b_16"}
