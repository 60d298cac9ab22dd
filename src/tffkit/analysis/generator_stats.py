"""What makes the generator step's conclusion trustworthy (docs/algorithms.md §7, issue 22): rank on one half of the
inputs and evaluate on the other, random masks matched to the top mask's image change (PSNR), Δp(fake) per mask
with an interval over inputs, and whether the known answer (units in or next to the upsampling layer) is
recovered."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .ffrs import ChannelSets
from .uncertainty import RESAMPLES, ClusterResampler, Interval


@dataclass
class SubsetSource:
    """The inputs ``indices`` of ``source`` (a :class:`~.generator.LatentSource` or ``ImageSource``): position i
    of the subset is input ``indices[i]`` of the source, so a latent is the same whatever half it falls in."""

    source: object
    indices: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, positions: Sequence[int]):
        return self.source.batch([self.indices[int(i)] for i in positions])


def split_halves(n: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(ranking half, evaluation half) of ``n`` inputs: even indices rank, odd ones evaluate (disjoint, and input
    i's half does not depend on n)."""
    if n < 2:
        raise ValueError(f"the generator step needs at least 2 inputs (one to rank on, one to evaluate), got {n}")
    return tuple(range(0, n, 2)), tuple(range(1, n, 2))


def match_size(median_psnr: Callable[[int], float], target: float, low: int, high: int) -> tuple[int, float]:
    """The size m in [low, high] whose mask's median PSNR is closest to ``target``, by bisection on the (roughly
    decreasing) PSNR of nested masks; returns (m, its median PSNR). Each call of ``median_psnr`` regenerates."""
    cache: dict[int, float] = {}

    def at(m: int) -> float:
        if m not in cache:
            cache[m] = float(median_psnr(m))
        return cache[m]

    if at(high) >= target:  # even the largest mask changes the image less than the target: the largest
        return high, at(high)
    if at(low) <= target:
        return low, at(low)
    lo, hi = low, high  # at(lo) > target ≥ at(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if at(mid) > target else (lo, mid)
    best = min((lo, hi), key=lambda m: (abs(at(m) - target), m))
    return best, at(best)


def matched_sets(rest: Sequence[tuple[str, int]], sizes: Sequence[int], seed: int) -> list[ChannelSets]:
    """One PSNR-matched random mask per replica r: the first ``sizes[r]`` units of a seeded permutation of ``rest``
    (the units outside the top set; nested in the size, so the PSNR search is monotone in expectation)."""
    out = []
    for r, m in enumerate(sizes):
        perm = permutation(len(rest), seed, r)
        out.append(ChannelSets("matched", "matched", int(m), r, tuple(rest[i] for i in sorted(perm[:m]))))
    return out


def permutation(n: int, seed: int, replica: int) -> np.ndarray:
    """The seeded permutation of the matched masks' replica (independent of the same-size random masks' draws)."""
    return np.random.default_rng([seed, 7919, replica]).permutation(n)


def per_input_deltas(per_image: pd.DataFrame) -> pd.DataFrame:
    """(inputs × kinds) Δp(fake) in percentage points against the unmasked image, per input; kinds with replicas
    (random, matched) averaged over their replicas for each input."""
    base = per_image[per_image["kind"] == "baseline"].set_index("index")["prob"]
    masked = per_image[per_image["kind"] != "baseline"].copy()
    masked["delta_pp"] = 100 * (masked["prob"].to_numpy() - base.loc[masked["index"]].to_numpy())
    return masked.groupby(["index", "kind"], sort=False)["delta_pp"].mean().unstack("kind")


CONTRASTS = (("top", "random"), ("top", "matched"), ("low", "random"))


def masking_intervals(per_image: pd.DataFrame, *, resamples: int = RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """Mean Δp(fake) per mask kind and the paired contrasts (top − random, top − matched, low − random), each with
    its 95% bootstrap interval over the evaluation inputs (each input its own group; the same resamples for all)."""
    deltas = per_input_deltas(per_image)
    kinds = [k for k in ("top", "random", "matched", "low") if k in deltas.columns]
    contrasts = [(a, b) for a, b in CONTRASTS if a in deltas.columns and b in deltas.columns]
    cols = [deltas[k].to_numpy() for k in kinds] + [deltas[a].to_numpy() - deltas[b].to_numpy() for a, b in contrasts]
    values = np.stack(cols, 1)
    sampler = ClusterResampler(deltas.index.astype(str).tolist(), resamples=resamples, seed=seed)
    intervals: list[Interval] = sampler.intervals(lambda idx: values[idx].mean(0))
    names = kinds + [f"{a} − {b}" for a, b in contrasts]
    return pd.DataFrame([{"mask": n, "delta_pp": iv.estimate, "low": iv.low, "high": iv.high,
                          "inputs": iv.n_groups, "shown": iv.excludes(0.0)} for n, iv in zip(names, intervals,
                                                                                            strict=True)])


def known_answer(top_layers: Sequence[str], all_layers: Sequence[str], near: Sequence[str], *,
                 alpha: float = 0.05) -> dict:
    """Whether the top units sit in or next to the upsampling layer (``near``) more often than a random set of the
    same size would: the count, its expectation, and the hypergeometric P(count or more) — recovered when
    that is ≤ ``alpha``."""
    from scipy.stats import hypergeom

    n_units, k = len(all_layers), len(top_layers)
    n_near = int(np.isin(np.asarray(all_layers, dtype=object), list(near)).sum())
    count = int(np.isin(np.asarray(top_layers, dtype=object), list(near)).sum())
    p = float(hypergeom.sf(count - 1, n_units, n_near, k)) if count > 0 else 1.0
    return {"layers": list(near), "count": count, "of": k, "near_units": n_near, "units": n_units,
            "expected": k * n_near / n_units if n_units else float("nan"), "p_value": p,
            "recovered": bool(p <= alpha and count > 0)}
