"""Hardening, round two (issue 27): one test per case a hostile user tried — no silent subsets, no run that loses
another's results, one line (no traceback) for every refusal or failure of the environment."""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image, features

from conftest import make_tree
from tffkit import distributed as tdist
from tffkit import results
from tffkit.cli import build_parser, main
from tffkit.data import DatasetLayoutError, discover
from tffkit.detectors import build_detector, save_checkpoint
from tffkit.jobs.study import ConfigError, Step, load_config, run_steps
from tffkit.outputs import STAGING, run_folder
from tffkit.passes import DatasetPass

ROOT = Path(__file__).resolve().parents[1]
CPU = ["--device", "cpu", "--workers", "0", "--no-progress", "--preset", "full", "--batch-size", "4"]


def evaluate(data, out, *extra: str) -> int:
    return main(["evaluate", "--arch", "tiny_resnet", "--random-weights", "--data", str(data), "--out", str(out),
                 *CPU, *extra])


def one_line(err: str) -> str:
    """The single line of a refusal (and no traceback)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- options validated in one place -------------------------------------------------------------------------------

@pytest.mark.parametrize("flag,value,allowed", [("--max-per-class", "-3", "≥ 1"), ("--max-per-class", "0", "≥ 1"),
                                                ("--batch-size", "0", "≥ 1"), ("--workers", "-1", "≥ 0")])
def test_out_of_range_options_are_refused_in_one_line(tmp_path: Path, capsys, flag: str, value: str, allowed: str):
    tree = make_tree(tmp_path / "d", {"s": []}, n=2)
    args = [a for a in CPU if a not in ("--workers", "0", "--batch-size", "4")]
    rc = main(["evaluate", "--arch", "tiny_resnet", "--random-weights", "--data", str(tree), "--out",
               str(tmp_path / "o"), *args, flag, value])
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and f"argument {flag}: {value} is not allowed" in line and allowed in line
    assert not (tmp_path / "o").exists()


def test_study_config_uses_the_same_ranges(tmp_path: Path):
    tree = make_tree(tmp_path / "d", {"s": []}, n=1)
    cfg = {"out": str(tmp_path / "study"), "detector": {"arch": "tiny_resnet", "random_weights": True},
           "data": {"source": str(tree), "test": str(tree), "max_per_class": -3}, "batch_size": 0,
           "steps": {"rank": {"k": 0}}}
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    msg = str(err.value)
    assert "data.max_per_class: -3 is not allowed; allowed: an integer ≥ 1" in msg
    assert "batch_size: 0 is not allowed" in msg and "steps.rank.k: 0 is not allowed" in msg


def test_max_per_class_defaults_are_documented():
    """Every command whose --max-per-class default is not 'all' is named with its default in docs/usage.md."""
    readme = (ROOT / "docs" / "usage.md").read_text()
    sentence = readme[readme.index("`--max-per-class N` means the same everywhere"):][:600]
    parser = build_parser([])
    for name in next(a for a in parser._actions if a.dest == "command").choices:
        p2 = build_parser([name])
        cmd = next(a for a in p2._actions if a.dest == "command").choices[name]
        default = next((a.default for a in cmd._actions if a.dest == "max_per_class"), None)
        if default is not None:
            assert f"`tff {name}" in sentence and str(default) in sentence, (name, default)
            assert f"default: {default}" in cmd.format_help()


# --- CSV manifests ------------------------------------------------------------------------------------------------

def _manifest(tmp_path: Path, rows: list[str]) -> Path:
    tree = make_tree(tmp_path / "m", {"s": []}, n=2)
    path = tree / "list.csv"
    path.write_text("path,label\n" + "\n".join(rows) + "\n")
    return path


def test_manifest_repeated_rows_are_used_once_and_reported(tmp_path: Path):
    path = _manifest(tmp_path, ["s/0_real/000.png,0", "s/1_fake/000.png,1", "s/0_real/000.png,0",
                                "s/0_real/001.png,0", "s/0_real/000.png,0"])
    found = discover(path)
    assert len(found.samples) == 3
    assert any("repeats 2 row(s)" in w and "line 4 (= line 2)" in w for w in found.warnings), found.warnings


def test_manifest_file_listed_as_real_and_fake_is_refused(tmp_path: Path):
    path = _manifest(tmp_path, ["s/0_real/000.png,0", "s/0_real/001.png,1", "s/0_real/000.png,fake"])
    with pytest.raises(DatasetLayoutError, match=r"1 file\(s\) listed as both real and fake: .*000.png "
                                                 r"\(real on line 2, fake on line 4\)"):
        discover(path)


def test_manifest_rows_outside_its_folder_are_reported(tmp_path: Path):
    outside = tmp_path / "elsewhere.png"
    Image.new("RGB", (32, 32)).save(outside)
    Image.new("RGB", (32, 32)).save(tmp_path / "other.png")
    path = _manifest(tmp_path, ["s/0_real/000.png,0", "s/1_fake/000.png,1", "../other.png,1", f"{outside},0"])
    found = discover(path)
    note = next(w for w in found.warnings if "outside its folder" in w)
    assert note.startswith("2 row(s)") and "../other.png" in note and str(outside) in note
    assert len(found.samples) == 4  # read as listed


# --- a study's out inside its own data ----------------------------------------------------------------------------

def test_study_out_inside_its_test_data_is_refused(tmp_path: Path):
    tree = make_tree(tmp_path / "d", {"s": []}, n=1)
    cfg = {"out": str(tree / "s" / "results"), "detector": {"arch": "tiny_resnet", "random_weights": True},
           "data": {"source": str(tree), "test": str(tree)}}
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "out:" in msg and "lies inside data.test" in msg


# --- tiny images, decompression bombs, AVIF/HEIC ------------------------------------------------------------------

def _failed_of(root: Path) -> tuple[int, dict[str, str]]:
    found = discover(root)
    run = DatasetPass(found.samples, tdist.init("cpu"), "detector", batch_size=4, num_workers=0, progress=False)
    seen = sum(len(idx) for _, idx in run)
    return seen, {Path(r["path"]).name: r["error"] for r in run.gather_failed()}


def test_one_pixel_images_are_refused_and_listed(tmp_path: Path):
    tree = make_tree(tmp_path / "d", {"s": []}, n=2)
    Image.new("RGB", (1, 1), (200, 10, 10)).save(tree / "s" / "1_fake" / "dot.png")
    Image.new("RGB", (40, 3)).save(tree / "s" / "0_real" / "strip.png")
    seen, failed = _failed_of(tree)
    assert seen == 4 and set(failed) == {"dot.png", "strip.png"}
    assert "1×1 px is below the 16-px minimum side" in failed["dot.png"] and "40×3 px" in failed["strip.png"]


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header says width×height (its data is one empty row): never decoded, so the test stays small."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path):
    tree = make_tree(tmp_path / "d", {"s": []}, n=2)
    _png_header_only(tree / "s" / "1_fake" / "bomb.png", 12000, 12000)
    seen, failed = _failed_of(tree)
    assert seen == 4 and list(failed) == ["bomb.png"]
    assert "12000×12000 px (144.0 megapixels) is above the 89.5-megapixel limit" in failed["bomb.png"]


def test_avif_is_read_and_heic_is_listed(tmp_path: Path):
    tree = make_tree(tmp_path / "d", {"s": []}, n=2)
    (tree / "s" / "1_fake" / "phone.heic").write_bytes(b"\0\0\0\x18ftypheic" + bytes(32))
    if features.check("avif"):
        Image.new("RGB", (32, 32), (10, 200, 30)).save(tree / "s" / "1_fake" / "web.avif")
    found = discover(tree)
    names = {Path(s.path).name for s in found.samples}
    assert "phone.heic" in names and ("web.avif" in names or not features.check("avif"))
    seen, failed = _failed_of(tree)
    assert seen == 4 + features.check("avif") and list(failed) == ["phone.heic"]
    assert "pillow-heif" in failed["phone.heic"] or "cannot identify" in failed["phone.heic"]


# --- the output folder is held by one run; SIGKILL leftovers are cleaned ------------------------------------------

def test_second_run_into_a_held_output_folder_is_refused(tmp_path: Path, capsys):
    tree = make_tree(tmp_path / "d", {"s": []}, n=2)
    out = tmp_path / "o"
    with run_folder(out) as folder:  # a first run, still writing
        (folder / "run.json").write_text("{}")
        rc = evaluate(tree, out)
        line = one_line(capsys.readouterr().err)
    assert rc == 2 and str(out) in line and "in use by another tffkit run" in line and f"pid {os.getpid()}" in line
    assert (out / "run.json").read_text() == "{}"  # the first run's results are there, whole
    assert evaluate(tree, out) == 0 and (out / "scores.csv").is_file()  # free again once it has finished


KILLED = """
import os, signal, sys
from tffkit.outputs import RunFolder
run = RunFolder(sys.argv[1])
(run.path / "half.csv").write_text("x")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_staging_folders_of_killed_runs_are_removed_by_the_next_run(tmp_path: Path, capsys):
    out = tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", KILLED, str(out)], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    left = [p for p in tmp_path.iterdir() if p.name.startswith(f".o{STAGING}") and p.is_dir()]
    assert len(left) == 1 and (left[0] / "half.csv").is_file()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        keep = tmp_path / f".o{STAGING}alive"
        keep.mkdir()
        (keep / ".tff-owner").write_text(json.dumps({"pid": alive.pid, "host": os.uname().nodename}))
        with run_folder(out) as folder:
            (folder / "run.json").write_text("{}")
    finally:
        alive.kill()
        alive.wait()
    assert not left[0].exists() and keep.is_dir()  # the dead run's leftovers go; a live owner's stay
    assert "unfinished results of a run that was killed" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]


