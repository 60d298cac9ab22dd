"""The steps of a study: one short function per step, and the table that says what each reads and writes.

A :class:`Study` holds a validated config and builds the options of each step's command from it
(:meth:`Study.options`: the step's config section, the study's detector, pass, interval and paper-code settings and
its data selection). :data:`STEPS` lists the steps in the order they run, each with its outputs and the inputs its
settings digest covers (the data trees it reads, the config sections it depends on, the ranking, checkpoints).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..detectors import Weights
from ..layouts import DataSpec
from ..results import InputIdentity
from .options import default_of, from_config


class Study:
    """A validated study config, what its steps share, and the options of each step's command."""

    def __init__(self, cfg: dict, progress: bool = True):
        self.cfg, self.progress = cfg, progress
        self.det, self.data, self.st = cfg["detector"], cfg["data"], cfg["steps"]
        self.out = Path(cfg["out"])
        det, data = self.det, self.data
        self.weights = Weights(det["weights"], det["backbone_weights"], det["trust_checkpoint"], det["random_weights"])
        layout = dict(real_dirs=data["real_dirs"], fake_dirs=data["fake_dirs"], split=data["split"],
                      small_images=data["small_images"], group_pattern=data["group_pattern"])
        self.test = DataSpec(data["test"], data["layout"], real=data["real"], **layout)
        self.source = DataSpec(data["source"], "auto" if data["layout"] == "paired" else data["layout"], **layout)
        self.ranking = self.out / "rank" / "ffrs.csv"
        self.inputs = InputIdentity()

    def options(self, cls: type, step: str, *, arch: str | None = None, weights: Weights | None = None,
                **given: Any) -> Any:
        """The options of ``cls`` for ``step``: its config section over the study's shared settings (``given``
        replace both); ``arch``/``weights``: another detector than the study's (the colour-robust one)."""
        w = weights or self.weights
        shared = dict(arch=arch or self.det["arch"], weights=w.path, backbone_weights=w.backbone,
                      random_weights=w.random, trust_checkpoint=w.trust, attention=self.det["attention"],
                      preset=self.cfg["preset"], batch_size=self.cfg["batch_size"], device=self.cfg["device"],
                      workers=self.cfg["workers"], progress=self.progress, paper_code=self.cfg["paper_code"],
                      resamples=self.cfg["uncertainty"]["resamples"], bootstrap_seed=self.cfg["uncertainty"]["seed"],
                      sets=self.data["sets"], max_per_class=self.data["max_per_class"])
        return replace(from_config(cls, self.st[step], **shared), **given)

    def base(self) -> dict:
        """What every step's settings hold: the detector, the data section, the preset, the checkpoints' bytes."""
        det = self.det
        return {"detector": det, "data": self.data, "preset": self.cfg["preset"], "paper_code": self.cfg["paper_code"],
                "detector_sha256": self.inputs.file(det["weights"]),
                "backbone_sha256": self.inputs.file(det["backbone_weights"])}

    def tree(self, which: str) -> dict:
        """The identity of the files under the test or source data (the digest changes when a file does)."""
        data = self.data
        if which == "source":
            return {"source_data": self.inputs.tree(data["source"], data["source_sets"])}
        return {"test_data": self.inputs.tree(data["test"], data["sets"]),
                "real_data": self.inputs.tree(data["real"]) if data["real"] else None}  # shared reals (paired)

    def rank_settings(self) -> dict:
        """The rank step's settings (every step that reads the ranking depends on them); a ranking placed in
        ``OUT/rank`` by hand, with the rank step off, counts by its bytes."""
        settings = {**self.base(), **self.st["rank"], **self.tree("source")}
        if not self.st["rank"]["enabled"] and self.ranking.is_file():
            settings["ranking_sha256"] = self.inputs.file(self.ranking)
        return settings

    def color_robust_weights(self, folder: Path | None = None) -> Weights:
        """The colour-robust detector's weights: given, or trained by the color_robust step (the best checkpoint of
        ``folder``/train; default the first training seed's, ``OUT/color_robust``)."""
        cr = self.st["color_robust"]
        path = cr["weights"]
        if path is None:
            trained = (folder or self.out / "color_robust") / "train"
            path = str(trained / ("model_best.pth" if (trained / "model_best.pth").is_file() else "model_last.pth"))
        return Weights(path, trust=self.det["trust_checkpoint"])

    def color_robust_seeds(self) -> list[int]:
        """The training seeds of the colour-robust detector: ``train.seed`` and the next ``replicates`` − 1."""
        from .train import TrainOptions

        first = int((self.st["color_robust"]["train"] or {}).get("seed", default_of(TrainOptions, "seed")))
        return [first + i for i in range(self.st["color_robust"]["replicates"])]

    def color_robust_arch(self) -> str:
        return (self.st["color_robust"]["train"] or {}).get("arch", self.det["arch"])

    def scores(self, folder: Path):
        """``folder/scores.csv`` (an evaluate run of the same detector and images) as a table, None when absent."""
        import pandas as pd

        path = folder / "scores.csv"
        return pd.read_csv(path, keep_default_na=False) if path.is_file() else None


