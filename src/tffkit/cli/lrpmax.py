"""LRP-max for the top-k transferable forensic features: per T-FF and test set, the N fakes with the
largest max spatial activation, relevance seeded at that neuron and propagated to the pixels (many
pairs per backward), patches = bounding box of the top-quartile positive relevance (--patch-box). Writes
OUT/lrpmax_index.csv, OUT/patches/…, OUT/overlays/…, OUT/collage_NN.png (paper Fig. 1 / H.1),
OUT/lrpmax.json and OUT/run.json. Runs under torchrun (selections merged exactly)."""

from __future__ import annotations

import argparse

from .common import (
    DATA_HELP,
    MAX_PER_CLASS_HELP,
    data_spec,
    detector_args,
    is_main_process,
    layout_args,
    lrp_args,
    paper_code_args,
    preset_arg,
    switches,
    weights,
)

HELP = "LRP-max patches and collages of the top-k T-FF (lrpmax_index.csv, collage_*.png)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    detector_args(p)
    p.add_argument("--ranking", required=True, help="ffrs.csv (tff rank) or a public key,mean_relevance file")
    p.add_argument("--k", type=int, default=114, help="number of top-ranked T-FF (paper: 114 ResNet-50, 27 B0)")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--sets", nargs="+", default=None, help="sets (first folder level) to use; default all")
    preset_arg(p)
    layout_args(p)
    p.add_argument("--max-per-class", type=int, default=None, metavar="N",
                   help=MAX_PER_CLASS_HELP + " (only fakes are used)")
    p.add_argument("--per-tff", type=int, default=20, help="fakes kept per (T-FF, set) (paper: 20)")
    p.add_argument("--show", type=int, default=5, help="patches shown per (T-FF, set) in the collages (paper: 5)")
    p.add_argument("--variant", default="activation", choices=["activation", "relevance"],
                   help="seed at the argmax of the activation map, or of the relevance map of the logit")
    p.add_argument("--pairs-per-backward", type=int, default=64,
                   help="(image, T-FF) pairs explained by one LRP backward (memory vs speed)")
    p.add_argument("--rows-per-figure", type=int, default=10, help="T-FF rows per collage figure")
    lrp_args(p)
    paper_code_args(p, "neuron_seed", "bounds", "activation_site", "zplus_fallback", "patch_box")
    p.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from ..analysis.lrpmax import run_lrpmax

    table = run_lrpmax(args.arch, weights(args), args.ranking, data_spec(args), args.out, k=args.k, sets=args.sets,
                       per_tff=args.per_tff, show=args.show, variant=args.variant, preset=args.preset,
                       batch_size=args.batch_size, chunk=args.pairs_per_backward, device=args.device,
                       num_workers=args.workers, max_per_class=args.max_per_class,
                       rows_per_figure=args.rows_per_figure, progress=not args.no_progress,
                       attention=args.attention,
                       **switches(args, "neuron_seed", "bounds", "activation_site", "zplus_fallback", "patch_box"))
    if is_main_process():
        print(f"{len(table)} (image, T-FF) LRP-max maps for {table['key'].nunique()} T-FF; results in {args.out}")
    return 0
