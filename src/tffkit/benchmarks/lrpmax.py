"""LRP-max throughput: (image, T-FF neuron) pairs per second of the batched neuron-seeded backward
(many pairs per backward, rows seeding different layers) vs a loop of one pair per backward, on a mix
of T-FF spread over the layers like the public top-114 ResNet-50 ranking (or the first --k of --ranking).
Random weights and images: the cost does not depend on the values. Prints one JSON object."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

HELP = "LRP-max (image, neuron) pairs/s: batched backward vs one pair per backward"

# layer → count among the public top-114 ResNet-50 T-FF (reference/original_omega_resnet50_progan_val_fake.csv)
RESNET50_TOP114_LAYERS = {
    "conv1": 9, "layer1.0.conv1": 9, "layer1.0.conv2": 11, "layer1.1.conv1": 8, "layer1.1.conv2": 11,
    "layer1.1.conv3": 1, "layer1.2.conv1": 15, "layer1.2.conv2": 2, "layer2.0.conv1": 1, "layer2.0.conv2": 1,
    "layer2.1.conv1": 10, "layer2.1.conv2": 5, "layer2.2.conv1": 3, "layer2.3.conv2": 2, "layer3.1.conv2": 2,
    "layer3.3.conv2": 1, "layer3.3.conv3": 1, "layer3.5.conv3": 1, "layer4.0.conv2": 6, "layer4.1.conv2": 4,
    "layer4.2.conv1": 6, "layer4.2.conv2": 5,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="resnet50", help="detector architecture (any tff --arch name)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--pairs", type=int, default=1024, help="(image, T-FF) pairs in the batched run")
    p.add_argument("--loop-pairs", type=int, default=64, help="pairs timed in the one-pair-per-backward loop")
    p.add_argument("--images", type=int, default=64, help="distinct images the pairs are drawn from")
    p.add_argument("--image-size", type=int, default=224, help="side of the square input images")
    p.add_argument("--chunk", type=int, default=64, help="pairs per backward in the batched run")
    p.add_argument("--k", type=int, default=114, help="number of T-FF in the mix")
    p.add_argument("--ranking", default=None, help="take the first --k T-FF of this ranking file instead")
    p.add_argument("--warmup", type=int, default=1, help="untimed batched chunks first")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic images and the pair mix")


def tff_mix(explainer, k: int, arch: str, seed: int = 0) -> list[tuple[str, int]]:
    """``k`` (layer, channel): the public top-114 layer histogram for ResNet-50, else spread evenly over layers."""
    rng = np.random.default_rng(seed)
    if arch == "resnet50":
        counts = dict(RESNET50_TOP114_LAYERS)
    else:
        layers = [layer.name for layer in explainer.layers]
        counts = {name: 0 for name in layers}
        for i in range(k):
            counts[layers[i * len(layers) // k]] += 1
    names = [n for n, c in counts.items() for _ in range(c)]
    names = [names[i * len(names) // k] for i in range(k)] if len(names) != k else names
    return [(n, int(rng.integers(explainer.by_name[n].channels))) for n in names]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def run(args: argparse.Namespace) -> int:
    from ..analysis.activations import MaxActivationTap, load_tffs
    from ..analysis.lrpmax import LRPMax
    from ..data import normalize
    from ..detectors import build_detector
    from ..distributed import resolve_device
    from ..lrp import Explainer
    from . import machine

    dev = resolve_device(args.device)
    torch.manual_seed(args.seed)
    explainer = Explainer(build_detector(args.arch).eval().to(dev))
    tffs = load_tffs(args.ranking, args.k, explainer) if args.ranking else tff_mix(explainer, args.k, args.arch,
                                                                                  args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    images = torch.randint(0, 256, (args.images, 3, args.image_size, args.image_size), dtype=torch.uint8,
                           generator=gen)
    x = normalize(images.to(dev))
    values, hs, ws = MaxActivationTap(explainer, tffs).run(x)  # positions as the ranking pass would find them
    n = args.pairs
    rows = torch.randint(0, args.images, (n,), generator=gen)
    j = torch.randint(0, len(tffs), (n,), generator=gen)
    layers = [tffs[t][0] for t in j.tolist()]
    chans = torch.tensor([tffs[t][1] for t in j.tolist()])
    h, w, seed = hs.cpu()[rows, j], ws.cpu()[rows, j], values.cpu()[rows, j].clamp(min=0)
    batched = LRPMax(explainer, args.chunk)
    m = args.warmup * args.chunk
    batched.maps(x, rows[:m], layers[:m], chans[:m], h[:m], w[:m], seed[:m])
    _sync(dev)
    t0 = time.perf_counter()
    batched.maps(x, rows, layers, chans, h, w, seed)
    _sync(dev)
    t_batched = time.perf_counter() - t0
    loop = LRPMax(explainer, 1)
    m = min(args.loop_pairs, n)
    loop.maps(x, rows[:1], layers[:1], chans[:1], h[:1], w[:1], seed[:1])
    _sync(dev)
    t0 = time.perf_counter()
    loop.maps(x, rows[:m], layers[:m], chans[:m], h[:m], w[:m], seed[:m])
    _sync(dev)
    t_loop = time.perf_counter() - t0
    rate, rate_loop = n / t_batched, m / t_loop
    print(json.dumps({
        "benchmark": "lrpmax", "arch": args.arch, **machine(dev), "image_size": args.image_size, "k": len(tffs),
        "layers_in_mix": len({t[0] for t in tffs}), "pairs": n, "chunk": args.chunk,
        "batched_s": round(t_batched, 4), "batched_pairs_per_s": round(rate, 2),
        "loop_pairs": m, "loop_s": round(t_loop, 4), "loop_pairs_per_s": round(rate_loop, 2),
        "speedup": round(rate / rate_loop, 2),
    }))
    return 0
