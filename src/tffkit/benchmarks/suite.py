"""Every benchmark in one call, each in its own process (its own memory statistics and cuDNN state),
checked against the GPU targets of the project's issues. Writes OUT/bench.json (every benchmark's JSON
plus the checks) and OUT/bench.md (a table), and prints the table. ``--quick`` uses CPU-sized settings."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..results import atomic_write, write_json

HELP = ("all benchmarks (lrp ResNet-50 and ViT-B/16, rank, lrpmax, train fp32/bf16, generator) against the GPU "
        "targets; bench.json + bench.md")


@dataclass(frozen=True)
class Target:
    """One acceptance figure: ``key`` of run ``run`` must be ≥ (or ≤) ``bound``."""

    run: str
    key: str
    op: str
    bound: float
    what: str

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value >= self.bound if self.op == ">=" else value <= self.bound


# run name → (benchmark, its extra arguments)
RUNS = {"lrp": ("lrp", []), "lrp_vit": ("lrp", ["--arch", "vit_b_16"]), "rank": ("rank", []),
        "lrpmax": ("lrpmax", []), "train_fp32": ("train", ["--amp", "off"]), "train_bf16": ("train", ["--amp", "bf16"]),
        "generator": ("generator", [])}
TARGETS = [
    Target("lrp", "ratio_lrp_vs_plain", ">=", 0.6, "LRP with ω taps (53 layers) / plain input gradient, img/s"),
    Target("lrp", "memory_ratio_lrp_vs_plain", "<=", 2.0, "peak memory per image, LRP / plain gradient"),
    Target("lrp_vit", "ratio_lrp_vs_plain", ">=", 0.5, "LRP with ω taps, ViT-B/16 / plain input gradient, img/s"),
    Target("lrp_vit", "memory_ratio_lrp_vs_plain", "<=", 2.0, "peak memory per image, ViT-B/16 LRP / plain"),
    Target("generator", "ratio_lrp_vs_plain", ">=", 0.5, "ProGAN-256 → ResNet-50 LRP / plain latent gradient"),
    Target("rank", "ratio_rank_vs_plain", ">=", 0.5, "tff rank per image (decoding included; fixed cost apart) / plain "
           "gradient"),
    Target("lrpmax", "batched_pairs_per_s", ">=", 500, "LRP-max (image, neuron) pairs/s"),
    Target("train_fp32", "ratio", ">=", 0.9, "tff train fp32 (loading + augmentation) / bare loop"),
    Target("train_bf16", "ratio", ">=", 0.9, "tff train bf16 (loading + augmentation) / bare loop"),
]
# CPU-sized settings (the README's CPU table)
QUICK = {"lrp": ["--batch-size", "8", "--iters", "3", "--warmup", "1", "--no-zennit"],
         "rank": ["--batch-size", "8", "--images", "32", "--iters", "3"],
         "lrpmax": ["--image-size", "64", "--pairs", "256", "--loop-pairs", "32"],
         "train": ["--batch-size", "8", "--steps", "5", "--warmup", "2"],
         "generator": ["--batch-size", "2", "--iters", "2", "--warmup", "1"]}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--out", default="bench_out", help="folder for bench.json and bench.md")
    p.add_argument("--quick", action="store_true", help="small CPU-sized settings instead of the GPU ones")
    p.add_argument("--only", nargs="+", choices=sorted(RUNS), default=None, help="run only these")
    p.add_argument("--timeout", type=int, default=1200, help="seconds allowed to each benchmark")


def run_suite(device: str, out: str | Path, settings: dict[str, list[str]] | None = None,
              only: list[str] | None = None, timeout: int = 1200) -> dict:
    """Run the benchmarks (``settings``: extra arguments per benchmark name), check the targets, write
    ``out/bench.json`` and ``out/bench.md``; returns the JSON document. A benchmark that fails is recorded
    with its error output and the others still run."""
    results: dict[str, dict] = {}
    for name, (bench, extra) in RUNS.items():
        if only and name not in only:
            continue
        cmd = [sys.executable, "-m", "tffkit", "bench", bench, "--device", device, *extra,
               *(settings or {}).get(bench, [])]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        try:
            results[name] = json.loads(proc.stdout)
        except json.JSONDecodeError:
            results[name] = {"error": f"exit {proc.returncode}: {proc.stderr[-2000:]}", "command": cmd}
    checks = []
    for t in TARGETS:
        if t.run in results:
            value = results[t.run].get(t.key)
            checks.append({"run": t.run, "what": t.what, "key": t.key, "value": value,
                           "target": f"{t.op} {t.bound:g}", "met": t.met(value)})
    doc = {"device": device, "results": results, "checks": checks}
    write_json(Path(out) / "bench.json", doc)
    atomic_write(Path(out) / "bench.md", lambda tmp: Path(tmp).write_text(markdown(doc)))
    return doc


def markdown(doc: dict) -> str:
    """The checks as a Markdown table, with the device the numbers came from."""
    first = next((r for r in doc["results"].values() if "device_name" in r), {})
    lines = [f"Benchmarks on {first.get('device_name', doc['device'])} ({first.get('device', doc['device'])}, "
             f"{first.get('cpu_cores', '?')} CPU cores, torch {first.get('torch', '?')}). Targets are the issues' "
             "GPU targets (ResNet-50, 224²); ratios come from one run each.", "",
             "| benchmark | measured | target | met |", "|---|---|---|---|"]
    for c in doc["checks"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[c["met"]]
        value = "–" if c["value"] is None else f"{c['value']:g}"
        lines.append(f"| {c['what']} | {value} | {c['target']} | {met} |")
    errors = [f"- `{name}` failed: {r['error'][-300:]}" for name, r in doc["results"].items() if "error" in r]
    return "\n".join(lines + ([""] + errors if errors else [])) + "\n"


def run(args: argparse.Namespace) -> int:
    doc = run_suite(args.device, args.out, QUICK if args.quick else None, args.only, args.timeout)
    print(markdown(doc), end="")
    return 0
