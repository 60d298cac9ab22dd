"""LRP into the generator (the paper's appendix M): relevance of the detector's logit flows through the generated
image into the generator; its units (convolution channels, linear neurons) are ranked by ω over the confident
fakes of one half of N seeded latents (even indices), then, on the other half, the top/random/low p% and random
masks matched to the top mask's image change (PSNR) are masked, the same latents regenerated and scored; Δp(fake)
per mask with a bootstrap interval over latents.
Writes OUT/generator_ffrs.csv, masking.csv (per image p(fake), mean absolute pixel change, PSNR),
masking_summary.csv, masking_intervals.csv, generator.json, masking_boxplot.png (Fig. M.1) and
top_units_per_layer.png.
Runs under torchrun (whole batches per process: identical results for any number of processes)."""

from __future__ import annotations

import argparse

from .common import detector_args, is_main_process, lrp_args, weights

HELP = "rank generator units by relevance for the detector and mask them (appendix M)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generator", required=True, choices=["progan", "dcgan"],
                   help="generator architecture: progan (PyTorch GAN zoo PGAN layout) or dcgan (PyTorch examples)")
    p.add_argument("--generator-weights", required=True, help="generator checkpoint (architecture read off it)")
    detector_args(p)  # its --trust-checkpoint also admits GAN zoo generator files, which pickle their config
    p.set_defaults(batch_size=16)
    p.add_argument("--images", type=int, default=500,
                   help="generated images N (seeded latents 0..N−1): the even ones rank, the odd ones evaluate")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents and of the random masks")
    p.add_argument("--inputs", default=None, help="folder of input images, for image-to-image generators")
    p.add_argument("--percent", type=float, default=5.0, help="share of generator units masked (top/random/low)")
    p.add_argument("--random-repeats", type=int, default=5,
                   help="random masks drawn outside the top set, of the top mask's size and PSNR-matched (each)")
    p.add_argument("--psnr-tolerance", type=float, default=1.0,
                   help="dB within which a PSNR-matched random mask counts as matched to the top mask")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the Δp(fake) intervals")
    p.add_argument("--min-prob", type=float, default=0.9, help="fakes with p(fake) ≥ this enter ω")
    p.add_argument("--out-range", type=float, nargs=2, default=(-1.0, 1.0), metavar=("LOW", "HIGH"),
                   help="value range of the generator's output (mapped to [0, 1] before the detector)")
    p.add_argument("--resize", type=int, default=None, help="bilinear resize of generated images for the detector")
    p.add_argument("--crop", type=int, default=None, help="centre crop of generated images for the detector")
    lrp_args(p)
    p.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from .. import demo  # noqa: F401  (registers the demo's generator kinds, demo:<family>)
    from ..analysis.generator import run_generator

    res = run_generator(args.generator, args.generator_weights, args.arch, weights(args), args.out, args.images,
                        args.percent, args.random_repeats, args.seed, args.min_prob, args.inputs,
                        tuple(args.out_range), args.resize, args.crop, args.batch_size, args.device,
                        args.trust_checkpoint, args.attention, psnr_tolerance=args.psnr_tolerance,
                        resamples=args.resamples)
    if is_main_process():
        s = res["summary"]
        print(f"ω of {s['n_units']} generator units from {s['fakes_used']} confident fakes of {s['n_images']} "
              f"ranking inputs; masking {s['k']} units ({s['percent']:g}%) on {s['halves']['eval_inputs']} others:")
        print(res["summary_table"][["variant", "k", "median_prob", "median_change_pp", "mean_abs_change",
                                    "median_psnr_db"]].round(3).to_string(index=False))
        print("mean Δp(fake) per input (pp) [95% interval over inputs]:")
        print(res["intervals"].round(2).to_string(index=False))
        print(f"results written to {args.out}")
    return 0