# --- one line where a traceback was ---------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_one_line_and_debug_shows_the_traceback(tmp_path: Path, capsys, monkeypatch):
    tree = make_tree(tmp_path / "d", {"s": []}, n=1)
    rc = evaluate(tree, tmp_path / "o", "--device", "cuda")
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and "--device cuda: CUDA is not available" in line
    monkeypatch.setenv("TFF_DEBUG", "1")
    with pytest.raises(tdist.DeviceError):
        evaluate(tree, tmp_path / "o", "--device", "cuda")


def test_full_disk_while_writing_is_one_line_exit_1(tmp_path: Path, capsys, monkeypatch):
    tree = make_tree(tmp_path / "d", {"s": []}, n=2)
    out = tmp_path / "o"
    assert evaluate(tree, out) == 0
    before = (out / "scores.csv").read_bytes()
    capsys.readouterr()

    def full(path, write):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    monkeypatch.setattr(results, "atomic_write", full)
    rc = evaluate(tree, out)
    line = one_line(capsys.readouterr().err)
    assert rc == 1 and line.startswith("tff evaluate: failed: No space left on device") and "unchanged" in line
    assert (out / "scores.csv").read_bytes() == before


def test_yaml_syntax_error_names_the_file_and_line(tmp_path: Path, capsys):
    path = tmp_path / "study.yaml"
    path.write_text("out: results\ndetector:\n  arch: tiny_resnet\n  weights: [w.pth\ndata: {}\n")
    rc = main(["study", str(path)])
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and f"{path}:5:" in line and "YAML syntax error" in line


