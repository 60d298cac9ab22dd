"""Tests for the embedded mini benchmark (tffkit.demo): layout, splits, determinism, caching."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tffkit.demo import FAMILIES, TRAINING_FAMILY, build_benchmark, expected_counts
from tffkit.demo import benchmark as bm
from tffkit.demo import generators as gens

SCALE = 0.04
VOLATILE = {"build_time", "build_seconds", "versions"}


def _pngs(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.png"))}


def _photo_of(path: Path) -> str:
    return path.stem.split("_", 1)[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("bench") / "mini"
    meta = build_benchmark(root, scale=SCALE, seed=3, progress=False)
    return root, meta


def test_constants() -> None:
    assert TRAINING_FAMILY in FAMILIES
    assert len(set(FAMILIES)) == len(FAMILIES) >= 4


def test_layout_and_counts(built: tuple[Path, dict]) -> None:
    root, meta = built
    assert json.loads((root / "benchmark.json").read_text()) == meta
    assert meta["counts"] == expected_counts(SCALE)
    assert meta["training_family"] == TRAINING_FAMILY and meta["families"] == list(FAMILIES)
    leaves = {p.parent.relative_to(root).as_posix() for p in root.rglob("*.png")}
    assert leaves == set(meta["counts"])
    for rel, n in meta["counts"].items():
        assert len(list((root / rel).glob("*.png"))) == n > 0
    classes = sorted(p.name for p in (root / "train").iterdir())
    assert len(classes) >= 2 and classes == sorted(p.name for p in (root / "val").iterdir())
    assert sorted(p.name for p in (root / "test").iterdir()) == sorted(FAMILIES)
    for split in ("train", "val"):
        for cls in classes:
            assert sorted(p.name for p in (root / split / cls).iterdir()) == ["0_real", "1_fake"]
    # Sibling temporary folders are gone after a successful build.
    assert [p.name for p in root.parent.iterdir()] == [root.name]


def test_photo_split_is_disjoint_on_disk(built: tuple[Path, dict]) -> None:
    root, meta = built
    split_photos = {s: {n for names in groups.values() for n in names} for s, groups in meta["photo_split"].items()}
    assert not split_photos["train"] & split_photos["val"]
    assert not split_photos["train"] & split_photos["test"]
    assert not split_photos["val"] & split_photos["test"]
    assert set(meta["photo_sources"]) == set().union(*split_photos.values())
    for split in ("train", "val", "test"):
        used = {_photo_of(p) for p in (root / split).rglob("*.png")}
        assert used and used <= split_photos[split], (split, used - split_photos[split])
    for cls, names in meta["photo_split"]["train"].items():
        assert {_photo_of(p) for p in (root / "train" / cls).rglob("*.png")} <= set(names)


def test_images_are_64px_rgb(built: tuple[Path, dict]) -> None:
    root, _ = built
    files = sorted(root.rglob("*.png"))
    assert len(files) == sum(expected_counts(SCALE).values())
    for f in files[::3]:
        with Image.open(f) as im:
            assert im.mode == "RGB" and im.size == (64, 64)


def test_fakes_are_regenerations_not_copies(built: tuple[Path, dict]) -> None:
    root, _ = built
    for fam in FAMILIES:
        reals = sorted((root / "test" / fam / "0_real").glob("*.png"))
        fakes = sorted((root / "test" / fam / "1_fake").glob("*.png"))
        assert [p.name for p in reals] == [p.name for p in fakes]  # paired by index and photo
        a = np.stack([np.asarray(Image.open(p), np.float64) for p in reals])
        b = np.stack([np.asarray(Image.open(p), np.float64) for p in fakes])
        diff = np.abs(a - b).mean(axis=(1, 2, 3))
        assert (diff > 0.5).all(), (fam, diff)  # every fake was changed by its generator...
        assert diff.mean() < 60.0, (fam, diff)
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.5  # ...yet still shows the same content


def test_cached_second_call_does_not_rebuild(built: tuple[Path, dict]) -> None:
    root, meta = built
    probe = next((root / "train").rglob("*.png"))
    before = (root / "benchmark.json").stat().st_mtime_ns, probe.stat().st_mtime_ns, probe.stat().st_ino
    assert build_benchmark(root, scale=SCALE, seed=3, progress=False) == meta
    assert ((root / "benchmark.json").stat().st_mtime_ns, probe.stat().st_mtime_ns, probe.stat().st_ino) == before


def test_same_seed_is_bit_identical_and_seed_matters(built: tuple[Path, dict], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root, meta = built
    again = build_benchmark(tmp_path / "again", scale=SCALE, seed=3, progress=False)
    assert {k: v for k, v in again.items() if k not in VOLATILE} == {
        k: v for k, v in meta.items() if k not in VOLATILE}
    assert _pngs(tmp_path / "again") == _pngs(root)

    # A different seed changes the content; generators only ever see training photographs.
    sampled: dict[int, list[str]] = {}
    real_sample, real_train = bm._sample_crops, bm.train_generator

    def spy_sample(photos, names, n, rng):  # type: ignore[no-untyped-def]
        out = real_sample(photos, names, n, rng)
        sampled[id(out[0])] = list(names)
        return out

    trained_on: list[list[str]] = []

    def spy_train(family, images, *args, **kwargs):  # type: ignore[no-untyped-def]
        trained_on.append(sampled[id(images)])
        return real_train(family, images, *args, **kwargs)

    monkeypatch.setattr(bm, "_sample_crops", spy_sample)
    monkeypatch.setattr(bm, "train_generator", spy_train)
    build_benchmark(tmp_path / "other", scale=SCALE, seed=4, progress=False)
    other = _pngs(tmp_path / "other")
    assert other.keys() == _pngs(root).keys() and other != _pngs(root)
    train_photos = {n for names in bm.PHOTO_SPLIT["train"].values() for n in names}
    assert len(trained_on) == len(FAMILIES)
    assert all(set(names) <= train_photos for names in trained_on)


def test_stale_or_damaged_benchmark_is_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "b"
    build_benchmark(root, scale=SCALE, seed=0, progress=False)
    victim = next((root / "test" / TRAINING_FAMILY / "1_fake").glob("*.png"))
    victim.unlink()
    build_benchmark(root, scale=SCALE, seed=0, progress=True)
    assert victim.is_file()
    stamp = (root / "benchmark.json").stat().st_mtime_ns
    build_benchmark(root, scale=SCALE, seed=0, progress=False, force=True)
    assert (root / "benchmark.json").stat().st_mtime_ns != stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_write = bm._write

    def flaky_write(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_write(*args, **kwargs)

    monkeypatch.setattr(bm, "_write", flaky_write)
    monkeypatch.setattr(bm, "_GEN_STEPS", 1)
    monkeypatch.setattr(bm, "_MIN_GEN_STEPS", 1)
    with pytest.raises(KeyboardInterrupt):
        build_benchmark(tmp_path / "b", scale=SCALE, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(FileExistsError):
        build_benchmark(tmp_path, scale=SCALE, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "precious"
    with pytest.raises(ValueError):
        build_benchmark(tmp_path / "x", scale=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_generator_shapes_and_outputs(family: str) -> None:
    x = torch.rand(2, 6, 8, 10)
    assert gens.Upsample2x(family, 6)(x).shape == (2, 6, 16, 20)
    images = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    model, loss = gens.train_generator(family, images, steps=3, seed=0, batch_size=4)
    assert np.isfinite(loss) and 1_000 < gens.n_parameters(model) < 100_000
    out = gens.regenerate(model, images)
    assert out.shape == images.shape and out.dtype == np.uint8 and not np.array_equal(out, images)
    again, _ = gens.train_generator(family, images, steps=3, seed=0, batch_size=4)
    assert np.array_equal(gens.regenerate(again, images), out)


def test_families_leave_different_outputs() -> None:
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    outs = [gens.regenerate(gens.train_generator(f, images, steps=2, seed=0, batch_size=2)[0], images)
            for f in FAMILIES]
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert not np.array_equal(outs[i], outs[j]), (FAMILIES[i], FAMILIES[j])
    with pytest.raises(ValueError):
        gens.Upsample2x("unknown", 3)
