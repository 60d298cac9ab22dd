"""Uncertainty over the right unit (docs/algorithms.md §10): cluster bootstrap intervals, paired tests,
Benjamini–Hochberg, null-distribution percentiles and per-group breakdowns.

Everything here works on per-image values that a pass already produced: no model is run again. Images that share
a source (photograph, prompt, class) form a *group*; intervals resample whole groups with replacement within each
stratum (by default each (set, label)), so a set of 100 crops of two photographs gets the interval of two
observations, not of 100.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

RESAMPLES = 1000  # B = 1000 resamples by default
LEVEL = 0.95
EFFECT_THRESHOLD = 0.5  # a unit is conditional when |paired effect| ≥ 0.5 (docs/algorithms.md §10)


@dataclass(frozen=True)
class Interval:
    """A statistic with its percentile bootstrap interval over groups."""

    estimate: float
    low: float
    high: float
    n_groups: int
    resamples: int
    level: float = LEVEL

    def excludes(self, value: float = 0.0) -> bool:
        """True when the interval lies wholly above or below ``value`` (a shown difference)."""
        return bool(self.low > value or self.high < value)

    def as_dict(self, prefix: str = "") -> dict:
        """``{prefix}estimate, {prefix}low, {prefix}high, {prefix}groups`` for a table row."""
        d = asdict(self)
        return {f"{prefix}{k}": d[k] for k in ("estimate", "low", "high")} | {f"{prefix}groups": self.n_groups}

    def text(self, fmt: str = "{:.1f}") -> str:
        """``12.3 [10.1, 14.0]``."""
        return f"{fmt.format(self.estimate)} [{fmt.format(self.low)}, {fmt.format(self.high)}]"


class ClusterResampler:
    """Draws cluster-bootstrap resamples of a set of images: whole groups with replacement within each stratum.

    ``groups`` names each image's group, ``strata`` each image's stratum (e.g. ``set/label``; one stratum when
    omitted). A group that spans strata is split by stratum. The draws are fixed by ``seed``, so two statistics
    computed over the same resampler see the same resamples (paired differences)."""

    def __init__(self, groups: Sequence, *, strata: Sequence | None = None, resamples: int = RESAMPLES,
                 seed: int = 0):
        groups = np.asarray([str(g) for g in groups], dtype=object)
        strata = np.zeros(len(groups), dtype=int) if strata is None else np.asarray([str(s) for s in strata])
        if len(strata) != len(groups):
            raise ValueError("groups and strata must have one entry per image")
        self.n = len(groups)
        self.resamples = int(resamples)
        self.seed = int(seed)
        self._strata = []  # per stratum: its images ordered by group, each group's start and size in that order
        for stratum in dict.fromkeys(strata.tolist()):
            idx = np.flatnonzero(strata == stratum)
            _, inverse, sizes = np.unique(groups[idx].astype(str), return_inverse=True, return_counts=True)
            order = idx[np.argsort(inverse, kind="stable")]
            self._strata.append((order, np.r_[0, np.cumsum(sizes)[:-1]], sizes))
        self.n_groups = sum(len(sizes) for _, _, sizes in self._strata)

    def draws(self):
        """Yield ``resamples`` index arrays (an image appears once per time its group is drawn)."""
        rng = np.random.default_rng(self.seed)
        for _ in range(self.resamples):
            parts = []
            for order, starts, sizes in self._strata:
                pick = rng.integers(0, len(sizes), len(sizes))
                lengths = sizes[pick]
                ends = np.cumsum(lengths)
                # positions start[pick] … start[pick] + size − 1 of every drawn group, in one vectorised step
                positions = np.repeat(starts[pick] - (ends - lengths), lengths) + np.arange(ends[-1])
                parts.append(order[positions])
            yield np.concatenate(parts) if parts else np.zeros(0, dtype=int)

    def multiplicities(self) -> np.ndarray:
        """(resamples, images) int64: how often each image is drawn in each resample (for statistics that are
        weighted sums, computed for every resample at once)."""
        blocks = list(self.multiplicity_blocks())
        return np.concatenate(blocks) if blocks else np.zeros((0, self.n), dtype=np.int64)

    def multiplicity_blocks(self, rows: int = 100) -> Iterator[np.ndarray]:
        """:meth:`multiplicities` in blocks of at most ``rows`` resamples, in order (memory bounded by ``rows``)."""
        block = []
        for draw in self.draws():
            block.append(np.bincount(draw, minlength=self.n))
            if len(block) == rows:
                yield np.stack(block)
                block = []
        if block:
            yield np.stack(block)

    def interval_of(self, estimate: float, values: np.ndarray, *, level: float = LEVEL) -> Interval:
        """The percentile interval of ``values`` (one per resample, e.g. from :meth:`multiplicities`) around
        ``estimate`` (the statistic on all images)."""
        return _percentile_interval(float(estimate), np.asarray(values, dtype=float), level, self.n_groups,
                                    self.resamples)

    def interval(self, statistic: Callable[[np.ndarray], float], *, level: float = LEVEL) -> Interval:
        """The statistic on all images and its percentile interval; resamples where it is undefined (NaN, e.g. AP of
        a resample without fakes) are left out."""
        estimate = float(statistic(np.arange(self.n)))
        values = np.array([statistic(idx) for idx in self.draws()], dtype=float)
        return _percentile_interval(estimate, values, level, self.n_groups, self.resamples)

    def intervals(self, statistic: Callable[[np.ndarray], np.ndarray], *, level: float = LEVEL) -> list[Interval]:
        """Like :meth:`interval` for a statistic returning a vector (e.g. one value per k or per unit), all
        components from the same resamples."""
        estimate = np.atleast_1d(np.asarray(statistic(np.arange(self.n)), dtype=float))
        values = np.array([np.atleast_1d(statistic(idx)) for idx in self.draws()], dtype=float).reshape(
            self.resamples, len(estimate))
        return [_percentile_interval(float(e), values[:, i], level, self.n_groups, self.resamples)
                for i, e in enumerate(estimate)]


def _percentile_interval(estimate: float, values: np.ndarray, level: float, n_groups: int,
                         resamples: int) -> Interval:
    values = values[np.isfinite(values)]
    if not np.isfinite(estimate) or len(values) == 0:
        return Interval(estimate, float("nan"), float("nan"), n_groups, resamples, level)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high), n_groups, resamples, level)


def bootstrap(statistic: Callable[[np.ndarray], float], *, groups: Sequence, strata: Sequence | None = None,
              resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """Cluster-bootstrap percentile interval of ``statistic(indices)`` (indices into the per-image arrays)."""
    sampler = ClusterResampler(groups, strata=strata, resamples=resamples, seed=seed)
    return sampler.interval(statistic, level=level)


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """AP with fake = positive, as ``sklearn.metrics.average_precision_score`` (step-wise, ties grouped), without
    its input checks (it runs once per resample); NaN without both classes."""
    labels = np.asarray(labels)
    n_pos = int((labels == 1).sum())
    if n_pos == 0 or n_pos == len(labels):
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=float), kind="mergesort")
    s, y = np.asarray(scores, dtype=float)[order], labels[order] == 1
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each run of equal scores
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def average_precisions(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """:func:`average_precision` of every column of ``scores`` (n, V), sorted at once (the dropout variants of one
    resample); each column's sum is the same arithmetic as :func:`average_precision`, so the values are equal."""
    labels = np.asarray(labels) == 1
    scores = np.asarray(scores, dtype=float)
    n, n_pos = len(labels), int(labels.sum())
    if n_pos == 0 or n_pos == n:
        return np.full(scores.shape[1], np.nan)
    order = np.argsort(-scores, axis=0, kind="mergesort")
    s = np.take_along_axis(scores, order, 0)
    tp = np.cumsum(labels[order], axis=0)
    last = np.ones(s.shape, dtype=bool)
    last[:-1] = s[:-1] != s[1:]  # the last position of each run of equal scores
    out = np.empty(scores.shape[1])
    for v in range(scores.shape[1]):
        ends = np.flatnonzero(last[:, v])
        hits = tp[ends, v]
        out[v] = np.sum(np.diff(np.r_[0.0, hits / n_pos]) * (hits / (ends + 1)))
    return out


