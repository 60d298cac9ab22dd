"""The preamble every job shares, done once: ``with Job("rank", options, out=OUT) as job:``.

Entering a :class:`Job` joins the torchrun process group (on ``options.device``), resolves the paper-code switches
(:func:`tffkit.conventions.resolve`), starts the run record and opens the staged output folder
(:func:`tffkit.outputs.run_folder`: checked before the model is built, replaced whole at the end, discarded on an
error). Inside, :meth:`Job.find` finds the data, :meth:`Job.detector` loads the detector, :meth:`Job.explainer`
builds its LRP explainer and :meth:`Job.finish` writes run.json with what was found and loaded.

Within :func:`shared_detectors` (a study) a detector is loaded once per process and its explainer traced once per
LRP setting, and every step reuses them; the jobs never modify either (LRP works on its own copy, dropout masks are
hooks removed after each pass).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from .. import distributed as tdist
from ..conventions import resolve
from ..data import DataSpec, Discovery, Preprocessing
from ..inputs import explainer_for, find_data, input_record, load_model, run_preprocessing
from ..outputs import run_folder
from ..results import RunRecord
from .options import switches

_SHARED: list[dict | None] = [None]  # the cache of the innermost shared_detectors() block (None: no sharing)


@contextlib.contextmanager
def shared_detectors() -> Iterator[None]:
    """Within the block, jobs share detectors (one load per arch, weights and device) and explainers (one trace
    per detector and LRP setting)."""
    _SHARED.append({})
    try:
        yield
    finally:
        _SHARED.pop()


def _cached(key: tuple, make: Any) -> Any:
    cache = _SHARED[-1]
    if cache is None:
        return make()
    if key not in cache:
        cache[key] = make()
    return cache[key]


def _record_args(options: Any, extra: dict) -> dict:
    """run.json's ``args``: every option (``weights`` says what runs when no file is given: a randomly initialised
    detector …) and ``extra``."""
    args = {k: v for k, v in asdict(options).items() if k not in ("progress",)}
    if "weights" in args and not args["weights"]:
        args["weights"] = str(options.detector_weights())
    return {**args, **extra}


class Job:
    """One run of a command (see the module docstring). ``folder`` is where results go (None: nothing is written,
    ``out`` None); ``writes`` is True on the process that writes them; ``settings`` are the effective switches."""

    def __init__(self, command: str, options: Any, *, out: str | os.PathLike | None, record: dict | None = None):
        if getattr(options, "resamples", 1) < 1:  # before any work
            raise ValueError(f"--resamples must be at least 1 (got {options.resamples})")
        self.command, self.options, self.out = command, options, out
        self.ctx = tdist.init(getattr(options, "device", "auto"))
        self.settings = resolve(**switches(options))
        self.record = RunRecord(command, _record_args(options, {**(record or {}), **self.settings}), self.ctx.world)
        self.found: list[Discovery] = []
        self.model = None
        self._folder = None

    def __enter__(self) -> Job:
        self._folder = run_folder(self.out, self.ctx)
        self.folder: Path | None = self._folder.__enter__()
        return self

    def __exit__(self, *exc: Any) -> bool | None:
        return self._folder.__exit__(*exc)

    @property
    def device(self):
        return self.ctx.device

    @property
    def is_main(self) -> bool:
        return self.ctx.is_main

    @property
    def writes(self) -> bool:
        return self.folder is not None and self.ctx.is_main

    def find(self, data: DataSpec | str | os.PathLike, sets=None, max_per_class: int | None = None,
             max_per_label: int | None = None, what: str = "") -> Discovery:
        """The images of ``data`` (:func:`tffkit.layouts.discover`), said on the main process and kept for run.json."""
        found = find_data(data, sets, max_per_class, max_per_label, main=self.is_main, what=what)
        self.found.append(found)
        return found

    def detector(self, options: Any = None):
        """The detector of ``options`` (default: the job's), in eval mode on the job's device."""
        o = options or self.options
        w = o.detector_weights()
        key = ("detector", o.arch, w.path, w.backbone, w.trust, w.random, str(self.device), _stamp(w.path),
               _stamp(w.backbone))
        model = _cached(key, lambda: load_model(o.arch, w, self.device, self.is_main))
        if options is None:
            self.model = model
        return model

    def preprocessing(self, model, data: DataSpec | str | os.PathLike | None = None, **change: Any) -> Preprocessing:
        """The detector's preprocessing with the data's small-image policy (``change``: fields replaced)."""
        prep = run_preprocessing(model, data)
        return replace(prep, **change) if change else prep

    def explainer(self, model, prep: Preprocessing | None = None, *, forward_only: bool = False, **lrp: Any):
        """The LRP explainer of ``model`` with the effective bounds and z⁺ fallback (where the command has them)
        and ``lrp`` (composite, input rule, attention); traced once per setting within :func:`shared_detectors`.
        ``forward_only``: the caller reads activations only (no relevance), so any explainer of ``model`` traced
        for this normalisation serves."""
        kwargs = {k: self.settings[k] for k in ("bounds", "zplus_fallback") if k in self.settings}
        kwargs.update(lrp)
        mean = None if prep is None else tuple(prep.mean)
        std = None if prep is None else tuple(prep.std)
        cache = _SHARED[-1]
        if forward_only and cache is not None:
            for key, value in cache.items():
                if key[:4] == ("explainer", id(model), mean, std):
                    return value
        key = ("explainer", id(model), mean, std, _lrp_key(kwargs))
        return _cached(key, lambda: explainer_for(model, prep, **kwargs))

    def inputs(self, model, prep: Preprocessing, n_small: int = 0, found: Discovery | list | None = None,
               weights: Any = None) -> dict[str, Any]:
        """run.json's record of the data found, the detector and the effective preprocessing."""
        parts = found if found is not None else (self.found if len(self.found) != 1 else self.found[0])
        return input_record(parts, model, prep, getattr(self.options, "preset", "detector"),
                            weights if weights is not None else self.options.detector_weights(), n_small,
                            main=self.is_main)

    def finish(self, **extra: Any) -> None:
        """Write run.json (the main process, when the job writes) with the settings, device and ``extra``."""
        if self.writes:
            self.record.write(self.folder, settings=self.settings, device=str(self.device), **extra)


def _lrp_key(kwargs: dict) -> tuple:
    """The LRP setting an explainer is traced for, with the engine's defaults filled in (``composite`` None is
    ``paper``, ``attention`` None the composite's), so equal settings spelled differently share one trace."""
    import inspect

    from ..lrp import Explainer
    from ..lrp.registry import named

    params = inspect.signature(Explainer).parameters
    full = {name: kwargs.get(name, params[name].default) for name in
            ("composite", "input_rule", "attention", "bounds", "zplus_fallback", "eps", "conv_rule")}
    full.update({k: v for k, v in kwargs.items() if k not in full})
    full["composite"] = full["composite"] or "paper"
    if full["attention"] is None and isinstance(full["composite"], str):
        full["attention"] = named(full["composite"]).attention
    return tuple(sorted((k, str(v)) for k, v in full.items()))


def _stamp(path: str | None) -> tuple | None:
    """A file's (size, mtime): a checkpoint replaced at the same path is loaded again."""
    if path is None or not os.path.exists(path):
        return None
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns
