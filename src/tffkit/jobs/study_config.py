"""A study's configuration: the YAML schema, built from the commands' options classes, and its validation.

``steps.<step>`` of a study holds ``enabled`` and the fields of that step's command (:data:`STEP_OPTIONS`, read
from the options class with :func:`tffkit.jobs.options.study_schema`: the same keys, defaults and choices as the
command line); the top level, ``detector``, ``data`` and ``uncertainty`` hold what every step shares.
:func:`load_config` reports every problem at once, each naming its field.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from ..layouts import LAYOUTS
from ..options import code_trust, problem
from .card import CardOptions
from .color import ColorOptions
from .dropout import DropoutOptions
from .evaluate import EvaluateOptions
from .faithfulness import FaithfulnessOptions
from .gate import GateOptions
from .generator import GeneratorOptions
from .lrpmax import LRPMaxOptions
from .options import study_schema
from .planted import PlantedOptions
from .rank import RankOptions
from .robustness import RobustnessOptions
from .study_checks import out_inside_data, python_spec_from, trusts_code
from .train import TrainOptions

STEP_ORDER = ("evaluate", "robustness", "rank", "gate", "dropout", "faithfulness", "lrpmax", "color", "color_robust",
              "planted", "generator", "card")


class ConfigError(ValueError):
    """The study configuration is invalid; the message names the field."""


# field → (type(s), default, help); a default of REQUIRED means the field must be given
REQUIRED = object()
SCHEMA: dict[str, dict[str, tuple[Any, Any]]] = {
    "": {"name": (str, "study"), "out": (str, REQUIRED), "device": (str, "auto"), "batch_size": (int, 64),
         "workers": ((int, type(None)), None), "preset": (str, "detector"), "paper_code": (bool, False),
         "detector": (dict, REQUIRED), "data": (dict, REQUIRED), "steps": (dict, {}), "uncertainty": (dict, {})},
    # the cluster bootstrap of every interval (docs/algorithms.md §10): resamples of the groups and their seed
    "uncertainty": {"resamples": (int, 1000), "seed": (int, 0)},
    "detector": {"arch": (str, REQUIRED), "weights": ((str, type(None)), None),
                 "backbone_weights": ((str, type(None)), None), "random_weights": ((bool, str), False),
                 "trust_checkpoint": (bool, False), "trust_code": (bool, False),
                 "paper_detector": ((str, type(None)), None), "label": (str, "detector"),
                 "attention": (str, "attnlrp")},
    "data": {"source": (str, REQUIRED), "source_sets": ((list, type(None)), None), "test": (str, REQUIRED),
             "sets": ((list, type(None)), None), "train_set": (list, ["progan"]),
             "max_per_class": ((int, type(None)), None), "layout": (str, "auto"),
             "real_dirs": ((list, str, type(None)), None), "fake_dirs": ((list, str, type(None)), None),
             "real": ((str, type(None)), None), "split": ((str, type(None)), None),
             "small_images": (str, "upscale"), "group_pattern": ((str, type(None)), None)},
    "steps.evaluate": {"enabled": (bool, True)},  # and the paper-code switches of tff evaluate (STEP_OPTIONS)
    # the test images scored once per perturbation (docs/algorithms.md §10): JPEG qualities, resize factors, blur σ,
    # grayscale; max_per_class None: data.max_per_class (then the evaluate step's clean scores are reused); the
    # fields of RobustnessOptions (STEP_OPTIONS)
    "steps.robustness": {"enabled": (bool, False)},
    "steps.rank": {"enabled": (bool, True)},  # and the fields of tff rank's options (STEP_OPTIONS)
    # DEAR's channel gate against the study's ranking (tff gate), only for a DEAR detector (dear_c, dear_r); k: the
    # numbers of top units of the gated layer compared
    "steps.gate": {"enabled": (bool, True)},
    "steps.dropout": {"enabled": (bool, True)},  # and the fields of tff dropout's options (STEP_OPTIONS)
    # rankings compared by deletion (docs/algorithms.md §8), and the fields of tff faithfulness's options: top_k None =
    # steps.rank.k; max_per_class: source images; deletion_max_per_class: test images per class for the deletion
    # curves (None: data.max_per_class)
    "steps.faithfulness": {"enabled": (bool, False)},
    "steps.lrpmax": {"enabled": (bool, True)},  # and the fields of tff lrpmax's options (STEP_OPTIONS)
    # and the fields of tff color's options; its max_per_class is the test fakes of Mood's tests (--test-fakes)
    "steps.color": {"enabled": (bool, True)},
    "steps.color_robust": {"enabled": (bool, False), "weights": ((str, type(None)), None),
                           "train": ((dict, type(None)), None), "label": (str, "colour-robust"),
                           # training seeds: train.seed and the next replicates − 1 (each its own detector)
                           "replicates": (int, 1)},
    # planted-artefact check, only for test data with a ground truth (ground_truth.csv beside benchmark.json, as
    # the demo benchmark writes); k: the color step's k when not given; and PlantedOptions' fields (STEP_OPTIONS)
    "steps.planted": {"enabled": (bool, True)},
    # LRP into generators: a list of {name, kind (progan | dcgan | demo:<family>), weights, inputs (a folder of
    # input images, for image-to-image generators), near (layer names reported as 'in or next to upsampling')};
    # and the fields of tff generator's options (STEP_OPTIONS)
    "steps.generator": {"enabled": (bool, False), "generators": (list, [])},
    # one page per detector (tff card) from the files of the steps before it, into OUT/card/; no model pass
    "steps.card": {"enabled": (bool, True)},
}
CHOICES = {"preset": ("detector", "center224", "full"),
           "detector.attention": ("attnlrp", "cp"), "detector.random_weights": (True, False, "backbone", "head"),
           "data.layout": LAYOUTS,
           "data.small_images": ("upscale", "pad")}
# a step configured by its command's options: the same fields and defaults
STEP_OPTIONS = {"evaluate": EvaluateOptions, "robustness": RobustnessOptions, "rank": RankOptions,
                "dropout": DropoutOptions, "faithfulness": FaithfulnessOptions, "lrpmax": LRPMaxOptions,
                "color": ColorOptions, "planted": PlantedOptions, "generator": GeneratorOptions,
                "gate": GateOptions, "card": CardOptions}


def _add_fields(section: str, cls: type) -> None:
    """The fields of an options class as the config keys of ``section``, with their defaults and choices."""
    for key, (types, default, choices) in study_schema(cls).items():
        SCHEMA[section][key] = (types if len(types) > 1 else types[0], default)
        if choices:
            CHOICES[f"{section}.{key}"] = choices


for _step, _cls in STEP_OPTIONS.items():
    _add_fields(f"steps.{_step}", _cls)
# a colour-robust detector trained by the study: the training and validation roots and tff train's options
SCHEMA["steps.color_robust.train"] = {"data": (str, REQUIRED), "val": (str, REQUIRED)}
_add_fields("steps.color_robust.train", TrainOptions)


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _validate(section: str, given: dict, errors: list[str]) -> dict:
    schema = SCHEMA[section]
    prefix = f"{section}." if section else ""
    out = {}
    for key in given:
        if key not in schema:
            errors.append(f"{prefix}{key}: unknown field (known: {', '.join(schema)})")
    for key, (types, default) in schema.items():
        if key not in given:
            if default is REQUIRED:
                errors.append(f"{prefix}{key}: required field is missing")
            out[key] = default
            continue
        value = given[key]
        if types is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif (float in (types if isinstance(types, tuple) else (types,)) and isinstance(value, str)
              and _EXPONENT.fullmatch(value.strip())):
            value = float(value)  # 1e-6: YAML 1.1 (PyYAML) reads a number without a dot as a string
        if not isinstance(value, types) or (isinstance(value, bool) and types in (int, float)):
            names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            errors.append(f"{prefix}{key}: expected {names}, got {type(value).__name__} {value!r}")
        why = problem(key, value) if isinstance(value, (int, float, list)) else None
        if why:
            errors.append(f"{prefix}{key}: {why}")
        choices = CHOICES.get(prefix + key)
        if choices and value is not None and value not in choices:
            errors.append(f"{prefix}{key}: {value!r} is not one of {choices}")
        out[key] = value
    return out


def _read_yaml(path: Path) -> Any:
    """The YAML document of ``path``; a syntax error is one line naming the file, line and column."""
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"{where}: YAML syntax error: {what}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file ({exc.reason} at byte {exc.start})") from None


def load_config(path_or_dict: str | os.PathLike | dict) -> dict:
    """Read and validate a study config; every problem is reported at once, each naming its field."""
    if isinstance(path_or_dict, dict):
        raw, base = path_or_dict, Path.cwd()
    else:
        path = Path(path_or_dict)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        raw, base = _read_yaml(path), path.resolve().parent
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a mapping of fields")
    errors: list[str] = []
    cfg = _validate("", raw, errors)
    for section in ("detector", "data", "uncertainty"):
        cfg[section] = _validate(section, cfg[section] if isinstance(cfg[section], dict) else {}, errors)
    steps = cfg["steps"] if isinstance(cfg["steps"], dict) else {}
    for name in steps:
        if name not in STEP_ORDER:
            errors.append(f"steps.{name}: unknown step (known: {', '.join(STEP_ORDER)})")
    cfg["steps"] = {name: _validate(f"steps.{name}", steps.get(name) or {}, errors) for name in STEP_ORDER}
    _check_detector(cfg["detector"], base, path_or_dict, errors)
    _resolve_paths(cfg, base, errors)
    _check_steps(cfg, errors)
    if errors:
        where = "" if isinstance(path_or_dict, dict) else f" {path_or_dict}"
        if len(errors) == 1:
            raise ConfigError(f"invalid study config{where}: {errors[0]}")
        raise ConfigError(f"invalid study config{where}:\n  " + "\n  ".join(errors))
    return cfg


def _check_detector(det: dict, base: Path, config: str | os.PathLike | dict, errors: list[str]) -> None:
    """The detector resolves (a python: detector only where trusted) and has weights or random weights."""
    from ..detectors import resolve as resolve_detector

    if isinstance(det.get("arch"), str):
        det["arch"] = python_spec_from(det["arch"], base)
        try:
            with code_trust(trusts_code(config, det)):
                resolve_detector(det["arch"])
        except (ValueError, ImportError) as exc:
            errors.append(f"detector.arch: {exc}")
    if det.get("weights") is None and det.get("backbone_weights") is None and not det.get("random_weights"):
        errors.append("detector.weights: required (or detector.random_weights: true for a randomly initialised "
                      "detector)")


def _resolve_paths(cfg: dict, base: Path, errors: list[str]) -> None:
    """Paths relative to the config's folder made absolute; those that must exist checked; the output folder
    outside the data."""
    def resolve(p: str | None) -> str | None:
        return None if p is None else str((base / os.path.expanduser(p)).resolve())

    for section, key in (("detector", "weights"), ("detector", "backbone_weights"), ("data", "source"),
                         ("data", "test"), ("data", "real")):
        value = cfg[section].get(key)
        if isinstance(value, str):
            cfg[section][key] = resolve(value)
            if not Path(cfg[section][key]).exists():
                errors.append(f"{section}.{key}: {value} does not exist")
    cr = cfg["steps"]["color_robust"]
    if cr["enabled"] and cr["train"] is None and cr["weights"] is not None:
        cr["weights"] = resolve(cr["weights"])
        if not Path(cr["weights"]).exists():
            errors.append(f"steps.color_robust.weights: {cr['weights']} does not exist")
    if isinstance(cfg.get("out"), str):
        cfg["out"] = resolve(cfg["out"])
        errors += out_inside_data(cfg)


def _check_steps(cfg: dict, errors: list[str]) -> None:
    """What no single field says: the colour-robust detector given or trained, a perturbation to test, resamples."""
    cr = cfg["steps"]["color_robust"]
    if cr["enabled"]:
        if (cr["weights"] is None) == (cr["train"] is None):
            errors.append("steps.color_robust: give exactly one of 'weights' (a trained CR detector) or 'train'")
        elif isinstance(cr["train"], dict):  # checked only: the step's settings keep the keys as given
            _validate("steps.color_robust.train", cr["train"], errors)
        if isinstance(cr["replicates"], int) and cr["replicates"] < 1:
            errors.append(f"steps.color_robust.replicates: must be at least 1, got {cr['replicates']}")
        elif isinstance(cr["replicates"], int) and cr["replicates"] > 1 and cr["weights"] is not None:
            errors.append("steps.color_robust.replicates: training seeds need 'train' (the detector is trained once "
                          "per seed), not 'weights'")
        elif isinstance(cr["replicates"], int) and cr["replicates"] > 1 and not cfg["steps"]["color"]["enabled"]:
            errors.append("steps.color_robust.replicates: the claims over seeds compare with the universal "
                          "detector's colour step: enable steps.color")
    rb = cfg["steps"]["robustness"]
    if rb["enabled"] and not (rb["jpeg"] or rb["resize"] or rb["blur"] or rb["grayscale"]):
        errors.append("steps.robustness: no perturbation (give jpeg, resize, blur or grayscale: true)")
    if isinstance(cfg["uncertainty"].get("resamples"), int) and cfg["uncertainty"]["resamples"] < 1:
        errors.append(f"uncertainty.resamples: must be at least 1, got {cfg['uncertainty']['resamples']}")