class WeightedOrder:
    """The columns of ``values`` (n, K) sorted once, and for every row of integer ``weights`` (B, n) — how often each
    image is drawn in a resample — the quantiles numpy would compute on the resample itself (each image repeated
    as often as drawn), without building it: (B, K) per call. Rows without images give NaN."""

    def __init__(self, values: np.ndarray, weights: np.ndarray):
        values = np.asarray(values, dtype=float)
        order = np.argsort(values, axis=0, kind="stable")
        self.sorted = np.take_along_axis(values, order, 0)
        self.cum = np.cumsum(np.asarray(weights)[:, order], axis=1)  # (B, n, K): end of each value's run
        self.total = self.cum[:, -1, :] if len(values) else np.zeros((len(weights), values.shape[1]), dtype=int)

    def _at(self, position: np.ndarray) -> np.ndarray:
        """The value at ``position`` (B, K) of each resample's sorted values."""
        index = np.minimum((self.cum <= position[:, None, :]).sum(1), len(self.sorted) - 1)
        return self.sorted[index, np.arange(self.sorted.shape[1])[None, :]]

    def median(self) -> np.ndarray:
        """``np.median`` of every resample: the middle value, or the mean of the two middle values."""
        lo, hi = self._at((self.total - 1) // 2), self._at(self.total // 2)
        return np.where(self.total > 0, (lo + hi) / 2, np.nan)

    def percentile(self, q: float) -> np.ndarray:
        """``np.percentile(…, q)`` (linear interpolation, numpy's arithmetic) of every resample."""
        qq = np.true_divide(q, 100)
        virtual = (self.total - 1) * qq  # numpy's virtual index of the linear method
        below = np.clip(np.floor(virtual), 0, np.maximum(self.total - 1, 0))
        a, b = self._at(below.astype(np.int64)), self._at(np.minimum(below + 1, self.total - 1).astype(np.int64))
        gamma = virtual - below
        diff = b - a
        value = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)  # numpy's _lerp
        return np.where(self.total > 0, value, np.nan)


