"""``tff study CONFIG.yaml``: the paper's whole pipeline for one detector, resumable, then the report.

Steps run in order — evaluate (→ robustness, opt-in) → rank → dropout → lrpmax → color (→ colour-robust detector:
train or load, evaluate colour/gray, color) — each into ``OUT/<step>/``. A step that finished
with the same settings *and the same inputs* is skipped, so an interrupted study resumes where it
stopped: ``OUT/<step>/.step.json`` holds a hash of the step's settings, of the SHA-256 of every
checkpoint it reads and of the (path, size, mtime) list of every file under its data roots, and the
files it wrote. Replacing a checkpoint or any data file at the same path therefore re-runs the steps
that read it (and those downstream of them).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from ..conventions import SWITCHES
from ..detectors import Weights
from ..layouts import LAYOUTS, DataSpec
from ..options import code_trust, problem
from ..outputs import OutputLock, check_writable
from ..results import InputIdentity, read_json, write_json
from .evaluate import EvaluateOptions
from .options import from_config, study_schema
from .rank import RankOptions
from .robustness import RobustnessOptions
from .study_checks import out_inside_data, python_spec_from, rerun_reason, trusts_code
from .train import TrainOptions

STEP_ORDER = ("evaluate", "robustness", "rank", "dropout", "faithfulness", "lrpmax", "color", "color_robust",
              "planted", "generator")


class ConfigError(ValueError):
    """The study configuration is invalid; the message names the field."""


# field → (type(s), default, help); a default of REQUIRED means the field must be given
REQUIRED = object()
SWITCH = ((str, type(None)), None)  # a tffkit.conventions switch: None = from the paper_code preset
# step → {config key: switch name}; an explicit value overrides the top-level ``paper_code`` preset
STEP_SWITCHES = {"dropout": {"site": "dropout_site", "prob_dtype": "prob_dtype", "cal_compare": "cal_compare",
                             "random_k": "random_k"},
                 "faithfulness": {"bounds": "bounds", "zplus_fallback": "zplus_fallback", "site": "dropout_site",
                                  "prob_dtype": "prob_dtype"},
                 "lrpmax": {"neuron_seed": "neuron_seed", "bounds": "bounds", "activation_site": "activation_site",
                            "zplus_fallback": "zplus_fallback", "patch_box": "patch_box"},
                 "color": {"activation_site": "activation_site", "prob_dtype": "prob_dtype"}}
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
    "steps.dropout": {"enabled": (bool, True), "k_sweep": (list, [114]), "random_repeats": (int, 20),
                      "seed": (int, 0)},
    # rankings compared by deletion (docs/algorithms.md §8); top_k None = steps.rank.k; max_per_class: source images;
    # deletion_max_per_class: test images per class for the deletion curves (None: data.max_per_class)
    "steps.faithfulness": {"enabled": (bool, False), "ks": ((list, type(None)), None), "k_max": (int, 256),
                           "random_repeats": (int, 20), "resamples": (int, 1000), "seed": (int, 0),
                           "min_prob": (float, 0.9),
                           "top_k": ((int, type(None)), None), "randomise": (list, [0.25, 0.5, 1.0]),
                           "lrp_epsilon": (float, 1e-6), "max_per_class": ((int, type(None)), None),
                           "deletion_max_per_class": ((int, type(None)), None)},
    "steps.lrpmax": {"enabled": (bool, True), "k": (int, 114), "per_tff": (int, 20), "show": (int, 5),
                     "variant": (str, "activation"), "max_per_class": ((int, type(None)), None)},
    "steps.color": {"enabled": (bool, True), "k": (int, 114), "max_per_class": ((int, type(None)), 500)},
    "steps.color_robust": {"enabled": (bool, False), "weights": ((str, type(None)), None),
                           "train": ((dict, type(None)), None), "label": (str, "colour-robust")},
    # planted-artefact check, only for test data with a ground truth (ground_truth.csv beside benchmark.json, as
    # the demo benchmark writes); k: the color step's k when not given
    "steps.planted": {"enabled": (bool, True), "k": ((int, type(None)), None),
                      "max_per_class": ((int, type(None)), 200), "min_effect": (float, 0.5)},
    # LRP into generators: a list of {name, kind (progan | dcgan | demo:<family>), weights, inputs (a folder of
    # input images, for image-to-image generators), near (layer names reported as 'in or next to upsampling')}
    "steps.generator": {"enabled": (bool, False), "generators": (list, []), "images": (int, 200),
                        "percent": (float, 5.0), "random_repeats": (int, 5), "min_prob": (float, 0.9),
                        "seed": (int, 0), "psnr_tolerance": (float, 1.0), "resamples": (int, 1000)},
}
CHOICES = {"preset": ("detector", "center224", "full"), "steps.lrpmax.variant": ("activation", "relevance"),
           "detector.attention": ("attnlrp", "cp"), "detector.random_weights": (True, False, "backbone", "head"),
           "data.layout": LAYOUTS,
           "data.small_images": ("upscale", "pad")}
for _step, _keys in STEP_SWITCHES.items():
    for _key, _switch in _keys.items():
        SCHEMA[f"steps.{_step}"][_key] = SWITCH
        CHOICES[f"steps.{_step}.{_key}"] = SWITCHES[_switch].choices
# a step configured by its command's options: the same fields and defaults
STEP_OPTIONS = {"evaluate": EvaluateOptions, "robustness": RobustnessOptions, "rank": RankOptions}
for _step, _cls in STEP_OPTIONS.items():
    for _key, (_types, _default, _choices) in study_schema(_cls).items():
        SCHEMA[f"steps.{_step}"][_key] = (_types if len(_types) > 1 else _types[0], _default)
        if _choices:
            CHOICES[f"steps.{_step}.{_key}"] = _choices
# a colour-robust detector trained by the study: the training and validation roots and tff train's options
SCHEMA["steps.color_robust.train"] = {"data": (str, REQUIRED), "val": (str, REQUIRED)}
for _key, (_types, _default, _choices) in study_schema(TrainOptions).items():
    SCHEMA["steps.color_robust.train"][_key] = (_types if len(_types) > 1 else _types[0], _default)
    if _choices:
        CHOICES[f"steps.color_robust.train.{_key}"] = _choices


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
    from ..detectors import resolve as resolve_detector

    det = cfg["detector"]
    if isinstance(det.get("arch"), str):
        det["arch"] = python_spec_from(det["arch"], base)
        try:
            with code_trust(trusts_code(path_or_dict, det)):
                resolve_detector(det["arch"])
        except (ValueError, ImportError) as exc:
            errors.append(f"detector.arch: {exc}")
    if det.get("weights") is None and det.get("backbone_weights") is None and not det.get("random_weights"):
        errors.append("detector.weights: required (or detector.random_weights: true for a randomly initialised "
                      "detector)")

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
    if cr["enabled"]:
        if (cr["weights"] is None) == (cr["train"] is None):
            errors.append("steps.color_robust: give exactly one of 'weights' (a trained CR detector) or 'train'")
        elif isinstance(cr["train"], dict):  # checked only: the step's settings keep the keys as given
            _validate("steps.color_robust.train", cr["train"], errors)
        elif cr["weights"] is not None:
            cr["weights"] = resolve(cr["weights"])
            if not Path(cr["weights"]).exists():
                errors.append(f"steps.color_robust.weights: {cr['weights']} does not exist")
    rb = cfg["steps"]["robustness"]
    if rb["enabled"] and not (rb["jpeg"] or rb["resize"] or rb["blur"] or rb["grayscale"]):
        errors.append("steps.robustness: no perturbation (give jpeg, resize, blur or grayscale: true)")
    if isinstance(cfg["uncertainty"].get("resamples"), int) and cfg["uncertainty"]["resamples"] < 1:
        errors.append(f"uncertainty.resamples: must be at least 1, got {cfg['uncertainty']['resamples']}")
    if isinstance(cfg.get("out"), str):
        cfg["out"] = resolve(cfg["out"])
        errors += out_inside_data(cfg)
    if errors:
        where = "" if isinstance(path_or_dict, dict) else f" {path_or_dict}"
        if len(errors) == 1:
            raise ConfigError(f"invalid study config{where}: {errors[0]}")
        raise ConfigError(f"invalid study config{where}:\n  " + "\n  ".join(errors))
    return cfg


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
    """The enabled steps of a validated config, wired to the Python API."""
    det, data, st = cfg["detector"], cfg["data"], cfg["steps"]
    out = Path(cfg["out"])
    common = dict(preset=cfg["preset"], batch_size=cfg["batch_size"], device=cfg["device"],
                  num_workers=cfg["workers"], progress=progress)
    boot = {"resamples": cfg["uncertainty"]["resamples"], "bootstrap_seed": cfg["uncertainty"]["seed"]}
    inputs = InputIdentity()
    base = {"detector": det, "data": data, "preset": cfg["preset"], "paper_code": cfg["paper_code"],
            "detector_sha256": inputs.file(det["weights"]), "backbone_sha256": inputs.file(det["backbone_weights"])}
    test_data = {"test_data": inputs.tree(data["test"], data["sets"]),
                 "real_data": inputs.tree(data["real"]) if data["real"] else None}  # shared reals (paired layout)
    source_data = {"source_data": inputs.tree(data["source"], data["source_sets"])}
    weights = Weights(det["weights"], det["backbone_weights"], det["trust_checkpoint"], det["random_weights"])
    layout = dict(real_dirs=data["real_dirs"], fake_dirs=data["fake_dirs"], split=data["split"],
                  small_images=data["small_images"], group_pattern=data["group_pattern"])
    test = DataSpec(data["test"], data["layout"], real=data["real"], **layout)
    source = DataSpec(data["source"], "auto" if data["layout"] == "paired" else data["layout"], **layout)

    def switches(step: str) -> dict:
        """The preset and the step's explicit switches, as keyword arguments of its API function."""
        given = {"site" if name == "dropout_site" else name: st[step][key]
                 for key, name in STEP_SWITCHES[step].items()}
        return {"paper_code": cfg["paper_code"], **given}
    ranking = out / "rank" / "ffrs.csv"
    rank_settings = {**base, **st["rank"], **source_data}
    if not st["rank"]["enabled"] and ranking.is_file():  # a ranking placed there by hand: its bytes count
        rank_settings["ranking_sha256"] = inputs.file(ranking)
    steps: list[Step] = []

    def add(name: str, settings: dict, run: Callable[[Path], None], outputs: tuple[str, ...]) -> None:
        if st[name]["enabled"]:
            steps.append(Step(name, settings, run, outputs))

    def shared(arch: str = det["arch"], w: Weights = weights) -> dict:
        """The options every step shares: the detector, the pass, the intervals and the paper-code preset."""
        return dict(arch=arch, weights=w.path, backbone_weights=w.backbone, random_weights=w.random,
                    trust_checkpoint=w.trust, preset=cfg["preset"], batch_size=cfg["batch_size"],
                    device=cfg["device"], workers=cfg["workers"], progress=progress, paper_code=cfg["paper_code"],
                    resamples=cfg["uncertainty"]["resamples"], bootstrap_seed=cfg["uncertainty"]["seed"])

    def evaluate_options(arch: str = det["arch"], w: Weights = weights):
        return from_config(EvaluateOptions, st["evaluate"], **shared(arch, w), sets=data["sets"],
                           max_per_class=data["max_per_class"])

    def evaluate_step(folder: Path) -> None:
        from .evaluate import evaluate

        evaluate(test, options=evaluate_options(), out=folder)

    def robustness_step(folder: Path) -> None:
        import pandas as pd

        from .robustness import robustness

        r = st["robustness"]
        scores = out / "evaluate" / "scores.csv"  # same detector and images: no second clean pass
        reuse = st["evaluate"]["enabled"] and r["max_per_class"] is None and scores.is_file()
        options = from_config(RobustnessOptions, r, **shared(), sets=data["sets"])
        if r["max_per_class"] is None:
            options = replace(options, max_per_class=data["max_per_class"])
        robustness(test, options=options, out=folder,
                   clean_scores=pd.read_csv(scores, keep_default_na=False) if reuse else None)

    def rank_options(arch: str = det["arch"], w: Weights = weights, with_reals: bool | None = None):
        from .options import from_config
        from .rank import RankOptions

        r = {**st["rank"], **({} if with_reals is None else {"with_reals": with_reals})}
        return from_config(RankOptions, r, arch=arch, weights=w.path, backbone_weights=w.backbone,
                           random_weights=w.random, trust_checkpoint=w.trust, sets=data["source_sets"],
                           attention=det["attention"], preset=cfg["preset"], batch_size=cfg["batch_size"],
                           device=cfg["device"], workers=cfg["workers"], progress=progress,
                           paper_code=cfg["paper_code"])

    def rank_step(folder: Path) -> None:
        from .rank import rank

        rank(source, options=rank_options(), out=folder)

    def dropout_step(folder: Path) -> None:
        from ..analysis.dropout import dropout

        d = st["dropout"]
        dropout(det["arch"], weights, ranking, test, folder, data["sets"], d["k_sweep"],
                d["random_repeats"], d["seed"], max_per_class=data["max_per_class"],
                fixed_threshold_sets=data["train_set"], paper_detector=det["paper_detector"], **common,
                **switches("dropout"), **boot)

    def faithfulness_step(folder: Path) -> None:
        from ..analysis.faithfulness import faithfulness

        f = st["faithfulness"]
        faithfulness(det["arch"], weights, source, test, folder, ranking if ranking.is_file() else None,
                     data["sets"], data["source_sets"], f["ks"], f["k_max"], f["random_repeats"], f["seed"],
                     f["min_prob"], f["top_k"] or st["rank"]["k"], f["randomise"], f["lrp_epsilon"],
                     f["max_per_class"], f["deletion_max_per_class"] or data["max_per_class"],
                     attention=det["attention"], resamples=f["resamples"], **common,
                     **switches("faithfulness"))

    def lrpmax_step(folder: Path) -> None:
        from ..analysis.lrpmax import run_lrpmax

        m = st["lrpmax"]
        run_lrpmax(det["arch"], weights, ranking, test, folder, k=m["k"], sets=data["sets"],
                   per_tff=m["per_tff"], show=m["show"], variant=m["variant"], max_per_class=m["max_per_class"],
                   attention=det["attention"], **common, **switches("lrpmax"))

    def color_step(folder: Path, arch: str = det["arch"], weights: Weights = weights,
                   ranking_path: Path = ranking,
                   evaluated: Path | None = out / "evaluate" if st["evaluate"]["enabled"] else None) -> None:
        import pandas as pd

        from ..analysis.color import run_color

        c = st["color"]
        scores = evaluated / "scores.csv" if evaluated else None  # same detector and images: no second pass
        colour = pd.read_csv(scores, keep_default_na=False) if scores and scores.is_file() else None
        run_color(arch, weights, test, folder, ranking=ranking_path, k=c["k"], sets=data["sets"],
                  max_per_class=c["max_per_class"], metrics_max_per_class=data["max_per_class"],
                  colour_scores=colour, **common, **switches("color"), **boot)

    def color_robust_step(folder: Path) -> None:
        from .evaluate import evaluate
        from .rank import rank

        cr = st["color_robust"]
        cr_weights = cr["weights"]
        if cr_weights is None:
            from .train import train

            t = cr["train"]
            options = from_config(TrainOptions, t, arch=det["arch"], color_robust=True, device=cfg["device"],
                                  workers=cfg["workers"], progress=progress,
                                  resume=(folder / "train" / "model_last.pth").is_file())
            res = train(t["data"], t["val"], options=options, out=folder / "train")
            cr_weights = str(res["model_best"] or res["model_last"])
        arch = (cr["train"] or {}).get("arch", det["arch"])
        cr_w = Weights(cr_weights, trust=det["trust_checkpoint"])
        evaluate(test, options=evaluate_options(arch, cr_w), out=folder / "evaluate")
        rank(source, options=rank_options(arch, cr_w, with_reals=False), out=folder / "rank")
        color_step(folder / "color", arch, cr_w, folder / "rank" / "ffrs.csv", folder / "evaluate")
        if cr["weights"] is not None and (folder / "train").is_dir():  # the step owns its folder: no stale training
            shutil.rmtree(folder / "train")

    def planted_step(folder: Path) -> None:
        from ..analysis.planted import planted_of_study

        planted_of_study(folder, out, det, weights, st, data, common)

    def generator_step(folder: Path) -> None:
        from ..analysis.generator import generators_of_study

        generators_of_study(st["generator"], det["arch"], weights, folder, cfg["device"], cfg["batch_size"])

    add("evaluate", {**base, **test_data, "uncertainty": cfg["uncertainty"]}, evaluate_step,
        ("metrics.csv", "scores.csv", "run.json"))
    add("robustness", {**base, **st["robustness"], **test_data, "evaluate": st["evaluate"],
                       "uncertainty": cfg["uncertainty"]}, robustness_step,
        ("robustness.csv", "robustness.json", "run.json"))
    add("rank", rank_settings, rank_step, ("ffrs.csv", "ffrs.json", "run.json"))
    add("dropout", {**base, **st["dropout"], **test_data, "rank": rank_settings, "uncertainty": cfg["uncertainty"]},
        dropout_step,
        ("dropout.csv", "dropout_table.md", "run.json"))
    add("faithfulness", {**base, **st["faithfulness"], **test_data, **source_data, "rank": rank_settings},
        faithfulness_step, ("faithfulness.csv", "faithfulness.json", "run.json"))
    add("lrpmax", {**base, **st["lrpmax"], **test_data, "rank": rank_settings}, lrpmax_step, ("run.json",))
    add("color", {**base, **st["color"], **test_data, "rank": rank_settings, "uncertainty": cfg["uncertainty"]},
        color_step, ("run.json",))
    if st["color_robust"]["enabled"]:
        cr, train = st["color_robust"], st["color_robust"]["train"] or {}
        cr_inputs = {"weights_sha256": inputs.file(cr["weights"]), "init_sha256": inputs.file(train.get("init")),
                     **{f"train_{k}": inputs.tree(train[k]) for k in ("data", "val") if train.get(k)}}
        add("color_robust", {**base, **cr, **test_data, **source_data, "cr_inputs": cr_inputs, "rank": rank_settings,
                             "color": st["color"], "evaluate": st["evaluate"], "uncertainty": cfg["uncertainty"]},
            color_robust_step, ("evaluate/metrics.csv", "rank/ffrs.csv", "color/table_color_gray.csv"))
    from ..analysis.planted import find_ground_truth

    truth = find_ground_truth(data["test"])
    if truth is not None and st["planted"]["enabled"]:
        upstream = {s.name: s.settings for s in steps if s.name in ("color", "color_robust")}
        add("planted", {**base, **st["planted"], **test_data, "rank": rank_settings, "upstream": upstream,
                        "ground_truth": inputs.file(truth / "ground_truth.csv")}, planted_step,
            ("universal/planted.csv",))
    if st["generator"]["enabled"]:
        gen_inputs = [{"weights_sha256": inputs.file(g.get("weights")),
                       "inputs": inputs.tree(g["inputs"]) if g.get("inputs") else None}
                      for g in st["generator"]["generators"]]
        add("generator", {**base, **st["generator"], "generator_inputs": gen_inputs}, generator_step,
            ("generators.json",))
    needs_rank = [s.name for s in steps if s.name in ("dropout", "lrpmax", "color")]
    if needs_rank and not st["rank"]["enabled"] and not ranking.is_file():
        raise ConfigError(f"steps {needs_rank} need steps.rank (no {ranking} yet)")
    return steps


def run_study(config: str | os.PathLike | dict, progress: bool = True, paper_code: bool | None = None, *,
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
        status = run_steps(build_steps(cfg, progress), out)
        write_json(out / "study.json", {**cfg, "status": status})
        return build_report(out) if report else out
