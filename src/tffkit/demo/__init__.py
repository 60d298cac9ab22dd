"""Self-contained demo data for tffkit: a mini benchmark built from photos bundled in installed wheels."""

from tffkit.demo.artefacts import PlantedArtefacts
from tffkit.demo.benchmark import BENCHMARK_VERSION, build_benchmark, expected_counts
from tffkit.demo.generators import FAMILIES, TRAINING_FAMILY

__all__ = ["BENCHMARK_VERSION", "FAMILIES", "TRAINING_FAMILY", "PlantedArtefacts", "build_benchmark",
           "expected_counts"]