def weighted_ap(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AP (fake = positive, ties grouped as sklearn) of each row of ``weights`` (B, n), an image counting as many
    times as its weight; ``scores`` (n, V) → (B, V). NaN where a row has no weighted fake or no weighted real."""
    labels = np.asarray(labels) == 1
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    n_pos = weights[:, labels].sum(1)
    n_neg = weights[:, ~labels].sum(1)
    out = np.full((len(weights), scores.shape[1]), np.nan)
    valid = (n_pos > 0) & (n_neg > 0)
    for v in range(scores.shape[1]):
        order = np.argsort(-scores[:, v], kind="mergesort")
        s = scores[order, v]
        ends = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last position of each run of equal scores
        w = weights[:, order]
        tp = np.cumsum(w * labels[order], axis=1)[:, ends]
        seen = np.cumsum(w, axis=1)[:, ends]
        gain = np.diff(tp, axis=1, prepend=0.0)
        precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, v] = np.where(valid, (gain * precision).sum(1) / n_pos, np.nan)
    return out


def weighted_fake_acc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Share of the (weighted) fakes with p > 0.5, per row of ``weights`` and column of ``scores`` → (B, V)."""
    fake = np.asarray(labels) == 1
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))[:, fake]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ (scores[fake] > 0.5).astype(np.float64)) / w.sum(1, keepdims=True)


def paired_effects(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """The paired effect size of docs/algorithms.md §10 for every column of (N, K) arrays → (K,): the median of the
    paired differences (after − before) over the interquartile range of the unperturbed values (``before``); 0 when
    both are constant, ±inf when only the IQR is 0."""
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    q75, q25 = np.percentile(before, [75, 25], axis=0)
    return effect_size(np.median(after - before, axis=0), q75 - q25)


def effect_size(diff: np.ndarray, iqr: np.ndarray) -> np.ndarray:
    """The median paired difference over the IQR; 0 when both are 0, ±inf when only the IQR is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(iqr > 0, diff / np.where(iqr > 0, iqr, 1), np.where(diff == 0, 0.0, np.sign(diff) * np.inf))


def paired_effect(before: np.ndarray, after: np.ndarray) -> float:
    """:func:`paired_effects` of one unit's paired values."""
    return float(paired_effects(np.asarray(before, dtype=float)[:, None], np.asarray(after, dtype=float)[:, None])[0])


def wilcoxon_p(before: np.ndarray, after: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired differences (1 when all differences are 0)."""
    diff = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    if not np.any(diff != 0):
        return 1.0
    return float(stats.wilcoxon(diff, zero_method="wilcox").pvalue)


def benjamini_hochberg(pvalues: Sequence[float], *, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini–Hochberg step-up over all ``pvalues``: (rejected at FDR ``alpha``, adjusted q-values)."""
    p = np.asarray(pvalues, dtype=float)
    n = len(p)
    if n == 0:
        return np.zeros(0, dtype=bool), np.zeros(0)
    order = np.argsort(p, kind="mergesort")
    scaled = p[order] * n / np.arange(1, n + 1)
    q_sorted = np.minimum.accumulate(scaled[::-1])[::-1].clip(max=1.0)
    q = np.empty(n)
    q[order] = q_sorted
    return q <= alpha, q


def null_percentile(value: float, null: Sequence[float]) -> float:
    """Where ``value`` falls in a null distribution, in percent: the share of null values below it, ties counted
    half (50 = typical of the null, 100 = above every null value)."""
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if len(null) == 0 or not np.isfinite(value):
        return float("nan")
    return float(100.0 * (np.sum(null < value) + 0.5 * np.sum(null == value)) / len(null))


def group_breakdown(values: np.ndarray, groups: Sequence, statistic: Callable[[np.ndarray], float] = np.median
                    ) -> list[dict]:
    """Per group: its number of images and the statistic of its values (e.g. the median change of p(fake))."""
    values, groups = np.asarray(values, dtype=float), np.asarray([str(g) for g in groups], dtype=object)
    return [{"group": g, "n": int((groups == g).sum()), "value": float(statistic(values[groups == g]))}
            for g in dict.fromkeys(groups.tolist())]


def dominant_group(breakdown: list[dict], *, share: float = 0.5) -> dict | None:
    """The group carrying more than ``share`` of the summed absolute effect (``value`` × ``n``), if any: the warning
    that one photograph or prompt makes the effect."""
    weights = np.array([abs(row["value"]) * row["n"] for row in breakdown], dtype=float)
    total = weights.sum()
    if len(breakdown) < 2 or not np.isfinite(total) or total == 0:
        return None
    i = int(np.argmax(weights))
    return {**breakdown[i], "share": float(weights[i] / total)} if weights[i] / total > share else None
