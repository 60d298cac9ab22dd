"""Colour ablation: AP and real/fake accuracy on colour vs grayscale images (ITU-R 601 luma) per set (paper
Table I.1), box plots of the counterfeit probability of fakes with colour p >= 0.2 and the change of its
median (grayscale minus colour, in percentage points and relative %), and with --ranking the
colour-conditional top-k T-FF: Mood's median test per T-FF and set on the max spatial activation (BN-folded
or, --activation-site pre-bn, before batch norm), colour vs grayscale (first --test-fakes fakes per
class), % colour-conditional (p <= 0.05) and its Benjamini-Hochberg-corrected count, per-T-FF distribution
plots; beside Mood's test the paired analysis (Wilcoxon signed-rank, paired effect size, BH over all tests
of the detector) and 95% intervals over groups of fakes (--resamples, --bootstrap-seed).
Writes CSV/JSON/PNG to OUT and OUT/run.json; runs under torchrun."""

from __future__ import annotations

import argparse

from .common import add_options, data_flags, data_spec, is_main_process, options_of

HELP = "colour vs grayscale: metrics, median probability change, colour-conditional T-FF (Mood's test)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..jobs.color import ColorOptions

    add_options(p, ColorOptions)
    data_flags(p)
    p.add_argument("--ranking", default=None, help="ffrs.csv or public key,mean_relevance file: test the top-k T-FF")
    p.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from ..jobs.color import ColorOptions, color

    options = options_of(ColorOptions, args)
    res = color(data_spec(args), options=options, out=args.out, ranking=args.ranking)
    if is_main_process():
        print(res["table"].round(1).to_string(index=False))
        print(res["median_change"].round(3).to_string(index=False))
        print("(median_change_pp: grayscale − colour median in percentage points; median_change_pct: relative, %; "
              "positive = grayscale raises p)")
        print(res["median_change_ci"][["set", "estimate", "low", "high", "groups"]].round(1).to_string(index=False))
        print("(median change in pp with its 95% interval over groups of fakes; median_probability_groups.csv breaks "
              "sets with ≤ 20 groups down per group)")
        for r in res["median_change_ci"].itertuples():
            if r.dominant_group:
                print(f"warning: in {r.set}, group {r.dominant_group} carries {100 * r.dominant_share:.0f}% of the "
                      "median change")
        if "summary" in res:
            print(res["summary"].round(1).to_string(index=False))
            print(res["paired"].round(1).to_string(index=False))
            print("(paired analysis: Wilcoxon signed-rank p ≤ alpha, effect = median paired change / IQR of the colour "
                  "values, conditional when |effect| ≥ 0.5, with the 95% interval of its share over groups; "
                  "*_bh_count: Benjamini–Hochberg over all Mood and Wilcoxon tests of the detector)")
        print(f"results written to {args.out}")
    return 0
