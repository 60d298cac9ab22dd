"""The allowed values of numeric options, in one table for the command line and the study config.

:data:`ALLOWED` maps an option's name (the argparse ``dest`` and the study config key, which are the same) to its
allowed range. ``tff`` checks every parsed option against it before the command runs, and
:func:`tffkit.jobs.study.load_config` checks every config field of that name (``data.max_per_class``,
``steps.rank.k`` …). A value outside the range is refused in one line naming the option and the allowed values
(exit 2), instead of reaching Python (``--max-per-class -3`` used to slice off the last three images). ``None``
(the option not given) always passes: it means the option's default. Imports nothing heavy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Allowed:
    """A closed range ``[low, high]`` (``low_open``: ``low`` itself excluded); ``integer``: whole numbers only."""

    low: float | None = None
    high: float | None = None
    integer: bool = True
    low_open: bool = False
    unset: str = ""  # what leaving the option out means, said with the allowed values

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '≥'} {self.low:g}")
        if self.high is not None:
            parts.append(f"≤ {self.high:g}")
        return f"{kind} {' and '.join(parts)}".strip() + (f" ({self.unset})" if self.unset else "")

    def admits(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and value != int(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high


ALLOWED: dict[str, Allowed] = {
    "max_per_class": Allowed(1, unset="leave it out for all images"),
    "deletion_max_per_class": Allowed(1, unset="null for data.max_per_class"),
    "batch_size": Allowed(1),
    "workers": Allowed(0, unset="leave it out for this machine's cores minus one, at most 8; 0 loads in the main "
                                "process"),
    "k": Allowed(1),
    "per_tff": Allowed(1),
    "show": Allowed(1),
    "random_repeats": Allowed(0),
    "replicates": Allowed(0),
    "min_prob": Allowed(0, 1, integer=False),
    "jpeg": Allowed(0, 100),
    "blur": Allowed(0, integer=False),
    "resize": Allowed(0, integer=False, low_open=True),
    "percent": Allowed(0, 100, integer=False, low_open=True),
    "seeds": Allowed(1),
    "scale": Allowed(0, integer=False, low_open=True),
}


def problem(name: str, value: Any) -> str | None:
    """Why ``value`` is not allowed for option ``name`` (None when it is, or when the option has no range).
    A list is checked element by element."""
    rule = ALLOWED.get(name)
    if rule is None or value is None:
        return None
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if not rule.admits(v):
            return f"{v!r} is not allowed; allowed: {rule.describe()}"
    return None


def check_args(values: dict[str, Any], flag: Any = lambda name: "--" + name.replace("_", "-")) -> str | None:
    """The first problem among parsed command-line values, as ``argument --flag: …`` (None when all are fine);
    ``flag(dest)`` names the option as typed."""
    for name, value in values.items():
        why = problem(name, value)
        if why:
            return f"argument {flag(name)}: {why}"
    return None


# Whether ``python:`` detector specs may run a Python file or import a module (tffkit.detectors.zoo): None (not
# set: the Python API trusts its caller), or what ``tff`` was told (--trust-code) for the command it runs.
_CODE_TRUST: list[bool | None] = [None]


@contextlib.contextmanager
def code_trust(allowed: bool | None) -> Iterator[None]:
    """Within the block, ``python:`` detector specs run code only when ``allowed`` is not False."""
    _CODE_TRUST.append(allowed)
    try:
        yield
    finally:
        _CODE_TRUST.pop()


def code_trusted(explicitly: bool = False) -> bool:
    """True when ``python:`` detector specs may run code now (see :func:`code_trust`); ``explicitly``: only when
    someone said so (a study YAML file's python: detector needs that or its own detector.trust_code)."""
    return _CODE_TRUST[-1] is True if explicitly else _CODE_TRUST[-1] is not False
