"""Sensitivity assessment (docs/algorithms.md §4): drop the top-k, k random (outside the top-k; --random-repeats seeded
draws) and the low-k feature maps of a ranking and re-measure AP and real/fake accuracy per test set.
Accepts tff rank's ffrs.csv or the public key,mean_relevance rankings. Writes OUT/dropout.csv (long),
dropout_summary.csv, dropout_table.md/.tex (paper layout), ap_vs_k.png, dropout_scores.csv (per image and variant,
with its group), dropout_effects.csv (ΔAP and Δ fake accuracy per k with 95% intervals over groups and the
percentile among the random-k replicas) and dropout.json (non-monotone top-k curves)."""

from __future__ import annotations

import argparse

from .common import add_options, data_flags, data_spec, is_main_process, options_of

HELP = "feature-map dropout: top-k vs random-k vs low-k (dropout.csv, tables)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..jobs.dropout import DropoutOptions

    add_options(p, DropoutOptions)
    data_flags(p)
    p.add_argument("--ranking", required=True, help="ffrs.csv from tff rank, or a public key,mean_relevance file")
    p.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from ..analysis.dropout import summarize
    from ..jobs.dropout import DropoutOptions, dropout
    from ..wording import paper_layout

    long = dropout(data_spec(args), ranking=args.ranking, options=options_of(DropoutOptions, args), out=args.out)
    if is_main_process():
        print(paper_layout(summarize(long), "markdown"))
        print(effects_text(args.out))
        print(f"results written to {args.out}")
    return 0


def effects_text(folder) -> str:
    """The dropout step's interval summary from its files (``dropout_effects.csv``, ``dropout.json``)."""
    import json
    from pathlib import Path

    import pandas as pd

    from ..wording import effects_lines

    folder = Path(folder)
    effects = pd.read_csv(folder / "dropout_effects.csv")
    info = json.loads((folder / "dropout.json").read_text())
    head = (f"AP averaged over sets; 95% intervals over groups ({info['resamples']} resamples, seed "
            f"{info['bootstrap_seed']}; dropout_effects.csv has every set and fake accuracy):")
    return "\n".join([head, *(f"  {line}" for line in effects_lines(effects, info["curves"], what="mean AP"))])
