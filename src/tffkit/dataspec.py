"""What a data source is, below every reader of one: :class:`DataSpec` (where the images are and how their labels
are read), the layout names and :class:`DatasetLayoutError`.

The readers (:mod:`tffkit.layouts` and those it dispatches to: :mod:`tffkit.manifest`, :mod:`tffkit.genlayouts`,
:mod:`tffkit.tables`) import these from here, so imports among them go one way; :mod:`tffkit.layouts` re-exports
them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

LAYOUTS = ("auto", "forensynths", "genimage", "diffusionforensics", "paired", "manifest", "label-first",
           "generator-first", "table")
DEFAULT_DIRS = {"forensynths": (("0_real",), ("1_fake",)), "genimage": (("nature",), ("ai",)),
                "diffusionforensics": (("real",), ()), "paired": (("0_real",), ("1_fake",)),
                "manifest": (("0_real", "real"), ("1_fake", "fake")), "label-first": (("real",), ("fake",)),
                "generator-first": (("real",), ("fake",)), "table": ((), ())}
Groups = dict[tuple[str, str, str, int], list[str]]  # (set, class, split, label) → paths


class DatasetLayoutError(ValueError):
    """The data does not follow the expected layout (the message says what was expected and what was found)."""


@dataclass(frozen=True)
class DataSpec:
    """Where the images are and how to read their labels (see the module docstring); ``small_images``: what the
    pipeline does with images smaller than the detector's crop (:class:`tffkit.preprocess.Preprocessing`)."""

    root: str
    layout: str = "auto"
    real_dirs: tuple[str, ...] | None = None
    fake_dirs: tuple[str, ...] | None = None
    real: str | None = None
    split: str | None = None
    small_images: str = "upscale"
    group_pattern: str | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise DatasetLayoutError(f"unknown layout {self.layout!r}; choose one of {', '.join(LAYOUTS)}")
        if self.group_pattern is not None:
            try:
                compiled = re.compile(self.group_pattern)
            except re.error as exc:
                raise DatasetLayoutError(f"--group-pattern {self.group_pattern!r} is not a regular expression: "
                                         f"{exc}") from None
            if compiled.groups < 1:
                raise DatasetLayoutError(f"--group-pattern {self.group_pattern!r} has no capture group; mark the "
                                         "part of the file name that names the group, e.g. '^\\d+_(.+)\\.png$'")
        for name in ("real_dirs", "fake_dirs"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, tuple(v.strip() for v in value.split(",") if v.strip()))
            elif value is not None:
                object.__setattr__(self, name, tuple(value))

    def __str__(self) -> str:
        return self.root

    def dirs(self, layout: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(real, fake) folder names for ``layout``: the given ones, else the layout's defaults."""
        real, fake = DEFAULT_DIRS.get(layout, DEFAULT_DIRS["forensynths"])
        return self.real_dirs or real, self.fake_dirs or fake

    def to_dict(self) -> dict:
        """JSON-friendly fields."""
        return {"root": self.root, "layout": self.layout, "real_dirs": self.real_dirs, "fake_dirs": self.fake_dirs,
                "real": self.real, "split": self.split, "small_images": self.small_images,
                "group_pattern": self.group_pattern}


def as_spec(data: str | os.PathLike | DataSpec) -> DataSpec:
    """A :class:`DataSpec` for a path (auto layout) or the spec itself."""
    return data if isinstance(data, DataSpec) else DataSpec(os.fspath(data))
