"""LRP throughput: (a) a plain input gradient (parameters frozen), (b) our LRP with taps reducing ω
statistics at every feature-map layer, (c) zennit 0.5.1 doing the same when installed (ResNets).
Prints JSON with images/s, the ratios b/a and b/c, and the peak device memory a step allocates per image
beyond the resident models and inputs (CUDA) with its ratio b/a."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

HELP = "LRP images/s vs plain gradient (and zennit)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="resnet50", help="detector architecture (any tff --arch name)")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch")
    p.add_argument("--image-size", type=int, default=224, help="side of the square input images")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--iters", type=int, default=10, help="timed iterations per method")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    p.add_argument("--no-zennit", action="store_true", help="skip the zennit comparison")


def _time(fn: Callable[[], None], device: torch.device, iters: int, warmup: int) -> tuple[float, float | None]:
    """Seconds per call of ``fn`` and, on CUDA, the peak memory a call allocates beyond what was resident."""
    for _ in range(warmup):
        fn()
    resident = 0
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated()  # models and inputs, there before and after a step
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() - resident if device.type == "cuda" else None
    return elapsed / iters, peak


def _zennit_step(model: torch.nn.Module, x: torch.Tensor, taps: Callable) -> Callable[[], None] | None:
    try:
        from zennit.attribution import Gradient
        from zennit.composites import EpsilonPlus
        from zennit.torchvision import ResNetCanonizer
    except ImportError:
        return None
    from torchvision.models.resnet import ResNet

    if not isinstance(model, ResNet):
        return None
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    composite = EpsilonPlus(zero_params="bias", canonizers=[ResNetCanonizer()])

    def hook(_m, _i, out):
        out.register_hook(taps)

    def step() -> None:
        with Gradient(model=model, composite=composite) as attributor:
            handles = [c.register_forward_hook(hook) for c in convs]
            attributor(x, torch.ones(x.shape[0], 1, device=x.device))
            for h in handles:
                h.remove()

    return step


def frozen_model_and_plain_step(arch: str, device: torch.device, batch: int, size: int):
    """A frozen, seeded detector, a random batch on ``device`` and the plain input-gradient step (baseline)."""
    from ..detectors import build_detector

    torch.manual_seed(0)
    model = build_detector(arch).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(batch, 3, size, size, device=device)

    def plain() -> None:
        xg = x.detach().requires_grad_(True)
        torch.autograd.grad(model(xg).sum(), xg)

    return model, x, plain


def run(args: argparse.Namespace) -> int:
    from ..analysis.ffrs import FFRSAccumulator
    from ..distributed import resolve_device
    from ..lrp import Explainer
    from . import machine

    device = resolve_device(args.device)
    model, x, plain = frozen_model_and_plain_step(args.arch, device, args.batch_size, args.image_size)

    explainer = Explainer(model)
    acc = FFRSAccumulator(explainer.layers, device)
    acc.set_batch(torch.zeros(args.batch_size, dtype=torch.long, device=device))

    def ours() -> None:
        explainer.explain(x, 1.0, tap=acc, input_relevance=False)

    def zennit_tap(rel: torch.Tensor) -> None:
        rel.clamp(min=0).sum((2, 3)) / rel.abs().sum((1, 2, 3))[:, None]

    results = {"benchmark": "lrp", "arch": args.arch, "batch_size": args.batch_size, "image_size": args.image_size,
               **machine(device), "feature_map_layers": len(explainer.layers)}
    for name, fn in (("plain_gradient", plain), ("tffkit_lrp", ours),
                     ("zennit", None if args.no_zennit else _zennit_step(model, x, zennit_tap))):
        if fn is None:
            results[f"{name}_img_s"] = None
            continue
        sec, peak = _time(fn, device, args.iters, args.warmup)
        results[f"{name}_img_s"] = round(args.batch_size / sec, 2)
        results[f"{name}_peak_mb_per_image"] = round(peak / args.batch_size / 2**20, 2) if peak else None
    a, b, c = results["plain_gradient_img_s"], results["tffkit_lrp_img_s"], results["zennit_img_s"]
    results["ratio_lrp_vs_plain"] = round(b / a, 3)
    results["ratio_lrp_vs_zennit"] = round(b / c, 3) if c else None
    mem_a, mem_b = results["plain_gradient_peak_mb_per_image"], results["tffkit_lrp_peak_mb_per_image"]
    results["memory_ratio_lrp_vs_plain"] = round(mem_b / mem_a, 3) if mem_a and mem_b else None
    print(json.dumps(results, indent=2))
    return 0
