"""What the intervals and null distributions cost a study: the study of ``--config`` run as given and *lean* —
every interval on one resample, the null distributions at their minimum (no random-k draws in dropout, 2 random
rankings in faithfulness, 1 random generator mask) — alternating after one untimed lean run (imports, first
calls), each run in a fresh folder, on the same machine in the same call. Prints JSON (and writes it to
``--out``): each run's wall time and its steps' times, and the overhead, default over lean − 1, of every pair
and of their medians (docs/algorithms.md §10)."""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HELP = "what intervals and null distributions add to a study's wall time (a study config run as given and lean)"

# the study settings that only the intervals and null distributions use, at their minimum
LEAN = {"uncertainty": {"resamples": 1},
        "steps": {"dropout": {"random_repeats": 0}, "faithfulness": {"random_repeats": 2, "resamples": 1},
                  "generator": {"random_repeats": 1}}}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="a study config (YAML or JSON; its out folder is not used)")
    p.add_argument("--repeats", type=int, default=2, help="pairs of runs (default, lean), alternating")
    p.add_argument("--warmup", type=int, default=1, help="untimed lean runs first (imports, first calls)")
    p.add_argument("--out", default=None, help="also write the JSON to this file")


def lean(cfg: dict) -> dict:
    """``cfg`` with :data:`LEAN`'s settings (the steps it names, where the config has them)."""
    out = copy.deepcopy(cfg)
    out.setdefault("uncertainty", {}).update(LEAN["uncertainty"])
    for step, settings in LEAN["steps"].items():
        if isinstance(out.get("steps", {}).get(step), dict):
            out["steps"][step].update(settings)
    return out


def _run(cfg: dict, out: Path) -> dict:
    """One study run into ``out``: its wall time and each step's (from the step's run.json)."""
    from ..jobs.study import run_study

    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the steps' summaries: stdout is this benchmark's JSON
        run_study({**cfg, "out": str(out)}, progress=False)
    wall = time.perf_counter() - start
    steps = {}
    for run_json in sorted(out.glob("*/run.json")):
        elapsed = json.loads(run_json.read_text()).get("elapsed_s")
        if elapsed is not None:
            steps[run_json.parent.name] = round(float(elapsed), 2)
    return {"wall_s": round(wall, 2), "steps_s": steps}


def run(args: argparse.Namespace) -> int:
    from ..distributed import resolve_device
    from ..jobs.study_config import load_config
    from . import machine

    if args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    cfg = load_config(args.config)
    configs = {"default": cfg, "lean": lean(cfg)}
    runs: dict[str, list[dict]] = {"default": [], "lean": []}
    with tempfile.TemporaryDirectory(prefix="tff-bench-uncertainty-") as tmp:
        for i in range(args.warmup):
            _run(configs["lean"], Path(tmp) / f"warmup{i}")
        for i in range(args.repeats):
            for name, c in configs.items():
                runs[name].append(_run(c, Path(tmp) / f"{name}{i}"))
    pairs = [d["wall_s"] / le["wall_s"] - 1 for d, le in zip(runs["default"], runs["lean"], strict=True)]
    medians = {name: statistics.median(r["wall_s"] for r in rs) for name, rs in runs.items()}
    result = {"benchmark": "uncertainty", "config": str(args.config), **machine(resolve_device(cfg["device"])),
              "lean": LEAN, "runs": runs, "overhead_per_pair": [round(p, 4) for p in pairs],
              "median_wall_s": medians, "overhead": round(medians["default"] / medians["lean"] - 1, 4),
              "note": "overhead: the study's wall time with its own settings over the lean one, minus 1 (medians "
                      "over the pairs; runs alternate, default first)"}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0
