"""Every command survives the data a hostile tester leaves behind: a non-UTF-8 file name (escaped in CSV/JSON), a
file-link loop and a dangling link (listed as unreadable), a folder-link loop (followed once)."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_tree
from tffkit.cli import main
from tffkit.detectors import build_detector, save_checkpoint

ODD = b"caf\xe9_\xff"  # Latin-1 bytes: not UTF-8


def hostile_tree(root: Path) -> Path:
    """Two sets of 3 real + 3 fake 32-px images, plus a non-UTF-8 name, link loops and a dangling link."""
    make_tree(root, {"progan": [], "stylegan": []}, n=3)
    fake = root / "progan" / "1_fake"
    with open(os.fsencode(fake) + b"/" + ODD + b".png", "wb") as f:
        f.write((fake / "000.png").read_bytes())
    os.symlink(fake / "x_loop.png", fake / "y_loop.png")
    os.symlink(fake / "y_loop.png", fake / "x_loop.png")
    os.symlink(fake / "nowhere.png", fake / "dangling.png")
    os.symlink("../..", root / "stylegan" / "0_real" / "back_to_root")
    return root


@pytest.mark.tier2  # every command end to end (tier 1 runs each command in its own tests)
def test_every_command_handles_odd_names_and_links(tmp_path: Path):
    data = hostile_tree(tmp_path / "data")
    torch_weights = save_checkpoint(tmp_path / "w.pth", build_detector("tiny_resnet"))
    common = ["--arch", "tiny_resnet", "--weights", str(torch_weights), "--data", str(data), "--preset", "full",
              "--device", "cpu", "--workers", "0", "--no-progress", "--batch-size", "4"]
    out = {name: tmp_path / name for name in ("evaluate", "rank", "dropout", "lrpmax", "color", "explain", "train")}
    assert main(["evaluate", *common, "--out", str(out["evaluate"])]) == 0
    assert main(["rank", *common, "--min-prob", "0", "--k", "3", "--out", str(out["rank"])]) == 0
    ranking = str(out["rank"] / "ffrs.csv")
    assert main(["dropout", *common, "--ranking", ranking, "--k", "2", "--random-repeats", "1", "--train-set",
                 "--out", str(out["dropout"])]) == 0
    assert main(["lrpmax", *common, "--ranking", ranking, "--k", "2", "--per-tff", "2", "--show", "1",
                 "--out", str(out["lrpmax"])]) == 0
    assert main(["color", *common, "--ranking", ranking, "--k", "2", "--min-prob", "0",
                 "--out", str(out["color"])]) == 0
    assert main(["explain", *[c for c in common if c != "--data" and c != str(data)], "--data", str(data),
                 "--max-per-class", "4", "--out", str(out["explain"])]) == 0
    assert main(["train", "--arch", "tiny_resnet", "--data", str(data), "--val", str(data), "--out", str(out["train"]),
                 "--max-epochs", "1", "--batch-size", "8", "--crop-size", "32", "--load-size", "32", "--device", "cpu",
                 "--workers", "0", "--no-progress"]) == 0
    escaped = "caf\\xe9_\\xff.png"
    scores = pd.read_csv(out["evaluate"] / "scores.csv")
    assert len(scores) == 13 and scores["path"].str.endswith(escaped).sum() == 1  # 12 + the odd name, loops once
    unreadable = {Path(r["path"]).name for r in json.loads((out["evaluate"] / "skipped.json").read_text())}
    assert unreadable == {"x_loop.png", "y_loop.png", "dangling.png"}
    rank_run = json.loads((out["rank"] / "run.json").read_text())
    assert any("symbolic-link loop" in w for w in rank_run["data_found"][0]["warnings"])
    lrpmax = pd.read_csv(out["lrpmax"] / "lrpmax_index.csv")
    explain = pd.read_csv(out["explain"] / "explain.csv")
    colour = pd.read_csv(out["color"] / "activations_colour.csv")
    assert colour["path"].str.endswith(escaped).sum() == 1 and explain["image"].str.endswith(escaped).sum() == 1
    assert {"image"} <= set(lrpmax.columns)
    train_run = json.loads((out["train"] / "run.json").read_text())
    assert any(p.endswith(("x_loop.png", "y_loop.png", "dangling.png")) for p in train_run["skipped"])