# --- python: detectors are an explicit opt-in -------------------------------------------------------------------

FACTORY = '''
from tffkit.detectors import build_detector
def build():
    return build_detector("tiny_resnet")
'''


def test_python_detector_needs_trust_code_and_its_hash_is_recorded(tmp_path: Path, capsys):
    code = tmp_path / "det.py"
    code.write_text(FACTORY)
    tree = make_tree(tmp_path / "d", {"s": []}, n=1)
    arch = f"python:{code}:build"
    rc = main(["evaluate", "--arch", arch, "--random-weights", "--data", str(tree), "--out", str(tmp_path / "o"),
               *CPU])
    line = one_line(capsys.readouterr().err)
    assert rc == 2 and str(code) in line and "--trust-code" in line
    sha = hashlib.sha256(code.read_bytes()).hexdigest()
    assert main(["evaluate", "--arch", arch, "--random-weights", "--trust-code", "--data", str(tree), "--out",
                 str(tmp_path / "o"), *CPU]) == 0
    assert sha in capsys.readouterr().out
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["detector"]["code"] == {"file": str(code), "sha256": sha}


def test_study_python_detector_is_relative_to_the_yaml_and_needs_trust_code(tmp_path: Path, monkeypatch):
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "det.py").write_text(FACTORY)
    tree = make_tree(tmp_path / "d", {"s": []}, n=1)
    text = ("out: results\ndetector:\n  arch: python:det.py:build\n  random_weights: true\nTRUST"
            f"data:\n  source: {tree}\n  test: {tree}\n")
    (folder / "study.yaml").write_text(text.replace("TRUST", ""))
    monkeypatch.chdir(tmp_path)  # not the YAML's folder
    from tffkit.options import code_trust

    with code_trust(False), pytest.raises(ConfigError, match="detector.arch: .*det.py.*trust_code"):
        load_config(folder / "study.yaml")
    (folder / "study.yaml").write_text(text.replace("TRUST", "  trust_code: true\n"))
    with code_trust(False):
        cfg = load_config(folder / "study.yaml")
    assert cfg["detector"]["arch"] == f"python:{folder / 'det.py'}:build"


