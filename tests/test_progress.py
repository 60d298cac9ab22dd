"""Progress: counts finished batches (not decoded ones); plain lines every few percent when not on a terminal."""

from __future__ import annotations

import io
import re
from pathlib import Path

import torch

from conftest import make_tree
from tffkit import distributed as tdist
from tffkit.data import find_samples
from tffkit.passes import DatasetPass
from tffkit.progress import LineProgress, progress_bar

CPU = tdist.DistContext(0, 1, torch.device("cpu"))


def test_a_batch_is_counted_when_processed_not_when_decoded(tmp_path: Path):
    samples = find_samples(make_tree(tmp_path / "d", {"a": ["x", "y", "z", "w", "v"]}, n=8, size=16))  # 80 images
    run = DatasetPass(samples, CPU, "full", batch_size=64, num_workers=0, desc="test")
    shown = []
    for _batch in run:
        shown.append(run.bar.n)  # what the bar says while the caller works on this batch
    assert shown == [0, 64]  # the first batch is not reported done while it is being processed
    assert run.bar.n == 80


def test_without_a_terminal_progress_is_a_line_every_five_percent(tmp_path: Path, capsys):
    samples = find_samples(make_tree(tmp_path / "d", {"a": []}, n=50, size=16))  # 100 images
    for _ in DatasetPass(samples, CPU, "full", batch_size=1, num_workers=0, desc="scoring"):
        pass
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert 18 <= len(lines) <= 21, lines
    assert all(re.fullmatch(r"scoring: \d+/100 img \(\d+%\), elapsed \d+ s, ETA \d+ s", line) for line in lines)
    assert lines[-1].startswith("scoring: 100/100 img (100%)")


def test_a_terminal_gets_a_bar_and_disabled_progress_prints_nothing():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    bar = progress_bar(10, "x", stream=term)
    bar.update(10)
    bar.close()
    assert not isinstance(bar, LineProgress) and "\r" in term.getvalue()
    quiet = io.StringIO()
    bar = progress_bar(10, "x", enabled=False, stream=quiet)
    bar.update(5)
    bar.close()
    assert quiet.getvalue() == "" and bar.n == 5
    lines = io.StringIO()
    bar = progress_bar(200, "epoch 3", "step", stream=lines, initial=100)  # a resumed epoch starts at 50%
    bar.update(1)
    assert lines.getvalue() == ""
    bar.update(9)
    assert lines.getvalue().startswith("epoch 3: 110/200 step (55%)")
