"""Sensitivity assessment (docs/algorithms.md §4): drop feature maps (top-k, random-k, low-k) and re-measure detection.

Dropping sets a feature map to 0 for every image with a forward hook, at the BN-folded conv output
(``folded``, where ω is measured) or, as the public code did, at the raw conv output before batch
norm (``pre-bn``: the folded map becomes the constant BN(0)).
"""

from __future__ import annotations

import contextlib
import functools
from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from .. import distributed as tdist
from ..data import Preprocessing, Sample
from ..evaluate import scores_table
from ..lrp import Explainer
from ..lrp.partial import PartialForward
from ..metrics import binary_metrics
from ..passes import DatasetPass
from .dropout_stats import RANDOM_REPEATS
from .ffrs import ChannelSets, cut_tie, select_channels, tie_note

SITES = ("folded", "pre-bn")


class DropPlan:
    """The forward hooks that drop ``channels`` at ``site``, with their index tensors made once on the device."""

    def __init__(self, explainer: Explainer, channels: Sequence[tuple[str, int]], site: str = "folded"):
        if site not in SITES:
            raise ValueError(f"unknown dropout site {site!r}; use one of {SITES}")
        by_layer: dict[str, list[int]] = defaultdict(list)
        for layer, channel in channels:
            by_layer[layer].append(int(channel))
        self.layers = list(by_layer)
        self.sites = []
        for layer, idx in by_layer.items():
            module = explainer.module(layer)
            index = torch.tensor(sorted(idx), device=explainer.device)
            zero = getattr(module, "pre_bn_zero", None)  # BN(0) of a folded convolution; other units drop to 0
            fill = zero[index] if site == "pre-bn" and zero is not None else None
            self.sites.append((module, index, fill, explainer.by_name[layer].dim))

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block, the explainer's model runs with the units dropped."""

        def hook(_m, _inp, out, index, fill, dim):
            out = out.clone()
            view = out.movedim(dim, 1) if dim != 1 else out  # a view: writing it writes ``out``
            view[:, index] = 0 if fill is None else fill.to(out.dtype).reshape(1, -1, *[1] * (out.dim() - 2))
            return out

        handles = [module.register_forward_hook(functools.partial(hook, index=index, fill=fill, dim=dim))
                   for module, index, fill, dim in self.sites]
        try:
            yield
        finally:
            for h in handles:
                h.remove()


@contextlib.contextmanager
def dropped(explainer: Explainer, channels: Sequence[tuple[str, int]], site: str = "folded") -> Iterator[None]:
    """Within the block, the explainer's model runs with ``channels`` dropped at ``site``."""
    with DropPlan(explainer, channels, site).applied():
        yield


@torch.no_grad()
def score_variants(explainer: Explainer, variants: Sequence[ChannelSets | None], samples: Sequence[Sample],
                   ctx: tdist.DistContext, site: str = "folded", preset: str = "detector", batch_size: int = 64,
                   num_workers: int | None = None, progress: bool = True, prob_dtype: str = "float64",
                   preprocessing: Preprocessing | None = None) -> tuple[list[pd.DataFrame], list[dict], int]:
    """Scores of every variant (``None`` = undropped) from one pass over the data: each batch is decoded
    once and run once per variant, each variant from the undropped model's values upstream of its dropped units
    (:class:`~tffkit.lrp.partial.PartialForward`); logits stay on the device until the end. Returns (tables,
    unreadable, images smaller than the crop)."""
    plans = [DropPlan(explainer, v.channels if v else (), site) for v in variants]
    model = explainer.model.eval()
    partial = PartialForward(model, [plan.layers for plan in plans])
    prep = preprocessing or Preprocessing()
    run = DatasetPass(samples, ctx, preset, None, batch_size, num_workers,
                      f"dropout ({len(variants)} variants)", progress, prep)
    idx, logits = [], []  # logits (B, variants) per batch
    for images, indices in run:
        x = prep.normalize(images)
        idx.append(indices)
        values = partial.record(x)
        per_variant = []
        for v, plan in enumerate(plans):
            with plan.applied():
                per_variant.append(partial.run(v, x, values).reshape(-1).float())
        logits.append(torch.stack(per_variant, 1))
    index, logit = tdist.gather_rows(idx, logits, (len(plans),))
    return ([scores_table(samples, index, logit[:, v], prob_dtype) for v in range(len(plans))],
            run.gather_failed(), run.gather_small())


