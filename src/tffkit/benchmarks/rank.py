"""``tff rank`` end to end (PNG decoding, cropping, LRP with ω taps on every layer, exact reduction) on a
synthetic on-disk dataset, against a plain input gradient of the same model on tensors already on the
device, in the same run. Prints JSON with images/s and the ratios (issue target on a GPU: ≥ 0.5).

Two runs, on N and on 5N fakes, separate the per-image rate (4N images over the difference of their times: the
steady state, like the baseline's timed iterations) from the fixed cost of a run (loading the detector,
building the explainer, starting the loader workers), which both runs pay once and which is reported apart."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

HELP = "tff rank images/s (data loading included) vs plain gradient"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="resnet50", help="detector architecture (any tff --arch name)")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch")
    p.add_argument("--images", type=int, default=2048,
                   help="fakes in the smaller run (the larger has 5×); whole batches, so no batch shape is new")
    p.add_argument("--image-size", type=int, default=256, help="side of the PNGs (center224 crops 224)")
    p.add_argument("--preset", default="center224", choices=["center224", "full"],
                   help="center224: CenterCrop 224; full: whole images")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=None, help="data-loading workers (default: cores minus one)")
    p.add_argument("--iters", type=int, default=10, help="timed plain-gradient iterations")
    p.add_argument("--replicates", type=int, default=0,
                   help="also time the 5N run with N ranking replicates (tff rank --replicates) and report its "
                        "overhead over the plain run (0: not timed)")


def run(args: argparse.Namespace) -> int:
    from ..distributed import resolve_device
    from ..jobs.rank import RankOptions, rank
    from . import machine
    from .lrp import _time, frozen_model_and_plain_step
    from .train import make_dataset

    device = resolve_device(args.device)
    crop = 224 if args.preset == "center224" else args.image_size
    model, _, plain = frozen_model_and_plain_step(args.arch, device, args.batch_size, crop)
    sec, _ = _time(plain, device, args.iters, 1)
    times, used = [], []
    with tempfile.TemporaryDirectory(prefix="tff-bench-rank-") as tmp:
        weights = Path(tmp) / "w.pth"
        torch.save({"model": model.state_dict()}, weights)
        roots = [make_dataset(Path(tmp) / f"x{scale}", 2 * scale * args.images, args.image_size) for scale in (1, 5)]
        runs = [(roots[0], 0), (roots[0], 0), (roots[1], 0)] + ([(roots[1], args.replicates)] if args.replicates
                                                                 else [])
        for i, (root, replicates) in enumerate(runs):  # the first, on one batch, warms up (imports, cuDNN)
            start = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):  # rank's data summary: stdout is this benchmark's JSON
                res = rank(root, options=RankOptions(
                    arch=args.arch, weights=str(weights), max_per_class=None if i else args.batch_size, min_prob=0.0,
                    preset=args.preset, batch_size=args.batch_size, device=str(device), workers=args.workers,
                    progress=False, replicates=replicates))
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - start)
                used.append(res.summary["fakes_used"])
    plain_img_s = args.batch_size / sec
    end_to_end = used[0] / times[0]
    marginal = (used[1] - used[0]) / max(times[1] - times[0], 1e-9)
    print(json.dumps({
        "benchmark": "rank", "arch": args.arch, **machine(device), "batch_size": args.batch_size,
        "preset": args.preset, "images_ranked": used, "seconds": [round(t, 3) for t in times],
        "plain_gradient_img_s": round(plain_img_s, 2),
        "rank_img_s": round(marginal, 2), "ratio_rank_vs_plain": round(marginal / plain_img_s, 3),
        "rank_end_to_end_img_s": round(end_to_end, 2),
        "ratio_end_to_end_vs_plain": round(end_to_end / plain_img_s, 3),
        "fixed_cost_s": round(times[0] - used[0] / marginal, 3),
        **({"replicates": args.replicates, "replicates_overhead": round(times[2] / times[1] - 1, 4)}
           if args.replicates else {}),
        "note": "rank_img_s: per additional image (decoding, LRP, exact reduction) from runs on N and 5N fakes; "
                "fixed_cost_s: what a run pays once (detector, explainer, loader start); end to end: the N run; "
                "replicates_overhead: the 5N run's time with --replicates over without, minus 1"},
        indent=2))
    return 0
