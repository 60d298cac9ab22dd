"""Progress reports: a tqdm bar on a terminal, one plain line every few percent otherwise (logs, CI, nohup).

Callers update after the work on a batch is done, never when it is merely decoded, so the count and the
ETA describe finished work.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

LINE_STEP = 0.05  # without a terminal: a line at every 5% (and at the end)


class LineProgress:
    """tqdm's ``update``/``close``/``set_postfix_str`` interface, printing ``desc: n/total unit (p%) …`` lines."""

    def __init__(self, total: int, desc: str, unit: str, stream: TextIO, step: float = LINE_STEP, initial: int = 0):
        self.total, self.desc, self.unit, self.stream, self.step = max(0, int(total)), desc, unit, stream, step
        self.n, self.start, self.postfix = initial, time.monotonic(), ""
        self._next = (int(initial / self.total / step) + 1) * step if self.total else step
        self._closed = False

    def update(self, n: int = 1) -> None:
        """Count ``n`` more finished items; print a line when another ``step`` of the total is done."""
        self.n += n
        if self.total and self.n / self.total >= self._next and self.n < self.total:
            self._print()
            self._next = (int(self.n / self.total / self.step) + 1) * self.step

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        """Text appended to the next line (as tqdm's postfix)."""
        self.postfix = text

    def _print(self) -> None:
        elapsed = time.monotonic() - self.start
        pct = 100.0 * self.n / self.total if self.total else 100.0
        eta = elapsed / self.n * (self.total - self.n) if self.n and self.total else 0.0
        tail = f", {self.postfix}" if self.postfix else ""
        self.stream.write(f"{self.desc}: {self.n}/{self.total} {self.unit} ({pct:.0f}%), elapsed {elapsed:.0f} s, "
                          f"ETA {eta:.0f} s{tail}\n")
        self.stream.flush()

    def close(self) -> None:
        """Print the final line once."""
        if not self._closed:
            self._closed = True
            self._print()


class _Silent:
    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, unit: str = "img", enabled: bool = True, leave: bool = True,
                 stream: TextIO | None = None, initial: int = 0) -> Any:
    """A progress reporter for ``total`` items: tqdm on a terminal, :class:`LineProgress` otherwise, or silent."""
    stream = stream or sys.stderr
    if not enabled:
        bar = _Silent()
        bar.n = initial
        return bar
    if hasattr(stream, "isatty") and stream.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=stream, initial=initial)
    return LineProgress(total, desc, unit, stream, initial=initial)
