"""Faithfulness of unit rankings (docs/algorithms.md §8): rank the detector's units five ways on the confident fakes of
the source set — FF-RS (ω; from --ranking, an ffrs.csv, or computed here), LRP-ε, mean activation,
|gradient × activation| and random (seeded) — then drop each ranking's top-k units (k = 1, 2, 4, …) and re-measure
AP and fake accuracy per test set, all from one pass over the test data. Summarised as the area over the
perturbation curve (AOPC, percentage points) with its 95% cluster-bootstrap interval over the groups of test images
and its percentile in the null of the random rankings' AOPCs. Sanity checks: ω of cascading randomisations of the
detector (Spearman ρ with the trained ω), each ranking's stability over two disjoint halves of the source images
and its top-k stability over bootstrap resamples of the source fakes' groups. Writes OUT/faithfulness.csv,
faithfulness_summary.csv, faithfulness_by_k.csv, faithfulness_images.csv, faithfulness.json, unit_scores.csv and
deletion_curves.png. Runs under torchrun."""

from __future__ import annotations

import argparse

from .common import add_options, data_flags, data_spec, is_main_process, options_of

HELP = "does a ranking find what matters? deletion curves and AOPC of FF-RS vs simpler rankings"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..jobs.faithfulness import FaithfulnessOptions

    add_options(p, FaithfulnessOptions)
    data_flags(p)
    p.add_argument("--source", required=True, help="source set whose confident fakes rank the units (as tff rank)")
    p.add_argument("--ranking", default=None, help="FF-RS from this ffrs.csv (tff rank) instead of this run's ω")
    p.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from ..jobs.faithfulness import FaithfulnessOptions, faithfulness

    res = faithfulness(source=data_spec(args, "source"), test=data_spec(args), ranking=args.ranking,
                       options=options_of(FaithfulnessOptions, args), out=args.out)
    if is_main_process():
        from ..analysis.faithfulness import verdicts

        for sentence in verdicts(res.summary).values():
            print(sentence)
        half = res.sanity["split_half"]["ffrs"]
        k = res.sanity["top_k"]
        boot = res.sanity["bootstrap"]["ffrs"]
        print(f"FF-RS over two halves of the source fakes: Spearman ρ {half['spearman']:.2f}, "
              f"top-{k} overlap {100 * half['top_k_overlap']:.0f}%; over {boot['resamples']} bootstrap resamples "
              f"of {boot['buckets']} groups, {100 * boot['top_k_kept'][k]:.0f}% of the top-{k} kept on average")
        for stage in res.sanity["randomised"]:
            rho = "undefined" if stage["spearman"] is None else f"{stage['spearman']:.2f}"
            print(f"ω with {stage['modules_redrawn']} modules re-drawn from the top ({100 * stage['fraction']:.0f}%): "
                  f"Spearman ρ with the trained ω {rho}")
        print(f"results written to {args.out}")
    return 0
