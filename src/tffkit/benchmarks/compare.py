"""LRP implementations side by side on the same model, batch and device: a plain input gradient (the baseline),
tffkit with each composite (``paper``, ``attnlrp``, ``cp-lrp``, ``fast``), zennit (ResNets) and LXT (torchvision's
ViT). Every method computes the input relevance of one batch per step and runs in its own process (its own memory
statistics), its timed steps alternating with a plain gradient's on its own copy of the model (the ratio, robust to
a shared machine's changing load). Reports images/s, the ratio to the plain gradient, and peak memory per image of
the warm-up steps: CUDA's peak allocation
beyond what was resident (GPU), or on a CPU the peak resident-set size sampled every 2 ms during the steps minus the
size before them (``rss``, after returning freed memory to the OS; read it as a lower bound, as the allocator may
keep and reuse memory).
Writes OUT/compare.json, OUT/compare.csv and OUT/compare.md."""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..results import atomic_write, marked_text, replace_marked_text, write_json

HELP = "tffkit's composites vs zennit and LXT: images/s, ratio to a plain gradient, memory; compare.{json,csv,md}"

# per architecture family: the methods timed (library:variant)
CNN_METHODS = ("plain", "tffkit:paper", "tffkit:fast", "zennit:EpsilonGammaBox", "zennit:EpsilonPlusFlat")
VIT_METHODS = ("plain", "tffkit:attnlrp", "tffkit:cp-lrp", "tffkit:fast", "tffkit:fast-cp", "lxt:efficient-cp",
               "lxt:efficient-attnlrp", "lxt:explicit-attnlrp")
RULES = {
    "plain": "input gradient (baseline)",
    "tffkit:paper": "zβ pixels, z⁺ convolutions, ε dense (BN folded)",
    "tffkit:attnlrp": "AttnLRP (relevance form)", "tffkit:cp-lrp": "CP-LRP (relevance form)",
    "tffkit:fast": "ε / identity / AttnLRP as Gradient × Input",
    "tffkit:fast-cp": "ε / identity / CP as Gradient × Input",
    "zennit:EpsilonGammaBox": "zβ pixels, γ = 0.25 convolutions, ε dense", "zennit:EpsilonPlusFlat": "flat pixels, z⁺ "
    "convolutions, ε dense", "lxt:efficient-cp": "CP-LRP, Gradient × Input (LXT's ViT patches)",
    "lxt:efficient-attnlrp": "AttnLRP, Gradient × Input", "lxt:explicit-attnlrp": "AttnLRP, explicit rules",
}
TARGETS = {("resnet50", "tffkit:paper"): 0.6, ("vit_b_16", "tffkit:fast"): 0.9}  # GPU ratio targets (issue 25)
COLUMNS = ("arch", "method", "rules", "batch_size", "image_size", "img_s", "plain_img_s", "ratio_vs_plain",
           "peak_mib_per_image", "memory", "note")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--archs", nargs="+", default=["resnet50", "vit_b_16"], help="detector architectures (tff --arch)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch")
    p.add_argument("--image-size", type=int, default=224, help="side of the square input images")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--iters", type=int, default=10, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--methods", nargs="+", default=None, help="only these methods (e.g. plain tffkit:fast)")
    p.add_argument("--out", default="bench_out", help="folder for compare.json, compare.csv, compare.md")
    p.add_argument("--timeout", type=int, default=1200, help="seconds allowed to each method's process")
    p.add_argument("--worker", nargs=2, metavar=("ARCH", "METHOD"), help=argparse.SUPPRESS)


class _PeakRSS:
    """Peak resident-set size above the size at start, sampled by a thread (CPU memory)."""

    def __init__(self, every: float = 0.002):
        self.every, self.start, self.peak = every, _rss(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss() - self.start)
            time.sleep(self.every)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss() - self.start)


def _release_freed_memory() -> None:
    """Give memory freed by the set-up back to the OS (glibc), so the steps' peak shows in the resident set."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory(fn: Callable[[], None], device: torch.device, warmup: int) -> tuple[int | None, str]:
    """Peak memory of ``warmup`` (≥ 1) steps beyond what was resident (bytes) and how it was measured."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated()
        for _ in range(max(warmup, 1)):
            fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - resident, "cuda peak"
    if not os.path.exists("/proc/self/statm"):
        for _ in range(max(warmup, 1)):
            fn()
        return None, "not measured"
    _release_freed_memory()
    with _PeakRSS() as rss:
        for _ in range(max(warmup, 1)):
            fn()
    return rss.peak, "rss"


