"""LRP into the generator: images/s of the latent → generator → detector LRP pass (ω taps on every generator
layer) beside plain latent gradients through the same networks, in the same run. Defaults: a ProGAN-256-sized
generator (latent 512, widths 512 … 64) and Wang et al.'s ResNet-50 on its 256² output."""

from __future__ import annotations

import argparse
import json

import torch

from .lrp import _time

HELP = "generator→detector LRP images/s vs plain latent gradient"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="resnet50", help="detector architecture (any tff --arch name)")
    p.add_argument("--depths", type=int, nargs="+", default=[512, 512, 512, 512, 256, 128, 64],
                   help="ProGAN widths from 4×4 up (7 → 256²)")
    p.add_argument("--batch-size", type=int, default=16, help="latents per batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--iters", type=int, default=5, help="timed iterations per method")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations first")


def run(args: argparse.Namespace) -> int:
    from ..analysis.ffrs import FFRSAccumulator
    from ..detectors import build_detector
    from ..distributed import resolve_device
    from ..generation.compose import GeneratorExplainer
    from ..generation.models import ProGANGenerator
    from . import machine

    device = resolve_device(args.device)
    torch.manual_seed(0)
    generator = ProGANGenerator(512, args.depths).to(device).eval()
    detector = build_detector(args.arch).to(device).eval()
    for p in [*generator.parameters(), *detector.parameters()]:
        p.requires_grad_(False)
    gex = GeneratorExplainer(generator, detector)
    z = torch.randn(args.batch_size, 512, device=device)
    acc = FFRSAccumulator(gex.units, device)
    acc.set_batch(torch.zeros(args.batch_size, dtype=torch.long, device=device))

    def plain() -> None:
        zg = z.detach().requires_grad_(True)
        torch.autograd.grad(gex.explainer.model(zg).sum(), zg)  # the same composed graph, ordinary gradient

    def ours() -> None:
        gex.explainer.explain(z, 1.0, tap=acc, layers=gex.units, input_relevance=False)

    side = 4 * 2 ** (len(args.depths) - 1)
    results = {"benchmark": "generator", "arch": args.arch, "generator": f"ProGAN {side}²", "batch_size":
               args.batch_size, **machine(device), "generator_layers": len(gex.units)}
    for name, fn in (("plain_gradient", plain), ("tffkit_lrp", ours)):
        sec, _ = _time(fn, device, args.iters, args.warmup)
        results[f"{name}_img_s"] = round(args.batch_size / sec, 3)
    results["ratio_lrp_vs_plain"] = round(results["tffkit_lrp_img_s"] / results["plain_gradient_img_s"], 3)
    print(json.dumps(results, indent=2))
    return 0
