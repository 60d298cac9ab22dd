"""Figures for understanding T-FF (docs/algorithms.md §5): heatmap overlays, LRP-max collages, colour ablation plots.

Pure functions of arrays and tables (drawn from the CSVs the analyses write); matplotlib with Agg.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from ..results import atomic_write, save_figure  # noqa: E402

VERSION_COLORS = {"colour": "tab:orange", "grayscale": "tab:gray"}
REPORT_WIDTH_PX = 1000  # the report shows a figure at most this wide (CSS px, 96 per inch)
DPI = 150  # save_figure's default


def readable_pt(width_in: float, dpi: int = DPI, target: float = 9.5) -> float:
    """The font size (pt) that still reads as ``target`` pt once a figure ``width_in`` inches wide is shrunk to the
    report's width (never below 9 pt on the figure itself)."""
    scale = min(1.0, REPORT_WIDTH_PX / (width_in * dpi)) * dpi / 96
    return max(9.0, round(target / scale + 0.05, 1))


def wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` pt."""
    import textwrap

    return "\n".join(textwrap.wrap(text, max(20, int(width_in * 72 / (0.55 * fontsize)))))


def save_png(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an HWC uint8 (or HW) array as PNG, atomically."""
    img = Image.fromarray(np.ascontiguousarray(array))
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def crop(image: np.ndarray, bbox: Sequence[int] | None) -> np.ndarray:
    """The patch ``image[y0:y1, x0:x1]`` (HWC); the whole image when ``bbox`` is None."""
    if bbox is None:
        return image
    x0, y0, x1, y1 = (int(v) for v in bbox)
    return image[y0:y1, x0:x1]


def thumbnail(patch: np.ndarray, size: int = 64) -> np.ndarray:
    """A patch resized (nearest, keeps artifacts visible) to size × size, for collages."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(patch)).resize((size, size), Image.NEAREST))


def heatmap_rgb(rmap: np.ndarray, cmap: str = "bwr") -> np.ndarray:
    """A relevance map → RGB uint8, symmetric around 0 (red positive, blue negative)."""
    scale = float(np.abs(rmap).max()) or 1.0
    rgba = matplotlib.colormaps[cmap](0.5 + 0.5 * rmap / scale)
    return (rgba[..., :3] * 255).astype(np.uint8)


def overlay(image: np.ndarray, rmap: np.ndarray, bbox: Sequence[int] | None = None, alpha: float = 0.6,
            cmap: str = "bwr") -> np.ndarray:
    """The heatmap blended over the grayscale image (HWC uint8), the patch box drawn in green."""
    gray = np.repeat(image.astype(np.float64).mean(2, keepdims=True), 3, axis=2)
    mixed = ((1 - alpha) * gray + alpha * heatmap_rgb(rmap, cmap)).clip(0, 255).astype(np.uint8)
    if bbox is not None:
        pil = Image.fromarray(mixed)
        x0, y0, x1, y1 = (int(v) for v in bbox)
        ImageDraw.Draw(pil).rectangle([x0, y0, x1 - 1, y1 - 1], outline=(0, 200, 0))
        mixed = np.asarray(pil)
    return mixed


def lrpmax_collage(row_labels: Sequence[str], sets: Sequence[str], cells: Mapping[tuple[int, str], Sequence],
                   show: int, path: str | os.PathLike, title: str = "LRP-max patches") -> Path:
    """Rows = T-FF, column groups = sets with ``show`` patches each (paper Fig. 1 / H.1); text sized to stay
    readable when the report shrinks the collage to its width."""
    n_rows, n_cols = max(1, len(row_labels)), max(1, len(sets) * show)
    cell, chars = 0.5, max([len(label) for label in row_labels] + [8])
    fs, label_w = 9.0, 1.0
    for _ in range(4):  # wider labels need a wider figure, which needs larger text
        label_w = 0.58 * fs * chars / 72 + 0.15
        fs = readable_pt(cell * n_cols * 1.06 + label_w)
    width = cell * n_cols * 1.06 + label_w
    head = (3.4 * fs) / 72  # two title lines and the set names
    height = cell * n_rows * 1.08 + head + 0.1
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width, height), squeeze=False)
    for r in range(n_rows):
        for si, s in enumerate(sets):
            patches = list(cells.get((r, s), []))
            for i in range(show):
                ax = axes[r][si * show + i]
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if i < len(patches):
                    ax.imshow(patches[i], interpolation="nearest")
        if r < len(row_labels):
            axes[r][0].set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=fs)
    fig.subplots_adjust(left=label_w / width, right=0.995, bottom=0.05 / height, wspace=0.06, hspace=0.08,
                        top=1 - head / height)
    for si, s in enumerate(sets):  # set names centred over their group of columns
        left, right = axes[0][si * show].get_position(), axes[0][si * show + show - 1].get_position()
        fig.text((left.x0 + right.x1) / 2, left.y1 + 0.15 * fs / 72 / height, s, ha="center", va="bottom",
                 fontsize=fs)
    fig.suptitle(wrap(f"{title} — {show} strongest fakes per set (columns), one T-FF per row", width, fs),
                 fontsize=fs, y=1 - 0.05 / height, va="top")
    return save_figure(fig, path)


def probability_boxplot(probs: pd.DataFrame, changes: pd.DataFrame, path: str | os.PathLike,
                        min_prob: float = 0.2) -> Path:
    """Box plots of p(fake), colour vs grayscale, per set; the change of the median annotated in percentage
    points, as in the paper (grayscale − colour: positive = grayscale raises p, negative = it lowers p).

    ``probs``: columns set, colour, grayscale (one row per fake); ``changes``: set, median_change_pp.
    """
    sets = list(dict.fromkeys(probs["set"]))
    width = 1.4 * max(2, len(sets)) + 1.5
    fs = readable_pt(width)
    with plt.rc_context({"font.size": fs}):
        fig, ax = plt.subplots(figsize=(width, 4.2))
        for version, shift in (("colour", -0.18), ("grayscale", 0.18)):
            data = [probs.loc[probs["set"] == s, version].to_numpy() for s in sets]
            bp = ax.boxplot(data, positions=np.arange(len(sets)) + shift, widths=0.32, patch_artist=True,
                            showfliers=False, manage_ticks=False, medianprops={"color": "black"})
            for box in bp["boxes"]:
                box.set_facecolor(VERSION_COLORS[version])
            ax.plot([], [], color=VERSION_COLORS[version], lw=8, label=version)
        change = dict(zip(changes["set"], changes["median_change_pp"], strict=True))
        for i, s in enumerate(sets):
            ax.annotate(f"{change.get(s, np.nan):+.1f} pp", (i, 1.02), ha="center", annotation_clip=False)
        ax.set_xticks(np.arange(len(sets)), sets, rotation=30, ha="right")
        ax.set_ylim(0, 1.08)
        ax.set_ylabel("counterfeit probability p(fake)")
        ax.set_title(wrap(f"Fakes with colour p ≥ {min_prob}: colour vs grayscale (annotation: change of the median, "
                          "grayscale − colour, in percentage points; positive = grayscale raises p)", width, fs),
                     fontsize=fs, pad=1.8 * fs)
        ax.legend(loc="lower left")
        return save_figure(fig, path)


def activation_distributions(color: np.ndarray, gray: np.ndarray, keys: Sequence[str], pvalues: Sequence[float],
                             path: str | os.PathLike, title: str, cols: int = 4, bins: int = 30) -> Path:
    """Small multiples: per T-FF the histograms of max spatial activation, colour vs grayscale (N, K arrays)."""
    k = len(keys)
    cols = max(1, min(cols, k))
    rows = max(1, -(-k // cols))
    width = 2.6 * cols
    fs = readable_pt(width)
    with plt.rc_context({"font.size": fs}):
        fig, axes = plt.subplots(rows, cols, figsize=(width, 2.3 * rows + 0.9), squeeze=False)
        for j, ax in enumerate(axes.ravel()):
            if j >= k:
                ax.axis("off")
                continue
            both = np.concatenate([color[:, j], gray[:, j]])
            lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
            edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
            for version, values in (("colour", color[:, j]), ("grayscale", gray[:, j])):  # one polygon each: fast
                ax.hist(values, edges, histtype="stepfilled", alpha=0.6, color=VERSION_COLORS[version], label=version)
            ax.set_title(f"{keys[j]}\nMood p = {pvalues[j]:.2g}", fontsize=fs)
            ax.locator_params(nbins=4)
            ax.yaxis.get_major_locator().set_params(integer=True)  # counts of fakes
            if j % cols == 0:
                ax.set_ylabel("fakes")
            if j >= k - cols:
                ax.set_xlabel("max spatial activation")
            if j == 0:
                ax.legend()
        fig.suptitle(wrap(title, width, fs), fontsize=fs)
        fig.tight_layout()
        return save_figure(fig, path)


def explain_panel(image: np.ndarray, lrp: np.ndarray, cam: np.ndarray, guided: np.ndarray, title: str,
                  path: str | os.PathLike) -> Path:
    """Image | LRP heatmap | Grad-CAM overlay | Guided Grad-CAM, side by side with a colour bar for LRP."""
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.8), constrained_layout=True)
    axes[0].imshow(image)
    axes[0].set_title("image")
    scale = float(np.abs(lrp).max()) or 1.0
    im = axes[1].imshow(lrp, cmap="bwr", vmin=-scale, vmax=scale)
    axes[1].set_title("LRP (sum over RGB)")
    fig.colorbar(im, ax=axes[1], fraction=0.046, label="relevance")
    axes[2].imshow(image)
    im = axes[2].imshow(cam, cmap="jet", alpha=0.5, vmin=0, vmax=1)
    axes[2].set_title("Grad-CAM")
    fig.colorbar(im, ax=axes[2], fraction=0.046, label="normalised")
    axes[3].imshow(guided_rgb(guided))
    axes[3].set_title("Guided Grad-CAM")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def guided_rgb(guided: np.ndarray) -> np.ndarray:
    """A signed (3, H, W) or (H, W, 3) attribution → displayable uint8 RGB centred at grey."""
    g = guided.transpose(1, 2, 0) if guided.shape[0] == 3 and guided.ndim == 3 else guided
    scale = float(np.abs(g).max()) or 1.0
    return ((0.5 + 0.5 * g / scale) * 255).clip(0, 255).astype(np.uint8)


def cam_overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A [0, 1] class-activation map in ``jet`` blended over the image (uint8 HWC)."""
    heat = matplotlib.colormaps["jet"](np.clip(cam, 0, 1))[..., :3] * 255
    return ((1 - alpha) * image.astype(np.float64) + alpha * heat).clip(0, 255).astype(np.uint8)


def plot_ranking(table: pd.DataFrame, names: Sequence[str], k: int, out: Path) -> None:
    """Where the top-k feature maps sit (per layer, ``names`` input → output) and the distribution of ω (text
    readable at the report's width): ``out/topk_per_layer.png`` and ``out/omega_distribution.png``."""
    names = list(names)
    counts = table.head(k).groupby("layer").size().reindex(names, fill_value=0)
    width = min(16.0, max(6.0, 0.22 * len(names)))
    fs = readable_pt(width)
    step = max(1, int(np.ceil(1.25 * fs / (72 * 0.85 * width / max(1, len(names))))))  # labels that fit their slot
    with plt.rc_context({"font.size": fs}):
        fig, ax = plt.subplots(figsize=(width, 4.0))
        ax.bar(range(len(names)), counts.values, color="tab:red")
        ax.set_xticks(range(0, len(names), step), names[::step], rotation=90)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_xlabel("layer (input → output)" + (f"; every {step}th named" if step > 1 else ""))
        ax.set_ylabel(f"# of top-{k} feature maps")
        ax.yaxis.get_major_locator().set_params(integer=True)  # counts
        ax.set_title(f"Where the top-{k} transferable forensic features sit ({len(table)} feature maps)")
        save_figure(fig, out / "topk_per_layer.png")

    fs = readable_pt(6.0)
    with plt.rc_context({"font.size": fs}):
        fig, ax = plt.subplots(figsize=(6.0, 3.6))
        omega = table["omega"].to_numpy()
        ax.hist(omega, bins=100, color="tab:blue", log=True, label="all feature maps")
        ax.axvline(omega[min(k, len(omega)) - 1], color="tab:red", linestyle="--", label=f"top-{k} threshold")
        ax.set_xlabel("ω (FF-RS, mean share of positive relevance)")
        ax.set_ylabel("# feature maps (log)")
        ax.legend()
        ax.set_title("Distribution of ω")
        save_figure(fig, out / "omega_distribution.png")
