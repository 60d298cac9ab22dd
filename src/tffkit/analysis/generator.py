"""LRP into the generator (the paper's appendix M): which generator units make a fake detectable.

ω (FF-RS, docs/algorithms.md §3) of every generator unit over the confident fakes generated from one half of N
seeded inputs (even indices), one global ranking; then, on the other half (odd indices: never an input the
ranking saw), the top-p%, low-p%, random-p% units (outside the top set, R seeded replicas) and R random masks
matched to the top mask's image change (PSNR, :mod:`.generator_stats`) are zeroed in turn, the *same* inputs
regenerated and scored, and the image change measured; Δp(fake) per mask with its bootstrap interval over the
inputs. Batches are whole and dealt to processes by batch, so every image is computed identically for any number
of torchrun processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .. import distributed as tdist
from ..generation.compose import GeneratorExplainer
from .dropout import DropPlan
from .ffrs import ChannelSets, FFRSAccumulator, accumulate_batch, ranking_table, select_channels
from .generator_stats import (
    SubsetSource,
    known_answer,
    masking_intervals,
    match_size,
    matched_sets,
    permutation,
    split_halves,
)
from .uncertainty import RESAMPLES


class LatentSource:
    """N seeded generator inputs: input i is N(0, I) from a random generator seeded with (seed, i), so it does
    not depend on batching or on the number of processes."""

    def __init__(self, n: int, shape: Sequence[int], seed: int = 0):
        self.n, self.shape, self.seed = n, tuple(shape), seed

    def __len__(self) -> int:
        return self.n

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """Inputs (B, *shape) of ``indices`` on the CPU, float32."""
        return torch.stack([torch.from_numpy(np.random.default_rng([self.seed, int(i)]).standard_normal(
            self.shape).astype(np.float32)) for i in indices])


class ImageSource:
    """Images as generator inputs (image-to-image generators), mapped to ``out_range`` (equal sizes)."""

    def __init__(self, paths: Sequence[str | Path], out_range: tuple[float, float] = (-1.0, 1.0)):
        self.paths, self.out_range = list(paths), out_range

    @classmethod
    def from_folder(cls, folder: str | Path, n: int, out_range: tuple[float, float] = (-1.0, 1.0)) -> ImageSource:
        """The first ``n`` images under ``folder`` (sorted paths); ValueError when there are none."""
        from ..data import IMAGE_EXTENSIONS

        paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[:n]
        if not paths:
            raise ValueError(f"no images under {folder}")
        return cls(paths, out_range)

    def __len__(self) -> int:
        return len(self.paths)

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        lo, hi = self.out_range
        arrays = [np.asarray(Image.open(self.paths[i]).convert("RGB"), dtype=np.float32) / 255.0 for i in indices]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) * (hi - lo) + lo


def my_batches(n: int, batch_size: int, ctx: tdist.DistContext) -> list[list[int]]:
    """This process's batches: all batches of ``range(n)`` dealt round-robin (whole batches, never split)."""
    batches = [list(range(i, min(n, i + batch_size))) for i in range(0, n, batch_size)]
    return batches[ctx.rank::ctx.world]


@dataclass
class GeneratorRanking:
    """ω of every generator unit (``table``: rank, layer, channel, omega, key, unit), probabilities of all
    generated images (index → p), and the counts written to generator_ffrs.json."""

    table: pd.DataFrame
    probs: pd.DataFrame
    summary: dict


