"""Rank every feature map by FF-RS (ω, docs/algorithms.md §3): LRP from the logit of each confident fake of the source
set (p ≥ --min-prob), per-image share of positive relevance per channel, averaged; one global ranking.
Units are conv channels, and for transformers MLP neurons, residual-stream dimensions and attention heads.
Writes OUT/ffrs.csv (rank, layer, channel, omega, key, unit), OUT/ffrs.json, OUT/relevance_budget.csv (share of
the logit's relevance reaching each layer) and figures. Runs under torchrun."""

from __future__ import annotations

import argparse

from .common import (
    data_args,
    data_spec,
    detector_args,
    is_main_process,
    lrp_args,
    paper_code_args,
    print_unreadable,
    switches,
    weights,
)

HELP = "rank feature maps by ω (FF-RS) on the source set (ffrs.csv)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    detector_args(p)
    data_args(p, perturbations=False)
    p.add_argument("--min-prob", type=float, default=0.9, help="fakes with p(fake) ≥ this are used")
    p.add_argument("--with-reals", action="store_true", help="also rank with reals (p ≤ 1 − min-prob, seed −1)")
    p.add_argument("--k", type=int, default=114, help="top-k reported in ffrs.json and figures")
    lrp_args(p)
    paper_code_args(p, "bounds", "zplus_fallback")
    p.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from ..analysis.rank import rank

    res = rank(args.arch, weights(args), data_spec(args), args.out, args.sets, args.max_per_class, args.min_prob,
               args.with_reals, args.k, args.preset, args.batch_size, args.device, args.workers,
               progress=not args.no_progress, attention=args.attention,
               **switches(args, "bounds", "zplus_fallback"))
    if is_main_process():
        from ..analysis.ffrs import tie_note

        s = res.summary
        print(f"ω of {s['n_feature_maps']} feature maps in {s['n_layers']} layers from {s['fakes_used']} confident "
              f"fakes ({s['fakes_skipped_not_confident']} not confident, {len(s['unreadable'])} unreadable); "
              f"{s['zero_omega_channels']} channels with ω = 0")
        ties = s["ties"]
        if ties["tied_values"]:
            big = ties["largest_tie"]
            print(f"ties: {ties['maps_in_ties']} maps share {ties['tied_values']} ω value(s) (largest: {big['maps']} "
                  f"maps at ω = {big['omega']:.6g}); tied maps are ordered by layer, then channel")
        for kind in ("top", "low"):
            if ties[f"{kind}_k_cut"]:
                print("note: " + tie_note(kind, s["k"], ties[f"{kind}_k_cut"]))
        print(res.ranking.head(10)[["rank", "key", "omega"]].to_string(index=False))
        if s.get("confident_fakes_per_group"):
            print(f"confident fakes from {s['confident_fakes_groups']} groups ({s['group_source']}): " + ", ".join(
                f"{g} {n}" for g, n in sorted(s["confident_fakes_per_group"].items(), key=lambda kv: -kv[1])[:10]))
        if s.get("ranking_warning"):
            print(f"warning: {s['ranking_warning']}")
        print_unreadable(s["unreadable"], "ffrs.json")
        print(f"results written to {args.out}")
    return 0
