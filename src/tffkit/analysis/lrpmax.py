"""LRP-max (docs/algorithms.md §5): which image regions make a transferable forensic feature (T-FF) fire.

For every top-k T-FF and test set, the fakes are ranked by the T-FF's maximum spatial activation
(one forward per batch, a running top-N per (set, T-FF) on the device); relevance is then seeded at
the argmax neuron of each selected (image, T-FF) pair and propagated to the pixels, many pairs per
backward (images replicated, one seed per row, rows seeding different layers). Patches are the
bounding boxes of the strongest positive relevance, cropped from the un-normalised image.

Images are ranked by the maximum activation read at the BN-folded conv output (``folded``) or, as the public code
did, at the raw conv output before batch norm (``pre-bn``: raw = (folded − zero) / scale per channel, so a channel
with BN γ < 0 peaks where its folded map is lowest). Whatever the site, the seed neuron is the argmax of the
positive part of the folded map (what LRP explains, and where the public code seeds); its seed is the folded
activation there (``activation``) or 1 (``one``, the public code), and 0 — an all-zero map — where the folded map
has no positive value. The patch box is ours (``positive``) or the public code's (``paper-code``), see
:func:`relevance_bbox`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from .. import distributed as tdist
from ..data import Preprocessing
from ..lrp import Explainer
from ..passes import DatasetPass
from .activations import TFF, MaxActivationTap, position_width
from .ffrs import unit_major

SENTINEL = 2 ** 62  # dataset index of an empty top-N slot
VARIANTS = ("activation", "relevance")
NEURON_SEEDS = ("activation", "one")
PATCH_BOXES = ("positive", "paper-code")


def select_top(values: torch.Tensor, index: torch.Tensor, extra: Sequence[torch.Tensor], n: int):
    """The ``n`` best candidates along the last axis: value descending, ties by dataset index ascending."""
    by_index = torch.argsort(index, dim=-1, stable=True)
    by_value = torch.argsort(values.gather(-1, by_index), dim=-1, descending=True, stable=True)[..., :n]
    order = by_index.gather(-1, by_value)
    return values.gather(-1, order), index.gather(-1, order), [e.gather(-1, order) for e in extra]


class RunningTopN:
    """Per (group, T-FF) the ``n`` images with the largest value seen so far, kept on the device."""

    def __init__(self, groups: int, k: int, n: int, device: torch.device):
        self.n = n
        self.values = torch.full((groups, k, n), -torch.inf, dtype=torch.float64, device=device)
        self.index = torch.full((groups, k, n), SENTINEL, dtype=torch.long, device=device)
        self.h = torch.zeros_like(self.index)
        self.w = torch.zeros_like(self.index)

    def update(self, group: torch.Tensor, values: torch.Tensor, index: torch.Tensor, h: torch.Tensor,
               w: torch.Tensor) -> None:
        """Merge a batch: ``group``/``index`` (B,) on the CPU (grouping there needs no device sync),
        ``values``/``h``/``w`` (B, K) on the device."""
        dev = values.device
        index = index.to(dev, non_blocking=True)
        for g in torch.unique(group).tolist():
            rows = (group == g).nonzero().squeeze(1).to(dev, non_blocking=True)
            cand = values[rows].T.to(torch.float64)
            idx = index[rows].unsqueeze(0).expand_as(cand)
            v, i, (hh, ww) = select_top(torch.cat([self.values[g], cand], 1), torch.cat([self.index[g], idx], 1),
                                        [torch.cat([self.h[g], h[rows].T], 1), torch.cat([self.w[g], w[rows].T], 1)],
                                        self.n)
            self.values[g], self.index[g], self.h[g], self.w[g] = v, i, hh, ww

    def state(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k).cpu().numpy() for k in ("values", "index", "h", "w")}


def merge_top(states: Sequence[dict[str, np.ndarray]], n: int) -> dict[str, np.ndarray]:
    """Exact merge of every rank's :meth:`RunningTopN.state` (same selection as one process)."""
    cat = {k: torch.from_numpy(np.concatenate([s[k] for s in states], axis=-1)) for k in states[0]}
    v, i, (h, w) = select_top(cat["values"], cat["index"], [cat["h"], cat["w"]], n)
    return {"values": v.numpy(), "index": i.numpy(), "h": h.numpy(), "w": w.numpy()}