def run_evaluate(s: Study, folder: Path) -> None:
    from .evaluate import EvaluateOptions, evaluate

    evaluate(s.test, options=s.options(EvaluateOptions, "evaluate"), out=folder)


def run_robustness(s: Study, folder: Path) -> None:
    from .robustness import RobustnessOptions, robustness

    own = s.st["robustness"]["max_per_class"]
    options = s.options(RobustnessOptions, "robustness", max_per_class=own or s.data["max_per_class"])
    reuse = s.st["evaluate"]["enabled"] and own is None  # same detector and images: no second clean pass
    robustness(s.test, options=options, out=folder, clean_scores=s.scores(s.out / "evaluate") if reuse else None)


def rank_options(s: Study, *, arch: str | None = None, weights: Weights | None = None, **given: Any):
    from .rank import RankOptions

    return s.options(RankOptions, "rank", arch=arch, weights=weights, sets=s.data["source_sets"], **given)


def run_rank(s: Study, folder: Path) -> None:
    from .rank import rank

    rank(s.source, options=rank_options(s), out=folder)


def run_dropout(s: Study, folder: Path) -> None:
    from .dropout import DropoutOptions, dropout

    options = s.options(DropoutOptions, "dropout", train_set=tuple(s.data["train_set"]),
                        paper_detector=s.det["paper_detector"])
    dropout(s.test, ranking=s.ranking, options=options, out=folder)


def run_faithfulness(s: Study, folder: Path) -> None:
    from .faithfulness import FaithfulnessOptions, faithfulness

    o = s.options(FaithfulnessOptions, "faithfulness", source_sets=s.data["source_sets"])
    o = replace(o, top_k=s.st["rank"]["k"] if o.top_k is None else o.top_k,
                max_per_class=s.data["max_per_class"] if o.max_per_class is None else o.max_per_class)
    faithfulness(source=s.source, test=s.test, ranking=s.ranking if s.ranking.is_file() else None, options=o,
                 out=folder)


def run_lrpmax(s: Study, folder: Path) -> None:
    from .lrpmax import LRPMaxOptions, lrpmax

    lrpmax(s.test, options=s.options(LRPMaxOptions, "lrpmax"), out=folder, ranking=s.ranking)


def run_color(s: Study, folder: Path, *, arch: str | None = None, weights: Weights | None = None,
              ranking: Path | None = None, evaluated: Path | None = None) -> None:
    from .color import ColorOptions, color

    if evaluated is None and s.st["evaluate"]["enabled"]:
        evaluated = s.out / "evaluate"
    color(s.test, options=s.options(ColorOptions, "color", arch=arch, weights=weights), out=folder,
          ranking=ranking or s.ranking, color_scores=s.scores(evaluated) if evaluated else None)


