"""Score a detector on a benchmark (any layout of tffkit.layouts): AP, accuracy, real/fake accuracy at 0.5 and at a
test-calibrated threshold, per set and class, plus a mean row. Writes OUT/metrics.csv,
OUT/scores.csv (with each image's group), OUT/metrics_ci.csv (95% intervals over groups), OUT/run.json.
Runs under torchrun with the data sharded across processes."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .common import add_options, data_flags, data_spec, is_main_process, options_of

if TYPE_CHECKING:
    import pandas as pd

    from ..jobs.evaluate import Evaluation

HELP = "AP and accuracies per set/class (metrics.csv, scores.csv)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..jobs.evaluate import EvaluateOptions

    add_options(p, EvaluateOptions)
    data_flags(p)
    p.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from ..jobs.evaluate import EvaluateOptions, evaluate

    ev = evaluate(data_spec(args), options=options_of(EvaluateOptions, args), out=args.out)
    if is_main_process():
        print_evaluation(ev)
        print(f"results written to {args.out}")
    return 0


def print_evaluation(ev: Evaluation) -> None:
    """Print the metrics table (percent) and any skipped files."""
    from ..metrics import format_table, undefined_ap_note
    from ..results import display_path

    cols = ["set", "class", "n_real", "n_fake", "n_saturated", "n_tied", "ap", "acc", "real_acc", "fake_acc",
            "cal_threshold", "cal_real_acc", "cal_fake_acc"]
    print(format_table(ev.metrics, [c for c in cols if c in ev.metrics]))
    note = undefined_ap_note(ev.metrics)
    if note:
        print(note)
    s = ev.settings or {"prob_dtype": "float64", "cal_compare": "ge"}
    print(f"(metrics in %; p in {s['prob_dtype']} (n_saturated: p exactly 0 or 1, n_tied: p shared with another "
          f"image); cal_* use a threshold t calibrated on the same test set — test-calibrated — with "
          f"p {'≥' if s['cal_compare'] == 'ge' else '>'} t counted as fake)")
    if ev.intervals is not None and len(ev.intervals):
        print(interval_text(ev.intervals))
    if ev.failed:
        print(f"skipped {len(ev.failed)} unreadable file(s):")
        for row in ev.failed[:20]:
            print(f"  {display_path(row['path'])}: {row['error']}")


def interval_text(intervals: pd.DataFrame) -> str:
    """The 95% intervals over groups of AP and fake accuracy per set, one line each (percent)."""
    lines = []
    for name, part in intervals.groupby("set", sort=False):
        cells = [f"{m} {100 * r.estimate:.1f} [{100 * r.low:.1f}, {100 * r.high:.1f}]"
                 for m, r in zip(part["metric"], part.itertuples(), strict=True)]
        lines.append(f"  {name} ({int(part['groups'].iloc[0])} groups): " + ", ".join(cells))
    first = intervals.iloc[0]
    return (f"95% intervals over groups (cluster bootstrap, {int(first['resamples'])} resamples, seed "
            f"{int(first['seed'])}; metrics_ci.csv):\n" + "\n".join(lines))
