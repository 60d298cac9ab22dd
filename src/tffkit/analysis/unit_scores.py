"""Unit rankings other than FF-RS, and the detectors they are checked on (docs/algorithms.md §8).

Every score is reduced per image exactly as ω (:class:`~tffkit.analysis.ffrs.FFRSAccumulator`): a unit's
positive part of some per-neuron quantity q over its map, divided by Σ |q| over its layer, averaged over the
confident fakes of the source set. The quantities:

- ``ffrs``: q = LRP relevance with z⁺ in the convolutions (ω itself);
- ``lrp-epsilon``: q = LRP relevance with the ε rule in the convolutions;
- ``activation``: q = the unit's activation;
- ``taylor``: q = |∂logit/∂a · a|, the first-order Taylor estimate of what removing the neuron changes.

One pass over the source images computes all of them (activation and Taylor from one plain backward of the
explainer, :meth:`~tffkit.lrp.Explainer.gradient`) — per bucket of groups and half of the images (dataset index
even / odd, so the halves do not depend on the number of processes), and ω again on cascading randomisations of
the detector. The per-bucket sums (groups of images, :attr:`~tffkit.layouts.Sample.unit`, hashed into at most
:data:`BUCKETS` buckets; memory O(buckets × units) on the device) give the top-k stability of each ranking over
cluster-bootstrap resamples of the source fakes (:func:`topk_stability`).
"""

from __future__ import annotations

import copy
import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .. import distributed as tdist
from ..data import Preprocessing, Sample
from ..lrp import Explainer, FeatureLayer
from ..passes import DatasetPass
from .ffrs import FIXED_POINT, FFRSAccumulator

SCORED = ("ffrs", "lrp-epsilon", "activation", "taylor")
BUCKETS = 256  # at most this many buckets of groups keep per-unit sums (iid groups: a bucket is a cluster too)
LABELS = {"ffrs": "FF-RS (ω)", "lrp-epsilon": "LRP-ε", "activation": "mean activation",
          "taylor": "|gradient × activation|", "random": "random"}


