"""Compare DEAR's fixed 0/1 channel gate on layer4 (dear_c, dear_r: the channels the detector keeps) with an FF-RS
ranking (an ffrs.csv of the base detector, tff rank --arch corvi2023 / rajan2025, or of DEAR itself): of the top k
units of the gated layer by ω, how many the gate keeps, the number expected by chance (k·kept/C) and the
hypergeometric probabilities of at least and of at most that many. Writes OUT/gate.csv (one row per k),
OUT/gate_units.csv (the gate per channel with ω), OUT/gate.json and OUT/run.json. No image is read.
A study of a DEAR detector runs this against its own ranking (the gate step)."""

from __future__ import annotations

import argparse

from .common import add_options, options_of

HELP = "DEAR's channel gate against an FF-RS ranking (overlap, hypergeometric p per k)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..jobs.gate import NOT_FLAGS, GateOptions

    add_options(p, GateOptions, skip=NOT_FLAGS, required=("arch",),
                arch="a DEAR detector: dear_c or dear_r (or their @tiny variants), with its --weights")
    p.add_argument("--ranking", required=True, help="an FF-RS ranking (ffrs.csv of tff rank)")
    p.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from ..jobs.gate import GateOptions, gate

    summary = gate(args.ranking, options=options_of(GateOptions, args), out=args.out)
    if summary:
        print(summary["sentence"])
        print(f"results written to {args.out}")
    return 0
