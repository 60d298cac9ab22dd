from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score

from conftest import run_torchrun
from tffkit.cli import main
from tffkit.detectors import build_detector, save_checkpoint


def _weights(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "tiny.pth", build_detector("tiny_resnet"))


def test_evaluate_cli_outputs_match_sklearn(tmp_path: Path, tree: Path, capsys):
    (tree / "stylegan" / "0_real" / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    rc = main(["evaluate", "--arch", "tiny_resnet", "--weights", str(_weights(tmp_path)), "--data", str(tree),
               "--preset", "full", "--device", "cpu", "--workers", "0", "--no-progress", "--out", str(out)])
    assert rc == 0
    assert "skipped 1 unreadable" in capsys.readouterr().out
    scores = pd.read_csv(out / "scores.csv", keep_default_na=False)
    metrics = pd.read_csv(out / "metrics.csv", keep_default_na=False)
    assert len(scores) == 24 and set(scores.columns) >= {"path", "set", "class", "label", "logit", "prob"}
    for set_name, part in scores.groupby("set"):
        row = metrics[(metrics["set"] == set_name) & (metrics["class"] == "all")].iloc[0]
        assert np.isclose(float(row["ap"]), average_precision_score(part["label"], part["prob"]))
        assert np.isclose(float(row["fake_acc"]), (part[part.label == 1]["prob"] > 0.5).mean())
    assert {"progan/car", "progan/cat"} <= {f"{s}/{c}" for s, c in zip(metrics["set"], metrics["class"],
                                                                            strict=True)}
    import json
    run = json.loads((out / "run.json").read_text())
    assert run["n_skipped"] == 1 and run["skipped"][0]["path"].endswith("broken.png")


def test_evaluate_reports_bad_input(tmp_path: Path, tree: Path, capsys):
    torch.save({"model": build_detector("resnet18").state_dict()}, tmp_path / "r18.pth")
    rc = main(["evaluate", "--arch", "tiny_resnet", "--weights", str(tmp_path / "r18.pth"), "--data", str(tree),
               "--device", "cpu", "--out", str(tmp_path / "o")])
    assert rc == 2 and "does not fit architecture 'tiny_resnet'" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    rc = main(["evaluate", "--arch", "tiny_resnet", "--data", str(tmp_path / "empty"), "--device", "cpu",
               "--out", str(tmp_path / "o")])
    assert rc == 2 and "0_real" in capsys.readouterr().err


def test_torchrun_two_processes_match_one(tmp_path: Path, tree: Path):
    weights = _weights(tmp_path)
    common = ["--arch", "tiny_resnet", "--weights", str(weights), "--data", str(tree), "--preset", "full",
              "--device", "cpu", "--workers", "0", "--no-progress"]
    assert main(["evaluate", *common, "--out", str(tmp_path / "one")]) == 0
    run_torchrun(["evaluate", *common, "--out", str(tmp_path / "two")])
    one = pd.read_csv(tmp_path / "one" / "metrics.csv")
    two = pd.read_csv(tmp_path / "two" / "metrics.csv")
    pd.testing.assert_frame_equal(one, two, rtol=1e-6)
    s1 = pd.read_csv(tmp_path / "one" / "scores.csv")
    s2 = pd.read_csv(tmp_path / "two" / "scores.csv")
    assert list(s1["path"]) == list(s2["path"])
    assert np.allclose(s1["logit"], s2["logit"], atol=1e-5)
