"""``tff generator`` and the study's generator step: LRP into a generator (the paper's appendix M).

:func:`generator` loads one generator and the detector, generates the inputs (seeded latents, or the images of a
folder for image-to-image generators), ranks the generator's units by ω on the even inputs and masks them on the odd
ones (:func:`tffkit.analysis.generator.explain_generator`); :func:`generators` does it for each generator of a study
into ``OUT/<name>/`` and writes ``OUT/generators.json``. :func:`write_generator` writes one generator's results.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .options import DetectorOptions, PassOptions, option

if TYPE_CHECKING:
    from .runner import Job


@dataclass(frozen=True, kw_only=True)
class GeneratorOptions(DetectorOptions, PassOptions):
    """Options of ``tff generator`` (the generator's kind, weights and input images are the job's inputs). The
    pass group's ``preset`` is not used (not a flag): generated images reach the detector through ``out_range``,
    ``resize`` and ``crop``; ``workers`` and ``progress`` are kept as the command's flags but unused."""

    batch_size: int = option(16, "images per forward/backward pass on each process", study=False, group="pass")
    # in the order of the study's steps.generator keys (study.json is unchanged)
    images: int = option(500, "generated images N (seeded latents 0..N−1): the even ones rank, the odd ones evaluate")
    percent: float = option(5.0, "share of generator units masked (top/random/low)")
    random_repeats: int = option(5, "random masks drawn outside the top set, of the top mask's size and "
                                 "PSNR-matched (each)")
    min_prob: float = option(0.9, "fakes with p(fake) ≥ this enter ω")
    seed: int = option(0, "seed of the latents and of the random masks")
    psnr_tolerance: float = option(1.0, "dB within which a PSNR-matched random mask counts as matched to the top "
                                   "mask")
    resamples: int = option(1000, "bootstrap resamples of the Δp(fake) intervals")
    out_range: tuple[float, float] = option((-1.0, 1.0), "value range of the generator's output (mapped to [0, 1] "
                                            "before the detector)", nargs=2, type=float, metavar=("LOW", "HIGH"),
                                            study=False)
    resize: int | None = option(None, "bilinear resize of generated images for the detector", type=int, study=False)
    crop: int | None = option(None, "centre crop of generated images for the detector", type=int, study=False)
    attention: str = option("attnlrp", "attention rule: AttnLRP (softmax and uniform product rules) or CP-LRP "
                            "(attention weights held constant, relevance through the values only)",
                            choices=("attnlrp", "cp"), study=False, group="lrp")


def generator(*, generator: str, generator_weights: str | os.PathLike, inputs: str | os.PathLike | None = None,
              options: GeneratorOptions = GeneratorOptions(), out: str | os.PathLike | None = None) -> dict:
    """Load the ``generator`` kind (``progan``, ``dcgan`` or a registered ``<prefix>:<name>``) from
    ``generator_weights`` and the detector, generate ``options.images`` inputs from seeded latents (or take the
    images of the folder ``inputs``, for image-to-image generators), rank the generator's units by ω and mask the
    top/random/low ``percent``%; writes the results to ``out`` (None: nothing written). ``trust_checkpoint`` also
    allows pickled objects in the generator's file."""
    from .. import distributed as tdist
    from .runner import Job

    o = options
    record = {"generator": generator, "generator_weights": str(generator_weights), "inputs": str(inputs)}
    with Job("generator", o, out=out, record=record) as job:
        res = _explain_one(job, job.detector(), generator, generator_weights, inputs, trust=o.trust_checkpoint)
        if job.writes:
            write_generator(res, job.folder)
            job.finish(**_counts(res["summary"]))
        tdist.barrier()
    return res


