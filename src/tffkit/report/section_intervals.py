"""The report's intervals (docs/algorithms.md §10): tables and sentences of the evaluate, dropout, color and rank
steps with their 95% intervals over groups, read from the files those steps wrote (``metrics_ci.csv``,
``dropout_effects.csv``, ``dropout.json``, ``median_probability_ci.csv``, ``median_probability_groups.csv``,
``colour_conditional_paired.csv``, ``ffrs.json``). A difference whose interval includes 0 is written as "not shown",
never as a direction."""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..results import read_json
from ..wording import FEW_GROUPS, change_words, effects_lines
from .tables import html_table, mark


def with_interval(estimate: float, low: float, high: float, scale: float = 100.0, signed: bool = False) -> str:
    """``93.1 [90.2, 95.0]`` (values × ``scale``); ``–`` when undefined."""
    if pd.isna(estimate):
        return "–"
    f = "{:+.1f}" if signed else "{:.1f}"
    if pd.isna(low) or pd.isna(high):
        return f.format(scale * estimate)
    return f"{f.format(scale * estimate)} [{f.format(scale * low)}, {f.format(scale * high)}]"


def _note(resamples: int, seed: int, what: str) -> str:
    return (f"<p class='note'>[low, high]: 95% percentile interval of a cluster bootstrap over {what} "
            f"({resamples} resamples, seed {seed}; docs/algorithms.md §10). A difference whose interval includes 0 "
            "is not shown.</p>")


def transfer_intervals(folder: Path, train: Iterable[str]) -> tuple[str, str]:
    """(table of AP and accuracies with intervals per set and their mean, sentence) from ``metrics_ci.csv``."""
    path = folder / "metrics_ci.csv"
    if not path.is_file():
        return "", ""
    ci = pd.read_csv(path, keep_default_na=False, na_values=[""])
    train = list(train)
    rows = []
    for name, part in ci.groupby("set", sort=False):
        by = part.set_index("metric")
        rows.append({"set": name, "groups": int(part["groups"].iloc[0]),
                     **{m: with_interval(by.loc[m, "estimate"], by.loc[m, "low"], by.loc[m, "high"])
                        for m in ("ap", "acc", "real_acc", "fake_acc") if m in by.index}})
    table = pd.DataFrame(rows)
    first = ci.iloc[0]
    body = ("<h3>With 95% intervals over groups (accuracies at p > 0.5)</h3>"
            + html_table(table, {c: "str" for c in table.columns if c != "groups"} | {"groups": "int"}, train)
            + _note(int(first["resamples"]), int(first["seed"]), "the groups of each (set, label)"))
    ap = ci[ci["metric"] == "ap"].set_index("set")
    parts = [f"{mark(s, train)} {with_interval(r.estimate, r.low, r.high)}%" for s, r in ap.iterrows() if s != "mean"]
    sentence = "AP per set with its 95% interval over groups: " + ", ".join(parts)
    if "mean" in ap.index:
        m = ap.loc["mean"]
        sentence += f"; mean over sets {with_interval(m['estimate'], m['low'], m['high'])}%"
    few = ap[(ap.index != "mean") & (ap["groups"] <= FEW_GROUPS)]
    if len(few):
        sentence += (" (intervals over few groups: " + ", ".join(f"{mark(s, train)} {int(n)}"
                                                               for s, n in few["groups"].items()) + ")")
    return body, sentence + "."


def dropout_intervals(folder: Path, train: Iterable[str]) -> tuple[str, str]:
    """(table of ΔAP / Δ fake accuracy per k with intervals and null percentiles, sentences) from
    ``dropout_effects.csv`` and ``dropout.json``."""
    if not ((folder / "dropout_effects.csv").is_file() and (folder / "dropout.json").is_file()):
        return "", ""
    effects = pd.read_csv(folder / "dropout_effects.csv")
    effects = effects[effects["kind"] != "replicate"]  # the ranking replicates' top-k: their own section
    info = read_json(folder / "dropout.json")
    lines = effects_lines(effects, info["curves"], what="the mean AP")
    shown = []
    for (kind, k, name), part in effects.groupby(["kind", "k", "set"], sort=False):
        by = part.set_index("metric")
        ap, fake = by.loc["ap"], by.loc["fake_acc"]
        shown.append({"variant": f"{kind}-{k}", "set": name, "groups": int(ap["groups"]),
                      "ΔAP (pp)": with_interval(ap["delta"], ap["low"], ap["high"], signed=True),
                      "Δ fake acc. (pp)": with_interval(fake["delta"], fake["low"], fake["high"], signed=True),
                      "percentile among random-k (ΔAP)": (f"{ap['null_percentile']:.0f} of {int(ap['null_replicas'])}"
                                                          if ap["null_replicas"] else "–"),
                      "random-k ΔAP, 2.5–97.5% (pp)": (f"{100 * ap['null_low']:+.1f} to {100 * ap['null_high']:+.1f}"
                                                       if ap["null_replicas"] else "–")})
    table = pd.DataFrame(shown)
    fmt = {c: "str" for c in table.columns if c != "groups"} | {"groups": "int"}
    mean = table[table["set"] == "mean"]
    body = ("<h3>Changes from the undropped model, every k (mean over sets), with 95% intervals over groups</h3>"
            + html_table(mean, fmt, train)
            + "<details><summary>Per test set</summary>" + html_table(table[table["set"] != "mean"], fmt, train)
            + "</details>"
            + "<p class='note'>The random-k replicas are the null distribution: a top-k change is placed by its "
            "percentile among them (0 = lower than every random draw), never as a ratio to their mean.</p>"
            + _note(int(info["resamples"]), int(info["bootstrap_seed"]), "the groups of each (set, label), paired: the "
                    "same images and resamples for the baseline and every variant"))
    return body, " ".join(lines)


