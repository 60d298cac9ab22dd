"""Layouts with a folder per generator (DEAR/LDMFakeDetect ``ROOT/{real,fake}/<gen>/``, Community Forensics copies
``ROOT/<gen>/{real,fake}/``) and manifests with word labels, groups and masks (B-Free's viral images)."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import make_tree, synth_image
from tffkit.cli import main
from tffkit.data import DatasetLayoutError, DataSpec, discover
from tffkit.detectors import build_detector, save_checkpoint


def _images(folder: Path, n: int, fake: bool = False, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = [folder / f"{i:03d}.png" for i in range(n)]
    for p in out:
        Image.fromarray(synth_image(rng, fake, 32)).save(p)
    return out


def _counts(samples) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for s in samples:
        out[(s.set, s.label)] = out.get((s.set, s.label), 0) + 1
    return out


def test_label_first_pairs_each_generator_with_its_reals(tmp_path: Path):
    root = tmp_path / "DEAR"
    _images(root / "fake" / "ldm", 3, fake=True)
    _images(root / "fake" / "adm" / "sub", 2, fake=True)  # images at any depth below a generator folder
    _images(root / "real" / "ldm", 4)
    _images(root / "real", 2)  # reals of no generator: shared by adm, which has none of its own
    found = discover(root)
    assert found.layout == "label-first"
    assert _counts(found.samples) == {("adm", 0): 2, ("adm", 1): 2, ("ldm", 0): 4, ("ldm", 1): 3}
    assert all((f"{os.sep}real{os.sep}" in s.path) == (s.label == 0) for s in found.samples)
    assert all("ldm" in s.path for s in found.samples if s.set == "ldm")
    assert any("shared by the generator(s) without reals of their own: adm" in w for w in found.warnings)
    # names in any case; a real folder named after no generator is shared too
    other = tmp_path / "LDMFakeDetect"
    _images(other / "FAKE" / "glide", 2, fake=True)
    _images(other / "Real" / "lsun", 3)
    found = discover(other)
    assert found.layout == "label-first" and _counts(found.samples) == {("glide", 0): 3, ("glide", 1): 2}
    assert any("lsun (reals without fakes)" in w for w in found.warnings)
    named = tmp_path / "named"  # other label folder names, given with --real-dirs/--fake-dirs
    _images(named / "ai" / "midjourney", 1, fake=True)
    _images(named / "nature" / "midjourney", 1)
    found = discover(DataSpec(str(named), real_dirs="nature", fake_dirs="ai"))
    assert found.layout == "label-first" and _counts(found.samples) == {("midjourney", 0): 1, ("midjourney", 1): 1}


def test_generator_first_is_read_with_its_name_and_the_old_note(tmp_path: Path):
    root = tmp_path / "CommunityForensics"
    for gen in ("sd15", "stylegan3"):
        _images(root / gen / "real", 2)
        _images(root / gen / "fake" / "batch1", 3, fake=True)
    (root / "notes").mkdir()
    found = discover(root)
    assert found.layout == "generator-first"
    assert _counts(found.samples) == {(g, lab): 2 + lab for g in ("sd15", "stylegan3") for lab in (0, 1)}
    assert any("'real' and 'fake' are read as the labels" in w for w in found.warnings)
    assert any("folder 'notes' holds no real/fake folder" in w for w in found.warnings)
    # ForenSynths with real/fake one level deeper (ROOT/<set>/<class>/{real,fake}) keeps its reading
    deep = tmp_path / "deep"
    _images(deep / "s" / "cat" / "real", 1)
    _images(deep / "s" / "cat" / "fake", 1, fake=True)
    found = discover(deep)
    assert found.layout == "forensynths" and {s.cls for s in found.samples} == {"cat"}


def test_a_tree_matching_two_layouts_is_refused_naming_both(tmp_path: Path):
    root = tmp_path / "mixed"
    _images(root / "fake" / "ldm", 1, fake=True)
    _images(root / "real" / "ldm", 1)
    _images(root / "extra" / "0_real", 1)
    with pytest.raises(DatasetLayoutError, match=r"ambiguous layout .*forensynths folders \['0_real'\]; label-first"):
        discover(root)
    assert discover(DataSpec(str(root), layout="label-first")).layout == "label-first"  # --layout resolves it
    both = tmp_path / "both"
    _images(both / "g" / "real", 1)
    _images(both / "g" / "fake", 1, fake=True)
    (both / "g" / "table.parquet").write_bytes(b"PAR1")
    with pytest.raises(DatasetLayoutError, match=r"ambiguous layout .*generator-first.*; table \['g/table.parquet'\]"):
        discover(both)


def test_label_first_keeps_the_hostile_cases(tmp_path: Path):
    root = tmp_path / "d"
    _images(root / "fake" / "ldm", 2, fake=True)
    _images(root / "real" / "ldm", 2)
    _images(root / "fake" / "onlyfakes", 2, fake=True)
    (root / "fake" / "hollow").mkdir()
    (root / "real" / "hollow").mkdir()
    os.symlink("../..", root / "fake" / "ldm" / "loop")
    fake = root / "fake" / "ldm"
    os.symlink(fake / "gone.png", fake / "dangling.png")
    with open(os.fsencode(fake) + b"/caf\xe9_\xff.png", "wb") as f:
        f.write((fake / "000.png").read_bytes())
    found = discover(root)
    text = " | ".join(found.warnings)
    assert "symbolic-link loop" in text and "set 'hollow' holds no images" in text
    assert "set 'onlyfakes' has only fake images" in text
    w = save_checkpoint(tmp_path / "w.pth", build_detector("tiny_resnet"))
    out = tmp_path / "o"
    assert main(["evaluate", "--arch", "tiny_resnet", "--weights", str(w), "--data", str(root), "--device", "cpu",
                 "--workers", "0", "--no-progress", "--out", str(out)]) == 0
    scores = pd.read_csv(out / "scores.csv")
    assert scores["path"].str.endswith("caf\\xe9_\\xff.png").sum() == 1 and len(scores) == 2 + 3 + 2
    assert {Path(r["path"]).name for r in json.loads((out / "skipped.json").read_text())} == {"dangling.png"}
    run = json.loads((out / "run.json").read_text())
    assert run["data_found"][0]["layout"] == "label-first"


def test_manifest_with_word_labels_groups_and_masks(tmp_path: Path):
    """B-Free's viral-images list: filename, label REAL/FAKE, source_id (instances of one image); plus masks."""
    base = tmp_path / "viral"
    reals, fakes = _images(base / "REAL" / "a", 2), _images(base / "FAKE" / "b", 2, fake=True)
    masks = _images(base / "masks", 1)
    rows = [f"{p.relative_to(base)},REAL,a," for p in reals] + \
           [f"{fakes[0].relative_to(base)},FAKE,b,masks/000.png", f"{fakes[1].relative_to(base)},Fake,b,"]
    (base / "BFree_viral_images.csv").write_text("filename,label,source_id,mask\n" + "\n".join(rows) + "\n")
    found = discover(base / "BFree_viral_images.csv")
    assert [(Path(s.path).name, s.label, s.group) for s in found.samples] == [
        ("000.png", 0, "a"), ("001.png", 0, "a"), ("000.png", 1, "b"), ("001.png", 1, "b")]
    assert found.group_source == "manifest column" and found.summary()["sets"][0]["n_groups"] == 2
    assert [s.mask for s in found.samples] == ["", "", str(masks[0]), ""]
    plain = make_tree(tmp_path / "t", {"s": []}, n=1)
    (plain / "m.csv").write_text("path,label\ns/0_real/000.png,real\ns/1_fake/000.png,FAKE\n")
    assert [(s.label, s.mask) for s in discover(plain / "m.csv").samples] == [(0, ""), (1, "")]