class LRPMax:
    """Batched LRP-max maps: many (image, T-FF neuron) seeds per backward, ``chunk`` rows at a time."""

    def __init__(self, explainer: Explainer, chunk: int = 64):
        self.explainer, self.chunk = explainer, chunk
        self._shapes: dict[tuple[int, int], dict[str, tuple[int, ...]]] = {}

    def shapes(self, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
        """(C, H, W) of every feature layer for images of ``x``'s size (one probe forward, cached)."""
        key = tuple(x.shape[-2:])
        if key not in self._shapes:
            found: dict[str, tuple[int, ...]] = {}
            self.explainer.forward(x[:1], tap=lambda layer, a: found.__setitem__(layer.name, tuple(a.shape[1:])))
            self._shapes[key] = found
        return self._shapes[key]

    def maps(self, x: torch.Tensor, rows: torch.Tensor, layers: Sequence[str], channels: torch.Tensor,
             h: torch.Tensor, w: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
        """Input relevance summed over RGB (P, H, W) for pair p: image ``x[rows[p]]``, relevance ``seed[p]``
        at neuron (``channels[p]``, ``h[p]``, ``w[p]``) of ``layers[p]``. Pairs are sorted by depth so a
        chunk seeds few layers and its forward stops early."""
        ex, shapes = self.explainer, self.shapes(x)
        depth = [ex.by_name[name].index for name in layers]
        order = sorted(range(len(layers)), key=lambda p: (depth[p], p))
        out = torch.empty(len(layers), *x.shape[-2:], dtype=x.dtype, device=x.device)
        dev = x.device
        rows, channels, h, w, seed = (t.cpu() for t in (rows, channels, h, w, seed))
        for s in range(0, len(order), self.chunk):  # index arithmetic on the CPU, copied without a device sync
            sel = order[s:s + self.chunk]
            seeds: dict[str, torch.Tensor] = {}
            for name in dict.fromkeys(layers[p] for p in sel):
                local = [i for i, p in enumerate(sel) if layers[p] == name]
                pick = [sel[i] for i in local]
                dim, shape = ex.by_name[name].dim, shapes[name]
                pos = h[pick] * position_width(shape, dim) + w[pick]
                where = [t.to(dev, non_blocking=True) for t in (torch.tensor(local, device="cpu"), channels[pick], pos)]
                moved = (shape[dim - 1], *(d for i, d in enumerate(shape, start=1) if i != dim))
                t = torch.zeros(len(sel), *moved, dtype=x.dtype, device=dev)
                t.view(len(sel), moved[0], -1)[tuple(where)] = seed[pick].to(dev, x.dtype, non_blocking=True)
                seeds[name] = t.movedim(1, dim) if dim != 1 else t
            rel = ex.explain_neurons(x.index_select(0, rows[sel].to(dev, non_blocking=True)), seeds)
            out[torch.tensor(sel, device="cpu").to(dev, non_blocking=True)] = rel.sum(1)
        return out

    def relevance_argmax(self, x: torch.Tensor, rows: torch.Tensor, layers: Sequence[str],
                         channels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Variant ``relevance``: (h, w, value) of the max positive relevance of each pair's channel when the
        logit of its image is explained (seed +1), one explain pass for all images of ``x``."""
        found = {}
        p_by_layer: dict[str, list[int]] = {}
        for p, name in enumerate(layers):
            p_by_layer.setdefault(name, []).append(p)
        dev = x.device  # index tensors made before the backward: the tap never waits for the device
        rows, channels = rows.cpu(), channels.cpu()
        where = {name: tuple(t.to(dev, non_blocking=True)
                             for t in (torch.tensor(ps, device="cpu"), rows[ps], channels[ps]))
                 for name, ps in p_by_layer.items()}

        def tap(layer, rel, _act):
            ps, r, c = where[layer.name]
            v, pos = unit_major(rel, layer.dim)[r, c].clamp(min=0).max(1)
            width = position_width(rel.shape[1:], layer.dim)
            found[layer.name] = (ps, pos // width, pos % width, v)

        self.explainer.explain(x, 1.0, tap=tap, layers=list(p_by_layer), input_relevance=False)
        out = [torch.empty(len(layers), dtype=t, device=x.device) for t in (torch.long, torch.long, x.dtype)]
        for ps, hh, ww, v in found.values():
            out[0][ps], out[1][ps], out[2][ps] = hh, ww, v.to(x.dtype)
        return out[0], out[1], out[2]


def relevance_bbox(rmap: np.ndarray, q: float = 75.0, *, box: str = "positive") -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), ends exclusive, of the patch of a relevance map.

    ``positive`` (ours): the pixels whose positive relevance is ≥ the q-th percentile of the positive values, ends
    past the last such pixel; None when no pixel is positive. ``paper-code``: the public code's box — negatives
    zeroed, the pixels above the q-th percentile of the *whole* map (zeros included; with most of a map at 0 that is
    every positive pixel), the selection thresholded a second time at the percentile of what is left, and the box
    from the first to the last selected row/column with that last one *excluded* (a slice ``[min:max]``); the whole
    image when nothing is selected (an all-zero map). Where that box would be empty (every selected pixel in one
    row or column) it keeps that row/column, so a patch can still be saved."""
    if box not in PATCH_BOXES:
        raise ValueError(f"unknown patch box {box!r}; use one of {PATCH_BOXES}")
    if box == "paper-code":
        return _paper_code_bbox(rmap, q)
    positive = rmap[rmap > 0]
    if positive.size == 0:
        return None
    ys, xs = np.nonzero((rmap > 0) & (rmap >= np.percentile(positive, q)))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _paper_code_bbox(rmap: np.ndarray, q: float) -> tuple[int, int, int, int]:
    height, width = rmap.shape
    hm = np.where(rmap > 0, rmap, 0)
    top = hm.max() if hm.size else 0
    if not top > 0:
        return 0, 0, width, height
    hm = hm / top  # as the public code (normalised by the 100th percentile before the box)
    hm = np.where(hm <= np.percentile(hm, q), 0, hm)
    ys, xs = np.nonzero(hm > np.percentile(hm, q))
    if ys.size == 0:
        return 0, 0, width, height
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def top_images(explainer: Explainer, tffs: Sequence[TFF], samples, sets: Sequence[str], n: int,
               ctx: tdist.DistContext, site: str = "folded", **pass_args) -> pd.DataFrame:
    """Per (set, T-FF) the ``n`` fakes with the largest max activation at ``site``, merged over ranks exactly.

    Rows: set, tff (position in ``tffs``), rank (1 = strongest), index (into ``samples``), activation, h, w.
    """
    group_of = {s: g for g, s in enumerate(sets)}
    groups = torch.tensor([group_of[s.set] for s in samples], device="cpu")
    tap = MaxActivationTap(explainer, tffs, site)
    top = RunningTopN(len(sets), len(tffs), n, ctx.device)
    dtype = next(explainer.model.buffers()).dtype
    prep = pass_args.get("preprocessing") or Preprocessing()
    run = DatasetPass(samples, ctx, **pass_args)
    for images, indices in run:
        v, h, w = tap.run(prep.normalize(images, dtype))
        top.update(groups[indices], v, indices, h, w)
    st = merge_top(tdist.gather_objects(top.state()), n)
    n_small = run.gather_small()
    g, j, r = np.meshgrid(np.arange(len(sets)), np.arange(len(tffs)), np.arange(n), indexing="ij")
    table = pd.DataFrame({"set": np.asarray(sets)[g.ravel()], "tff": j.ravel(), "rank": r.ravel() + 1,
                          "index": st["index"].ravel(), "activation": st["values"].ravel(),
                          "h": st["h"].ravel(), "w": st["w"].ravel()})
    table = table[table["index"] != SENTINEL].reset_index(drop=True)
    table.attrs["n_smaller_than_crop"] = n_small
    return table


def seed_neurons(folded_tap: MaxActivationTap | None, sub: pd.DataFrame, x: torch.Tensor,
                 rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(h, w, folded value) of each pair's seed neuron: the argmax of its T-FF's BN-folded map on its image. ``top``'s
    own h, w and activation where they were read at the folded site (``folded_tap`` None), else one forward of
    ``folded_tap`` (a folded-site :class:`MaxActivationTap` over every T-FF) on the images ``x``."""
    if folded_tap is None:
        return (*(torch.tensor(sub[c].to_numpy(), device="cpu") for c in ("h", "w")),
                torch.tensor(sub["activation"].to_numpy(), dtype=torch.float64, device="cpu"))
    v, h, w = folded_tap.run(x)
    r, j = rows.to(v.device), torch.tensor(sub["tff"].to_numpy(), device=v.device)
    return h[r, j].cpu(), w[r, j].cpu(), v[r, j].to(torch.float64).cpu()


def compute_lrpmax(explainer: Explainer, tffs: Sequence[TFF], samples, top: pd.DataFrame, ctx: tdist.DistContext,
                   variant: str = "activation", chunk: int = 64, on_pair=None, neuron_seed: str = "activation",
                   site: str = "folded", patch_box: str = "positive", **pass_args) -> pd.DataFrame:
    """LRP-max maps for every row of ``top``; ``on_pair(row, image uint8 CHW, map HW numpy)`` is called
    for each (on the rank that computed it). The seed neuron is the argmax of the T-FF's BN-folded map (``top``'s
    images were ranked at ``site``); its seed is the folded activation there or, with ``neuron_seed='one'``, 1 —
    and 0 (an all-zero map) where that activation is ≤ 0. Returns ``top`` with seed, map_sum and bbox columns
    (``patch_box``: :func:`relevance_bbox`; all ranks)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use one of {VARIANTS}")
    if neuron_seed not in NEURON_SEEDS:
        raise ValueError(f"unknown neuron seed {neuron_seed!r}; use one of {NEURON_SEEDS}")
    if patch_box not in PATCH_BOXES:
        raise ValueError(f"unknown patch box {patch_box!r}; use one of {PATCH_BOXES}")
    folded_tap = MaxActivationTap(explainer, tffs, "folded") if site != "folded" else None
    lrp = LRPMax(explainer, chunk)
    dtype = next(explainer.model.buffers()).dtype
    prep = pass_args.get("preprocessing") or Preprocessing()
    wanted = sorted(set(top["index"].tolist()))
    pairs_of = {i: [] for i in wanted}
    for p, i in enumerate(top["index"].tolist()):
        pairs_of[i].append(p)
    results = []
    for images, local in DatasetPass([samples[i] for i in wanted], ctx, **pass_args):
        ps = [(p, r) for r, li in enumerate(local.tolist()) for p in pairs_of[wanted[li]]]
        if not ps:
            continue
        sub = top.iloc[[p for p, _ in ps]]
        rows = torch.tensor([r for _, r in ps], device="cpu")
        layers = [tffs[j][0] for j in sub["tff"]]
        chans = torch.tensor([tffs[j][1] for j in sub["tff"]], device="cpu")
        x = prep.normalize(images, dtype)
        if variant == "activation":
            h, w, seed = seed_neurons(folded_tap, sub, x, rows)
            seed = seed.clamp(min=0)
        else:
            h, w, seed = (t.cpu() for t in lrp.relevance_argmax(x, rows, layers, chans))
        if neuron_seed == "one":  # the public code's z = max(folded map · [folded map > 0]): 0 without a positive value
            seed = (seed > 0).to(torch.float64)
        imgs = images.cpu()
        depth = [explainer.by_name[name].index for name in layers]
        order = sorted(range(len(ps)), key=lambda q: (depth[q], q))
        for s in range(0, len(order), 8 * chunk):  # maps of a bounded number of pairs at a time
            qs = torch.tensor(order[s:s + 8 * chunk], device="cpu")
            maps = lrp.maps(x, rows[qs], [layers[q] for q in qs.tolist()], chans[qs], h[qs], w[qs], seed[qs])
            for rmap, q in zip(maps.double().cpu().numpy(), qs.tolist(), strict=True):
                p, r = ps[q]
                res = {"pair": p, "seed_h": int(h[q]), "seed_w": int(w[q]), "seed": float(seed[q]),
                       "map_sum": float(rmap.sum()), "bbox": relevance_bbox(rmap, box=patch_box)}
                if on_pair is not None:
                    on_pair({**top.iloc[p].to_dict(), **res}, imgs[r], rmap)
                results.append(res)
    merged = pd.DataFrame([r for part in tdist.gather_objects(results) for r in part])
    merged = merged.sort_values("pair").set_index("pair")
    out = top.join(merged)
    for c, name in enumerate(("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")):
        out[name] = [b[c] if b else -1 for b in out["bbox"]]
    return out.drop(columns="bbox")