# --- layouts, study re-runs, UnivFD random parts -------------------------------------------------------------------

def test_real_and_fake_folders_are_read_as_labels(tmp_path: Path):
    for label in ("real", "fake"):
        (tmp_path / "d" / "s1" / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (32, 32), (i, 0, 0)).save(tmp_path / "d" / "s1" / label / f"{i}.png")
    found = discover(tmp_path / "d")
    summary = found.summary()
    assert [s["set"] for s in summary["sets"]] == ["s1"] and (summary["n_real"], summary["n_fake"]) == (2, 2)
    assert summary["fake_dirs"] == ["fake"]
    assert any("'real' and 'fake' are read as the labels" in w for w in found.warnings)


def test_study_rerun_says_which_input_changed(tmp_path: Path):
    def write(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "run.json").write_text("{}")
    settings = {"k": 8, "test_data": {"files": 4, "digest": "aa"}, "rank": {"detector_sha256": "x"}}
    log: list[str] = []
    run_steps([Step("evaluate", settings, write)], tmp_path, log.append)
    assert log[-1] == "[study] evaluate: running — no finished earlier run"
    changed = {**settings, "test_data": {"files": 5, "digest": "bb"}, "rank": {"detector_sha256": "y"}}
    run_steps([Step("evaluate", changed, write)], tmp_path, log.append)
    assert log[-1] == ("[study] evaluate: running — changed since the earlier run: the detector checkpoint "
                       "(rank.detector_sha256), the test data's files (test_data)")
    (tmp_path / "evaluate" / "run.json").unlink()
    run_steps([Step("evaluate", changed, write)], tmp_path, log.append)
    assert log[-1].endswith("output(s) missing or empty: run.json")


def test_univfd_random_backbone_with_the_released_head(tmp_path: Path, capsys):
    raw = build_detector("univfd2023@tiny")
    sd = raw.state_dict()
    torch.save({"weight": sd["fc.weight"], "bias": sd["fc.bias"]}, tmp_path / "fc_weights.pth")
    tree = make_tree(tmp_path / "d", {"s": []}, n=1, size=48)
    rc = main(["evaluate", "--arch", "univfd2023@tiny", "--weights", str(tmp_path / "fc_weights.pth"),
               "--random-weights", "backbone", "--data", str(tree), "--out", str(tmp_path / "o"), *CPU,
               "--preset", "detector"])
    assert rc == 0
    assert "has a RANDOM backbone (--random-weights backbone)" in capsys.readouterr().out
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["detector"]["random_weights"] == "backbone"
    rc = main(["evaluate", "--arch", "tiny_resnet", "--weights", str(save_checkpoint(tmp_path / "w.pth",
               build_detector("tiny_resnet"))), "--random-weights", "backbone", "--data", str(tree), "--out",
               str(tmp_path / "o2"), *CPU])
    assert rc == 2 and "no separate backbone" in capsys.readouterr().err
