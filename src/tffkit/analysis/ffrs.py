"""FF-RS (ω): the forensic feature relevance statistic of every feature map, and its ranking (docs/algorithms.md §3).

ω_{l,c} = mean over confident images of Σ_{h,w} max(0, R_{c,h,w}) / Σ_{c',h,w} |R_{c',h,w}|, with R the
LRP relevance at layer l's output (seed +1 for fakes, −1 for reals). Per-image values are
accumulated on the device as fixed-point integers, so sums are exact and independent of the order of
the batches; as every image is computed in the same batch whatever the number of torchrun processes
(:mod:`tffkit.passes`), ω is then identical for 1 and N processes.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..lrp import Explainer, FeatureLayer

FIXED_POINT = 2.0 ** 40  # per-image ω ∈ [0, 1] → int64 with 1e-12 resolution; exact associative sums
KEY_PATTERN = re.compile(r"^(?P<layer>.+)\.#(?P<channel>\d+)\(T=(?P<total>\d+)\)$")


def channel_key(layer: str, channel: int, total: int) -> str:
    """The public ranking key, e.g. ``layer1.0.conv1.#63(T=64)``."""
    return f"{layer}.#{channel}(T={total})"


def unit_major(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, units, positions): the layer output ``t`` with its unit dimension ``dim`` second, the rest flattened."""
    if dim != 1:
        t = t.movedim(dim, 1)
    return t.reshape(t.shape[0], t.shape[1], -1)


class FFRSAccumulator:
    """A relevance tap summing per-image ω contributions per channel, for G groups (e.g. fakes, reals).

    In the backward each tapped layer only reduces its relevance to per-channel Σ R⁺ and Σ |R| (Σ R⁺ summed from the
    positive values themselves, so a channel without positive relevance has ω exactly 0, never the rounding residue
    of (Σ R + Σ |R|)/2); the shares, their fixed-point rounding and the sums over images run once per batch for
    all layers together (:meth:`flush`, called by :meth:`set_batch` and when :attr:`sums` or :attr:`retained` are
    read), so a batch costs a handful of small kernels instead of some twenty per layer."""

    def __init__(self, layers: Sequence[FeatureLayer], device: torch.device, groups: int = 1, replicates: int = 0):
        self.layers = list(layers)
        self.offsets = {}
        start = 0
        for layer in self.layers:
            self.offsets[layer.name] = start
            start += layer.channels
        self._sums = torch.zeros(groups, start, dtype=torch.int64, device=device)
        self.counts = torch.zeros(groups, dtype=torch.int64, device=device)
        # per layer, Σ of the per-image total relevance relative to the seed: where relevance is kept or lost
        self._retained = torch.zeros(groups, len(self.layers), dtype=torch.int64, device=device)
        self.position = {layer.name: i for i, layer in enumerate(self.layers)}
        self._keep: torch.Tensor | None = None
        self._slot: torch.Tensor | None = None
        self._pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # layer position → (Σ R⁺, Σ |R|), (B, C)
        self._index_cache: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        # replicates (resampled source sets): Σ over group-0 images of ω × the image's multiplicity in each replicate
        self.replicate_sums = torch.zeros(replicates, start, dtype=torch.int64, device=device)
        self.replicate_counts = torch.zeros(replicates, dtype=torch.int64, device=device)
        self._multiplicity: torch.Tensor | None = None

    @property
    def sums(self) -> torch.Tensor:
        """(G, channels) int64 Σ over images of the fixed-point per-image ω."""
        self.flush()
        return self._sums

    @property
    def retained(self) -> torch.Tensor:
        """(G, layers) int64 Σ over images of the fixed-point share of the seed that reaches each layer."""
        self.flush()
        return self._retained

    def set_batch(self, group: torch.Tensor, multiplicity: torch.Tensor | None = None) -> None:
        """Group index per image of the next batch; −1 excludes an image (e.g. not confident). ``multiplicity``
        (replicates, B): how often each image is drawn in each replicate (its source group's count in a cluster
        bootstrap); only images of group 0 (the fakes) count in the replicates.

        Masks instead of boolean indexing, so nothing here or in the tap waits for the device."""
        self.flush()
        self._keep = (group >= 0).to(torch.int64)
        self._slot = group.clamp(min=0)
        self.counts.index_add_(0, self._slot, self._keep)
        if multiplicity is not None and len(self.replicate_sums):
            self._multiplicity = multiplicity.to(torch.int64) * (group == 0).to(torch.int64)[None]
            self.replicate_counts += self._multiplicity.sum(1)

    def __call__(self, layer: FeatureLayer, relevance: torch.Tensor, activation: torch.Tensor | None) -> None:
        position = self.position[layer.name]
        if position in self._pending:  # a layer seen twice in one backward counts twice, as two taps
            self.flush()
        r = unit_major(relevance, layer.dim)  # (B, units, positions): pixels, tokens or head dims
        self._pending[position] = (r.clamp(min=0).sum(2), torch.linalg.vector_norm(r, 1, dim=2))

    def flush(self) -> None:
        """Add the pending layers of the current batch to the sums (float64 shares, then exact int64)."""
        if not self._pending:
            return
        order = tuple(sorted(self._pending))
        positive = torch.cat([self._pending[i][0] for i in order], 1).to(torch.float64)  # (B, n) Σ R⁺
        absolute = torch.cat([self._pending[i][1] for i in order], 1).to(torch.float64)  # (B, n) Σ |R|
        self._pending.clear()
        segment, columns, layer_cols = self._indices(order, positive.device)
        totals = torch.zeros(positive.shape[0], len(order), dtype=torch.float64, device=positive.device)
        totals.index_add_(1, segment, absolute)  # Σ_c |R| per layer
        total = totals[:, segment]
        share = torch.where(total > 0, positive / total.clamp(min=torch.finfo(torch.float64).tiny), 0.0)
        fixed = torch.round(share * FIXED_POINT).to(torch.int64) * self._keep[:, None]
        slot = self._slot[:, None]
        self._sums.index_put_((slot.expand_as(fixed), columns.expand_as(fixed)), fixed, accumulate=True)
        layer_signed = torch.zeros_like(totals).index_add_(1, segment, 2 * positive - absolute)  # Σ R = 2ΣR⁺ − Σ|R|
        sign = (1 - 2 * self._slot.to(torch.float64))[:, None]  # seed +1 for group 0 (fakes), −1 for group 1
        kept = torch.round(layer_signed * sign * FIXED_POINT).to(torch.int64) * self._keep[:, None]
        self._retained.index_put_((slot.expand_as(kept), layer_cols.expand_as(kept)), kept, accumulate=True)
        if self._multiplicity is not None:
            for r, weight in enumerate(self._multiplicity):  # exact int64 sums, one small kernel per replicate
                self.replicate_sums[r].index_add_(0, columns[0], (fixed * weight[:, None]).sum(0))

    def _indices(self, order: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
        """For the pending layers ``order``: each column's pending-layer number, its channel column in the sums,
        and the layers' positions (cached per set of layers)."""
        if order not in self._index_cache:  # made on the device by fill kernels: no host-to-device copy, no sync
            layers = [self.layers[i] for i in order]
            segment = torch.cat([torch.full((layer.channels,), j, device=device) for j, layer in enumerate(layers)])
            columns = torch.cat([torch.arange(self.offsets[layer.name], self.offsets[layer.name] + layer.channels,
                                              device=device) for layer in layers])
            positions = torch.cat([torch.full((1,), i, device=device) for i in order])
            self._index_cache[order] = (segment, columns[None], positions[None])
        return self._index_cache[order]

    def retained_share(self) -> torch.Tensor:
        """(G, layers) mean over images of the layer's total relevance relative to the seed (1 = all kept)."""
        return self.retained.to(torch.float64) / FIXED_POINT / self.counts.clamp(min=1)[:, None].to(torch.float64)

    def omega(self) -> torch.Tensor:
        """(G, channels) mean ω per group (float64; 0 for a group without images)."""
        sums = self.sums.to(torch.float64) / FIXED_POINT
        return sums / self.counts.clamp(min=1)[:, None].to(torch.float64)

    def replicate_omega(self) -> torch.Tensor:
        """(replicates, channels) ω of the fakes in each resampled source set."""
        self.flush()
        sums = self.replicate_sums.to(torch.float64) / FIXED_POINT
        return sums / self.replicate_counts.clamp(min=1)[:, None].to(torch.float64)


