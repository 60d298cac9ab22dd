"""``tff study CONFIG.yaml``: the paper's whole pipeline for one detector, resumable, then the report.

Steps run in order (:data:`~tffkit.jobs.study_steps.STEPS`) — evaluate (→ robustness, opt-in) → rank (→ gate,
DEAR detectors only) → dropout → faithfulness (opt-in) → lrpmax → color (→ colour-robust detector: train or load,
evaluate colour/gray, color) → planted (data with a ground truth) → generator (opt-in) → card (one page per
detector, from the files of the steps before it) — each into ``OUT/<step>/``, with the detector loaded and
traced once for all of them. A step that finished with the same settings *and the same inputs* is skipped, so an
interrupted study resumes where it stopped: ``OUT/<step>/.step.json`` holds a hash of the step's settings, of the
SHA-256 of every checkpoint it reads and of the (path, size, mtime) list of every file under its data roots, and
the files it wrote. Replacing a checkpoint or any data file at the same path therefore re-runs the steps that read
it (and those downstream of them). The config: :mod:`tffkit.jobs.study_config`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..options import code_trust
from ..outputs import OutputLock, check_writable
from ..results import read_json, write_json
from .runner import shared_detectors
from .study_checks import rerun_reason, trusts_code
from .study_config import ConfigError, load_config
from .study_steps import NEEDS_RANKING, STEPS, Study

__all__ = ["ConfigError", "Step", "build_steps", "load_config", "run_steps", "run_study", "step_complete"]


@dataclass
class Step:
    """One study step: its folder, the settings that define it, and the function that runs it."""

    name: str
    settings: dict
    run: Callable[[Path], None]
    outputs: tuple[str, ...] = ("run.json",)


def _digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def step_complete(folder: Path, settings: dict, outputs: tuple[str, ...]) -> bool:
    """True when ``folder`` holds a finished step with these settings and all its outputs."""
    marker = folder / ".step.json"
    if not marker.is_file():
        return False
    try:
        info = read_json(marker)
    except (OSError, ValueError):
        return False
    files = [folder / f for f in (*outputs, *info.get("files", []))]
    return info.get("digest") == _digest(settings) and all(f.is_file() and f.stat().st_size > 0 for f in files)


def run_steps(steps: list[Step], out: Path, log: Callable[[str], None] = print) -> dict[str, str]:
    """Run each step unless complete; returns step → 'done' | 'skipped (complete)'."""
    status = {}
    for step in steps:
        folder = out / step.name
        if step_complete(folder, step.settings, step.outputs):
            log(f"[study] {step.name}: already complete, skipped")
            status[step.name] = "skipped (complete)"
            continue
        why = rerun_reason(folder, step.settings, step.outputs, _digest(step.settings))
        log(f"[study] {step.name}: running — {why}")
        marker = folder / ".step.json"
        if marker.exists():
            marker.unlink()
        step.run(folder)
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != ".step.json")
        write_json(marker, {"digest": _digest(step.settings), "settings": step.settings, "files": files})
        status[step.name] = "done"
    return status


def build_steps(cfg: dict, progress: bool = True) -> list[Step]:
    """The enabled steps of a validated config (:data:`~tffkit.jobs.study_steps.STEPS`), each with its settings."""
    study = Study(cfg, progress)
    steps: list[Step] = []
    built: dict[str, dict] = {}
    for kind in STEPS:
        if not cfg["steps"][kind.name]["enabled"] or (kind.when is not None and not kind.when(study)):
            continue
        built[kind.name] = kind.settings(study, built)
        steps.append(Step(kind.name, built[kind.name], partial(kind.run, study), kind.outputs))
    needs_rank = [s.name for s in steps if s.name in NEEDS_RANKING]
    if needs_rank and not cfg["steps"]["rank"]["enabled"] and not study.ranking.is_file():
        raise ConfigError(f"steps {needs_rank} need steps.rank (no {study.ranking} yet)")
    return steps


def run_study(config: str | os.PathLike | dict, *, progress: bool = True, paper_code: bool | None = None,
              report: bool = True) -> Path:
    """Validate ``config``, run (or resume) every enabled step, then write ``OUT/report.html`` and return its path
    (``report=False``: no report, the study folder returned).

    ``paper_code`` (when not None) replaces the config's ``paper_code`` preset."""
    from ..report.html import build_report

    cfg = load_config(config)
    if paper_code is not None:
        cfg["paper_code"] = bool(paper_code)
    out = check_writable(cfg["out"])  # before any model is built
    with OutputLock(out), code_trust(trusts_code(config, cfg["detector"])):  # one study at a time in OUT
        write_json(out / "study.json", cfg)
        with shared_detectors():  # each detector loaded, and traced, once for all the steps
            status = run_steps(build_steps(cfg, progress), out)
        write_json(out / "study.json", {**cfg, "status": status})
        return build_report(out) if report else out
