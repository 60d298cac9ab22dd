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

from .common import (
    DATA_HELP,
    MAX_PER_CLASS_HELP,
    data_spec,
    detector_args,
    is_main_process,
    layout_args,
    paper_code_args,
    preset_arg,
    switches,
    uncertainty,
    uncertainty_args,
    weights,
)

HELP = "colour vs grayscale: metrics, median probability change, colour-conditional T-FF (Mood's test)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    detector_args(p)
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--sets", nargs="+", default=None, help="sets (first folder level) to use; default all")
    preset_arg(p)
    layout_args(p)
    p.add_argument("--ranking", default=None, help="ffrs.csv or public key,mean_relevance file: test the top-k T-FF")
    p.add_argument("--k", type=int, default=114, help="number of top-ranked T-FF (paper: 114 ResNet-50, 27 B0)")
    p.add_argument("--max-per-class", type=int, default=None, metavar="N", help=MAX_PER_CLASS_HELP)
    p.add_argument("--test-fakes", type=int, default=500, metavar="N",
                   help="Mood's tests of the T-FF use at most the first N fakes of each (set, class) (paper: 500)")
    p.add_argument("--min-prob", type=float, default=0.2, help="fakes with colour p(fake) >= this enter the box plots")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of Mood's test")
    paper_code_args(p, "activation_site", "prob_dtype")
    uncertainty_args(p)
    p.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from ..analysis.color import run_color

    res = run_color(args.arch, weights(args), data_spec(args), args.out, sets=args.sets, ranking=args.ranking,
                    k=args.k,
                    max_per_class=min(args.test_fakes, args.max_per_class or args.test_fakes),
                    metrics_max_per_class=args.max_per_class,
                    min_prob=args.min_prob, alpha=args.alpha, preset=args.preset, batch_size=args.batch_size,
                    device=args.device, num_workers=args.workers, progress=not args.no_progress,
                    **switches(args, "activation_site", "prob_dtype"), **uncertainty(args))
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
