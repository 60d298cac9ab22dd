"""``tff lrpmax``: LRP-max for the top-k T-FF (docs/algorithms.md §5) — per T-FF and test set the fakes with the
largest max spatial activation, relevance seeded at that neuron and propagated to the pixels, patches, overlays and
collages (paper Fig. 1 / H.1)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .options import (
    MAX_PER_CLASS_HELP,
    DataSelection,
    DetectorOptions,
    LRPOptions,
    PaperCode,
    PassOptions,
    option,
    switch,
)

if TYPE_CHECKING:
    import pandas as pd

    from ..data import DataSpec


@dataclass(frozen=True, kw_only=True)
class LRPMaxOptions(DetectorOptions, PassOptions, LRPOptions, PaperCode, DataSelection):
    """Options of ``tff lrpmax`` (and of a study's lrpmax step)."""

    k: int = option(114, "number of top-ranked T-FF (paper: 114 ResNet-50, 27 B0)")
    max_per_class: int | None = option(None, MAX_PER_CLASS_HELP + " (only fakes are used)", type=int, metavar="N")
    per_tff: int = option(20, "fakes kept per (T-FF, set) (paper: 20)")
    show: int = option(5, "patches shown per (T-FF, set) in the collages (paper: 5)")
    variant: str = option("activation", "seed at the argmax of the activation map, or of the relevance map of the "
                          "logit", choices=("activation", "relevance"))
    pairs_per_backward: int = option(64, "(image, T-FF) pairs explained by one LRP backward (memory vs speed)")
    rows_per_figure: int = option(10, "T-FF rows per collage figure")
    neuron_seed: str | None = switch("neuron_seed")
    bounds: str | None = switch("bounds")
    activation_site: str | None = switch("activation_site")
    zplus_fallback: str | None = switch("zplus_fallback")
    patch_box: str | None = switch("patch_box")


def lrpmax(data: DataSpec | str | os.PathLike, *, options: LRPMaxOptions = LRPMaxOptions(),
           out: str | os.PathLike | None = None, ranking: str | os.PathLike) -> pd.DataFrame:
    """The top ``per_tff`` fakes of ``data`` per (T-FF of ``ranking``, set), their LRP-max maps and patches; writes
    lrpmax_index.csv, patches/, overlays/, collage_NN.png and lrpmax.json to ``out`` (None: nothing written).
    Returns the index table (on the main process)."""
    from .runner import Job

    o = options
    with Job("lrpmax", o, out=out, record={"ranking": str(ranking), "data": str(data)}) as job:
        found = job.find(data, o.sets, max_per_class=o.max_per_class)
        model = job.detector()
        prep = job.preprocessing(model, data)
        explainer = job.explainer(model, prep, **o.lrp())
        samples = [s for s in found.samples if s.label == 1]
        if not samples:
            raise ValueError(f"no fakes (1_fake) under {data} for sets {o.sets}")
        run = _Run(job, explainer, prep, samples, ranking)
        table = run.compute()
        cells = run.gather_thumbs()  # on every process
        if job.is_main:
            table = run.index(table)
            summary = run.summary(table)
            if job.writes:
                from ..results import write_csv, write_json

                write_csv(job.folder / "lrpmax_index.csv", table)
                summary = {**summary, "figures": run.collages(cells)}
                write_json(job.folder / "lrpmax.json", summary)
                job.finish(**summary, **job.inputs(model, prep, run.n_small))
    return table


class _Run:
    """One LRP-max run: the T-FF, the top images, the maps (saved as each is computed) and the collages' cells."""

    def __init__(self, job, explainer, prep, samples, ranking):
        from ..analysis.activations import load_tffs, tff_keys

        o = job.options
        self.job, self.explainer, self.samples = job, explainer, samples
        self.tffs = load_tffs(ranking, o.k, explainer)
        self.keys = tff_keys(explainer, self.tffs)
        self.sets = list(dict.fromkeys(s.set for s in samples))
        self.pass_args = dict(preset=o.preset, batch_size=o.batch_size, num_workers=o.workers, progress=o.progress,
                              preprocessing=prep)
        self.thumbs: dict[tuple[int, str], list] = {}
        self.n_small = 0

    def compute(self) -> pd.DataFrame:
        """The top images per (set, T-FF) and their maps; patches and overlays saved on the rank computing them."""
        from ..analysis.lrpmax import compute_lrpmax, top_images

        o, s = self.job.options, self.job.settings
        top = top_images(self.explainer, self.tffs, self.samples, self.sets, o.per_tff, self.job.ctx,
                         s["activation_site"], desc="max activations", **self.pass_args)
        self.n_small = top.attrs.get("n_smaller_than_crop", 0)
        return compute_lrpmax(self.explainer, self.tffs, self.samples, top, self.job.ctx, o.variant,
                              o.pairs_per_backward, on_pair=self.save if self.job.folder is not None else None,
                              neuron_seed=s["neuron_seed"], site=s["activation_site"], patch_box=s["patch_box"],
                              desc="LRP-max", **self.pass_args)

    def _where(self, tff: int, set_name: str, rank: int, path: str) -> tuple[str, str]:
        """(subfolder, file name) of a pair's patch and overlay."""
        from pathlib import Path

        layer, channel = self.tffs[tff]
        return f"{tff + 1:03d}_{layer}.c{channel}/{set_name}", f"r{rank:02d}_{Path(path).stem}.png"

    def save(self, row: dict, image, rmap) -> None:
        """Patch and overlay of one pair; its thumbnail kept for the collages."""
        from ..report import figures_tff as fig

        img = image.permute(1, 2, 0).numpy()
        sub, name = self._where(int(row["tff"]), row["set"], int(row["rank"]), self.samples[int(row["index"])].path)
        patch = fig.crop(img, row["bbox"])
        fig.save_png(patch, self.job.folder / "patches" / sub / name)
        fig.save_png(fig.overlay(img, rmap, row["bbox"]), self.job.folder / "overlays" / sub / name)
        if row["rank"] <= self.job.options.show:
            self.thumbs.setdefault((int(row["tff"]), row["set"]), []).append((int(row["rank"]), fig.thumbnail(patch)))

    def index(self, table: pd.DataFrame) -> pd.DataFrame:
        """lrpmax_index.csv: the pairs with their T-FF, image, patch and overlay files and the effective switches."""
        s = self.job.settings
        table.insert(0, "key", [self.keys[j] for j in table["tff"]])
        table.insert(1, "layer", [self.tffs[j][0] for j in table["tff"]])
        table.insert(2, "channel", [self.tffs[j][1] for j in table["tff"]])
        where = [self._where(j, st, r, self.samples[i].path)
                 for j, st, r, i in zip(table["tff"], table["set"], table["rank"], table["index"], strict=True)]
        table["tff"] = table["tff"] + 1
        table.insert(5, "image", [self.samples[i].path for i in table["index"]])
        table["patch"] = [f"patches/{sub}/{name}" for sub, name in where]
        table["overlay"] = [f"overlays/{sub}/{name}" for sub, name in where]
        table["neuron_seed"] = s["neuron_seed"]
        table["activation_site"] = s["activation_site"]
        return table

    def gather_thumbs(self) -> dict[tuple[int, str], list]:
        """Every process's thumbnails per (T-FF, set), by rank (a collective: called on every process)."""
        from .. import distributed as tdist

        cells: dict[tuple[int, str], list] = {}
        for part in tdist.gather_objects(self.thumbs):
            for key, items in part.items():
                cells.setdefault(key, []).extend(items)
        return {key: [t for _, t in sorted(v, key=lambda x: x[0])] for key, v in cells.items()}

    def collages(self, cells: dict[tuple[int, str], list]) -> list[str]:
        """collage_NN.png (rows_per_figure T-FF each) from the thumbnails ``cells``; their file names."""
        from ..report.figures_tff import lrpmax_collage

        o, n = self.job.options, len(self.tffs)
        figures = []
        for f, start in enumerate(range(0, n, o.rows_per_figure)):
            ids = list(range(start, min(n, start + o.rows_per_figure)))
            path = self.job.folder / f"collage_{f + 1:02d}.png"
            lrpmax_collage([self.keys[j] for j in ids], self.sets,
                           {(r, s): cells.get((j, s), []) for r, j in enumerate(ids) for s in self.sets}, o.show, path,
                           title=f"LRP-max patches ({o.variant}), T-FF {ids[0] + 1}–{ids[-1] + 1} of {n}")
            figures.append(path.name)
        return figures

    def summary(self, table: pd.DataFrame) -> dict[str, Any]:
        """lrpmax.json (without the figures)."""
        import numpy as np

        from ..analysis.activations import bn_scale

        o, s = self.job.options, self.job.settings
        negative = bn_scale(self.explainer, self.tffs) < 0
        return {"k": len(self.tffs), "sets": self.sets, "variant": o.variant, "pairs": len(table),
                "n_fakes": {st: sum(x.set == st for x in self.samples) for st in self.sets}, "figures": [],
                "neuron_seed": s["neuron_seed"], "bounds": s["bounds"], "activation_site": s["activation_site"],
                "patch_box": s["patch_box"], "n_negative_gamma": int(negative.sum()),
                "negative_gamma_keys": [self.keys[j] for j in np.nonzero(negative)[0]]}
