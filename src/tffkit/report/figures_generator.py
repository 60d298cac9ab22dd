"""Figures of LRP into the generator: the paper's Fig. M.1 box plots and where the top units sit."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..results import save_figure

COLORS = {"baseline": "0.6", "top": "tab:red", "random": "tab:blue", "matched": "tab:purple", "low": "tab:green"}


def masking_boxplot(per_image: pd.DataFrame, summary: pd.DataFrame, path: Path, *, name: str = "") -> None:
    """p(fake) of the generated images of generator ``name`` before and after masking the top / random /
    PSNR-matched random / low units (Fig. M.1), the median annotated (and its change in percentage points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in COLORS if (per_image["kind"] == k).any()]
    data = [per_image.loc[per_image["kind"] == k, "prob"].to_numpy() for k in kinds]
    size = summary.set_index("kind")["k"]
    labels = ["no masking" if kind == "baseline" else
              f"PSNR-matched\nrandom ({size[kind]:.0f} units)" if kind == "matched" else
              f"{kind}-{size[kind]:.0f} masked" for kind in kinds]
    fig, ax = plt.subplots(figsize=(1.9 * len(kinds) + 1.5, 3.8))
    box = ax.boxplot(data, patch_artist=True, widths=0.55, medianprops={"color": "black"})
    ax.set_xticks(range(1, len(kinds) + 1), labels)
    for patch, kind in zip(box["boxes"], kinds, strict=True):
        patch.set_facecolor(COLORS[kind])
        patch.set_alpha(0.6)
    for i, kind in enumerate(kinds, start=1):
        row = summary[summary["kind"] == kind].iloc[0]
        text = f"median {row['median_prob']:.2f}"
        if kind != "baseline":
            text += f"\n{row['median_change_pp']:+.1f} pp"
        ax.annotate(text, (i, row["median_prob"]), xytext=(0, 6), textcoords="offset points", ha="center",
                    fontsize=9)
    ax.set_ylabel("detector p(fake) of the generated image")
    ax.set_ylim(-0.02, 1.12)
    ax.set_title(f"{name + ': ' if name else ''}masking generator units ranked by ω (random: all replicas)",
                 fontsize=10)
    save_figure(fig, path)


def top_units_per_layer(counts: dict[str, int], k: int, percent: float, path: Path, *, name: str = "") -> None:
    """How many of the top-p% units of generator ``name`` each of its layers holds (input → output)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n.removeprefix("generator.") for n in counts]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(names) + 2), 3.6))
    ax.bar(range(len(names)), list(counts.values()), color="tab:red")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=9)
    ax.set_xlabel("generator layer (input → output)")
    ax.set_ylabel(f"# of the top-{k} units")
    ax.set_title(f"{name + ': ' if name else ''}where the top {percent:g}% generator units sit", fontsize=10)
    ax.yaxis.get_major_locator().set_params(integer=True)  # counts
    save_figure(fig, path)