UNIT_RANKINGS = ("by-kind", "global")


def ranking_table(layers: Sequence[FeatureLayer], omega: np.ndarray, *, unit_ranking: str = "global"
                  ) -> pd.DataFrame:
    """One ranking: rank, layer, channel, omega, key, unit (kind of unit: conv channel, neuron, residual dimension
    or attention head) and layer_index. Within a kind, descending ω, ties broken by layer order then channel.

    ``unit_ranking``: ``by-kind`` (``tff rank``'s default) ranks each kind of unit separately and merges the kinds
    by their within-kind quantile (p + ½)/n (p the unit's position in its kind, n the kind's units), so a top-k
    holds the kinds in proportion to their sizes — ω of a unit scales as 1/width of its layer (a 12-head layer
    gives a head ≈ 1/12 of its relevance, a 1,536-neuron layer a neuron ≈ 1/1,536), and one ω order would rank
    layer width (docs/algorithms.md §3). With one kind (CNNs) it is the descending-ω order. ``global`` (default
    here: the generator's and the comparison rankings): one ω order."""
    if unit_ranking not in UNIT_RANKINGS:
        raise ValueError(f"unknown unit_ranking {unit_ranking!r}; use by-kind or global")
    layer_idx = np.concatenate([np.full(layer.channels, layer.index) for layer in layers])
    kinds = np.concatenate([np.full(layer.channels, layer.kind, dtype=object) for layer in layers])
    channel = np.concatenate([np.arange(layer.channels) for layer in layers])
    names = np.concatenate([np.full(layer.channels, layer.name, dtype=object) for layer in layers])
    totals = np.concatenate([np.full(layer.channels, layer.channels) for layer in layers])
    order = np.lexsort((channel, layer_idx, -omega))
    if unit_ranking == "by-kind" and len(set(kinds)) > 1:
        quantile = np.empty(len(order))
        for kind in dict.fromkeys(kinds[order]):
            members = order[kinds[order] == kind]  # this kind's units in descending-ω order
            quantile[members] = (np.arange(len(members)) + 0.5) / len(members)
        order = np.lexsort((channel, layer_idx, -omega, quantile))
    return pd.DataFrame({
        "rank": np.arange(1, len(order) + 1),
        "layer": names[order],
        "channel": channel[order],
        "omega": omega[order],
        "key": [channel_key(n, c, t) for n, c, t in zip(names[order], channel[order], totals[order], strict=True)],
        "unit": kinds[order],
        "layer_index": layer_idx[order],
    })