def run_color_robust(s: Study, folder: Path) -> None:
    """Train (each training seed, the first into ``folder``, the others into ``folder/seed<s>``) or load the
    colour-robust detector, then evaluate, rank and colour-test it; with several seeds, the colour claims over them
    (``folder/replicates.json``)."""
    seeds = s.color_robust_seeds()
    kept = {f"seed{seed}" for seed in seeds[1:]}
    for stale in [p for p in folder.glob("seed*") if p.is_dir() and p.name not in kept]:  # the step owns its folder
        shutil.rmtree(stale)
    (folder / "replicates.json").unlink(missing_ok=True)
    for i, seed in enumerate(seeds):
        _color_robust_replicate(s, folder if i == 0 else folder / f"seed{seed}", seed)
    if len(seeds) > 1:
        from ..results import write_json
        from .study_replicates import seed_replicates

        u = s.cfg["uncertainty"]
        write_json(folder / "replicates.json", seed_replicates(s.out, folder, seeds, s.data["train_set"],
                                                               resamples=u["resamples"], seed=u["seed"]))
    if s.st["color_robust"]["weights"] is not None and (folder / "train").is_dir():  # no stale training
        shutil.rmtree(folder / "train")


def _color_robust_replicate(s: Study, folder: Path, seed: int) -> None:
    from .evaluate import EvaluateOptions, evaluate
    from .rank import rank

    if s.st["color_robust"]["weights"] is None:
        _train_color_robust(s, folder / "train", seed)
    arch, weights = s.color_robust_arch(), s.color_robust_weights(folder)
    evaluate(s.test, options=s.options(EvaluateOptions, "evaluate", arch=arch, weights=weights),
             out=folder / "evaluate")
    rank(s.source, options=rank_options(s, arch=arch, weights=weights, with_reals=False), out=folder / "rank")
    run_color(s, folder / "color", arch=arch, weights=weights, ranking=folder / "rank" / "ffrs.csv",
              evaluated=folder / "evaluate")


def _train_color_robust(s: Study, folder: Path, seed: int) -> None:
    from .train import TrainOptions, train

    t = s.st["color_robust"]["train"]
    options = from_config(TrainOptions, t, arch=s.det["arch"], color_robust=True, device=s.cfg["device"],
                          workers=s.cfg["workers"], progress=s.progress, seed=seed,
                          resume=(folder / "model_last.pth").is_file())
    train(t["data"], t["val"], options=options, out=folder)


def run_planted(s: Study, folder: Path) -> None:
    from .planted import PlantedOptions, planted_of_study

    k = s.st["planted"]["k"] or s.st["color"]["k"]
    robust = None
    if s.st["color_robust"]["enabled"]:
        robust = s.options(PlantedOptions, "planted", arch=s.color_robust_arch(), weights=s.color_robust_weights(),
                           k=k)
    planted_of_study(s.test, study=s.out, options=s.options(PlantedOptions, "planted", k=k), color_robust=robust,
                     out=folder)


def run_generator(s: Study, folder: Path) -> None:
    from .generator import GeneratorOptions, generators

    generators(s.st["generator"]["generators"], options=s.options(GeneratorOptions, "generator"), out=folder)


def run_gate(s: Study, folder: Path) -> None:
    from .gate import GateOptions, gate

    gate(s.ranking, options=s.options(GateOptions, "gate"), out=folder)


def run_card(s: Study, folder: Path) -> None:
    from .card import CardOptions, card

    card(s.out, options=s.options(CardOptions, "card"), out=folder)


def _is_dear(s: Study) -> bool:
    """The study's detector carries DEAR's channel gate (dear_c, dear_r and their variants)."""
    return s.det["arch"].split("@")[0] in ("dear_c", "dear_r")


def _card_inputs(s: Study, built: dict) -> dict:
    """A card is drawn from every step before it: their settings (and through them their inputs)."""
    return {"upstream": dict(built)}


def _color_robust_inputs(s: Study, built: dict) -> dict:
    cr, train = s.st["color_robust"], s.st["color_robust"]["train"] or {}
    return {"cr_inputs": {"weights_sha256": s.inputs.file(cr["weights"]),
                          "init_sha256": s.inputs.file(train.get("init")),
                          **{f"train_{k}": s.inputs.tree(train[k]) for k in ("data", "val") if train.get(k)}}}