def rank_generator(gex: GeneratorExplainer, source, ctx: tdist.DistContext, min_prob: float = 0.9,
                   batch_size: int = 16) -> GeneratorRanking:
    """ω of the generator's units from LRP of each confident fake's logit (p ≥ ``min_prob``, seed +1)."""
    acc = FFRSAccumulator(gex.units, ctx.device)
    idx_parts, prob_parts = [], []
    for idx in my_batches(len(source), batch_size, ctx):
        z = source.batch(idx).to(ctx.device, gex.explainer.dtype, non_blocking=True)
        labels = torch.ones(len(idx), dtype=torch.long, device=ctx.device)
        prob_parts.append(accumulate_batch(gex.explainer, acc, z, labels, min_prob, False).float())
        idx_parts.append(torch.tensor(idx, device="cpu"))
    for t in (acc.sums, acc.counts, acc.retained):
        tdist.all_reduce_sum(t)
    index, probs = tdist.gather_rows(idx_parts, prob_parts)
    order = np.argsort(index, kind="stable")
    probs = pd.DataFrame({"index": _origin(source, index[order]), "prob": probs[order]})
    used = int(acc.counts[0])
    if used == 0:
        raise ValueError(f"no generated image reached p(fake) ≥ {min_prob} (median p {probs['prob'].median():.3f}); "
                         "check the detector, its preprocessing, or lower --min-prob")
    table = ranking_table(gex.units, acc.omega()[0].cpu().numpy())
    share = acc.retained_share()[0].cpu().numpy()
    summary = {"n_images": len(source), "fakes_used": used, "min_prob": min_prob, "n_units": len(table),
               "n_layers": len(gex.units), "unit_kinds": table["unit"].value_counts().to_dict(),
               "retained_share": {layer.name: round(float(s), 6) for layer, s in zip(gex.units, share, strict=True)}}
    return GeneratorRanking(table.drop(columns=["layer_index"]), probs, summary)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of images in [0, 1] per image (inf when equal)."""
    mse = (a - b).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)


def _origin(source, positions: np.ndarray) -> np.ndarray:
    """The inputs' indices in the full source (a :class:`SubsetSource`'s positions mapped back)."""
    if isinstance(source, SubsetSource):
        return np.asarray(source.indices, dtype=np.int64)[np.asarray(positions, dtype=np.int64)]
    return np.asarray(positions)


def mask_generator(gex: GeneratorExplainer, source, variants: Sequence[ChannelSets | None], ctx: tdist.DistContext,
                   batch_size: int = 16) -> pd.DataFrame:
    """Per input and masking (None = unmasked): p(fake) and the change of the generated image (mean absolute pixel
    change in [0, 1], PSNR against the unmasked image); ``index`` is the input's index in the full source."""
    plans = [DropPlan(gex.explainer, v.channels) if v else None for v in variants]
    idx_parts, rows = [], []
    for idx in my_batches(len(source), batch_size, ctx):
        z = source.batch(idx).to(ctx.device, gex.explainer.dtype, non_blocking=True)
        base, base_logit = gex.images_and_logits(z)
        per_variant = []
        for plan in plans:
            if plan is None:
                img, logit = base, base_logit
            else:
                with plan.applied():
                    img, logit = gex.images_and_logits(z)
            change = (img - base).abs().flatten(1).mean(1)
            per_variant.append(torch.stack([torch.sigmoid(logit.double()), change.double(),
                                            psnr(img.double(), base.double())], 1))
        rows.append(torch.stack(per_variant, 1))
        idx_parts.append(torch.tensor(idx, device="cpu"))
    index, values = tdist.gather_rows(idx_parts, rows, (len(variants), 3))
    order = np.argsort(index, kind="stable")
    index, values = _origin(source, index[order]), values[order]
    frames = []
    for v, variant in enumerate(variants):
        head = ({"variant": "baseline", "kind": "baseline", "k": 0, "replica": 0} if variant is None else
                {"variant": variant.name, "kind": variant.kind, "k": variant.k, "replica": variant.replica})
        frames.append(pd.DataFrame({"index": index, **head, "prob": values[:, v, 0],
                                    "mean_abs_change": values[:, v, 1],
                                    "psnr_db": np.where(np.isinf(values[:, v, 2]), np.nan, values[:, v, 2])}))
    return pd.concat(frames, ignore_index=True)


@torch.no_grad()
def _probe_psnr(gex: GeneratorExplainer, source, positions: Sequence[int], batch_size: int
                ) -> Callable[[Sequence[tuple[str, int]]], float]:
    """A function: units → median PSNR (dB) of the images with those units masked over ``positions`` (computed by
    every process on all of them, so all agree), the unmasked images generated once."""
    batches = [list(positions[i:i + batch_size]) for i in range(0, len(positions), batch_size)]
    inputs = [source.batch(b).to(gex.device, gex.explainer.dtype) for b in batches]
    bases = [gex.images_and_logits(z)[0].double() for z in inputs]

    def median(channels: Sequence[tuple[str, int]]) -> float:
        with DropPlan(gex.explainer, channels).applied():
            values = torch.cat([psnr(gex.images_and_logits(z)[0].double(), b) for z, b in zip(inputs, bases,
                                                                                                strict=True)])
        return float(np.median(values.clamp(max=1e3).cpu().numpy()))

    return median


def psnr_matched_masks(gex: GeneratorExplainer, source, ranking: pd.DataFrame, k: int, *, repeats: int = 5,
                       seed: int = 0, probe: int = 64, batch_size: int = 16) -> tuple[list[ChannelSets], dict]:
    """Per replica, a random set of units outside the top-k, of the size whose median PSNR on the first ``probe``
    evaluation inputs is closest to the top-k mask's (bisection over nested sets of one seeded permutation)."""
    pairs = list(zip(ranking["layer"], ranking["channel"].astype(int), strict=True))
    rest = pairs[k:]
    median = _probe_psnr(gex, source, range(min(probe, len(source))), batch_size)
    target = median(pairs[:k])
    sizes, found = [], []
    for r in range(repeats):
        perm = permutation(len(rest), seed, r)
        m, value = match_size(lambda m, perm=perm: median([rest[i] for i in perm[:m]]), target, 1, len(rest))
        sizes.append(m)
        found.append(value)
    return matched_sets(rest, sizes, seed), {"probe_inputs": min(probe, len(source)), "target_psnr_db": target,
                                             "sizes": sizes, "probe_psnr_db": found}


