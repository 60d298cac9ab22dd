"""`tff card`: one page per detector drawn from a study's files — its numbers are the files' numbers, no model is
run, a step that did not run is said, figure links resolve."""

import hashlib
import html
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_tree
from tffkit.cli import main
from tffkit.detectors import build_detector, save_checkpoint
from tffkit.jobs.card import CardOptions, card


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A study folder made by the real commands (evaluate, rank, color, lrpmax) and the robustness step on a tiny
    wang2020 detector."""
    from tffkit.jobs.robustness import RobustnessOptions, robustness

    base = tmp_path_factory.mktemp("card")
    data = make_tree(base / "data", {"gan_a": [], "gan_b": []}, n=4)
    weights = save_checkpoint(base / "w.pth", build_detector("wang2020@tiny"))
    out = base / "study"
    common = ["--arch", "wang2020@tiny", "--weights", str(weights), "--data", str(data), "--device", "cpu",
              "--workers", "0", "--no-progress", "--preset", "full"]
    assert main(["evaluate", *common, "--resamples", "50", "--out", str(out / "evaluate")]) == 0
    assert main(["rank", *common, "--min-prob", "0", "--k", "4", "--out", str(out / "rank")]) == 0
    assert main(["color", *common, "--ranking", str(out / "rank" / "ffrs.csv"), "--k", "4", "--min-prob", "0",
                 "--resamples", "50", "--out", str(out / "color")]) == 0
    assert main(["lrpmax", *common, "--ranking", str(out / "rank" / "ffrs.csv"), "--k", "3", "--per-tff", "2",
                 "--show", "2", "--out", str(out / "lrpmax")]) == 0
    options = RobustnessOptions(arch="wang2020@tiny", weights=str(weights), preset="full", device="cpu", workers=0,
                                progress=False, jpeg=(50,), resize=(), blur=(), grayscale=True, resamples=50)
    robustness(data, options=options, out=out / "robustness",
               clean_scores=pd.read_csv(out / "evaluate" / "scores.csv", keep_default_na=False))
    (out / "study.json").write_text('{"detector": {"arch": "wang2020@tiny", "label": "tiny wang"}, '
                                    '"steps": {"color_robust": {"label": "tiny CR"}}}')
    return out


def test_card_numbers_are_the_study_files_numbers(study: Path, tmp_path: Path, monkeypatch):
    import tffkit.detectors as detectors
    import tffkit.inputs as inputs

    def no_model(*_a, **_k):
        raise AssertionError("a card runs no model")
    monkeypatch.setattr(detectors, "build_detector", no_model)
    monkeypatch.setattr(inputs, "load_model", no_model)
    (md_path,) = card(study, out=tmp_path / "cards")
    md = md_path.read_text()
    assert md.startswith("# Detector card: tiny wang")
    sha = hashlib.sha256((study.parent / "w.pth").read_bytes()).hexdigest()
    assert f"| checkpoint SHA-256 | {sha} |" in md
    assert "CC BY-NC-SA 4.0" in md and "Wang et al., CVPR 2020" in md  # the zoo entry's licence and paper
    ci = pd.read_csv(study / "evaluate" / "metrics_ci.csv").set_index(["set", "metric"])
    for set_name in ("gan_a", "gan_b", "mean"):
        row = next(line for line in md.splitlines() if line.startswith(f"| {set_name} |") and "/" in line)
        cells = [c.strip() for c in row.strip("|").split("|")]
        for cell, metric in zip(cells[1:4], ("ap", "real_acc", "fake_acc"), strict=True):
            r = ci.loc[(set_name, metric)]
            assert cell == f"{100 * r['estimate']:.1f} [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"
    colour = pd.read_csv(study / "color" / "color_metrics.csv")
    ap = colour[colour["metric"] == "ap"].set_index(["set", "version"])["value"]
    assert f"| gan_a | {ap[('gan_a', 'colour')]:.1f} → {ap[('gan_a', 'grayscale')]:.1f} |" in md
    ranking = pd.read_csv(study / "rank" / "ffrs.csv")
    shown = re.findall(r"^\| (\d+) \| ([\w.]+) \| (\d+) \|", md.split("## Top units")[1], re.M)
    assert [(int(r), layer, int(c)) for r, layer, c in shown] == list(
        ranking[["rank", "layer", "channel"]].head(10).itertuples(index=False, name=None))
    page = (tmp_path / "cards" / "detector.html").read_text()
    links = re.findall(r"href='([^']+)'", page)
    assert links and all((tmp_path / "cards" / html.unescape(h)).resolve().is_file() for h in links)
    table = pd.read_csv(study / "robustness" / "robustness.csv").set_index(["perturbation", "set", "metric"])
    shown = md.split("## Robustness to perturbations")[1].split("## Top units")[0]
    for name in ("jpeg50", "gray"):
        for set_name in ("gan_a", "gan_b", "mean"):
            row = next(line for line in shown.splitlines() if line.startswith(f"| {name} | {set_name} |"))
            cells = [c.strip() for c in row.strip("|").split("|")]
            for cell, metric in zip(cells[2:], ("ap", "real_acc", "fake_acc"), strict=True):
                r = table.loc[(name, set_name, metric)]
                assert cell == (f"{100 * r['clean']:.1f} → {100 * r['perturbed']:.1f} (Δ {100 * r['change']:+.1f} "
                                f"[{100 * r['low']:+.1f}, {100 * r['high']:+.1f}])")
    verdicts = json.loads((study / "robustness" / "robustness.json").read_text())["asymmetry"]
    assert [v["perturbation"] for v in verdicts] == ["jpeg50", "gray"]
    for v in verdicts:
        assert f"{v['perturbation']} (mean over sets): {v['verdict']}" in shown
    assert "Not on this card yet" not in md


def _rows(md: str, section: str) -> list[list[str]]:
    """The table rows (cells) of a card section, header and rule left out."""
    part = md.split(f"## {section}")[1].split("\n## ")[0]
    lines = [line for line in part.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[1:]]


def test_the_top_units_say_what_they_respond_to_and_examples_are_the_lrpmax_files(study: Path, tmp_path: Path):
    """Each top unit's strongest fake is its rank-1 LRP-max patch, its colour verdict the color step's paired effect
    per set; the examples are the overlays of the first T-FF; --top-units and --examples size them."""
    assert main(["card", str(study), "--top-units", "5", "--examples", "2", "--out", str(tmp_path / "c")]) == 0
    md = (tmp_path / "c" / "detector.md").read_text()
    index = pd.read_csv(study / "lrpmax" / "lrpmax_index.csv")
    mood = pd.read_csv(study / "color" / "mood_tests.csv")
    ranking = pd.read_csv(study / "rank" / "ffrs.csv").head(5)
    rows = _rows(md, "Top units (FF-RS)")
    assert len(rows) == 5
    for row, (_, unit) in zip(rows, ranking.iterrows(), strict=True):
        first = index[(index["layer"] == unit["layer"]) & (index["channel"] == unit["channel"]) & (index["rank"] == 1)]
        if len(first):
            link = re.fullmatch(r"\[patch \((\w+)\)\]\(([^)]+)\)", row[5])
            assert link and link.group(1) == first["set"].iloc[0]
            assert (tmp_path / "c" / link.group(2)).resolve() == (study / "lrpmax" / first["patch"].iloc[0]).resolve()
        else:
            assert row[5] == "—"
        tested = mood[mood["key"] == unit["key"]]
        hits = list(tested.loc[tested["effect_conditional"], "set"])
        assert row[6] == ("—" if tested.empty else f"in {', '.join(hits)}" if hits else
                          f"no (0 of {len(tested)} sets)")
    assert index["tff"].nunique() == 3 and mood["key"].nunique() == 4  # units with and without both answers
    examples = md.split("## Explanation examples")[1].split("\n## ")[0]
    shown = re.findall(r"^- \[overlay of T-FF (\d+)\]\(([^)]+)\)", examples, re.M)
    assert [int(t) for t, _ in shown] == [1, 2]
    for t, link in shown:
        row = index[(index["tff"] == int(t)) & (index["rank"] == 1)].iloc[0]
        assert (tmp_path / "c" / link).resolve() == (study / "lrpmax" / row["overlay"]).resolve()
        assert f"image {row['image']}" in examples
    page = (tmp_path / "c" / "detector.html").read_text()
    assert all((tmp_path / "c" / html.unescape(h)).is_file() for h in re.findall(r"<img src='([^']+)'", page))
    card(study, options=CardOptions(examples=0), out=tmp_path / "none")
    assert "None asked for (examples: 0)." in (tmp_path / "none" / "detector.md").read_text()
    assert main(["card", str(study), "--top-units", "0", "--out", str(tmp_path / "bad")]) == 2


def test_missing_steps_are_said_and_the_colour_robust_detector_gets_a_page(study: Path, tmp_path: Path, capsys):
    partial = tmp_path / "partial"
    shutil.copytree(study, partial)
    shutil.rmtree(partial / "color")
    shutil.copytree(study / "evaluate", partial / "color_robust" / "evaluate")
    assert main(["card", str(partial)]) == 0
    assert "card: " in capsys.readouterr().out
    md = (partial / "cards" / "detector.md").read_text()
    assert "Not measured: the study has no color/color_metrics.csv." in md
    assert "## Robustness to perturbations" in md and "Not measured: the study has no robustness" not in md
    cr = (partial / "cards" / "color_robust.md").read_text()
    assert cr.startswith("# Detector card: tiny CR") and "Not ranked: the study has no rank/ffrs.csv." in cr
    assert "Not measured: the study has no robustness/robustness.csv (enable the study step" in cr
    assert main(["card", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a study folder" in err


def test_the_report_section_reads_the_robustness_files(study: Path):
    from tffkit.report.section_robustness import section_robustness

    section = section_robustness(study)
    table = pd.read_csv(study / "robustness" / "robustness.csv").query("set == 'mean'").set_index(
        ["perturbation", "metric"])
    r = table.loc[("gray", "fake_acc")]
    assert (f"{100 * r['clean']:.1f} → {100 * r['perturbed']:.1f} ({100 * r['change']:+.1f} [{100 * r['low']:+.1f}, "
            f"{100 * r['high']:+.1f}])") in section["body"]
    for v in json.loads((study / "robustness" / "robustness.json").read_text())["asymmetry"]:
        assert html.escape(v["verdict"]) in section["body"]
    assert section_robustness(study / "color") is None  # no robustness step: no section