def cut_tie(omega: np.ndarray, cut: int) -> dict | None:
    """Whether the cut before position ``cut`` of a descending ω ranking falls inside a tie: None when the maps on
    either side differ, else the tied ω, how many maps share it and how many of them lie before the cut."""
    omega = np.asarray(omega, dtype=np.float64)
    if not 0 < cut < len(omega) or omega[cut - 1] != omega[cut]:
        return None
    tied = np.flatnonzero(omega == omega[cut])
    return {"omega": float(omega[cut]), "tied_maps": int(len(tied)), "before_cut": int((tied < cut).sum()),
            "first_rank": int(tied[0]) + 1, "last_rank": int(tied[-1]) + 1}


def tie_summary(omega: np.ndarray, k: int) -> dict:
    """Ties in a descending ω ranking: how many values are shared, by how many maps, the largest tie, and whether
    the top-k and low-k cuts fall inside one (then which maps are in the set is decided by layer order)."""
    values, counts = np.unique(np.asarray(omega, dtype=np.float64), return_counts=True)
    shared = counts > 1
    largest = int(np.argmax(counts)) if len(counts) else 0
    return {"tied_values": int(shared.sum()), "maps_in_ties": int(counts[shared].sum()),
            "largest_tie": {"omega": float(values[largest]), "maps": int(counts[largest])} if len(counts) else None,
            "top_k_cut": cut_tie(omega, k), "low_k_cut": cut_tie(omega, len(omega) - k)}


def tie_note(kind: str, k: int, tie: dict | None) -> str:
    """One sentence on a top-k/low-k cut that falls inside a tie ('' when it does not)."""
    if not tie:
        return ""
    inside = tie["before_cut"] if kind == "top" else tie["tied_maps"] - tie["before_cut"]
    return (f"the {kind}-{k} cut falls inside a tie: {tie['tied_maps']} maps share ω = {tie['omega']:.6g} (ranks "
            f"{tie['first_rank']}–{tie['last_rank']}); {inside} of them are in the {kind}-{k}, chosen by layer order "
            "then channel, not by ω")


def load_ranking(path: str | os.PathLike, layers: Sequence[FeatureLayer] | None = None) -> pd.DataFrame:
    """Read our ``ffrs.csv`` or the public ``key,mean_relevance`` format into rank/layer/channel/omega.

    With ``layers`` the ranking is checked against the model (unknown layers or channel counts raise).
    """
    df = pd.read_csv(path)
    if {"layer", "channel", "omega"} <= set(df.columns):
        out = df.sort_values("rank") if "rank" in df.columns else df
        out = out[["layer", "channel", "omega"]].copy()
    elif {"key", "mean_relevance"} <= set(df.columns):
        parsed = df["key"].str.extract(KEY_PATTERN)
        if parsed.isna().any().any():
            bad = df["key"][parsed.isna().any(axis=1)].iloc[0]
            raise ValueError(f"{path}: key {bad!r} is not of the form 'layer.#channel(T=channels)'")
        out = pd.DataFrame({"layer": parsed["layer"], "channel": parsed["channel"].astype(int),
                            "omega": df["mean_relevance"].astype(float), "total": parsed["total"].astype(int)})
        out = out.sort_values("omega", ascending=False, kind="stable")
    else:
        raise ValueError(f"{path}: expected columns rank,layer,channel,omega (tff rank) or key,mean_relevance")
    out = out.reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1)
    if layers is not None:
        sizes = {layer.name: layer.channels for layer in layers}
        unknown = sorted(set(out["layer"]) - set(sizes))
        if unknown:
            raise ValueError(f"ranking {path} names layers this detector does not have: {unknown[:5]} "
                             f"(detector layers look like {list(sizes)[:3]})")
        if "total" in out.columns and (out["total"] != out["layer"].map(sizes)).any():
            raise ValueError(f"ranking {path}: channel counts (T=…) differ from this detector's layers")
        if (out["channel"] >= out["layer"].map(sizes)).any():
            raise ValueError(f"ranking {path}: channel index beyond a layer's channel count")
    return out.drop(columns=[c for c in ("total",) if c in out.columns])


REPLICATES_FILE = "ffrs_replicates.csv"  # beside ffrs.csv: each unit's rank in every replicate (tff rank --replicates)


def load_replicate_tops(ranking: str | os.PathLike, ks: Sequence[int]) -> dict[int, list[list[tuple[str, int]]]]:
    """k → per replicate (resampled source set) its top-k units (layer, channel) in rank order, from the
    ``ffrs_replicates.csv`` beside ``ranking``; empty when the ranking has no replicates."""
    path = Path(ranking).with_name(REPLICATES_FILE)
    if not path.is_file():
        return {}
    ranks = pd.read_csv(path)
    columns = sorted((c for c in ranks.columns if c[:1] == "r" and c[1:].isdigit()), key=lambda c: int(c[1:]))
    pairs = [(str(layer), int(c)) for layer, c in zip(ranks["layer"], ranks["channel"], strict=True)]
    orders = [[pairs[i] for i in np.argsort(ranks[c].to_numpy(), kind="stable")] for c in columns]
    return {int(k): [order[:k] for order in orders] for k in ks}


@dataclass(frozen=True)
class ChannelSets:
    """The feature maps of one dropout variant: name (e.g. ``top-114``) and (layer, channel) pairs."""

    name: str
    kind: str
    k: int
    replica: int
    channels: tuple[tuple[str, int], ...]


RANDOM_K = ("replicas", "pooled")


def select_channels(ranking: pd.DataFrame, k: int, random_repeats: int = 5, seed: int = 0, *,
                    protocol: str = "replicas") -> list[ChannelSets]:
    """top-k, low-k and ``random_repeats`` random-k sets outside the top-k, seeded: drawn without replacement
    (``replicas``, ours) or as the public code drew them (``pooled``, :func:`public_random_sets`)."""
    if protocol not in RANDOM_K:
        raise ValueError(f"unknown random-k protocol {protocol!r}; use one of {RANDOM_K}")
    pairs = list(zip(ranking["layer"], ranking["channel"].astype(int), strict=True))
    if not 0 < k < len(pairs):
        raise ValueError(f"k={k} must be between 1 and the number of ranked channels − 1 ({len(pairs) - 1})")
    out = [ChannelSets(f"top-{k}", "top", k, 0, tuple(pairs[:k])),
           ChannelSets(f"low-{k}", "low", k, 0, tuple(pairs[-k:]))]
    if protocol == "pooled":
        return out + [ChannelSets(f"random-{k}", "random", k, r, tuple(pairs[i] for i in sorted(pick)))
                      for r, pick in enumerate(public_random_sets(len(pairs), k, random_repeats, seed))]
    rest = pairs[k:]
    for r in range(random_repeats):
        rng = np.random.default_rng([seed, k, r])
        pick = rng.choice(len(rest), size=min(k, len(rest)), replace=False)
        out.append(ChannelSets(f"random-{k}", "random", k, r, tuple(rest[i] for i in sorted(pick))))
    return out


def public_random_sets(n: int, k: int, repeats: int, seed: int) -> list[list[int]]:
    """The public code's random-k draw over ``n`` ranked maps (positions; the top-k are 0…k−1), made reproducible.

    Per replica it takes ``random.choices`` of all maps, as many as there are (with replacement, so about 63% of them
    distinct), visits the distinct ones in its Python set's iteration order, skips the top-k and keeps the first k
    (fewer when fewer were drawn). That order follows the keys' string hashes — random per process (PYTHONHASHSEED)
    and shared by the replicas of one run, which therefore overlap. Here the generator is ``random.Random`` seeded
    with (seed, k) and the set order is one permutation drawn from it, shared by the replicas."""
    rng = random.Random(f"tffkit random-k {seed} {k}")
    visit = list(range(n))
    rng.shuffle(visit)  # stands in for the set's hash order
    position = {m: i for i, m in enumerate(visit)}
    out = []
    for _ in range(repeats):
        drawn = set(rng.choices(range(n), k=n))
        out.append(sorted((m for m in drawn if m >= k), key=position.__getitem__)[:k])
    return out


def accumulate_batch(explainer: Explainer, acc: FFRSAccumulator, x: torch.Tensor, labels: torch.Tensor,
                     min_prob: float, with_reals: bool, multiplicity: torch.Tensor | None = None) -> torch.Tensor:
    """Explain one batch in a single forward/backward and add its confident images to ``acc``.

    Group 0 = fakes with p ≥ min_prob (seed +1), group 1 = reals with p ≤ 1 − min_prob (seed −1, only
    ``with_reals``); other images get seed 0 and are not counted; ``multiplicity``: the batch's images' counts in
    each replicate (:meth:`FFRSAccumulator.set_batch`). Returns the probabilities.
    """
    probs: list[torch.Tensor] = []

    def seeds(logits: torch.Tensor) -> torch.Tensor:
        prob = torch.sigmoid(logits)
        probs.append(prob)
        group = torch.where((labels == 1) & (prob >= min_prob), 0, -1)  # masks, not boolean indexing: no sync
        if with_reals:
            group = torch.where((labels == 0) & (prob <= 1 - min_prob), 1, group)
        acc.set_batch(group, multiplicity)
        return torch.where(group == 0, 1.0, torch.where(group == 1, -1.0, 0.0)).to(logits.dtype)

    explainer.explain(x, seeds, tap=acc, layers=acc.layers, input_relevance=False)
    return probs[0]