def alternate(fn: Callable[[], None], plain: Callable[[], None], device: torch.device, iters: int
              ) -> tuple[float, float]:
    """Seconds per step of ``fn`` and of the plain gradient, timed in turn (fn, plain, fn, plain, …), so a shared
    machine's changing load falls on both alike."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    plain()  # warm
    spent = [0.0, 0.0]
    for _ in range(iters):
        for i, f in enumerate((fn, plain)):
            sync()
            start = time.perf_counter()
            f()
            sync()
            spent[i] += time.perf_counter() - start
    return spent[0] / iters, spent[1] / iters


def _step(arch: str, method: str, device: torch.device, batch: int, size: int) -> tuple[Callable | None, str]:
    """The step of ``method`` on a frozen, seeded ``arch`` (None and a reason when it does not apply)."""
    from ..heads import normalization_of
    from ..lrp import Explainer, input_bounds
    from .lrp import frozen_model_and_plain_step
    from .references import lxt_vit_step, zennit_step

    model, x, plain = frozen_model_and_plain_step(arch, device, batch, size)
    if method == "plain":
        return plain, ""
    library, variant = method.split(":", 1)
    if library == "tffkit":
        composite, attention = ("fast", "cp") if variant == "fast-cp" else (variant, None)
        explainer = Explainer(model, composite=composite, attention=attention, input_shape=(3, size, size))
        return (lambda: explainer.explain(x)), ""
    if library == "zennit":
        mean, std = normalization_of(model) or ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        return zennit_step(model, x, variant, input_bounds("exact", mean, std))
    if library == "lxt":
        return lxt_vit_step(model, x, variant)
    return None, f"unknown method {method!r}"


def run_one(arch: str, method: str, device: str, batch: int, size: int, iters: int, warmup: int) -> dict:
    """One method on one architecture, in this process: a row of the table."""
    from ..distributed import resolve_device
    from .lrp import frozen_model_and_plain_step

    dev = resolve_device(device)
    row = {"arch": arch, "method": method, "rules": RULES.get(method, ""), "batch_size": batch, "image_size": size,
           "img_s": None, "peak_mib_per_image": None, "memory": None, "note": ""}
    _, _, plain = frozen_model_and_plain_step(arch, dev, batch, size)  # its own copy (zennit hooks the model)
    step, why = _step(arch, method, dev, batch, size)
    if step is None:
        return {**row, "note": why}
    peak, kind = peak_memory(step, dev, warmup)
    sec, plain_sec = alternate(step, plain, dev, iters)
    mib = None if peak is None else round(peak / batch / 2**20, 2)
    return {**row, "img_s": round(batch / sec, 3), "plain_img_s": round(batch / plain_sec, 3),
            "ratio_vs_plain": round(plain_sec / sec, 3), "peak_mib_per_image": mib, "memory": kind}


def run_compare(args: argparse.Namespace) -> dict:
    """Every (architecture, method) in its own process; ratios to the plain gradient of the same architecture."""
    from ..detectors import build_detector
    from ..distributed import resolve_device
    from . import machine

    rows = []
    for arch in args.archs:
        from torchvision.models import VisionTransformer

        family = VIT_METHODS if isinstance(build_detector(arch), VisionTransformer) else CNN_METHODS
        for method in family:
            if args.methods and method not in args.methods and method != "plain":
                continue
            cmd = [sys.executable, "-m", "tffkit", "bench", "compare", "--worker", arch, method, "--device",
                   args.device, "--batch-size", str(args.batch_size), "--image-size", str(args.image_size),
                   "--iters", str(args.iters), "--warmup", str(args.warmup)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            try:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            except (json.JSONDecodeError, IndexError):
                rows.append({"arch": arch, "method": method, "rules": RULES.get(method, ""), "img_s": None,
                             "note": f"failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"})
    return {"benchmark": "compare", **machine(resolve_device(args.device)), "batch_size": args.batch_size,
            "image_size": args.image_size, "iters": args.iters, "warmup": args.warmup, "rows": rows}


def markdown(doc: dict) -> str:
    """The table of a ``compare.json`` document (what docs/benchmarks.md shows)."""
    where = (f"{doc['device_name']} ({doc['device']}, {doc['cpu_cores']} CPU cores, {doc['threads']} threads, torch "
             f"{doc['torch']}); batch {doc['batch_size']}, {doc['image_size']}² images, {doc['iters']} timed steps "
             f"after {doc['warmup']} warm-up; each method in its own process, its steps timed in turn with a plain "
             "input gradient's in that process (the ratio; the `plain` row's ratio is plain against plain: the "
             "noise); every figure from this one run.")
    memory = {r.get("memory") for r in doc["rows"]} - {None}
    lines = [where, "", "| model | method | rules | images/s | × plain gradient | memory MiB/image |",
             "|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        rate = "–" if r.get("img_s") is None else f"{r['img_s']:g}"
        ratio = "–" if r.get("ratio_vs_plain") is None else f"{r['ratio_vs_plain']:.2f}×"
        target = TARGETS.get((r["arch"], r["method"]))
        if target is not None and r.get("ratio_vs_plain") is not None:
            ratio += f" (GPU target ≥ {target:g}×)"
        mem = "–" if r.get("peak_mib_per_image") is None else f"{r['peak_mib_per_image']:g}"
        note = f" ({r['note']})" if r.get("note") else ""
        lines.append(f"| {r['arch']} | `{r['method']}` | {r['rules']}{note} | {rate} | {ratio} | {mem} |")
    if memory:
        lines += ["", "Memory: " + "; ".join(sorted({"rss": "peak resident set above the size before the steps, "
                  "sampled every 2 ms (CPU; a lower bound)", "cuda peak": "CUDA peak allocation beyond the resident "
                  "model and batch"}.get(m, m) for m in memory)) + "."]
    return "\n".join(lines) + "\n"


MARKERS = ("<!-- bench-compare -->", "<!-- /bench-compare -->")


def headline(doc: dict) -> str:
    """The README's line: the target rows' ratios (from a ``compare.json``), on the device they were measured on."""
    parts = []
    for (arch, method), target in TARGETS.items():
        row = next((r for r in doc["rows"] if r["arch"] == arch and r["method"] == method), None)
        if row is not None and row.get("ratio_vs_plain") is not None:
            parts.append(f"{arch} `{method.split(':')[1]}` composite {row['ratio_vs_plain']:.2f}× (GPU target "
                         f"≥ {target:g}×)")
    where = "GPU" if doc["device"].startswith("cuda") else "CPU, shared 2-core machine; GPU figures pending"
    return (f"LRP throughput as a share of a plain input gradient (`tff bench compare`, batch {doc['batch_size']}, "
            f"{doc['image_size']}², {where}): " + "; ".join(parts) + ". Table: [docs/benchmarks.md]"
            "(docs/benchmarks.md#lrp-libraries-side-by-side-tff-bench-compare).\n")


def marked(text: str) -> str:
    """The text between the bench-compare markers of a Markdown file."""
    return marked_text(text, MARKERS)


def main(argv: list[str] | None = None) -> int:
    """``python -m tffkit.benchmarks.compare [bench_out/compare.json]`` (from the repository root): its table into
    docs/benchmarks.md and its headline into README.md."""
    doc = json.loads(Path((argv or sys.argv[1:] or ["bench_out/compare.json"])[0]).read_text())
    replace_marked_text(Path("docs/benchmarks.md"), markdown(doc), MARKERS)
    replace_marked_text(Path("README.md"), headline(doc), MARKERS)
    return 0


def write(doc: dict, out: str | Path) -> None:
    out = Path(out)
    write_json(out / "compare.json", doc)
    atomic_write(out / "compare.md", lambda tmp: Path(tmp).write_text(markdown(doc)))

    def rows_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows(doc["rows"])
    atomic_write(out / "compare.csv", rows_csv)


def run(args: argparse.Namespace) -> int:
    if args.worker:
        arch, method = args.worker
        print(json.dumps(run_one(arch, method, args.device, args.batch_size, args.image_size, args.iters,
                                 args.warmup)))
        return 0
    doc = run_compare(args)
    write(doc, args.out)
    print(markdown(doc), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
