"""Options of every command: one frozen dataclass per command, composed of the shared groups below.

A field is declared once, with :func:`option`: its default, help text, choices and flag. The command line
(:func:`tffkit.cli.common.add_options`), the study config (:func:`study_schema`) and the Python API (the dataclass
itself) are all built from it, so every option has one default. Groups: :class:`DetectorOptions` (which detector,
which weights), :class:`PassOptions` (how a dataset pass runs), :class:`LRPOptions` (the LRP composite),
:class:`IntervalOptions` (the cluster bootstrap), :class:`DataSelection` (the images read), :class:`PaperCode` (the
public code's preset); a command adds its own fields and its paper-code switches (:func:`switch`). The data (where
the images are, how their labels are read) is not an option: jobs take it as a :class:`~tffkit.layouts.DataSpec`,
whose fields are the layout flags. Imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from ..conventions import SWITCHES

ARCH_HELP = ("detector: a zoo name (wang2020 = resnet50, corvi2023, npr2024, univfd2023, rine2024, drct2024, "
             "efficientnet_b0_lukemelas …; see tff detectors), another built-in architecture, torchvision:<name>, "
             "timm:<name> or python:<module or file.py>:<factory> (your model, one or two logits)")
PRESET_HELP = ("detector: the detector's own resize and crop (tff detectors); center224: no resize, centre crop 224 "
               "(Wang's eval); full: whole images, batched by size. Normalisation is always the detector's")
MAX_PER_CLASS_HELP = "use only the first N images (by file name) of each (set, class, label) folder; default: all"
SWITCH_FLAGS = {"prob_dtype": "--prob-dtype", "cal_compare": "--cal-compare", "neuron_seed": "--neuron-seed",
                "bounds": "--bounds", "activation_site": "--activation-site", "dropout_site": "--site",
                "zplus_fallback": "--zplus-fallback", "patch_box": "--patch-box", "random_k": "--random-k",
                "rank_crop": "--rank-crop"}


def option(default: Any = MISSING, help: str = "", *, flag: str | None = None, choices: tuple | None = None,
           metavar: str | None = None, nargs: str | int | None = None, type: Any = None, const: Any = None,
           study: str | bool = True, cli: bool = True, group: str | None = None) -> Any:
    """A dataclass field with what the command line and the study config need: ``flag`` (default ``--name``),
    ``choices``, ``metavar``, ``nargs`` (a sequence option: its default is a tuple), ``type`` (default: the
    default's type; ``str`` for None), ``const`` (``nargs='?'``), ``study`` (the study config key, True: the field's
    name, False: not in the config), ``cli`` (False: not a flag), ``group`` (the help section). No default: required."""
    meta = dict(help=help, flag=flag, choices=choices, metavar=metavar, nargs=nargs, type=type, const=const,
                study=study, cli=cli, group=group)
    return field(metadata=meta) if default is MISSING else field(default=default, metadata=meta)


def switch(name: str, *, study: str | bool = True) -> Any:
    """The paper-code switch ``name`` (:data:`tffkit.conventions.SWITCHES`) as a field: None means ours, or the
    public code's under ``paper_code``; the flag and choices come from the switch (``study``: as :func:`option`)."""
    sw = SWITCHES[name]
    return option(None, f"{sw.help} [default: {sw.ours}; with --paper-code: {sw.paper_code}]",
                  flag=SWITCH_FLAGS[name], choices=sw.choices, group="switch:" + name, study=study)


def switch_names(options: Any) -> dict[str, str]:
    """field name → switch name of the paper-code switches of an options class or object."""
    return {f.name: f.metadata["group"][7:] for f in fields(options)
            if (f.metadata.get("group") or "").startswith("switch:")}


def switches(options: Any) -> dict[str, Any]:
    """``paper_code`` and the switches as :func:`tffkit.conventions.resolve` takes them (switch name → value)."""
    return {"paper_code": bool(getattr(options, "paper_code", False)),
            **{sw: getattr(options, name) for name, sw in switch_names(options).items()}}