def set_metrics(scores: pd.DataFrame, thresholds: dict[str, float], cal_compare: str = "ge") -> list[dict]:
    """Per-set AP and accuracies at 0.5 and at the given (baseline-calibrated) thresholds (p ≥ t or p > t)."""
    rows = []
    for set_name, part in scores.groupby("set", sort=True):
        m = binary_metrics(part["label"], part["prob"], threshold=thresholds[set_name], cal_compare=cal_compare)
        rows.append({"set": set_name, **m})
    return rows


def calibrated_thresholds(scores: pd.DataFrame, fixed_sets: Sequence[str] = ("progan",)) -> dict[str, float]:
    """The undropped model's test-calibrated threshold per set (``fixed_sets`` stay at 0.5, as in the paper)."""
    out = {}
    for set_name, part in scores.groupby("set", sort=True):
        out[set_name] = 0.5 if set_name in fixed_sets else binary_metrics(part["label"], part["prob"])["cal_threshold"]
    return out


def variants_of(table: pd.DataFrame, ks: Sequence[int], random_repeats: int = RANDOM_REPEATS, seed: int = 0,
                protocol: str = "replicas") -> tuple[list[ChannelSets | None], dict[str, dict | None]]:
    """The undropped model (None) and every variant of each k (top-k, random-k × ``random_repeats``, low-k) of a
    ranking ``table``, and the ties at each cut (``top-k``/``low-k`` → :func:`~.ffrs.cut_tie`: ranks decided by
    layer order)."""
    variants = [None, *(v for k in ks for v in select_channels(table, k, random_repeats, seed, protocol=protocol))]
    omega = table["omega"].to_numpy()
    ties = {f"{kind}-{k}": cut_tie(omega, k if kind == "top" else len(omega) - k)
            for k in ks for kind in ("top", "low")}
    return variants, ties


def variant_table(variants: Sequence[ChannelSets | None], scores: Sequence[pd.DataFrame],
                  thresholds: dict[str, float], ties: dict, cal_compare: str = "ge") -> pd.DataFrame:
    """Long table (dropout.csv): per variant and set, AP and the accuracies at 0.5 and at ``thresholds``, with a
    note where the variant's cut splits tied ω."""
    rows = []
    for variant, sc in zip(variants, scores, strict=True):
        head = ({"variant": "baseline", "kind": "baseline", "k": 0, "replica": 0} if variant is None else
                {"variant": variant.name, "kind": variant.kind, "k": variant.k, "replica": variant.replica,
                 "note": tie_note(variant.kind, variant.k, ties.get(variant.name))})
        rows += [{**head, **r} for r in set_metrics(sc, thresholds, cal_compare)]
    long = pd.DataFrame(rows)
    long["note"] = long["note"].fillna("")
    return long


def pool_random(variants: Sequence[ChannelSets | None], scores: Sequence[pd.DataFrame]
                ) -> tuple[list[ChannelSets | None], list[pd.DataFrame]]:
    """The public code's random-k protocol: the replicas of each k become one variant whose p(fake) is the mean of
    the replicas' (float64 mean of the probabilities in the chosen precision), so one AP and one set of accuracies
    (at the baseline's thresholds) instead of a mean ± std over replicas."""
    groups: dict[int, list[pd.DataFrame]] = defaultdict(list)
    for v, sc in zip(variants, scores, strict=True):
        if v is not None and v.kind == "random":
            groups[v.k].append(sc)
    out_v, out_s = [], []
    for v, sc in zip(variants, scores, strict=True):
        if v is None or v.kind != "random":
            out_v.append(v)
            out_s.append(sc)
        elif v.replica == 0:
            probs = np.stack([g["prob"].to_numpy(np.float64) for g in groups[v.k]])
            assert all(g["path"].equals(sc["path"]) for g in groups[v.k])  # one row order for every variant
            out_v.append(v)
            out_s.append(sc.assign(logit=np.nan, prob=probs.mean(0)))
    return out_v, out_s


def summarize(long: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over random replicas (one row per variant × set)."""
    metrics = ["ap", "acc", "real_acc", "fake_acc", "cal_real_acc", "cal_fake_acc"]
    keys = ["variant", "kind", "k", "set"] + (["note"] if "note" in long.columns else [])
    long = long.assign(note=long["note"].fillna("")) if "note" in long.columns else long
    grouped = long.groupby(keys, sort=False)[metrics]
    mean, std = grouped.mean(), grouped.std(ddof=0).fillna(0.0)
    summary = mean.join(std.add_suffix("_std")).reset_index()
    summary["replicas"] = grouped.size().values
    return summary
