"""A detector's own unit selection against an FF-RS ranking: DEAR's channel gate (:mod:`tffkit.detectors.dear`, Kim
et al., ICML 2026) read as ranking units, and the overlap of a ranking's top units with the channels the gate keeps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..detectors.dear import dear_of
from .ffrs import channel_key


def gate_units(model: nn.Module, *, prefix: str = "backbone.") -> pd.DataFrame:
    """The gate as ranking units: one row per ``layer4`` channel with ``layer`` (the last block's ``conv3``, named
    as in ``ffrs.csv``), ``channel``, ``gate`` (1 kept, 0 pruned) and ``key`` (the public key format)."""
    dear = dear_of(model)
    gate = dear.gate.gate.detach().cpu().numpy()
    last = len(dear.backbone.layer4) - 1
    layer = f"{prefix}layer4.{last}.conv3"
    return pd.DataFrame({"layer": layer, "channel": np.arange(len(gate)), "gate": gate.astype(int),
                         "key": [channel_key(layer, c, len(gate)) for c in range(len(gate))]})


def gate_vs_ranking(ranking: pd.DataFrame, gate: np.ndarray | torch.Tensor, *, layer: str, k: int) -> dict:
    """How many of the ``k`` units of ``layer`` with the highest ω (an ``ffrs.csv`` table) the gate keeps, against
    chance: the expected number ``k·kept/C`` and the hypergeometric probability of at least that many (enrichment)
    and of at most that many (depletion)."""
    from scipy.stats import hypergeom

    gate = np.asarray(gate.detach().cpu() if isinstance(gate, torch.Tensor) else gate).astype(int)
    rows = ranking[ranking["layer"] == layer]
    if len(rows) != len(gate):
        raise ValueError(f"the ranking has {len(rows)} units of layer {layer!r}, the gate {len(gate)} channels")
    if not 0 < k <= len(gate):
        raise ValueError(f"k={k} must be between 1 and {len(gate)}")
    top = rows.sort_values("omega", ascending=False, kind="stable")["channel"].to_numpy()[:k]
    kept, total = int(gate.sum()), len(gate)
    hit = int(gate[top].sum())
    return {"layer": layer, "k": k, "channels": total, "kept": kept, "kept_in_top_k": hit,
            "expected": k * kept / total, "p_enriched": float(hypergeom.sf(hit - 1, total, kept, k)),
            "p_depleted": float(hypergeom.cdf(hit, total, kept, k))}