def generators(specs: Sequence[dict], *, options: GeneratorOptions = GeneratorOptions(),
               out: str | os.PathLike | None) -> dict:
    """The study's generator step: :func:`generator` for each of ``specs`` ({name, kind, weights, inputs, near})
    with one detector, into ``out/<name>/``, then ``out/generators.json`` (name → summary)."""
    from .. import distributed as tdist
    from ..results import RunRecord, write_json
    from .runner import Job

    if not specs:
        raise ValueError("steps.generator: no generators configured (a list of {name, kind, weights, inputs})")
    with Job("generators", options, out=out, record={"generators": list(specs)}) as job:
        detector, results = job.detector(), {}
        for spec in specs:
            name = spec["name"]
            res = _explain_one(job, detector, spec["kind"], spec["weights"], spec.get("inputs"),
                               near=[f"generator.{n}" for n in spec.get("near", [])])
            if job.writes:
                write_generator(res, job.folder / name)
                RunRecord("generator", _record_of(job.record.data["args"], spec), job.ctx.world).write(
                    job.folder / name, **_counts(res["summary"]))
            tdist.barrier()
            results[name] = res["summary"]
        if job.writes:
            write_json(job.folder / "generators.json", results)
            job.finish()
    return results


def _explain_one(job: Job, detector, kind: str, weights: str | os.PathLike, inputs: str | os.PathLike | None, *,
                 trust: bool = False, near: Sequence[str] = ()) -> dict:
    """One generator (loaded with ``trust`` for pickled files) into ``detector``: the inputs, the composed
    explainer and :func:`~tffkit.analysis.generator.explain_generator`'s results."""
    from ..analysis.generator import ImageSource, LatentSource, explain_generator
    from ..generation.compose import DetectorInput, GeneratorExplainer
    from ..generation.models import load_generator

    o = job.options
    gen = load_generator(kind, weights, trust).to(job.device)
    source, shape = None, None
    if inputs:
        source = ImageSource.from_folder(inputs, o.images, tuple(o.out_range))
        shape = tuple(source.batch([0]).shape[1:])
    adapter = DetectorInput.for_detector(detector, tuple(o.out_range), o.resize, o.crop)
    gex = GeneratorExplainer(gen, detector, adapter, input_shape=shape, attention=o.attention)
    if source is None:
        source = LatentSource(o.images, gex.input_shape, o.seed)
    return explain_generator(gex, source, percent=o.percent, repeats=o.random_repeats, seed=o.seed,
                             min_prob=o.min_prob, batch_size=o.batch_size, ctx=job.ctx, near=near,
                             psnr_tolerance=o.psnr_tolerance, resamples=o.resamples)


def _record_of(args: dict, spec: dict) -> dict[str, Any]:
    """run.json's arguments of one generator of a study: the step's, with this generator as tff generator names it."""
    own = {"name": spec["name"], "generator": spec["kind"], "generator_weights": str(spec["weights"]),
           "inputs": str(spec.get("inputs")), "near": list(spec.get("near", []))}
    return {**{k: v for k, v in args.items() if k != "generators"}, **own}


def _counts(summary: dict) -> dict[str, Any]:
    return {key: summary[key] for key in ("n_images", "fakes_used", "k", "percent")}


def write_generator(res: dict, folder: str | os.PathLike) -> None:
    """Write :func:`~tffkit.analysis.generator.explain_generator`'s results to ``folder``: generator_ffrs.csv,
    masking.csv, masking_summary.csv, masking_intervals.csv, generator.json and the two figures."""
    from ..report.figures_generator import masking_boxplot, top_units_per_layer
    from ..results import write_csv, write_json

    folder, summary = Path(folder), res["summary"]
    write_csv(folder / "generator_ffrs.csv", res["ranking"])
    write_csv(folder / "masking.csv", res["masking"])
    write_csv(folder / "masking_summary.csv", res["summary_table"])
    write_csv(folder / "masking_intervals.csv", res["intervals"])
    write_json(folder / "generator.json", summary)
    masking_boxplot(res["masking"], res["summary_table"], folder / "masking_boxplot.png", name=folder.name)
    top_units_per_layer(summary["top_units_per_layer"], summary["k"], summary["percent"],
                        folder / "top_units_per_layer.png", name=folder.name)
