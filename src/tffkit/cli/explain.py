"""Pixel-wise heatmaps of the detector's logit — the paper's control experiment showing that plain pixel
explanations are uninformative: LRP (the rules of docs/algorithms.md §2) and Guided Grad-CAM (Grad-CAM on the
last spatial feature map x guided backpropagation), written as overlays (OUT/lrp, OUT/gradcam, OUT/guided_gradcam), one
panel per image (OUT/panels) and OUT/explain.csv. Fakes and loose images explain +logit, reals -logit.
--show-rules prints the LRP rule of every operation on the relevance path and exits."""

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
from .rank import composite_args, lrp_choice, relevance_warnings, show_rules, show_rules_arg

HELP = "LRP and Guided Grad-CAM heatmaps of the logit for images (overlays, panels)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    detector_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", default=None, help="image files to explain")
    src.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("--sets", nargs="+", default=None, help="with --data: sets to use; default all")
    p.add_argument("--max-per-class", type=int, default=4, metavar="N", help=MAX_PER_CLASS_HELP.replace(
        "; default: all", "") + " (with --data)")
    preset_arg(p)
    layout_args(p)
    p.add_argument("--cam-layer", default=None, help="module for Grad-CAM (default: the last spatial feature map)")
    lrp_args(p)
    composite_args(p)
    paper_code_args(p, "bounds", "zplus_fallback")
    p.add_argument("--out", required=True, help="output folder")
    show_rules_arg(p)


def run(args: argparse.Namespace) -> int:
    if args.show_rules:
        return show_rules(args)
    with relevance_warnings():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from ..analysis.pixel_explain import run_explain

    table = run_explain(args.arch, weights(args), args.out, images=args.images, data=data_spec(args), sets=args.sets,
                        max_per_class=args.max_per_class, preset=args.preset, cam_layer=args.cam_layer,
                        batch_size=args.batch_size, device=args.device, num_workers=args.workers,
                        progress=not args.no_progress, small_images=args.small_images, **lrp_choice(args),
                        **switches(args, "bounds", "zplus_fallback"))
    if is_main_process():
        print(f"explained {len(table)} image(s); overlays and panels in {args.out}")
    return 0