def default_of(cls: type, name: str) -> Any:
    """The default of field ``name`` of options class ``cls`` (the one place it is written)."""
    f = next(f for f in fields(cls) if f.name == name)
    return f.default


def own_fields(cls: type) -> list[Field]:
    """The fields ``cls`` declares beyond the shared groups (what a study step configures)."""
    shared = {f.name for g in GROUPS for f in fields(g)}
    return [f for f in fields(cls) if f.name not in shared or f.name in cls.__dict__.get("__annotations__", {})]


def random_part(value: Any) -> bool | str:
    """--random-weights PART: all (True), backbone or head."""
    from argparse import ArgumentTypeError

    if value in (True, "all"):
        return True
    if value in ("backbone", "head", False):
        return value
    raise ArgumentTypeError(f"{value!r} is not one of all, backbone, head")


@dataclass(frozen=True, kw_only=True)
class DetectorOptions:
    """Which detector and which weights."""

    arch: str = option("resnet50", ARCH_HELP, group="detector")
    weights: str | None = option(None, "checkpoint in the detector's released layout (e.g. {'model': sd} for "
                                 "wang2020, a bare state dict for npr2024), or one tffkit wrote; required unless "
                                 "--random-weights", group="detector")
    backbone_weights: str | None = option(None, "univfd2023/rine2024: the CLIP ViT-L/14 weights (OpenAI "
                                          "ViT-L-14.pt or open_clip's .bin/.safetensors); --weights is then the "
                                          "released head file", metavar="PATH", group="detector")
    random_weights: bool | str = option(False, "run a randomly initialised detector (no --weights); its results "
                                        "describe an untrained net. PART backbone or head: only that part of "
                                        "univfd2023/rine2024 is random, the other is read from its file (--weights "
                                        "HEAD or --backbone-weights CLIP), and the output says so", nargs="?",
                                        const=True, type=random_part, metavar="PART", group="detector",
                                        choices=(True, False, "backbone", "head"))
    trust_checkpoint: bool = option(False, "allow checkpoints holding pickled Python objects (unpickling can run "
                                    "code; default: refuse)", group="detector")
    trust_code: bool = option(False, "allow a python:<file.py or module>:<factory> detector, which runs that Python "
                              "code (like --trust-checkpoint for pickles; default: refuse). The file's SHA-256 goes "
                              "to run.json", group="detector")

    def detector_weights(self):
        """The :class:`~tffkit.detectors.Weights` these options name."""
        from ..detectors import Weights

        return Weights(self.weights, self.backbone_weights, self.trust_checkpoint, self.random_weights)


@dataclass(frozen=True, kw_only=True)
class PassOptions:
    """How a dataset pass runs."""

    preset: str = option("detector", PRESET_HELP, choices=("detector", "center224", "full"), group="pass")
    batch_size: int = option(64, "images per forward/backward pass on each process", group="pass")
    device: str = option("auto", "auto, cpu, cuda or cuda:N (auto picks CUDA when present)", group="pass")
    workers: int | None = option(None, "data-loading worker processes per process; default: this process's cores "
                                 "minus one, at most 8", type=int, group="pass")
    progress: bool = option(True, "print no progress (by default a bar on a terminal, a line every 5%% otherwise)",
                            flag="--no-progress", study=False, group="pass")


