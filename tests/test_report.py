"""Report figures at the paper's sizes: every label and legend readable (≥ 9 pt) at the report's width."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from tffkit.report import figures_tff as figs

matplotlib.use("Agg")
REPORT_PX = 1000  # the report's content width (CSS max-width 1100 px less padding), images never wider
SETS = ["progan", "stylegan2", "stylegan", "biggan", "cyclegan", "stargan", "gaugan"]
RESNET50_LAYERS = ["conv1"] + [f"layer{s}.{b}.{c}" for s, n in ((1, 3), (2, 4), (3, 6), (4, 3)) for b in range(n)
                               for c in ("conv1", "conv2", "conv3")] + [f"layer{s}.0.downsample.0" for s in range(1, 5)]


@pytest.fixture
def measured(monkeypatch):
    """Records, for every figure saved, the smallest text size as it appears in the report (in pt)."""
    seen: dict[str, float] = {}
    original = Figure.savefig

    def savefig(fig, fname, *args, **kwargs):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        width_in = fig.get_tightbbox(renderer).width + 0.2  # bbox_inches='tight' pads 0.1 in each side
        dpi = kwargs.get("dpi") or fig.dpi
        scale = min(1.0, REPORT_PX / (width_in * dpi)) * dpi / 96  # image px → CSS px (96 per inch), shrunk to fit
        sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
        name = re.sub(r"^\.(.+?\.png)\..*$", r"\1", Path(fname).name)  # atomic_write's temporary name → the file's
        seen[name] = min(sizes) * scale
        return original(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return seen


def test_report_figures_are_readable_at_the_report_width(tmp_path: Path, measured):
    from tffkit.report.figures_dropout import plot_ap_vs_k
    from tffkit.report.figures_tff import plot_ranking

    rng = np.random.default_rng(0)
    table = pd.DataFrame({"layer": rng.choice(RESNET50_LAYERS, 26560), "omega": np.sort(rng.random(26560))[::-1]})
    plot_ranking(table, RESNET50_LAYERS, 114, tmp_path)
    rows = [{"variant": f"{kind}-{k}" if k else "baseline", "kind": kind, "k": k, "set": s, "ap": rng.random(),
             "ap_std": 0.01} for s in SETS for kind, ks in (("baseline", [0]), ("top", [29, 57, 114, 228]),
                                                             ("random", [29, 57, 114, 228]), ("low", [29, 57]))
            for k in ks]
    plot_ap_vs_k(pd.DataFrame(rows), tmp_path / "ap_vs_k.png")
    keys = [f"layer4.{i % 3}.conv{1 + i % 3}.#{1000 + i}(T=2048)" for i in range(3)]
    cells = {(r, s): [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)] * 5 for r in range(3) for s in SETS}
    figs.lrpmax_collage(keys, SETS, cells, 5, tmp_path / "collage_01.png", title="LRP-max patches (activation), "
                        "T-FF 1–3 of 114")
    probs = pd.DataFrame({"set": np.repeat(SETS, 40), "colour": rng.random(280), "grayscale": rng.random(280)})
    changes = pd.DataFrame({"set": SETS, "median_change_pp": rng.normal(-50, 20, 7)})
    figs.probability_boxplot(probs, changes, tmp_path / "median_probability.png")
    figs.activation_distributions(rng.random((50, 12)), rng.random((50, 12)), keys * 4, rng.random(12),
                                  tmp_path / "distributions_progan.png",
                                  "progan: max spatial activation (folded) of the top-12 T-FF on 50 fakes, colour vs "
                                  "grayscale (41.7% colour-conditional, Mood p ≤ 0.05)")
    from tffkit.analysis.unit_scores import LABELS
    from tffkit.report.figures_dropout import plot_curves

    curves = pd.DataFrame([{"ranking": r, "k": k, "replica": rep, "set": s, "ap": rng.random(),
                            "fake_acc": rng.random()}
                           for s in SETS for r, ks, reps in (("baseline", [0], 1), ("ffrs", [1, 2, 4, 8], 1),
                                                             ("taylor", [1, 2, 4, 8], 1), ("random", [1, 2, 4, 8], 3))
                           for k in ks for rep in range(reps)])
    plot_curves(curves, tmp_path / "deletion_curves.png", LABELS)
    assert set(measured) == {"topk_per_layer.png", "omega_distribution.png", "ap_vs_k.png", "collage_01.png",
                             "median_probability.png", "distributions_progan.png", "deletion_curves.png"}
    small = {name: round(pt, 1) for name, pt in measured.items() if pt < 9.0}
    assert not small, f"text below 9 pt at the report's width: {small}"


def test_boxplot_annotations_carry_the_table_sign(tmp_path: Path, monkeypatch):
    """The figure annotates median_change_pp with the same sign as the table (positive = grayscale raises p)."""
    texts = []
    original = Figure.savefig

    def savefig(fig, fname, *args, **kwargs):
        texts.extend(t.get_text() for t in fig.findobj(Text))
        return original(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    probs = pd.DataFrame({"set": ["a"] * 3 + ["b"] * 3, "colour": [0.9, 0.8, 0.95, 0.3, 0.4, 0.5],
                          "grayscale": [0.1, 0.2, 0.3, 0.6, 0.7, 0.8]})
    changes = pd.DataFrame({"set": ["a", "b"], "median_change_pp": [-60.0, 30.0]})
    figs.probability_boxplot(probs, changes, tmp_path / "m.png")
    assert "−60.0 pp" in texts or "-60.0 pp" in texts
    assert "+30.0 pp" in texts


def test_report_sentences_carry_intervals_and_never_a_direction_inside_noise(tmp_path: Path):
    """The report's interval sentences are drawn from the step files; a change whose interval includes 0 is written
    as not shown."""
    from tffkit.report.section_intervals import color_intervals, dropout_intervals, ffrs_groups, transfer_intervals
    from tffkit.results import write_json

    ev = tmp_path / "evaluate"
    ev.mkdir()
    pd.DataFrame([{"set": s, "metric": m, "estimate": e, "low": e - 0.05, "high": min(1.0, e + 0.03), "groups": g,
                   "resamples": 100, "seed": 0} for s, e, g in (("progan", 0.99, 40), ("gan_b", 0.7, 4),
                                                                 ("mean", 0.845, 44))
                  for m in ("ap", "acc", "real_acc", "fake_acc")]).to_csv(ev / "metrics_ci.csv", index=False)
    body, sentence = transfer_intervals(ev, ["progan"])
    assert "progan† 99.0 [94.0, 100.0]%" in sentence and "mean over sets 84.5 [79.5, 87.5]%" in sentence
    assert "intervals over few groups: gan_b 4)" in sentence and "65.0, 73.0" in body

    dr = tmp_path / "dropout"
    dr.mkdir()
    rows = []
    for k, (d, lo, hi) in ((3, (0.04, 0.01, 0.07)), (12, (-0.02, -0.05, 0.01))):
        for kind in ("top", "low"):
            for name in ("a", "mean"):
                for metric in ("ap", "fake_acc"):
                    rows.append({"kind": kind, "k": k, "set": name, "metric": metric, "delta": d, "low": lo,
                                 "high": hi, "groups": 6, "null_percentile": 100.0 if k == 3 else 30.0,
                                 "null_replicas": 20, "null_low": -0.01, "null_high": 0.01})
    pd.DataFrame(rows).to_csv(dr / "dropout_effects.csv", index=False)
    write_json(dr / "dropout.json", {"curves": [{"set": "mean", "ks": [3, 12], "monotone": False, "rises_at": [3],
                                                 "raises_ap": [3]}], "resamples": 100, "bootstrap_seed": 0})
    body, sentence = dropout_intervals(dr, [])
    assert "k = 3: dropping the top-3 units raises the mean AP by 4.0 pp [1.0, 7.0], at percentile 100 of 20" \
        in sentence
    assert "k = 12: dropping the top-12 units changes the mean AP by -2.0 pp [-5.0, +1.0]: a change not shown" \
        in sentence and "lowers the mean AP" not in sentence
    assert "Finding: dropping the top-k units raises AP (interval above 0) on the mean over sets (k = 3)" in sentence
    assert "Not monotone: the top-k AP rises" in sentence and "+4.0 [+1.0, +7.0]" in body

    co = tmp_path / "color"
    co.mkdir()
    pd.DataFrame([{"set": "a", "estimate": -95.0, "low": -98.0, "high": -1.0, "groups": 2, "resamples": 100,
                   "seed": 0, "dominant_group": "photo1", "dominant_share": 0.98},
                  {"set": "b", "estimate": 1.2, "low": -0.5, "high": 3.0, "groups": 30, "resamples": 100, "seed": 0,
                   "dominant_group": "", "dominant_share": float("nan")}]).to_csv(co / "median_probability_ci.csv",
                                                                                  index=False)
    pd.DataFrame([{"set": "a", "group": "photo1", "n": 50, "median_change_pp": -96.0},
                  {"set": "a", "group": "photo2", "n": 50, "median_change_pp": -1.0}]).to_csv(
        co / "median_probability_groups.csv", index=False)
    pd.DataFrame([{"set": "a", "k": 12, "mood_count": 10, "mood_bh_count": 9, "wilcoxon_count": 11,
                   "wilcoxon_bh_count": 11, "effect_count": 8, "mood_percent": 83.3, "effect_percent": 66.7,
                   "effect_low": 25.0, "effect_high": 91.7, "groups": 2}]).to_csv(
        co / "colour_conditional_paired.csv", index=False)
    body, sentence, paired_body, paired_sentence = color_intervals(co, ["a"])
    assert sentence.startswith("Removing colour lowers the fakes' median p(fake) on a† (2 groups) by 95.0 pp "
                               "[1.0, 98.0].")
    assert "is not shown (its interval includes 0) on b (30 groups): +1.2 [-0.5, +3.0] pp" in sentence
    assert "raises" not in sentence and "median p(fake) on b" not in sentence
    assert "one group (photo1) carries 98% of the change" in sentence and "photo2" in body
    assert "a† 66.7 [25.0, 91.7]% (Mood 83%)" in paired_sentence and "10 (9)" in paired_body

    assert "Warning: the ranking rests on only 18" in ffrs_groups(
        {"confident_fakes_per_group": {"v1": 18}, "confident_fakes_groups": 1, "group_source": "file-name pattern",
         "ranking_warning": "the ranking rests on only 18 confident fakes"})
    rep = {"replicates": 20, "unit": "source groups", "top_k_in_95_percent": 7,
           "top_k_overlap": {"median": 0.75, "min": 0.5, "max": 1.0}}
    replicated = ffrs_groups({"k": 12, "replicates": rep})
    assert "Over 20 resampled source sets (source groups), the top-12 overlaps the full ranking's by 75% (median; " \
           "50–100%), and 7 of its units are in at least 95%" in replicated


def test_banner_names_planted_effects_and_the_groups_behind_the_intervals(tmp_path):
    import json

    import pandas as pd

    from tffkit.report.html import banner

    study = {"data": {"test": str(tmp_path / "bench" / "test")}}
    (tmp_path / "bench" / "test").mkdir(parents=True)
    assert banner(tmp_path / "study", study) is None  # nothing planted, no intervals: no banner
    (tmp_path / "bench" / "benchmark.json").write_text(json.dumps(
        {"artefacts": {"colour": 0.5, "format_shortcut": True, "jpeg_quality": 90}}))
    (tmp_path / "study" / "evaluate").mkdir(parents=True)
    pd.DataFrame({"set": ["a", "b", "mean"], "metric": "ap", "groups": [2, 8, 10]}).to_csv(
        tmp_path / "study" / "evaluate" / "metrics_ci.csv", index=False)
    text = banner(tmp_path / "study", study)
    assert "Planted effects" in text and "strength 0.5" in text and "format shortcut (reals JPEG at quality 90" in text
    assert "2–8 per test set" in text


def test_report_paths_are_relative_to_the_study_folder(tmp_path):
    from tffkit.report.tables import relative

    assert relative(tmp_path / "demo" / "benchmark" / "test", tmp_path / "demo" / "study") == "../benchmark/test"
    assert relative("d/train", tmp_path) == "d/train"  # a relative path stays as recorded
    assert relative(None, tmp_path) is None