def masking_summary(per_image: pd.DataFrame) -> pd.DataFrame:
    """Per masking: median p(fake) (mean ± std over replicas), its change in percentage points from the baseline
    median, the mean image change, the median PSNR and the mask size (mean over replicas)."""
    base = float(per_image.loc[per_image["kind"] == "baseline", "prob"].median())
    per_replica = per_image.groupby(["variant", "kind", "replica"], sort=False).agg(
        k=("k", "first"), median_prob=("prob", "median"), mean_abs_change=("mean_abs_change", "mean"),
        psnr_db=("psnr_db", "mean"), median_psnr_db=("psnr_db", "median"))
    grouped = per_replica.groupby(["variant", "kind"], sort=False)
    out = grouped.mean().join(grouped["median_prob"].std(ddof=0).fillna(0.0).rename("median_prob_std"))
    out["median_change_pp"] = 100 * (out["median_prob"] - base)
    out["replicas"] = grouped.size()
    return out.reset_index()


def explain_generator(gex: GeneratorExplainer, source, *, percent: float = 5.0, repeats: int = 5, seed: int = 0,
                      min_prob: float = 0.9, batch_size: int = 16, ctx: tdist.DistContext | None = None,
                      near: Sequence[str] = (), psnr_tolerance: float = 1.0, probe: int = 64,
                      resamples: int = RESAMPLES) -> dict:
    """Rank the generator's units on the even inputs, mask top/low/random/PSNR-matched units on the odd ones.
    ``near``: layer names (the upsampling layer and its neighbours) whose share of the top units is tested against
    chance (the known answer); ``psnr_tolerance``: dB within which a matched mask's median PSNR counts as matched;
    ``resamples``: bootstrap resamples of the Δp intervals (seeded by ``seed``). Returns the tables and the
    summary (:func:`tffkit.jobs.generator.write_generator` writes them)."""
    ctx = ctx or tdist.DistContext(0, 1, gex.device)
    rank_half, eval_half = split_halves(len(source))
    rank_src, eval_src = SubsetSource(source, rank_half), SubsetSource(source, eval_half)
    ranked = rank_generator(gex, rank_src, ctx, min_prob, batch_size)
    k = max(1, round(percent / 100 * len(ranked.table)))
    variants = [None, *select_channels(ranked.table, k, repeats, seed)]
    matched, match = psnr_matched_masks(gex, eval_src, ranked.table, k, repeats=repeats, seed=seed, probe=probe,
                                        batch_size=batch_size)
    per_image = mask_generator(gex, eval_src, variants + matched, ctx, batch_size)
    summary_table = masking_summary(per_image)
    intervals = masking_intervals(per_image, resamples=resamples, seed=seed)
    top = ranked.table.head(k)
    per_layer = top.groupby("layer", sort=False).size()
    by_kind = summary_table.set_index("kind")
    matched_psnr = per_image[per_image["kind"] == "matched"].groupby("replica")["psnr_db"].median()
    match.update(top_psnr_db=float(by_kind.loc["top", "median_psnr_db"]), tolerance_db=psnr_tolerance,
                 matched_psnr_db=[float(v) for v in matched_psnr],
                 random_psnr_db=float(by_kind.loc["random", "median_psnr_db"]) if "random" in by_kind.index else None)
    match["gap_db"] = [v - match["top_psnr_db"] for v in match["matched_psnr_db"]]
    match["matched"] = bool(all(abs(g) <= psnr_tolerance for g in match["gap_db"]))
    summary = {**ranked.summary, "percent": percent, "k": k, "repeats": repeats, "seed": seed,
               "halves": {"rank_inputs": len(rank_half), "eval_inputs": len(eval_half),
                          "rule": "even input indices rank, odd ones evaluate"},
               "top_units_per_layer": {layer.name: int(per_layer.get(layer.name, 0)) for layer in gex.units},
               "median_prob": {r["variant"]: round(float(r["median_prob"]), 6) for _, r in summary_table.iterrows()},
               "median_change_pp": {r["variant"]: round(float(r["median_change_pp"]), 3)
                                    for _, r in summary_table.iterrows()},
               "psnr_match": match, "resamples": resamples,
               "delta_pp": {r["mask"]: {c: r[c] for c in ("delta_pp", "low", "high", "shown")}
                            for _, r in intervals.iterrows()}}
    if near:
        summary["top_units_near"] = known_answer(top["layer"].tolist(), ranked.table["layer"].tolist(), near)
    return {"ranking": ranked.table, "masking": per_image, "summary_table": summary_table, "summary": summary,
            "intervals": intervals, "rank_probs": ranked.probs}
