"""`tff gate`: DEAR's channel gate against an FF-RS ranking, end to end on `dear_c@tiny` — its numbers are the
hypergeometric tails counted from the files it writes, a ranking of the base detector (unprefixed layer names) gives
the same comparison, bad input is one line; a study of a DEAR detector runs the gate step and its card and report
show the reading."""

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import hypergeom

from conftest import make_tree
from tffkit.cli import main
from tffkit.detectors import load_detector, save_checkpoint


@pytest.fixture(scope="module")
def dear(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(weights, data, ranking) of a random dear_c@tiny whose gate keeps half of its channels."""
    base = tmp_path_factory.mktemp("gate")
    data = make_tree(base / "data", {"progan": [], "stylegan": []}, n=2, size=32)
    torch.manual_seed(0)
    weights = save_checkpoint(base / "dear.pth", load_detector("dear_c@tiny", random_weights=True))
    assert main(["rank", "--arch", "dear_c@tiny", "--weights", str(weights), "--data", str(data), "--min-prob", "0",
                 "--k", "3", "--device", "cpu", "--workers", "0", "--no-progress", "--out", str(base / "r")]) == 0
    return weights, data, base / "r" / "ffrs.csv"


def _gate(weights: Path, ranking: Path, out: Path, *extra: str) -> int:
    return main(["gate", "--arch", "dear_c@tiny", "--weights", str(weights), "--ranking", str(ranking),
                 "--device", "cpu", "--out", str(out), *extra])


def test_gate_counts_are_the_hypergeometric_tails_of_its_files(dear, tmp_path: Path, capsys):
    weights, _, ranking = dear
    assert _gate(weights, ranking, tmp_path / "g", "--k", "2", "8", "20") == 0
    assert "DEAR's gate keeps" in capsys.readouterr().out
    per_k = pd.read_csv(tmp_path / "g" / "gate.csv")
    units = pd.read_csv(tmp_path / "g" / "gate_units.csv")
    info = json.loads((tmp_path / "g" / "gate.json").read_text())
    gate = load_detector("dear_c@tiny", str(weights)).gate.gate.int().numpy()
    assert list(units["gate"]) == list(gate) and info["kept"] == gate.sum() == units["gate"].sum()
    table = pd.read_csv(ranking)
    layer = table[table["layer"] == info["layer"]]
    assert info["layer"].endswith("layer4.0.conv3") and len(layer) == len(gate) == info["channels"]
    total, kept = len(gate), int(gate.sum())
    for row in per_k.itertuples():
        # the naive count: the k channels of the layer with the highest ω (ties by channel), how many the gate keeps
        top = layer.sort_values(["omega", "channel"], ascending=[False, True]).head(row.k)["channel"]
        hit = int(gate[top.to_numpy()].sum())
        assert row.kept_in_top_k == hit and row.expected == pytest.approx(row.k * kept / total)
        assert row.p_enriched == pytest.approx(sum(hypergeom.pmf(i, total, kept, row.k) for i in range(hit, row.k + 1)))
        assert row.p_depleted == pytest.approx(sum(hypergeom.pmf(i, total, kept, row.k) for i in range(hit + 1)))
    assert list(per_k["k"]) == [2, 8, 20] and [r["k"] for r in info["per_k"]] == [2, 8, 20]
    # a ranking of the gated detector itself: every pruned channel has ω = 0, and the reading says so
    assert info["gated_off_omega_zero"] and (units.loc[units["gate"] == 0, "omega"] == 0).all()
    assert "of the gated detector itself" in info["sentence"]
    assert json.loads((tmp_path / "g" / "run.json").read_text())["checkpoint_sha256"]


def test_a_base_detector_ranking_and_bad_input(dear, tmp_path: Path, capsys):
    """The base detector's ranking names the layer without DEAR's ``backbone.`` prefix: found the same way; a k
    above the layer's channels, a detector without a gate, a missing ranking are one line each."""
    weights, _, ranking = dear
    table = pd.read_csv(ranking)
    base = table.assign(layer=table["layer"].str.removeprefix("backbone."))
    rng = np.random.default_rng(0)
    base["omega"] = rng.random(len(base))  # a ranking that does not know the gate
    base.to_csv(tmp_path / "base.csv", index=False)
    assert _gate(weights, tmp_path / "base.csv", tmp_path / "g", "--k", "5") == 0
    info = json.loads((tmp_path / "g" / "gate.json").read_text())
    assert info["layer"] == "layer4.0.conv3" and not info["gated_off_omega_zero"]
    assert "of the gated detector itself" not in info["sentence"]
    capsys.readouterr()
    for args, words in (((weights, ranking, tmp_path / "x", "--k", "65"), "--k 65: more than the 64 units"),
                        ((weights, tmp_path / "none.csv", tmp_path / "x"), "none.csv"),
                        ((weights, ranking, tmp_path / "x", "--layer", "fc"), "--k 10: more than the 0 units")):
        assert _gate(*args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert main(["gate", "--arch", "wang2020@tiny", "--random-weights", "--ranking", str(ranking), "--device", "cpu",
                 "--out", str(tmp_path / "x")]) == 2
    assert "not a DEAR detector" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_dear_study_runs_the_gate_step_and_its_card_and_report_read_it(dear, tmp_path: Path):
    from tffkit.jobs.study import run_study

    weights, data, _ = dear
    cfg = {"name": "dear", "out": str(tmp_path / "study"), "preset": "full", "device": "cpu", "workers": 0,
           "detector": {"arch": "dear_c@tiny", "weights": str(weights), "label": "DEAR-c tiny"},
           "data": {"source": str(data), "test": str(data)}, "uncertainty": {"resamples": 20},
           "steps": {"rank": {"min_prob": 0.0, "k": 3}, "gate": {"k": [4, 16]}, "dropout": {"enabled": False},
                     "lrpmax": {"enabled": False}, "color": {"enabled": False}}}
    report = run_study(cfg, progress=False)
    out = report.parent
    status = json.loads((out / "study.json").read_text())["status"]
    assert list(status) == ["evaluate", "rank", "gate", "card"]
    info = json.loads((out / "gate" / "gate.json").read_text())
    md = (out / "card" / "detector.md").read_text()
    section = md.split("## Unit selection: DEAR's gate and FF-RS")[1].split("\n## ")[0]
    assert info["sentence"] in section
    for r in info["per_k"]:
        assert (f"| {r['k']} | {r['kept_in_top_k']} | {r['expected']:.1f} | {r['p_enriched']:.3g} | "
                f"{r['p_depleted']:.3g} |") in section
    page = report.read_text()
    assert "Detector cards" in page and "href='card/detector.html'" in page
    assert html.escape(info["sentence"]) in page