def _planted_inputs(s: Study, built: dict) -> dict:
    from ..analysis.planted import GROUND_TRUTH, find_ground_truth

    truth = find_ground_truth(s.data["test"])
    return {"upstream": {name: built[name] for name in ("color", "color_robust") if name in built},
            "ground_truth": s.inputs.file(truth / GROUND_TRUTH)}


def _generator_inputs(s: Study, built: dict) -> dict:
    return {"generator_inputs": [{"weights_sha256": s.inputs.file(g.get("weights")),
                                  "inputs": s.inputs.tree(g["inputs"]) if g.get("inputs") else None}
                                 for g in s.st["generator"]["generators"]]}


def _has_ground_truth(s: Study) -> bool:
    from ..analysis.planted import find_ground_truth

    return find_ground_truth(s.data["test"]) is not None


@dataclass(frozen=True)
class StepKind:
    """A row of the steps table: how the step runs, what it writes, and what its settings digest covers —
    ``reads`` (data trees: ``test``, ``source``), ``with_`` (config sections: ``uncertainty`` or another step's),
    ``ranked`` (the rank step's settings), ``inputs`` (more files: checkpoints, generators, ground truth);
    ``when``: the step exists only where this holds (besides ``enabled``)."""

    name: str
    run: Callable[[Study, Path], None]
    outputs: tuple[str, ...]
    reads: tuple[str, ...] = ("test",)
    with_: tuple[str, ...] = ()
    ranked: bool = True
    inputs: Callable[[Study, dict], dict] | None = None
    when: Callable[[Study], bool] | None = None

    def settings(self, s: Study, built: dict) -> dict:
        """The settings whose digest decides whether a finished step is still valid (``built``: the settings of
        the steps before it)."""
        if self.name == "rank":
            return s.rank_settings()
        settings = {**s.base(), **s.st[self.name]}
        for which in self.reads:
            settings.update(s.tree(which))
        for section in self.with_:
            settings[section] = s.cfg["uncertainty"] if section == "uncertainty" else s.st[section]
        if self.ranked:
            settings["rank"] = s.rank_settings()
        if self.inputs is not None:
            settings.update(self.inputs(s, built))
        return settings


STEPS = (
    StepKind("evaluate", run_evaluate, ("metrics.csv", "scores.csv", "run.json"), with_=("uncertainty",),
             ranked=False),
    StepKind("robustness", run_robustness, ("robustness.csv", "robustness.json", "run.json"),
             with_=("evaluate", "uncertainty"), ranked=False),
    StepKind("rank", run_rank, ("ffrs.csv", "ffrs.json", "run.json"), reads=("source",), ranked=False),
    StepKind("gate", run_gate, ("gate.csv", "gate.json", "run.json"), reads=(), when=_is_dear),
    StepKind("dropout", run_dropout, ("dropout.csv", "dropout_table.md", "run.json"), with_=("uncertainty",)),
    StepKind("faithfulness", run_faithfulness, ("faithfulness.csv", "faithfulness.json", "run.json"),
             reads=("test", "source")),
    StepKind("lrpmax", run_lrpmax, ("run.json",)),
    StepKind("color", run_color, ("run.json",), with_=("uncertainty",)),
    StepKind("color_robust", run_color_robust,
             ("evaluate/metrics.csv", "rank/ffrs.csv", "color/table_color_gray.csv"), reads=("test", "source"),
             with_=("color", "evaluate", "uncertainty"), inputs=_color_robust_inputs),
    StepKind("planted", run_planted, ("universal/planted.csv",), inputs=_planted_inputs, when=_has_ground_truth),
    StepKind("generator", run_generator, ("generators.json",), reads=(), ranked=False, inputs=_generator_inputs),
    StepKind("card", run_card, ("detector.md", "detector.html", "run.json"), reads=(), ranked=False,
             inputs=_card_inputs),
)
NEEDS_RANKING = ("gate", "dropout", "lrpmax", "color")
