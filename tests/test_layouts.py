"""Benchmark layouts read with the right labels, and discovery that survives a hostile tester: link loops,
empty and one-label sets, non-UTF-8 names, file-link loops."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import make_tree, synth_image
from tffkit.cli import main
from tffkit.data import DatasetLayoutError, DataSpec, discover, find_samples
from tffkit.detectors import build_detector, save_checkpoint


def _images(folder: Path, n: int, seed: int = 0, fake: bool = False, ext: str = "png", size: int = 32) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out.append(folder / f"{i:03d}.{ext}")
        Image.fromarray(synth_image(rng, fake, size)).save(out[-1])
    return out


def _labels(samples) -> dict[tuple[str, str, int], int]:
    counts: dict[tuple[str, str, int], int] = {}
    for s in samples:
        counts[(s.set, s.cls, s.label)] = counts.get((s.set, s.cls, s.label), 0) + 1
    return counts


def test_genimage_layout_val_split_by_default(tmp_path: Path):
    root = tmp_path / "GenImage"
    for gen, subset in (("ADM", "imagenet_ai_0508_adm"), ("Midjourney", "imagenet_midjourney")):
        for split, n in (("train", 3), ("val", 2)):
            _images(root / gen / subset / split / "ai", n, fake=True)
            _images(root / gen / subset / split / "nature", n)
    found = discover(root)
    assert found.layout == "genimage"
    assert _labels(found.samples) == {("ADM", "imagenet_ai_0508_adm", 0): 2, ("ADM", "imagenet_ai_0508_adm", 1): 2,
                                      ("Midjourney", "imagenet_midjourney", 0): 2,
                                      ("Midjourney", "imagenet_midjourney", 1): 2}
    assert all(("/val/ai/" in s.path) == (s.label == 1) for s in found.samples)
    assert any("using 'val'" in w for w in found.warnings)
    train = find_samples(DataSpec(str(root), split="train"))
    assert len(train) == 12 and all("/train/" in s.path for s in train)


def test_diffusionforensics_generators_share_the_reals(tmp_path: Path):
    root = tmp_path / "DiffusionForensics" / "test"
    for dataset in ("lsun_bedroom", "imagenet"):
        _images(root / dataset / "real", 3)
        for gen in ("adm", "ddpm"):
            _images(root / dataset / gen, 2, fake=True)
    found = discover(root)
    assert found.layout == "diffusionforensics"
    counts = _labels(found.samples)
    assert counts == {(f"{d}/{g}", "", lab): (3 if lab == 0 else 2) for d in ("lsun_bedroom", "imagenet")
                      for g in ("adm", "ddpm") for lab in (0, 1)}
    assert all(("/real/" in s.path) == (s.label == 0) for s in found.samples)


def test_fake_only_sets_paired_with_a_shared_real_folder(tmp_path: Path):
    # Synthbuster: generator folders of fakes, RAISE elsewhere
    synth, raise_ = tmp_path / "synthbuster", tmp_path / "RAISE"
    for gen in ("dalle2", "glide"):
        _images(synth / gen, 2, fake=True)
    _images(raise_, 3)
    found = discover(DataSpec(str(synth), real=str(raise_)))
    assert found.layout == "paired"
    assert _labels(found.samples) == {(g, "", lab): (3 if lab == 0 else 2) for g in ("dalle2", "glide")
                                      for lab in (0, 1)}
    # UniversalFakeDetect's diffusion sets: <set>/1_fake, reals in laion/0_real inside the same root
    ufd = tmp_path / "diffusion_datasets"
    for gen in ("ldm_200", "guided"):
        _images(ufd / gen / "1_fake", 2, fake=True)
    _images(ufd / "laion" / "0_real", 4)
    found = discover(DataSpec(str(ufd), layout="paired", real=str(ufd / "laion" / "0_real")))
    assert sorted({s.set for s in found.samples}) == ["guided", "ldm_200"]
    assert _labels(found.samples)[("ldm_200", "", 0)] == 4 and all(
        ("laion" in s.path) == (s.label == 0) for s in found.samples)


def test_csv_manifest_and_artifact_targets(tmp_path: Path):
    reals, fakes = _images(tmp_path / "img" / "r", 2), _images(tmp_path / "img" / "f", 3, fake=True)
    rows = [f"{p.relative_to(tmp_path)},0,setA,cats" for p in reals] + [f"{p},fake,setA,cats" for p in fakes]
    (tmp_path / "m.csv").write_text("path,label,set,class\n" + "\n".join(rows) + "\n")
    found = discover(tmp_path / "m.csv")
    assert found.layout == "manifest" and _labels(found.samples) == {("setA", "cats", 0): 2, ("setA", "cats", 1): 3}
    art = tmp_path / "artifact" / "stylegan2"
    a_real, a_fake = _images(art / "images", 1), _images(art / "fakes", 2, fake=True)
    (art / "metadata.csv").write_text("image_path,target,category\n" + f"{a_real[0].relative_to(art)},0,human_faces\n"
                                      + "".join(f"{p.relative_to(art)},3,human_faces\n" for p in a_fake))
    found = discover(art / "metadata.csv")
    assert _labels(found.samples) == {("stylegan2", "human_faces", 0): 1, ("stylegan2", "human_faces", 1): 2}
    (tmp_path / "bad.csv").write_text("path,label\na.png,maybe\nb.png,1\nc.png,-2\n")
    with pytest.raises(DatasetLayoutError, match=r"2 bad row\(s\):\n  line 2: label 'maybe'"):
        discover(tmp_path / "bad.csv")
    (tmp_path / "nolabel.csv").write_text("file,kind\na.png,x\n")
    with pytest.raises(DatasetLayoutError, match="expected a path column"):
        discover(tmp_path / "nolabel.csv")


def test_configurable_folder_names_and_ambiguity(tmp_path: Path):
    root = tmp_path / "mixed"
    _images(root / "a" / "0_real", 2)
    _images(root / "a" / "1_fake", 2, fake=True)
    _images(root / "b" / "nature", 1)
    _images(root / "b" / "ai", 3, fake=True)
    with pytest.raises(DatasetLayoutError, match="ambiguous layout.*forensynths folders.*genimage folders"):
        discover(root)
    spec = DataSpec(str(root), real_dirs="nature,0_real", fake_dirs="ai,1_fake")
    assert _labels(find_samples(spec)) == {("a", "", 0): 2, ("a", "", 1): 2, ("b", "", 0): 1, ("b", "", 1): 3}
    with pytest.raises(DatasetLayoutError, match="both real and fake"):
        discover(DataSpec(str(root), real_dirs="ai", fake_dirs="ai"))


def test_symlink_loops_are_followed_once(tmp_path: Path):
    root = make_tree(tmp_path / "data", {"progan": []}, n=5)
    os.symlink("..", root / "progan" / "0_real" / "loop")  # 0_real/loop → progan (an ancestor)
    os.symlink("../..", root / "progan" / "1_fake" / "up")  # → the root
    start = time.monotonic()
    found = discover(root)
    assert time.monotonic() - start < 5
    assert len(found.samples) == 10
    assert sum("symbolic-link loop" in w for w in found.warnings) == 2
    shared = _images(tmp_path / "shared_reals", 3)[0].parent  # a shared folder linked into two sets: read in both
    for s in ("x", "y"):
        _images(root / s / "1_fake", 1, fake=True)
        os.symlink(shared, root / s / "0_real")
    assert _labels(find_samples(root, sets=["x", "y"])) == {(s, "", lab): (3 if lab == 0 else 1) for s in ("x", "y")
                                                          for lab in (0, 1)}


def test_empty_and_one_label_sets_are_named(tmp_path: Path, capsys):
    root = make_tree(tmp_path / "data", {"progan": []}, n=2)
    (root / "hollow" / "0_real").mkdir(parents=True)
    (root / "hollow" / "1_fake").mkdir(parents=True)
    (root / "hollow" / "1_fake" / "notes.txt").write_text("no images here")
    _images(root / "fakesonly" / "1_fake", 2, fake=True)
    (root / "stray").mkdir()
    found = discover(root)
    text = " | ".join(found.warnings)
    assert "set 'hollow' holds no images" in text and "set 'fakesonly' has only fake images" in text
    assert "folder 'stray' holds no" in text
    w = save_checkpoint(tmp_path / "w.pth", build_detector("tiny_resnet"))
    rc = main(["evaluate", "--arch", "tiny_resnet", "--weights", str(w), "--data", str(root), "--device", "cpu",
               "--workers", "0", "--no-progress", "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert rc == 0 and "AP is undefined for fakesonly (only fake images)" in out
    assert "NaN" not in out.split("(metrics")[0] and "undef" in out
    assert "warning: set 'hollow' holds no images" in out  # printed before the run
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    found = run["data_found"][0]
    assert found["layout"] == "forensynths" and any("hollow" in x for x in found["warnings"])
    assert {e["set"]: (e["n_real"], e["n_fake"]) for e in run["data_found"][0]["sets"]} == {"progan": (2, 2),
                                                                                           "fakesonly": (0, 2)}


def test_unreadable_links_and_non_utf8_names_are_listed_or_escaped(tmp_path: Path, capsys):
    root = make_tree(tmp_path / "data", {"progan": []}, n=2)
    fake = root / "progan" / "1_fake"
    os.symlink(fake / "a_loop.png", fake / "b_loop.png")
    os.symlink(fake / "b_loop.png", fake / "a_loop.png")
    os.symlink(fake / "gone.png", fake / "dangling.png")
    odd = os.fsencode(fake) + b"/caf\xe9_\xff.png"  # Latin-1 bytes: not UTF-8
    with open(odd, "wb") as f:
        f.write((fake / "000.png").read_bytes())
    w = save_checkpoint(tmp_path / "w.pth", build_detector("tiny_resnet"))
    out = tmp_path / "o"
    rc = main(["evaluate", "--arch", "tiny_resnet", "--weights", str(w), "--data", str(root), "--device", "cpu",
               "--workers", "0", "--no-progress", "--out", str(out)])
    assert rc == 0
    skipped = {Path(r["path"]).name for r in json.loads((out / "skipped.json").read_text())}
    assert skipped == {"a_loop.png", "b_loop.png", "dangling.png"}
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 5 and scores["path"].str.endswith("caf\\xe9_\\xff.png").sum() == 1
    assert "skipped 3 unreadable" in capsys.readouterr().out


def test_scores_carry_format_size_and_jpeg_quality(tmp_path: Path):
    root = tmp_path / "data"
    _images(root / "s" / "0_real", 1, ext="jpg", size=40)
    img = Image.fromarray(synth_image(np.random.default_rng(3), True, 48))
    (root / "s" / "1_fake").mkdir(parents=True)
    img.save(root / "s" / "1_fake" / "q.jpg", quality=83)
    img.save(root / "s" / "1_fake" / "p.png")
    w = save_checkpoint(tmp_path / "w.pth", build_detector("tiny_resnet"))
    assert main(["evaluate", "--arch", "tiny_resnet", "--weights", str(w), "--data", str(root), "--device", "cpu",
                 "--workers", "0", "--no-progress", "--out", str(tmp_path / "o")]) == 0
    scores = pd.read_csv(tmp_path / "o" / "scores.csv").set_index(pd.read_csv(tmp_path / "o" / "scores.csv")["path"]
                                                                .map(lambda p: Path(p).name))
    assert scores.loc["q.jpg", "format"] == "JPEG" and scores.loc["q.jpg", "jpeg_quality"] == 83
    assert scores.loc["q.jpg", "jpeg_table"] == "ijg" and scores.loc["000.jpg", "jpeg_quality"] == 75
    assert scores.loc["p.png", "format"] == "PNG" and pd.isna(scores.loc["p.png", "jpeg_quality"])
    assert (scores.loc["p.png", "width"], scores.loc["p.png", "height"]) == (48, 48)
    assert scores.loc["p.png", "file_bytes"] == (root / "s" / "1_fake" / "p.png").stat().st_size


@pytest.mark.parametrize("policy", ["upscale", "pad"])
def test_small_images_are_upscaled_or_padded_and_said(tmp_path: Path, policy: str, capsys):
    root = make_tree(tmp_path / "data", {"s": []}, n=1, size=64)
    w = save_checkpoint(tmp_path / "w.pth", build_detector("tiny_resnet"))
    assert main(["evaluate", "--arch", "tiny_resnet", "--weights", str(w), "--data", str(root), "--preset", "center224",
                 "--small-images", policy, "--device", "cpu", "--workers", "0", "--no-progress",
                 "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["n_smaller_than_crop"] == 2 and run["preprocessing"]["small_images"] == policy
    word = "resized up to 224" if policy == "upscale" else "zero-padded"
    assert word in run["small_images_note"] and word in printed


def test_cli_layout_options(tmp_path: Path):
    synth, reals = tmp_path / "synth", tmp_path / "reals"
    _images(synth / "gen_a", 2, fake=True)
    _images(reals, 2)
    w = save_checkpoint(tmp_path / "w.pth", build_detector("tiny_resnet"))
    common = ["--arch", "tiny_resnet", "--weights", str(w), "--device", "cpu", "--workers", "0", "--no-progress"]
    assert main(["evaluate", *common, "--data", str(synth), "--real", str(reals), "--out", str(tmp_path / "o1")]) == 0
    assert pd.read_csv(tmp_path / "o1" / "scores.csv")["label"].tolist() == [0, 0, 1, 1]
    gi = tmp_path / "gi"
    _images(gi / "g" / "nature", 1)
    _images(gi / "g" / "ai", 1, fake=True)
    _images(gi / "h" / "0_real", 1)
    _images(gi / "h" / "1_fake", 1, fake=True)
    assert main(["evaluate", *common, "--data", str(gi), "--out", str(tmp_path / "o2")]) == 2
    assert main(["evaluate", *common, "--data", str(gi), "--real-dirs", "nature,0_real", "--fake-dirs", "ai,1_fake",
                 "--out", str(tmp_path / "o2")]) == 0
    assert len(pd.read_csv(tmp_path / "o2" / "scores.csv")) == 4


def test_groups_from_pattern_manifest_column_or_class_folder(tmp_path: Path):
    """The unit of replication (SPEC §10): a file-name pattern, a manifest's group column, the class folder."""
    for label in ("0_real", "1_fake"):
        folder = tmp_path / "flat" / "s" / label
        folder.mkdir(parents=True)
        for i, photo in enumerate(["astronaut", "astronaut", "coffee", "odd"]):
            name = f"{i:05d}_{photo}.png" if photo != "odd" else "unnamed.png"
            Image.fromarray(synth_image(np.random.default_rng(i), label == "1_fake", 16)).save(folder / name)
    found = discover(DataSpec(str(tmp_path / "flat"), group_pattern=r"^\d{5}_(.+)\.png$"))
    assert found.group_source == "file-name pattern"
    assert sorted({s.unit for s in found.samples if s.group}) == ["astronaut", "coffee"]
    assert [s.unit for s in found.samples if not s.group] == [s.path for s in found.samples if not s.group]
    assert any("matches no group in 2 of 8" in w for w in found.warnings)
    assert found.summary()["sets"][0]["n_groups"] == 4  # two photographs and two images without a group
    plain = discover(str(tmp_path / "flat"))
    assert plain.group_source == "image" and all(s.unit == s.path for s in plain.samples)

    manifest = tmp_path / "m.csv"
    rows = [f"{p.path},{p.label},{'g' + str(i % 2)}" for i, p in enumerate(plain.samples)]
    manifest.write_text("path,label,group\n" + "\n".join(rows) + "\n")
    by_column = discover(str(manifest))
    assert by_column.group_source == "manifest column" and {s.group for s in by_column.samples} == {"g0", "g1"}

    root = make_tree(tmp_path / "classes", {"progan": ["cat", "dog"]}, n=2, size=16)
    classes = discover(str(root))
    assert classes.group_source == "class folder" and {s.group for s in classes.samples} == {"cat", "dog"}

    with pytest.raises(DatasetLayoutError, match="no capture group"):
        DataSpec(str(root), group_pattern=r"\d+")
    with pytest.raises(DatasetLayoutError, match="not a regular expression"):
        DataSpec(str(root), group_pattern=r"(")