def color_intervals(folder: Path, train: Iterable[str]) -> tuple[str, str, str, str]:
    """(median-change table with intervals and per-group breakdown, its sentence, paired-analysis table, its
    sentence)."""
    train = list(train)
    body, sentence, paired_body, paired_sentence = "", "", "", ""
    path = folder / "median_probability_ci.csv"
    if path.is_file():
        ci = pd.read_csv(path, keep_default_na=False, na_values=[""])
        if len(ci):
            parts, unclear, warnings = [], [], []
            for r in ci.itertuples():
                name = f"{mark(r.set, train)} ({int(r.groups)} groups)"
                if r.low > 0 or r.high < 0:
                    parts.append(change_words(r.estimate, r.low, r.high, what=f"the fakes' median p(fake) on {name}",
                                              scale=1.0))
                else:
                    unclear.append(f"{name}: {with_interval(r.estimate, r.low, r.high, 1.0, True)} pp")
                if isinstance(r.dominant_group, str) and r.dominant_group:
                    warnings.append(f"on {mark(r.set, train)} one group ({r.dominant_group}) carries "
                                    f"{100 * r.dominant_share:.0f}% of the change")
            sentence = ("Removing colour " + "; ".join(parts) + "." if parts else "")
            if unclear:
                sentence += (" " if sentence else "") + ("A change of the median p(fake) under colour removal is not "
                                                         "shown (its interval includes 0) on " + "; ".join(unclear)
                                                         + ".")
            if warnings:
                sentence += " Warning: " + "; ".join(warnings) + " — the effect rests on that group."
            table = ci.assign(change=[with_interval(r.estimate, r.low, r.high, 1.0, True) for r in ci.itertuples()])
            body = ("<h3>Change of the median p(fake) with its 95% interval over groups of fakes</h3>"
                    + html_table(table[["set", "groups", "change"]].rename(columns={"change": "change (pp)"}),
                                 {"change (pp)": "str", "groups": "int"}, train)
                    + _note(int(ci["resamples"].iloc[0]), int(ci["seed"].iloc[0]), "the groups of fakes of each set"))
            groups = folder / "median_probability_groups.csv"
            if groups.is_file():
                per = pd.read_csv(groups, keep_default_na=False)
                if len(per):
                    body += ("<details><summary>Per group (sets with ≤ 20 groups)</summary>"
                             + html_table(per, {"n": "int", "median_change_pp": "1"}, train) + "</details>")
    path = folder / "colour_conditional_paired.csv"
    if path.is_file():
        paired = pd.read_csv(path)
        table = pd.DataFrame({
            "set": paired["set"], "groups": paired["groups"],
            "Mood p ≤ 0.05 (BH)": [f"{a} ({b})" for a, b in zip(paired["mood_count"], paired["mood_bh_count"],
                                                                 strict=True)],
            "Wilcoxon p ≤ 0.05 (BH)": [f"{a} ({b})" for a, b in zip(paired["wilcoxon_count"],
                                                                     paired["wilcoxon_bh_count"], strict=True)],
            "|paired effect| ≥ 0.5 (%)": [with_interval(r.effect_percent, r.effect_low, r.effect_high, 1.0)
                                          for r in paired.itertuples()]})
        k = int(paired["k"].iloc[0])
        paired_body = (f"<h3>Paired analysis of the top-{k} T-FF (the same fakes in colour and grayscale)</h3>"
                       + html_table(table, {c: "str" for c in table.columns if c != "groups"} | {"groups": "int"},
                                    train)
                       + "<p class='note'>Counts of T-FF out of k; BH: Benjamini–Hochberg at FDR 0.05 over all Mood "
                       "and Wilcoxon tests of the detector. Paired effect: median of (grayscale − colour) max "
                       "activation over the IQR of the colour values; its share has a 95% interval over groups of "
                       "fakes.</p>")
        shares = "; ".join(f"{mark(r.set, train)} {with_interval(r.effect_percent, r.effect_low, r.effect_high, 1.0)}%"
                           f" (Mood {r.mood_percent:.0f}%)" for r in paired.itertuples())
        paired_sentence = (f" By the paired effect size (|effect| ≥ 0.5), the share of colour-conditional top-{k} "
                           f"T-FF is: {shares}.")
    return body, sentence, paired_body, paired_sentence


def ffrs_groups(summary: dict) -> str:
    """The groups the ranking's confident fakes come from, and the warning when it is fragile."""
    text = ""
    per = summary.get("confident_fakes_per_group")
    if per:
        top = sorted(per.items(), key=lambda kv: -kv[1])
        text = (f" The confident fakes come from {summary['confident_fakes_groups']} groups "
                f"({html.escape(str(summary.get('group_source')))}; most: "
                + ", ".join(f"{g} {n}" for g, n in top[:3]) + ").")
    rep = summary.get("replicates")
    if rep:
        o = rep["top_k_overlap"]
        text += (f" Over {rep['replicates']} resampled source sets ({html.escape(rep['unit'])}), the top-{summary['k']}"
                 f" overlaps the full ranking's by {100 * o['median']:.0f}% (median; {100 * o['min']:.0f}–"
                 f"{100 * o['max']:.0f}%), and {rep['top_k_in_95_percent']} of its units are in at least 95% of the "
                 "replicates' top-k (ffrs.csv: top_k_replicates).")
    if summary.get("ranking_warning"):
        text += f" Warning: {summary['ranking_warning']}."
    return text
