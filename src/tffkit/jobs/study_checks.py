"""Checks of a study that say plainly what is wrong or why a step runs: which settings or inputs of a step changed
since its last run, a config's ``out`` inside its own data, and who may run a ``python:`` detector's code (a study
YAML's needs ``detector.trust_code`` or ``tff --trust-code``; a relative ``file.py`` is taken from the YAML's
folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..options import code_trusted
from ..results import read_json


def trusts_code(config: Any, det: dict) -> bool:
    """A python: detector of a YAML file runs only with its detector.trust_code or tff's --trust-code; one of a
    dict (the Python API) also when the caller did not forbid it."""
    return det.get("trust_code") is True or code_trusted(explicitly=not isinstance(config, dict))


def python_spec_from(arch: str, base: Path) -> str:
    """A ``python:FILE.py:factory`` spec with a relative FILE taken from ``base`` (the study YAML's folder, like
    every other path in it); other specs unchanged."""
    if not arch.startswith("python:"):
        return arch
    target, sep, factory = arch[len("python:"):].rpartition(":")
    if not sep or not target.endswith(".py") or os.path.isabs(os.path.expanduser(target)):
        return arch
    return f"python:{(base / target).resolve()}:{factory}"


def out_inside_data(cfg: dict) -> list[str]:
    """``out`` may not lie inside a data folder: the study's own results would join the images it reads (and every
    re-run would see changed data)."""
    out = os.path.realpath(cfg["out"])
    for key in ("test", "source", "real"):
        root = cfg["data"].get(key)
        if not isinstance(root, str) or not os.path.isdir(root):
            continue
        folder = os.path.realpath(root)
        if out == folder or out.startswith(folder.rstrip(os.sep) + os.sep):
            return [f"out: {cfg['out']} lies inside data.{key} ({root}); the results would be written into the data "
                    "it reads. Choose an out folder outside the data"]
    return []


def _changed(before: Any, now: Any, key: str = "") -> list[str]:
    """The settings (dotted keys) that differ between a step's recorded and current settings."""
    if isinstance(before, dict) and isinstance(now, dict):
        return [c for k in sorted(set(before) | set(now), key=str)
                for c in _changed(before.get(k), now.get(k), f"{key}.{k}" if key else str(k))]
    same = json.dumps(before, sort_keys=True, default=str) == json.dumps(now, sort_keys=True, default=str)
    return [] if same else [key or "settings"]


def rerun_reason(folder: Path, settings: dict, outputs: tuple[str, ...], digest: str) -> str:
    """Why a step that is not complete runs: never ran, did not finish, outputs missing, or which of its settings
    and inputs changed (``digest``: of the settings now; ``test_data``: the files under the test data,
    ``detector_sha256``: the checkpoint …)."""
    marker = folder / ".step.json"
    if not marker.is_file():
        return "no finished earlier run" if not folder.is_dir() else "the earlier run did not finish"
    try:
        info = read_json(marker)
    except (OSError, ValueError):
        return "its record .step.json cannot be read"
    if info.get("digest") == digest:
        missing = [f for f in dict.fromkeys((*outputs, *info.get("files", [])))
                   if not (folder / f).is_file() or (folder / f).stat().st_size == 0]
        return f"output(s) missing or empty: {', '.join(missing[:5])}" + (" …" if len(missing) > 5 else "")
    recorded = json.loads(json.dumps(info.get("settings", {}), default=str))
    changed = _changed(recorded, json.loads(json.dumps(settings, default=str)))
    changed = list(dict.fromkeys(_describe_change(c) for c in changed))
    shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
    return f"changed since the earlier run: {shown or 'settings'}"


INPUT_NAMES = {"test_data": "the test data's files", "source_data": "the source data's files",
               "real_data": "the shared real images", "detector_sha256": "the detector checkpoint",
               "backbone_sha256": "the backbone checkpoint", "ranking_sha256": "the ranking file"}


def _describe_change(key: str) -> str:
    """``test_data.digest`` → "the test data's files (test_data.digest)"; ``rank.…`` names the ranking's input."""
    parts = key.split(".")
    n = 1 if parts[0] in INPUT_NAMES else 2 if parts[0] == "rank" and len(parts) > 1 and parts[1] in INPUT_NAMES else 0
    return f"{INPUT_NAMES[parts[n - 1]]} ({'.'.join(parts[:n])})" if n else key
