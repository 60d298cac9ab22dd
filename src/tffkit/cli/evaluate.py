"""Score a detector on a benchmark (any layout of tffkit.layouts): AP, accuracy, real/fake accuracy at 0.5 and at a
test-calibrated threshold, per set and class, plus a mean row. Writes OUT/metrics.csv,
OUT/scores.csv (with each image's group), OUT/metrics_ci.csv (95% intervals over groups), OUT/run.json.
Runs under torchrun with the data sharded across processes."""

from __future__ import annotations

import argparse

from .common import (
    data_args,
    data_spec,
    detector_args,
    is_main_process,
    paper_code_args,
    perturbation,
    switches,
    uncertainty,
    uncertainty_args,
    weights,
)

HELP = "AP and accuracies per set/class (metrics.csv, scores.csv)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    detector_args(p)
    data_args(p)
    paper_code_args(p, "prob_dtype", "cal_compare")
    uncertainty_args(p)
    p.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate, print_evaluation

    ev = evaluate(args.arch, weights(args), data_spec(args), args.out, args.sets, args.preset, perturbation(args),
                  args.batch_size, args.device, args.workers, args.max_per_class, not args.no_progress,
                  **switches(args, "prob_dtype", "cal_compare"), **uncertainty(args))
    if is_main_process():
        print_evaluation(ev)
        print(f"results written to {args.out}")
    return 0