class ShareTap:
    """A tap feeding ``transform(gradient or relevance, activation)`` to an accumulator (ω's normalisation)."""

    def __init__(self, acc: FFRSAccumulator, transform: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        self.acc, self.transform = acc, transform

    def __call__(self, layer: FeatureLayer, value: torch.Tensor, activation: torch.Tensor | None) -> None:
        self.acc(layer, self.transform(value, activation), None)


def _both(taps: Sequence[ShareTap]) -> Callable[[FeatureLayer, torch.Tensor, torch.Tensor | None], None]:
    def tap(layer: FeatureLayer, value: torch.Tensor, activation: torch.Tensor | None) -> None:
        for t in taps:
            t(layer, value, activation)
    return tap


def mean_score(acc: FFRSAccumulator) -> np.ndarray:
    """(units,) the score over all images of the accumulator's groups (exact integer sums)."""
    total = acc.sums.sum(0).to(torch.float64) / FIXED_POINT
    return (total / acc.counts.sum().clamp(min=1).to(torch.float64)).cpu().numpy()


def randomised_copy(model: nn.Module, fraction: float, seed: int = 0) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` whose top ``fraction`` of parametrised modules (in reverse definition order: from the
    output down) have every parameter re-drawn from a normal with that tensor's own mean and standard deviation
    (cascading randomisation, Adebayo et al. 2018). ``model`` is not touched. Returns (copy, re-drawn modules)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"a randomisation fraction must lie in (0, 1], got {fraction}")
    out = copy.deepcopy(model)
    owners = [(name, m) for name, m in out.named_modules() if next(m.parameters(recurse=False), None) is not None]
    chosen = owners[::-1][:max(1, int(np.ceil(fraction * len(owners) - 1e-9)))]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for _, module in chosen:
            for p in module.parameters(recurse=False):
                ref = p.detach().to("cpu", torch.float64)
                std = float(ref.std()) if ref.numel() > 1 else 0.0
                noise = torch.randn(p.shape, generator=gen, dtype=torch.float64, device="cpu")  # same on any device
                p.copy_((noise * std + float(ref.mean())).to(p))
    return out, [name for name, _ in chosen]


def group_buckets(units: Sequence[str], max_buckets: int = BUCKETS) -> tuple[np.ndarray, int, bool]:
    """Each image's bucket: its group's position among the sorted distinct groups when there are at most
    ``max_buckets``, else a hash of the group (blake2b) modulo ``max_buckets``. Returns (buckets, number of
    buckets, hashed)."""
    distinct = sorted(set(units))
    if len(distinct) <= max_buckets:
        index = {u: i for i, u in enumerate(distinct)}
        return np.array([index[u] for u in units], dtype=np.int64), max(1, len(distinct)), False
    digest = [int.from_bytes(hashlib.blake2b(u.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
              for u in units]
    return np.array([d % max_buckets for d in digest], dtype=np.int64), max_buckets, True


@dataclass
class SourceScores:
    """Each ranking's per-unit sums per (bucket of groups, half) of the confident fakes (slot 2 × bucket + half),
    and ω of each randomised detector."""

    layers: list[FeatureLayer]
    accs: dict[str, FFRSAccumulator]
    randomised: list[dict] = field(default_factory=list)  # fraction, modules, acc
    images: int = 0
    failed: list = field(default_factory=list)
    n_small: int = 0
    hashed: bool = False

    def score(self, name: str) -> np.ndarray:
        """(units,) the ranking's score over all confident fakes."""
        return mean_score(self.accs[name])

    def halves(self, name: str) -> np.ndarray:
        """(2, units) the ranking's score on each half of the confident fakes."""
        acc = self.accs[name]
        sums = acc.sums.reshape(-1, 2, acc.sums.shape[1]).sum(0).to(torch.float64) / FIXED_POINT
        counts = acc.counts.reshape(-1, 2).sum(0).clamp(min=1).to(torch.float64)
        return (sums / counts[:, None]).cpu().numpy()

    def buckets(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(buckets, units) per-unit sums of the per-image scores and (buckets,) confident fakes per bucket."""
        acc = self.accs[name]
        sums = acc.sums.reshape(-1, 2, acc.sums.shape[1]).sum(1).to(torch.float64) / FIXED_POINT
        return sums.cpu().numpy(), acc.counts.reshape(-1, 2).sum(1).cpu().numpy()

    @property
    def counts(self) -> list[int]:
        """Confident fakes per half."""
        return [int(c) for c in self.accs["ffrs"].counts.reshape(-1, 2).sum(0)]


def topk_stability(sums: np.ndarray, counts: np.ndarray, ks: Sequence[int], *, resamples: int = 1000,
                   seed: int = 0, chunk: int = 64) -> dict:
    """Top-k stability of a ranking over cluster-bootstrap resamples of its images: buckets (rows of ``sums``,
    per-unit sums of the per-image scores; ``counts`` images each) are drawn with replacement, the score is
    recomputed (Σ sums / Σ counts) and its top-k compared with the top-k on all images (descending, ties by unit
    order, as the ranking). Per k: the mean share of the top-k kept, |A ∩ B| / k, and the mean Jaccard index
    |A ∩ B| / |A ∪ B|, both in [0, 1] (1 = every resample has the same top-k)."""
    live = np.flatnonzero(np.asarray(counts) > 0)
    if not len(live):
        raise ValueError("no bucket holds an image: the top-k stability is undefined")
    s, c = np.asarray(sums, dtype=np.float64)[live], np.asarray(counts, dtype=np.float64)[live]
    full = np.argsort(-(s.sum(0) / c.sum()), kind="stable")
    rng = np.random.default_rng(seed)
    kept = np.zeros((resamples, len(ks)))
    for start in range(0, resamples, chunk):
        n = min(chunk, resamples - start)
        w = np.stack([np.bincount(rng.integers(0, len(live), len(live)), minlength=len(live)) for _ in range(n)])
        order = np.argsort(-((w @ s) / (w @ c)[:, None]), axis=1, kind="stable")
        for i, k in enumerate(ks):
            member = np.zeros((n, s.shape[1]), dtype=bool)
            np.put_along_axis(member, order[:, :k], True, axis=1)
            kept[start:start + n, i] = member[:, full[:k]].sum(1)
    ks_ = np.asarray(ks, dtype=np.float64)
    return {"buckets": int(len(live)), "resamples": int(resamples),
            "top_k_kept": {int(k): float(v) for k, v in zip(ks, (kept / ks_).mean(0), strict=True)},
            "jaccard": {int(k): float(v) for k, v in zip(ks, (kept / (2 * ks_ - kept)).mean(0), strict=True)}}


def _select(logits: torch.Tensor, slot: torch.Tensor, min_prob: float, accs: list[FFRSAccumulator],
            chosen: list[torch.Tensor]) -> torch.Tensor:
    """Seeds of one batch: +1 for the confident fakes (p ≥ min_prob), grouped by slot (bucket, half), 0 for the
    others."""
    keep = torch.sigmoid(logits) >= min_prob
    group = torch.where(keep, slot, -1)
    for acc in accs:
        acc.set_batch(group)
    chosen.append(keep)
    return keep.to(logits.dtype)


def source_scores(model: nn.Module, explainer: Explainer, samples: Sequence[Sample], ctx: tdist.DistContext,
                  prep: Preprocessing, min_prob: float = 0.9, randomise: Sequence[float] = (), seed: int = 0,
                  lrp_epsilon: float = 1e-6, explainer_kwargs: dict | None = None, preset: str = "detector",
                  batch_size: int = 64, num_workers: int | None = None, progress: bool = True) -> SourceScores:
    """Every score of :data:`SCORED`, by half, and ω of each randomisation in ``randomise`` (fractions of the
    parametrised modules re-drawn from the top), from one pass over the (fake) ``samples``."""
    kwargs = dict(explainer_kwargs or {})
    epsilon = Explainer(model, mean=prep.mean, std=prep.std, eps=lrp_epsilon, conv_rule="epsilon", **kwargs)
    dev = ctx.device
    bucket, n_buckets, hashed = group_buckets([s.unit for s in samples])
    bucket_of = torch.as_tensor(bucket, device=dev)
    accs = {name: FFRSAccumulator(explainer.layers, dev, groups=2 * n_buckets) for name in SCORED}
    grad_taps = _both([ShareTap(accs["activation"], lambda g, a: a),
                       ShareTap(accs["taylor"], lambda g, a: (g * a).abs())])
    stages = []
    for i, fraction in enumerate(randomise):
        copy_, names = randomised_copy(model, fraction, seed + i)
        ex = Explainer(copy_, mean=prep.mean, std=prep.std, **kwargs)
        stages.append({"fraction": float(fraction), "modules": names, "explainer": ex,
                       "acc": FFRSAccumulator(ex.layers, dev, groups=1)})
        del copy_
    run = DatasetPass(samples, ctx, preset, None, batch_size, num_workers,
                      f"unit rankings ({3 + len(stages)} passes per batch)", progress, prep)
    for images, indices in run:
        x = prep.normalize(images)
        chosen: list[torch.Tensor] = []
        idx = indices.to(dev, non_blocking=True)
        seeds = functools.partial(_select, slot=2 * bucket_of[idx] + idx % 2, min_prob=min_prob,
                                  accs=list(accs.values()), chosen=chosen)
        explainer.gradient(x, seeds, tap=grad_taps, with_activation=True)
        keep = chosen[0].to(x.dtype)
        explainer.explain(x, keep, tap=accs["ffrs"], input_relevance=False)
        epsilon.explain(x, keep, tap=accs["lrp-epsilon"], input_relevance=False)
        for stage in stages:
            stage["acc"].set_batch(torch.where(chosen[0], 0, -1))
            stage["explainer"].explain(x, keep, tap=stage["acc"], input_relevance=False)
    for acc in [*accs.values(), *(s["acc"] for s in stages)]:
        tdist.all_reduce_sum(acc.sums)
        tdist.all_reduce_sum(acc.counts)
    randomised = [{"fraction": s["fraction"], "modules": s["modules"], "omega": mean_score(s["acc"])}
                  for s in stages]
    return SourceScores(explainer.layers, accs, randomised, len(samples), run.gather_failed(), run.gather_small(),
                        hashed)
