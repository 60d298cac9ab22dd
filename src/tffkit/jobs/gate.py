"""``tff gate`` (and the study's gate step, DEAR detectors only): DEAR's fixed 0/1 channel gate on ``layer4`` read
as a unit selection and compared with an FF-RS ranking — of the top k units of the gated layer by ω, how many the
gate keeps, against the hypergeometric null of a random choice (:mod:`tffkit.analysis.gate`; docs/detectors.md).
No image is read: the gate is a buffer of the weights."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .options import DetectorOptions, PassOptions, option

if TYPE_CHECKING:
    import pandas as pd

NOT_FLAGS = ("preset", "batch_size", "workers", "progress")  # PassOptions' fields that a gate (no data) ignores


@dataclass(frozen=True, kw_only=True)
class GateOptions(DetectorOptions, PassOptions):
    """Options of ``tff gate`` (and of a study's gate step); ``--arch`` is a DEAR detector (dear_c, dear_r)."""

    k: tuple[int, ...] = option((10, 50, 100, 200), "numbers of top units (by ω) of the gated layer compared with "
                                "the gate, one row each; each at most the layer's channels", nargs="+", type=int,
                                metavar="K")
    layer: str | None = option(None, "the ranking's layer compared with the gate (default: the last layer4 block's "
                               "conv3 — named with the DEAR detector's backbone. prefix or without it, as in a "
                               "ranking of the base detector; whichever the ranking has)", metavar="NAME")


def gate(ranking: str | os.PathLike, *, options: GateOptions = GateOptions(),
         out: str | os.PathLike | None = None) -> dict:
    """Compare the gate of the DEAR detector of ``options`` with the FF-RS ranking ``ranking`` (an ``ffrs.csv``, of
    the base detector or of DEAR itself) for each k of ``options.k``; write ``gate.csv`` (one row per k: kept in
    the top k, expected k·kept/C, hypergeometric p of at least / at most that many), ``gate_units.csv`` (the gate per
    channel with the ranking's ω and rank within the layer), ``gate.json`` and ``run.json`` to ``out`` (None: nothing
    written). Returns gate.json's content."""
    import pandas as pd

    from ..analysis.gate import gate_units, gate_vs_ranking
    from ..results import file_sha256
    from .runner import Job

    o = options
    with Job("gate", o, out=out, record={"ranking": str(ranking)}) as job:
        table = pd.read_csv(ranking, keep_default_na=False)  # a missing file refused before the model is loaded
        model = job.detector()
        units = gate_units(model)
        layer = o.layer or _layer_of(table, units["layer"].iloc[0], ranking)
        channels = int((table["layer"] == layer).sum())
        too_big = [k for k in o.k if k > channels]
        if too_big:
            raise ValueError(f"--k {too_big[0]}: more than the {channels} units of layer {layer!r} in {ranking}")
        rows = [gate_vs_ranking(table, units["gate"].to_numpy(), layer=layer, k=k) for k in o.k]
        units = _with_omega(units, table, layer)
        summary = {"arch": o.arch, "ranking": str(ranking), "ranking_sha256": file_sha256(ranking),
                   "layer": layer, "channels": len(units), "kept": int(units["gate"].sum()),
                   "gated_off_omega_zero": bool((units.loc[units["gate"] == 0, "omega"] == 0).all()),
                   "per_k": rows}
        summary["sentence"] = sentence(summary)
        if job.writes:
            from ..results import write_csv, write_json

            write_csv(job.folder / "gate.csv", pd.DataFrame(rows))
            write_csv(job.folder / "gate_units.csv", units)
            write_json(job.folder / "gate.json", summary)
            job.finish(**summary, **job.inputs(model, job.preprocessing(model), found=[]))
    return summary


def _layer_of(table: pd.DataFrame, gated: str, ranking) -> str:
    """The gated layer as the ranking names it: DEAR's own name (``backbone.layer4.N.conv3``) or the base
    detector's (``layer4.N.conv3``)."""
    names = set(table["layer"].astype(str))
    for name in (gated, gated.removeprefix("backbone.")):
        if name in names:
            return name
    raise ValueError(f"--ranking {ranking}: no units of layer {gated} or {gated.removeprefix('backbone.')} (is it "
                     "a ranking of a ResNet-50 with DEAR's layer4? --layer names another)")


def _with_omega(units: pd.DataFrame, table: pd.DataFrame, layer: str) -> pd.DataFrame:
    """The gate per channel with the ranking's ω and the channel's rank within the layer (1: highest ω)."""
    rows = table[table["layer"] == layer].set_index("channel")["omega"].astype(float)
    omega = rows.reindex(units["channel"]).to_numpy()
    layer_rank = (-omega).argsort(kind="stable").argsort() + 1
    return units.assign(ranking_layer=layer, omega=omega, rank_in_layer=layer_rank)


def sentence(summary: dict) -> str:
    """gate.json's one-paragraph reading, as the card and the report show it."""
    parts = [f"of the top {r['k']} by ω {r['kept_in_top_k']} (expected {r['expected']:.1f}; p = "
             f"{r['p_enriched']:.3g} for at least, {r['p_depleted']:.3g} for at most as many)"
             for r in summary["per_k"]]
    text = (f"DEAR's gate keeps {summary['kept']} of the {summary['channels']} channels of {summary['layer']}; "
            + "; ".join(parts) + " — hypergeometric null of a random choice of channels.")
    if summary["gated_off_omega_zero"]:
        text += (" Every gated-off channel has ω = 0 in this ranking (it is of the gated detector itself, whose "
                 "pruned channels pass no relevance), so the gate decides the overlap; a ranking of the base "
                 "detector (tff rank --arch corvi2023 or rajan2025) compares the two choices.")
    return text
