"""Throughput benchmarks, each printing one JSON object with the ratios measured in the same run
(these machines are noisy: compare only numbers from one run). `tff bench NAME --help` for each."""

from __future__ import annotations

import argparse
import importlib

HELP = ("throughput benchmarks (JSON): lrp, rank, lrpmax, train, generator, compare (against zennit and LXT), "
        "uncertainty (what intervals and nulls add to a study), or all of them against the targets")

# benchmark name → module under tffkit.benchmarks
BENCHMARKS = {"lrp": "lrp", "rank": "rank", "train": "train", "lrpmax": "lrpmax", "generator": "generator",
              "compare": "compare", "uncertainty": "uncertainty",
              "all": "suite"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from . import HelpFormatter

    sub = p.add_subparsers(dest="benchmark", metavar="NAME", required=True)
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(f"tffkit.benchmarks.{module_name}")
        q = sub.add_parser(name, help=module.HELP, description=(module.__doc__ or "").strip(),
                           formatter_class=HelpFormatter)
        module.add_arguments(q)
        q.set_defaults(_bench=module.run)


def run(args: argparse.Namespace) -> int:
    if args.benchmark == "uncertainty":  # runs a study, as tff study does
        from .. import demo  # noqa: F401  (registers the demo's generator kinds, demo:<family>)
    return int(args._bench(args) or 0)
