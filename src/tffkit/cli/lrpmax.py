"""LRP-max for the top-k transferable forensic features: per T-FF and test set, the N fakes with the
largest max spatial activation, relevance seeded at that neuron and propagated to the pixels (many
pairs per backward), patches = bounding box of the top-quartile positive relevance (--patch-box). Writes
OUT/lrpmax_index.csv, OUT/patches/…, OUT/overlays/…, OUT/collage_NN.png (paper Fig. 1 / H.1),
OUT/lrpmax.json and OUT/run.json. Runs under torchrun (selections merged exactly)."""

from __future__ import annotations

import argparse

from .common import add_options, data_flags, data_spec, is_main_process, options_of

HELP = "LRP-max patches and collages of the top-k T-FF (lrpmax_index.csv, collage_*.png)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..jobs.lrpmax import LRPMaxOptions

    add_options(p, LRPMaxOptions)
    p.add_argument("--ranking", required=True, help="ffrs.csv (tff rank) or a public key,mean_relevance file")
    data_flags(p)
    p.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from ..jobs.lrpmax import LRPMaxOptions, lrpmax

    table = lrpmax(data_spec(args), options=options_of(LRPMaxOptions, args), out=args.out, ranking=args.ranking)
    if is_main_process():
        print(f"{len(table)} (image, T-FF) LRP-max maps for {table['key'].nunique()} T-FF; results in {args.out}")
    return 0
