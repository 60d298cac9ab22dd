"""Pixel-wise heatmaps of the detector's logit — the paper's control experiment showing that plain pixel
explanations are uninformative: LRP (the rules of docs/algorithms.md §2) and Guided Grad-CAM (Grad-CAM on the
last spatial feature map x guided backpropagation), written as overlays (OUT/lrp, OUT/gradcam, OUT/guided_gradcam), one
panel per image (OUT/panels) and OUT/explain.csv. Fakes and loose images explain +logit, reals -logit.
--show-rules prints the LRP rule of every operation on the relevance path and exits."""

from __future__ import annotations

import argparse

from .common import DATA_HELP, add_options, data_spec, is_main_process, layout_args, options_of
from .rank import relevance_warnings, show_rules, show_rules_arg

HELP = "LRP and Guided Grad-CAM heatmaps of the logit for images (overlays, panels)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..jobs.explain import ExplainOptions

    add_options(p, ExplainOptions)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", default=None, help="image files to explain")
    src.add_argument("--data", default=None, help=DATA_HELP)
    layout_args(p)
    p.add_argument("--out", required=True, help="output folder")
    show_rules_arg(p)


def run(args: argparse.Namespace) -> int:
    from ..jobs.explain import ExplainOptions

    options = options_of(ExplainOptions, args)
    if args.show_rules:
        return show_rules(options)
    with relevance_warnings():
        return _run(args, options)


def _run(args: argparse.Namespace, options) -> int:
    from ..jobs.explain import explain

    table = explain(data_spec(args), images=args.images, small_images=args.small_images, options=options,
                    out=args.out)
    if is_main_process():
        print(f"explained {len(table)} image(s); overlays and panels in {args.out}")
    return 0
