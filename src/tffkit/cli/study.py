"""Run the paper's whole study from one YAML config: evaluate → rank → dropout → lrpmax → color
(→ colour-robust detector: train or load, compare), each step in OUT/<step>/, then OUT/report.html.
Re-running skips steps whose outputs are complete with the same settings and the same inputs (the
SHA-256 of each checkpoint, the path/size/mtime list of the data files), so an interrupted study resumes and
a replaced detector or changed data re-runs the steps that read them. See README.md for the ForenSynths +
Wang et al. config."""

from __future__ import annotations

import argparse

from .common import add_options

INTERRUPTED = "the steps that finished are kept; run the same command again to resume"
FAILED = INTERRUPTED
HELP = "run the whole study from a YAML config and write report.html (resumable)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="study YAML (fields: out, detector, data, steps …; see "
                                  "src/tffkit/configs/forensynths_wang2020.yaml)")
    from ..jobs.options import DetectorOptions, PassOptions

    add_options(p, PassOptions, only=("progress",))
    add_options(p, DetectorOptions, only=("trust_code",))
    p.add_argument("--report-only", action="store_true", help="only re-draw report.html from existing results")
    p.add_argument("--paper-code", action="store_true",
                   help="the public code's behaviours in every step (as the config key paper_code: true; switches "
                        "set in a step still override it) — see docs/algorithms.md")


def run(args: argparse.Namespace) -> int:
    from .. import demo  # noqa: F401  (registers the demo's generator kinds, demo:<family>)
    from ..jobs.study import load_config, run_study

    if args.report_only:
        from ..report.html import build_report

        path = build_report(load_config(args.config)["out"])
    else:
        path = run_study(args.config, progress=args.progress, paper_code=True if args.paper_code else None)
    print(f"report: {path}")
    return 0
