"""Rank every feature map by FF-RS (ω, docs/algorithms.md §3): LRP from the logit of each confident fake of the source
set (p ≥ --min-prob), per-image share of positive relevance per channel, averaged; one global ranking.
Units are conv channels, and for transformers MLP neurons, residual-stream dimensions and attention heads.
Writes OUT/ffrs.csv (rank, layer, channel, omega, key, unit), OUT/ffrs.json, OUT/relevance_budget.csv (share of
the logit's relevance reaching each layer) and figures. Runs under torchrun. --show-rules prints the LRP rule of every
operation on the relevance path and exits (no data is read). A relevance self-check warning is repeated at the end
(and the check's outcome is in ffrs.json, ``relevance_check``)."""

from __future__ import annotations

import argparse
import contextlib
import warnings
from collections.abc import Iterator

from .common import add_options, data_flags, data_spec, is_main_process, options_of, print_unreadable

HELP = "rank feature maps by ω (FF-RS) on the source set (ffrs.csv)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..jobs.rank import RankOptions

    add_options(p, RankOptions)
    data_flags(p)
    p.add_argument("--out", required=True, help="output folder")
    show_rules_arg(p)


def show_rules_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--show-rules", action="store_true",
                   help="print the LRP rule of every operation on the relevance path (module, operation, rule, unit "
                        "layer) and the relevance self-check, then exit without reading data (--data/--out unused)")


def show_rules(options) -> int:
    """Build the explainable copy on the CPU with the command's LRP options and print its rule table."""
    from ..conventions import resolve
    from ..inputs import explainer_for, load_model
    from ..jobs.options import switches

    settings = resolve(**switches(options))
    model = load_model(options.arch, options.detector_weights(), "cpu")
    with relevance_warnings():
        ex = explainer_for(model, bounds=settings["bounds"], zplus_fallback=settings["zplus_fallback"],
                           **options.lrp())
        print(f"LRP rules of {options.arch} (composite {ex.composite.name}, input rule {ex.input_rule}, attention "
              f"{ex.composite.attention}, zplus fallback {settings['zplus_fallback']}):")
        ex.print_summary()
        check = ex.relevance_check
        if check is not None and check.ok:
            print(f"relevance self-check: sane (largest Σ|R| {max(check.ratios.values()):.3g}× the largest "
                  f"gradient×activation mass; share of the logit reaching the input {check.input_share})")
    return 0


@contextlib.contextmanager
def relevance_warnings() -> Iterator[None]:
    """Repeat relevance self-check warnings (:class:`tffkit.lrp.RelevanceWarning`) as ``warning:`` lines at the end
    of the command's output (main process); other warnings are shown as usual."""
    from ..lrp import RelevanceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RelevanceWarning)
        try:
            yield
        finally:
            messages = []
            for w in caught:
                if issubclass(w.category, RelevanceWarning):
                    messages.append(str(w.message))
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if is_main_process():
        for message in dict.fromkeys(messages):
            print(f"warning (relevance self-check): {message}", flush=True)


def run(args: argparse.Namespace) -> int:
    from ..jobs.rank import RankOptions

    options = options_of(RankOptions, args)
    if args.show_rules:
        return show_rules(options)
    with relevance_warnings():
        return _run(args, options)


def _run(args: argparse.Namespace, options) -> int:
    from ..jobs.rank import rank

    res = rank(data_spec(args), options=options, out=args.out)
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
