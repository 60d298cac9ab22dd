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

from .common import data_args, data_spec, detector_args, is_main_process, lrp_args, paper_code_args, switches, weights

# = tffkit.analysis.faithfulness.RANDOM_REPEATS and uncertainty.RESAMPLES (not imported: the CLI starts without
# torch; a test checks they agree)
RANDOM_REPEATS, RESAMPLES = 20, 1000

HELP = "does a ranking find what matters? deletion curves and AOPC of FF-RS vs simpler rankings"


def add_arguments(p: argparse.ArgumentParser) -> None:
    detector_args(p)
    data_args(p, perturbations=False)
    p.add_argument("--source", required=True, help="source set whose confident fakes rank the units (as tff rank)")
    p.add_argument("--source-sets", nargs="+", default=None, help="sets of the source data to use; default all")
    p.add_argument("--source-max-per-class", type=int, default=None, metavar="N",
                   help="use only the first N source images per (set, class, label) folder")
    p.add_argument("--ranking", default=None, help="FF-RS from this ffrs.csv (tff rank) instead of this run's ω")
    p.add_argument("--min-prob", type=float, default=0.9, help="source fakes with p(fake) ≥ this rank the units")
    p.add_argument("--k", type=int, nargs="+", default=None, dest="ks",
                   help="units dropped per point of the curves (default: 1, 2, 4, … up to --k-max)")
    p.add_argument("--k-max", type=int, default=256, help="largest k of the default log grid")
    p.add_argument("--random-repeats", type=int, default=RANDOM_REPEATS,
                   help="seeded random rankings: the null distribution of AOPC")
    p.add_argument("--resamples", type=int, default=RESAMPLES,
                   help="cluster-bootstrap resamples of the intervals and of the top-k stability (seeded by --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random rankings and of the randomised detectors")
    p.add_argument("--top-k", type=int, default=114, help="k of the top-k overlaps reported by the sanity checks")
    p.add_argument("--randomise", type=float, nargs="*", default=[0.25, 0.5, 1.0], metavar="FRACTION",
                   help="cascading randomisation: re-draw this share of the parametrised modules from the top; one "
                        "ω pass each (none: no randomisation check)")
    p.add_argument("--lrp-epsilon", type=float, default=1e-6, help="ε of the LRP-ε ranking")
    lrp_args(p)
    paper_code_args(p, "bounds", "zplus_fallback", "dropout_site", "prob_dtype")
    p.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from ..analysis.faithfulness import faithfulness

    sw = switches(args, "bounds", "zplus_fallback", "dropout_site", "prob_dtype")
    res = faithfulness(args.arch, weights(args), data_spec(args, "source"), data_spec(args), args.out, args.ranking,
                       args.sets, args.source_sets, args.ks, args.k_max, args.random_repeats, args.seed,
                       args.min_prob, args.top_k, args.randomise, args.lrp_epsilon, args.source_max_per_class,
                       args.max_per_class, args.preset, args.batch_size, args.device, args.workers,
                       not args.no_progress, sw["paper_code"], sw["bounds"], sw["zplus_fallback"],
                       sw["dropout_site"], sw["prob_dtype"], args.attention, args.resamples)
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
