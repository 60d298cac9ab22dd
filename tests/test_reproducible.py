"""Same command, same inputs, same machine → the same files (issue: conclusions a reviewer can trust), and run.json
records what decides floating-point results."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from conftest import make_tree
from tffkit.cli import main

COMMON = ["--arch", "tiny_resnet", "--preset", "full", "--device", "cpu", "--workers", "0", "--no-progress",
          "--batch-size", "16"]


def _files(folder: Path) -> dict[str, bytes]:
    """Every result file but run.json (timings, start time, paths)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "run.json"}


def _twice(tmp_path: Path, args: list[str]) -> dict[str, bytes]:
    for name in ("one", "two"):
        assert main([*args, "--out", str(tmp_path / name)]) == 0
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert sorted(one) == sorted(two)
    assert [f for f in one if one[f] != two[f]] == []
    return one


def test_rank_dropout_and_faithfulness_twice_give_identical_files(tmp_path: Path, trained_tiny):
    weights, data = trained_tiny
    common = [*COMMON, "--weights", str(weights), "--data", str(data)]
    ranked = _twice(tmp_path / "rank", ["rank", *common, "--sets", "progan", "--min-prob", "0.5", "--k", "8"])
    assert {"ffrs.csv", "ffrs.json"} <= set(ranked)
    ranking = str(tmp_path / "rank" / "one" / "ffrs.csv")
    dropped = _twice(tmp_path / "dropout", ["dropout", *common, "--ranking", ranking, "--k", "8",
                                            "--random-repeats", "2"])
    assert "dropout.csv" in dropped
    faithful = _twice(tmp_path / "faith", ["faithfulness", *common, "--source", str(data), "--source-sets", "progan",
                                           "--min-prob", "0.5", "--k", "2", "8", "--random-repeats", "2",
                                           "--randomise", "1.0", "--top-k", "4", "--max-per-class", "8"])
    assert "faithfulness.csv" in faithful


def test_train_twice_gives_identical_checkpoints(tmp_path: Path):
    root = make_tree(tmp_path / "data" / "train", {"a": []}, n=8, size=40, seed=0)
    make_tree(tmp_path / "data" / "val", {"v": []}, n=4, size=40, seed=1)
    args = ["train", "--arch", "tiny_resnet", "--data", str(root), "--val", str(tmp_path / "data" / "val"),
            "--crop-size", "32", "--load-size", "40", "--batch-size", "8", "--max-epochs", "2", "--device", "cpu",
            "--workers", "0", "--no-progress"]
    for name in ("one", "two"):
        assert main([*args, "--out", str(tmp_path / name)]) == 0
    for f in ("model_best.pth", "model_last.pth"):
        a = torch.load(tmp_path / "one" / f, weights_only=True)["model"]
        b = torch.load(tmp_path / "two" / f, weights_only=True)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    cols = ["epoch", "lr", "train_loss", "val_loss", "val_acc", "val_ap", "seen_sha1"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "one" / "history.csv")[cols],
                                  pd.read_csv(tmp_path / "two" / "history.csv")[cols], check_exact=True)


def test_run_json_records_what_decides_floating_point_results(tmp_path: Path, trained_tiny):
    weights, data = trained_tiny
    assert main(["evaluate", *COMMON, "--weights", str(weights), "--data", str(data), "--out", str(tmp_path)]) == 0
    numerics = json.loads((tmp_path / "run.json").read_text())["numerics"]
    assert numerics["torch_threads"] == torch.get_num_threads() and numerics["cpu_model"]
    assert numerics["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert numerics["deterministic_algorithms"] == torch.are_deterministic_algorithms_enabled()
    assert {"internal_api", "architecture", "num_threads"} <= set(numerics["threadpools"][0])
    assert "float32_matmul_precision" in numerics and "env" in numerics
