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

from .common import add_options, is_main_process, options_of

HELP = "rank generator units by relevance for the detector and mask them (appendix M)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..jobs.generator import GeneratorOptions

    p.add_argument("--generator", required=True, choices=["progan", "dcgan"],
                   help="generator architecture: progan (PyTorch GAN zoo PGAN layout) or dcgan (PyTorch examples)")
    p.add_argument("--generator-weights", required=True, help="generator checkpoint (architecture read off it)")
    # --trust-checkpoint also admits GAN zoo generator files, which pickle their config
    add_options(p, GeneratorOptions, skip=("preset",))
    p.add_argument("--inputs", default=None, help="folder of input images, for image-to-image generators")
    p.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from .. import demo  # noqa: F401  (registers the demo's generator kinds, demo:<family>)
    from ..jobs.generator import GeneratorOptions, generator

    res = generator(generator=args.generator, generator_weights=args.generator_weights, inputs=args.inputs,
                    options=options_of(GeneratorOptions, args), out=args.out)
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
