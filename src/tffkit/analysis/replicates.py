"""Studies pooled over folds and summarised over replicates (docs/algorithms.md §10): tables in, tables out.

*Cross-fitting*: when a data set has too few independent sources (photographs, prompts) to hold out enough of them,
its sources are split into folds and each fold is tested with detectors trained on the others, so every source is
tested exactly once. A headline statistic is then computed on the folds' per-image values *pooled* — each image
scored by its own fold's detector — and its interval resamples sources within their folds.

*Replicates* (training seeds, resampled source sets) repeat a whole analysis; a statistic is reported as its median and
range over replicates beside each replicate's interval, and a claim holds when it holds in every replicate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..wording import side
from .intervals import SEED, median_change
from .uncertainty import EFFECT_THRESHOLD, RESAMPLES, ClusterResampler, paired_effects


def _check_disjoint(groups_per_fold: Sequence[Sequence[str]]) -> None:
    seen: dict[str, int] = {}
    for fold, groups in enumerate(groups_per_fold):
        for g in set(map(str, groups)):
            if g in seen:
                raise ValueError(f"group {g!r} is in fold {seen[g]} and in fold {fold}: folds must not share a "
                                 "group (each source is tested once)")
            seen[g] = fold


def _conditional(color: np.ndarray, gray: np.ndarray) -> int:
    return int(np.sum(np.abs(paired_effects(color, gray)) >= EFFECT_THRESHOLD))


class _Pooled:
    """The per-image rows of every (detector, fold), stacked: which detector, fold, set and group each row is."""

    def __init__(self, detectors: dict[str, Sequence[dict]], sets_key: str, groups_key: str):
        parts = [(d, k, f) for d, folds in detectors.items() for k, f in enumerate(folds)]
        self.parts = parts
        sizes = [len(f[sets_key]) for _, _, f in parts]
        self.start = np.r_[0, np.cumsum(sizes)[:-1]].astype(int)
        self.part = np.repeat(np.arange(len(parts)), sizes)
        self.set = np.concatenate([np.asarray(f[sets_key], dtype=str) for _, _, f in parts])
        self.group = np.concatenate([np.asarray(f[groups_key], dtype=str) for _, _, f in parts])
        fold = np.array([k for _, k, _ in parts])[self.part]
        self.strata = np.char.add(np.char.add(fold.astype(str), "/"), self.set)

    def rows(self, idx: np.ndarray, part: int, name: str) -> np.ndarray:
        """The resample's rows of one (detector, fold) and set, as indices into that part's own arrays."""
        return idx[(self.part[idx] == part) & (self.set[idx] == name)] - self.start[part]

    def intervals(self, statistic, resamples: int, seed: int):
        return ClusterResampler(self.group, strata=self.strata, resamples=resamples, seed=seed).intervals(statistic)


def pooled_color(detectors: dict[str, Sequence[dict]], *, resamples: int = RESAMPLES, seed: int = SEED
                 ) -> pd.DataFrame:
    """The colour step's headline statistics of two detectors tested on the same cross-fitted folds, with intervals:
    per set and detector, the change of the median p(fake) without colour (``change``, pp) and the % of top-k T-FF
    conditional by the paired effect size (|effect| ≥ 0.5; ``share``, over every fold's units, each tested on its own
    fold's fakes); and the paired differences (``change_difference`` = second − first detector, ``share_difference``
    = first − second), from the same resamples.

    ``detectors``: two names → per fold ``{"probabilities": DataFrame(set, group, colour, grayscale), "colour":
    (N, K), "grayscale": (N, K), "sets": N sets, "groups": N groups}`` (a fold's ``probabilities.csv`` and
    ``activations_*.csv``). Groups are resampled within (fold, set); a group's images of both detectors are drawn
    together, so the differences are paired."""
    names = list(detectors)
    if len(names) != 2:
        raise ValueError("pooled_color compares two detectors")
    for name in names:
        _check_disjoint([f["groups"] for f in detectors[name]])
    flat = {d: [{**f, "p_sets": f["probabilities"]["set"].to_numpy(str), "p_groups": f["probabilities"]["group"],
                 "p_colour": f["probabilities"]["colour"].to_numpy(float),
                 "p_gray": f["probabilities"]["grayscale"].to_numpy(float)} for f in folds]
            for d, folds in detectors.items()}
    probs, acts = _Pooled(flat, "p_sets", "p_groups"), _Pooled(flat, "sets", "groups")
    sets = sorted(set(probs.set) | set(acts.set))

    def per_detector(pooled: _Pooled, idx: np.ndarray, s: str, value) -> list[float]:
        return [value([(f, pooled.rows(idx, i, s)) for i, (d, _, f) in enumerate(pooled.parts) if d == name])
                for name in names]

    def change(parts: list) -> float:
        return median_change(np.concatenate([f["p_colour"][r] for f, r in parts]),
                              np.concatenate([f["p_gray"][r] for f, r in parts]))

    def share(parts: list) -> float:
        units = sum(f["colour"].shape[1] for f, r in parts if len(r))
        conditional = sum(_conditional(f["colour"][r], f["grayscale"][r]) for f, r in parts if len(r))
        return 100 * conditional / units if units else float("nan")

    def changes(idx: np.ndarray) -> list[float]:
        return [v for s in sets for a, b in [per_detector(probs, idx, s, change)] for v in (a, b, b - a)]

    def shares(idx: np.ndarray) -> list[float]:
        return [v for s in sets for a, b in [per_detector(acts, idx, s, share)] for v in (a, b, a - b)]

    found = {"change": probs.intervals(changes, resamples, seed), "share": acts.intervals(shares, resamples, seed)}
    out = []
    for i, s in enumerate(sets):
        n_groups = len(set(probs.group[probs.set == s]) | set(acts.group[acts.set == s]))
        for what, ivs in found.items():
            for j, who in enumerate([*names, ""]):
                out.append({"set": s, "detector": who, "statistic": what if who else f"{what}_difference",
                            **ivs[3 * i + j].as_dict(), "groups": n_groups})
    return pd.DataFrame(out).assign(folds=len(detectors[names[0]]), resamples=resamples, seed=seed)


#: the paper's colour claims, judged per replicate on the pooled statistics of :func:`pooled_color`: (text, the
#: statistic ``detector:statistic``, the claimed sign, on which sets: ``unseen`` families or ``all``)
COLOR_CLAIMS = (
    ("Without colour, the universal detector's median p(fake) falls on every unseen family (interval below 0)",
     "universal:change", -1, "unseen"),
    ("The colour-robust detector's median p(fake) falls less than the universal one's (paired difference above 0)",
     "change_difference", 1, "unseen"),
    ("More of the universal detector's top-k T-FF are colour-conditional by the paired effect size than the "
     "colour-robust one's (paired difference above 0, every set)", "share_difference", 1, "all"),
)


def color_claims(sets: dict, training_sets: Sequence[str]) -> list[dict]:
    """The paper's direction, judged on one replicate's intervals per set (``sets``: set → ``detector:statistic`` →
    ``{estimate, low, high}``): shown (every interval on the claimed side: "yes"), contradicted (one on the other
    side: "no") or "not shown" (an interval includes 0)."""
    out = []
    for text, key, sign, which in COLOR_CLAIMS:
        names = [s for s in sets if which == "all" or s not in set(training_sets)]
        verdicts = {s: None if key not in sets[s] else
                    {1: True, -1: False, 0: None}[side(*sorted((sign * sets[s][key]["low"],
                                                                 sign * sets[s][key]["high"])))] for s in names}
        values = list(verdicts.values())
        holds = "yes" if values and all(v is True for v in values) else (
            "no" if any(v is False for v in values) else "not shown")
        out.append({"claim": text, "holds": holds, "per_set": verdicts})
    return out


def over_replicates(values: Sequence[float]) -> dict:
    """A statistic's value over replicates: median, range and how many replicates gave it."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}


def verdict(per_replicate: Sequence[str]) -> str:
    """A claim over replicates from its verdict in each ("yes", "no" or "not shown"): "yes" only when shown in every
    replicate, "no" when contradicted in every one, else how many replicates show, contradict or leave it open."""
    v = list(per_replicate)
    if v and all(x == "yes" for x in v):
        return "yes"
    if v and all(x == "no" for x in v):
        return "no"
    counts = [(v.count(x), word) for x, word in (("yes", "yes"), ("no", "no"), ("not shown", "not shown"))]
    return ", ".join(f"{word} in {n}" for n, word in counts if n) + f" of {len(v)} replicates"


__all__ = ["COLOR_CLAIMS", "color_claims", "over_replicates", "pooled_color", "verdict"]
