"""What the intervals and null distributions cost a study: the study of ``--config`` run as given and *lean* —
every interval on one resample, the null distributions at their minimum (no random-k draws in dropout, 2 random
rankings in faithfulness, 1 random generator mask) — alternating after one untimed lean run (imports, first
calls), each run in a fresh folder, on the same machine in the same call. Prints JSON (and writes it to
``--out``, with its table beside it): per config each run's wall time and its steps' times, and the overhead, as
configured over lean − 1, of every pair and of their medians (docs/algorithms.md §10)."""

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

MARKERS = ("<!-- bench-uncertainty -->", "<!-- /bench-uncertainty -->")  # the table's block in docs/algorithms.md
HELP = "what intervals and null distributions add to a study's wall time (a study config run as given and lean)"

# the study settings that only the intervals and null distributions use, at their minimum
LEAN = {"uncertainty": {"resamples": 1},
        "steps": {"dropout": {"random_repeats": 0}, "faithfulness": {"random_repeats": 2, "resamples": 1},
                  "generator": {"random_repeats": 1}}}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, nargs="+",
                   help="study configs (YAML or JSON; their out folders are not used), measured one after another")
    p.add_argument("--label", nargs="+", default=None, help="a name per config for the table (default: file names)")
    p.add_argument("--repeats", type=int, default=2, help="pairs of runs (default, lean), alternating")
    p.add_argument("--warmup", type=int, default=1, help="untimed lean runs first (imports, first calls)")
    p.add_argument("--out", default=None, help="also write the JSON to this file and its table beside it (.md)")


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


def measure(cfg: dict, *, repeats: int, warmup: int, label: str = "") -> dict:
    """One study config: ``warmup`` untimed lean runs, then ``repeats`` pairs (as given, lean), alternating."""
    configs = {"default": cfg, "lean": lean(cfg)}
    runs: dict[str, list[dict]] = {"default": [], "lean": []}
    with tempfile.TemporaryDirectory(prefix="tff-bench-uncertainty-") as tmp:
        for i in range(warmup):
            _run(configs["lean"], Path(tmp) / f"warmup{i}")
        for i in range(repeats):
            for name, c in configs.items():
                runs[name].append(_run(c, Path(tmp) / f"{name}{i}"))
    pairs = [d["wall_s"] / le["wall_s"] - 1 for d, le in zip(runs["default"], runs["lean"], strict=True)]
    medians = {name: round(statistics.median(r["wall_s"] for r in rs), 2) for name, rs in runs.items()}
    steps = sorted({k for rs in runs.values() for r in rs for k in r["steps_s"]})
    step_medians = {name: {k: round(statistics.median(r["steps_s"].get(k, 0.0) for r in rs), 2) for k in steps}
                    for name, rs in runs.items()}
    return {"label": label, "name": cfg.get("name"), "runs": runs, "overhead_per_pair": [round(p, 4) for p in pairs],
            "median_wall_s": medians, "median_steps_s": step_medians,
            "overhead": round(medians["default"] / medians["lean"] - 1, 4)}


def markdown(doc: dict) -> str:
    """The table of a bench-uncertainty document (what docs/algorithms.md §10 shows)."""
    lines = [f"{doc['cpu']} ({doc['device']}, {doc['cpu_cores']} cores, {doc['threads']} threads, torch "
             f"{doc['torch']}); {doc['repeats']} pairs of runs per study after {doc['warmup']} untimed run, "
             "medians:", "",
             "| study | as configured s | lean s | overhead | the steps that differ most (as configured / lean, s) |",
             "|---|---|---|---|---|"]
    for study in doc["studies"]:
        steps = study["median_steps_s"]
        gaps = sorted(steps["default"], key=lambda k: steps["lean"].get(k, 0) - steps["default"][k])[:3]
        detail = ", ".join(f"{k} {steps['default'][k]:.1f} / {steps['lean'].get(k, 0):.1f}" for k in gaps)
        lines.append(f"| {study['label'] or study['name']} | {study['median_wall_s']['default']:.1f} | "
                     f"{study['median_wall_s']['lean']:.1f} | {100 * study['overhead']:+.0f}% | {detail} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from ..distributed import resolve_device
    from ..jobs.study_config import load_config
    from . import machine

    if args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    labels = args.label or [Path(c).name for c in args.config]
    if len(labels) != len(args.config):
        raise ValueError(f"--label needs one name per --config ({len(args.config)}), got {len(labels)}")
    cfgs = [load_config(c) for c in args.config]
    studies = [measure(cfg, repeats=args.repeats, warmup=args.warmup, label=label)
               for cfg, label in zip(cfgs, labels, strict=True)]
    doc = {"benchmark": "uncertainty", **machine(resolve_device(cfgs[0]["device"])), "lean": LEAN,
           "repeats": args.repeats, "warmup": args.warmup, "studies": studies,
           "note": "overhead: a study's wall time with its own settings over the lean one, minus 1 (medians over the "
                   "pairs; runs alternate, as configured first, after the untimed lean runs)"}
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        out.with_suffix(".md").write_text(markdown(doc))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m tffkit.benchmarks.uncertainty [bench_out/uncertainty.json]`` (from the repository root): its table
    into docs/algorithms.md."""
    from ..results import read_json, replace_marked_text

    doc = read_json(Path((argv or sys.argv[1:] or ["bench_out/uncertainty.json"])[0]))
    replace_marked_text(Path("docs/algorithms.md"), markdown(doc), MARKERS)
    print("docs/algorithms.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
