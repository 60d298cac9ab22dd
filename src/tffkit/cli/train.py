"""Train a universal detector (Wang et al.'s recipe: blur + JPEG augmentation, Adam 1e-4, batch 64,
early stopping on validation accuracy) or, with --color-robust, a colour-robust one (RandomGrayscale 0.5).
Writes OUT/model_best.pth, OUT/model_last.pth (Wang's {'model': state_dict} format), OUT/history.csv and
OUT/run.json; --resume continues a killed run exactly. Under torchrun the global batch is split across
processes."""

from __future__ import annotations

import argparse

from .common import add_options, data_flags, data_spec, is_main_process, options_of

FAILED = "the checkpoints written so far are kept (--resume continues from model_last.pth)"
HELP = "train a (colour-robust) detector: model_best.pth, model_last.pth, history.csv"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..jobs.train import TrainOptions

    add_options(p, TrainOptions)
    data_flags(p, help="training root (e.g. {0_real,1_fake} folders at any depth; any layout of --layout) or a CSV "
                       "manifest")
    p.add_argument("--val", required=True, help="validation root (same layout)")
    p.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from ..jobs.train import TrainOptions, train

    result = train(data_spec(args), data_spec(args, "val"), options=options_of(TrainOptions, args), out=args.out)
    if is_main_process():
        best = result["best"]
        summary = (f"best epoch {best['epoch']}: val_acc {best['val_acc']:.4f} val_ap {best['val_ap']:.4f}"
                   if best else "no completed epoch")
        print(f"stopped ({result['stopped']}) after {result['epochs']} epoch(s), {result['steps']} step(s); "
              f"{summary}; skipped {len(result['skipped'])} unreadable file(s); results in {args.out}")
    return 0
