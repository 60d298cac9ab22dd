"""Sensitivity assessment (docs/algorithms.md §4): drop the top-k, k random (outside the top-k; --random-repeats seeded
draws) and the low-k feature maps of a ranking and re-measure AP and real/fake accuracy per test set.
Accepts tff rank's ffrs.csv or the public key,mean_relevance rankings. Writes OUT/dropout.csv (long),
dropout_summary.csv, dropout_table.md/.tex (paper layout), ap_vs_k.png, dropout_scores.csv (per image and variant,
with its group), dropout_effects.csv (ΔAP and Δ fake accuracy per k with 95% intervals over groups and the
percentile among the random-k replicas) and dropout.json (non-monotone top-k curves)."""

from __future__ import annotations

import argparse

from .common import (
    data_args,
    data_spec,
    detector_args,
    is_main_process,
    paper_code_args,
    switches,
    uncertainty,
    uncertainty_args,
    weights,
)

HELP = "feature-map dropout: top-k vs random-k vs low-k (dropout.csv, tables)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..analysis.dropout_stats import RANDOM_REPEATS
    from ..reference import PAPER_DETECTORS

    detector_args(p)
    data_args(p, perturbations=False)
    p.add_argument("--ranking", required=True, help="ffrs.csv from tff rank, or a public key,mean_relevance file")
    p.add_argument("--k", type=int, default=114, help="feature maps to drop (paper: 114 ResNet-50, 27 B0)")
    p.add_argument("--k-sweep", type=int, nargs="+", default=None,
                   help="several k, one set of variants each (overrides --k)")
    p.add_argument("--random-repeats", type=int, default=RANDOM_REPEATS,
                   help="random-k draws per k: the null distribution in which top-k and low-k are placed (percentile); "
                        "the tables show their mean ± std")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-k draws (both --random-k protocols)")
    p.add_argument("--train-set", nargs="*", default=["progan"],
                   help="sets whose accuracy threshold stays 0.5 (the training family)")
    p.add_argument("--paper-detector", default=None, choices=PAPER_DETECTORS,
                   help="show the paper's numbers for this released detector beside ours")
    paper_code_args(p, "dropout_site", "prob_dtype", "cal_compare", "random_k")
    uncertainty_args(p)
    p.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from ..analysis.dropout import dropout, summarize
    from ..analysis.dropout_stats import effects_text
    from ..wording import paper_layout

    sw = switches(args, "dropout_site", "prob_dtype", "cal_compare", "random_k")
    long = dropout(args.arch, weights(args), args.ranking, data_spec(args), args.out, args.sets,
                   args.k_sweep or [args.k], args.random_repeats, args.seed, sw.pop("dropout_site"), args.preset,
                   args.batch_size, args.device, args.workers, args.max_per_class, args.train_set,
                   args.paper_detector, not args.no_progress, **sw, **uncertainty(args))
    if is_main_process():
        print(paper_layout(summarize(long), "markdown"))
        print(effects_text(args.out))
        print(f"results written to {args.out}")
    return 0
