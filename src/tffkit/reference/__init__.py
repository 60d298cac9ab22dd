"""Numbers published in the paper (facts, copied from its tables) to show beside ours."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

PAPER_DETECTORS = ("wang2020_resnet50_blur_jpg_prob0.5", "paper_efficientnet_b0", "paper_cr_resnet50",
                   "paper_cr_efficientnet_b0")


@lru_cache(maxsize=1)
def paper_tables() -> pd.DataFrame:
    """The paper's tables in long form: table, detector, row, gan, metric, value (percent)."""
    import pandas as pd

    with resources.files(__name__).joinpath("paper_tables.csv").open() as fh:
        return pd.read_csv(fh)


def paper_numbers(table: str, detector: str) -> pd.DataFrame:
    """Rows of one table (``dropout``, ``color``, ``color_conditional``) for one released detector."""
    if detector not in PAPER_DETECTORS:
        raise ValueError(f"unknown paper detector {detector!r}; known: {', '.join(PAPER_DETECTORS)}")
    df = paper_tables()
    return df[(df["table"] == table) & (df["detector"] == detector)].reset_index(drop=True)