@dataclass(frozen=True, kw_only=True)
class LRPOptions:
    """The LRP rules (docs/lrp.md)."""

    attention: str = option("attnlrp", "attention rule: AttnLRP (softmax and uniform product rules) or CP-LRP "
                            "(attention weights held constant, relevance through the values only)",
                            choices=("attnlrp", "cp"), group="lrp")
    composite: str = option("paper", "LRP composite (docs/lrp.md): paper (z+ on convolutions, zbox at the pixels "
                            "where the detector's zoo entry asks for it), attnlrp (AttnLRP with the epsilon rule at "
                            "the patch embedding: LXT's rules), cp-lrp (CP-LRP, epsilon at the patch embedding) or "
                            "fast (AttnLRP and epsilon convolutions as one gradient x input pass, LXT's efficient "
                            "mode); --attention cp applies on top", choices=("paper", "attnlrp", "cp-lrp", "fast"),
                            group="lrp")
    input_rule: str = option("auto", "rule of the convolution(s) reading the pixels (default auto: the composite's, "
                             "else the zoo entry's: zbox for the paper's ResNets, else the convolutions' own rule)",
                             choices=("auto", "zbox", "zplus", "epsilon", "gamma"), group="lrp")

    def lrp(self) -> dict[str, Any]:
        """Explainer keywords: the composite, the input rule and the attention rule (with the attnlrp or cp-lrp
        composite, the attention rule only when not the default attnlrp)."""
        default = default_of(LRPOptions, "attention")
        keep = self.composite == "paper" or self.attention != default
        return {"composite": self.composite, "input_rule": self.input_rule,
                "attention": self.attention if keep else None}


@dataclass(frozen=True, kw_only=True)
class IntervalOptions:
    """The cluster bootstrap of the 95% intervals over groups (docs/algorithms.md §10)."""

    resamples: int = option(1000, "bootstrap resamples of the groups per interval", metavar="B", group="intervals")
    bootstrap_seed: int = option(0, "seed of the resamples", group="intervals")


@dataclass(frozen=True, kw_only=True)
class DataSelection:
    """Which images of the data a command reads (a study gives its ``data.sets`` and ``data.max_per_class``; a
    command whose study step has its own ``max_per_class`` redeclares the field)."""

    sets: tuple[str, ...] | None = option(None, "sets (first folder level) to use; default all", nargs="+",
                                          study=False, group="data")
    max_per_class: int | None = option(None, MAX_PER_CLASS_HELP, type=int, metavar="N", study=False, group="data")


@dataclass(frozen=True, kw_only=True)
class PaperCode:
    """The public code's behaviour for every switch of the command (tffkit.conventions)."""

    paper_code: bool = option(False, "the public code's behaviour for every switch of this command (listed below; a "
                              "switch given explicitly overrides it) — see docs/algorithms.md", group="paper")


GROUPS = (DetectorOptions, PassOptions, LRPOptions, IntervalOptions, DataSelection, PaperCode)


def study_schema(cls: type) -> dict[str, tuple[Any, Any, tuple | None]]:
    """A study step's fields from the command's own options: config key → (types, default, choices)."""
    out = {}
    for f in own_fields(cls):
        key = f.metadata.get("study", True)
        if key is False:
            continue
        out[f.name if key is True else key] = (_types(f), _config_default(f), f.metadata.get("choices"))
    return out


def _types(f: Field) -> tuple:
    meta = f.metadata
    if meta.get("nargs") in ("+", "*") or isinstance(f.default, tuple):
        kinds: tuple = (list, tuple)
    elif f.default is None or meta.get("choices") and None in meta["choices"]:
        kinds = (meta.get("type") or str,)
    elif meta.get("type") is random_part:
        kinds = (bool, str)
    else:
        kinds = (type(f.default),)
    nullable = f.default is None or "None" in str(f.type)  # e.g. ``int | None = 500``: null allowed in a config
    return (*kinds, type(None)) if nullable else kinds


def _config_default(f: Field) -> Any:
    return list(f.default) if isinstance(f.default, tuple) else f.default


def from_config(cls: type, values: dict[str, Any], **shared: Any) -> Any:
    """Options of ``cls`` from a study step's config section (``values``, keyed as :func:`study_schema`) and the
    shared fields given (detector, pass, intervals, paper code)."""
    given = dict(shared)
    for f in own_fields(cls):
        key = f.metadata.get("study", True)
        name = f.name if key is True else key
        if key is not False and name in values:
            value = values[name]
            given[f.name] = tuple(value) if isinstance(value, list) else value
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in given.items() if k in names})
