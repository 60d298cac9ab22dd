"""A run owns its output folder: checked before the work, replaced whole, untouched by a failed or interrupted
run, files readable by colleagues (umask), the checkpoint's SHA-256 recorded."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import tffkit
from conftest import make_tree
from tffkit.cli import main
from tffkit.detectors import build_detector, save_checkpoint
from tffkit.lrp import Explainer
from tffkit.results import write_json

SRC = str(Path(tffkit.__file__).resolve().parents[1])  # the tffkit under test
CPU = ["--device", "cpu", "--workers", "0", "--no-progress", "--preset", "full"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}"))


def test_rerun_replaces_the_whole_result_set(tmp_path: Path, trained_tiny):
    weights, data = trained_tiny
    out = tmp_path / "rank"
    args = ["rank", "--arch", "tiny_resnet", "--weights", str(weights), "--data", str(data), "--sets", "progan",
            "--min-prob", "0.5", "--k", "10", *CPU, "--out", str(out)]
    assert main([*args, "--with-reals"]) == 0
    assert (out / "ffrs_reals.csv").is_file()
    assert main(args) == 0
    assert not (out / "ffrs_reals.csv").exists()  # nothing of the earlier run is left beside the new one
    assert json.loads((out / "run.json").read_text())["args"]["with_reals"] is False
    assert _siblings(out) == []  # no staging folder left behind


def _ranking(path: Path, weights: Path) -> Path:
    ex = Explainer(build_detector("tiny_resnet"))
    pairs = [(layer.name, c) for layer in ex.layers for c in range(layer.channels)]
    pd.DataFrame({"rank": range(1, len(pairs) + 1), "layer": [p[0] for p in pairs], "channel": [p[1] for p in pairs],
                  "omega": [1 - i / len(pairs) for i in range(len(pairs))]}).to_csv(path, index=False)
    return path


def test_lrpmax_rerun_with_a_smaller_k_keeps_no_stale_collages_or_patches(tmp_path: Path, trained_tiny):
    weights, data = trained_tiny
    out = tmp_path / "lrpmax"
    args = ["lrpmax", "--arch", "tiny_resnet", "--weights", str(weights), "--data", str(data), "--sets", "gan_b",
            "--ranking", str(_ranking(tmp_path / "r.csv", weights)), "--per-tff", "2", "--show", "2",
            "--rows-per-figure", "2", *CPU, "--out", str(out)]
    assert main([*args, "--k", "6"]) == 0
    assert sorted(p.name for p in out.glob("collage_*.png")) == ["collage_01.png", "collage_02.png", "collage_03.png"]
    assert len(list((out / "patches").iterdir())) == 6
    assert main([*args, "--k", "2"]) == 0
    assert sorted(p.name for p in out.glob("collage_*.png")) == ["collage_01.png"]
    index = pd.read_csv(out / "lrpmax_index.csv")
    on_disk = {str(p.relative_to(out)) for p in (out / "patches").rglob("*.png")}
    assert on_disk == set(index["patch"]) and len(list((out / "patches").iterdir())) == 2


def _read_only(path: Path) -> Path:
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        return path
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr: cannot make a read-only folder")
    return path


@pytest.mark.parametrize("case", ["file", "under_a_file", "read_only"])
def test_a_bad_out_fails_in_one_line_before_any_model_is_built(tmp_path: Path, trained_tiny, case, monkeypatch,
                                                                capsys):
    weights, data = trained_tiny
    built = []
    import tffkit.jobs.runner as runner_mod

    monkeypatch.setattr(runner_mod, "load_model", lambda *a, **k: built.append(1))
    if case == "file":
        out = tmp_path / "results.txt"
        out.write_text("x")
    elif case == "under_a_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "sub" / "out"
    else:
        out = _read_only(tmp_path / "ro") / "out"
    try:
        rc = main(["rank", "--arch", "tiny_resnet", "--weights", str(weights), "--data", str(data), *CPU,
                   "--out", str(out)])
    finally:
        if case == "read_only":
            subprocess.run(["chattr", "-i", str(tmp_path / "ro")], capture_output=True)
            (tmp_path / "ro").chmod(0o755)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and built == []
    assert len(err) == 1 and err[0].startswith("tff rank: error: output folder"), err
    assert {"file": "is a file", "under_a_file": "is a file", "read_only": "cannot be written"}[case] in err[0]


def test_train_and_study_check_their_folder_first(tmp_path: Path, trained_tiny, capsys):
    weights, data = trained_tiny
    (tmp_path / "f").write_text("x")
    assert main(["train", "--arch", "tiny_resnet", "--data", str(data), "--val", str(data), "--device", "cpu",
                 "--out", str(tmp_path / "f" / "train")]) == 2
    assert "tff train: error: output folder" in capsys.readouterr().err
    config = tmp_path / "study.yaml"
    config.write_text(f"out: {tmp_path / 'f' / 'study'}\ndetector: {{arch: tiny_resnet, weights: {weights}}}\n"
                      f"data: {{source: {data}, test: {data}}}\n")
    assert main(["study", str(config), "--no-progress"]) == 2
    assert "tff study: error: output folder" in capsys.readouterr().err


def test_a_folder_that_is_not_a_tffkit_result_is_never_replaced(tmp_path: Path, trained_tiny, capsys):
    weights, data = trained_tiny
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("precious")
    rc = main(["evaluate", "--arch", "tiny_resnet", "--weights", str(weights), "--data", str(data), *CPU,
               "--out", str(mine)])
    assert rc == 2 and "not a tffkit result" in capsys.readouterr().err
    assert (mine / "chapter1.tex").read_text() == "precious"


def test_an_interrupted_or_failed_run_leaves_the_earlier_results(tmp_path: Path, trained_tiny, monkeypatch, capsys):
    weights, data = trained_tiny
    out = tmp_path / "eval"
    args = ["evaluate", "--arch", "tiny_resnet", "--weights", str(weights), "--data", str(data), *CPU,
            "--out", str(out)]
    assert main(args) == 0
    before = _snapshot(out)
    capsys.readouterr()
    import tffkit.evaluate as evaluate_mod

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_mod, "score_samples", interrupted)
    assert main(args) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tff evaluate: interrupted"), err
    assert _snapshot(out) == before and _siblings(out) == []
    monkeypatch.setattr(evaluate_mod, "score_samples", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(args)
    assert _snapshot(out) == before and _siblings(out) == []


def test_ctrl_c_prints_one_line_not_a_traceback(tmp_path: Path, trained_tiny):
    weights, _ = trained_tiny
    data = make_tree(tmp_path / "d", {"a": [], "b": []}, n=150, size=32)
    out = tmp_path / "eval"
    proc = subprocess.Popen([sys.executable, "-m", "tffkit", "evaluate", "--arch", "tiny_resnet", "--weights",
                             str(weights), "--data", str(data), "--device", "cpu", "--workers", "1", "--batch-size",
                             "1", "--out", str(out)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env={**os.environ, "PYTHONPATH": SRC},
                            # as from a terminal: Ctrl-C at its default (a child inherits an ignored SIGINT, and a
                            # suite started in the background, `make test &`, ignores it; then the run finishes, exit 0)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = proc.stderr.readline()  # the run is scoring once it reports progress (not still starting up)
    while first and not first.startswith("scoring"):
        first = proc.stderr.readline()
    assert _siblings(out), "the run writes into a staging folder"
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the whole process group, loader workers included
    _, err = proc.communicate(timeout=120)
    err = first + err
    assert proc.returncode == 130, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("scoring")]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("tff evaluate: interrupted"), err
    assert not out.exists() and _siblings(out) == []


def test_files_honour_the_umask_and_run_json_has_the_checkpoint_hash(tmp_path: Path, trained_tiny):
    weights, data = trained_tiny
    previous = os.umask(0o022)
    try:
        out = tmp_path / "eval"
        assert main(["evaluate", "--arch", "tiny_resnet", "--weights", str(weights), "--data", str(data), *CPU,
                     "--out", str(out)]) == 0
        ckpt = save_checkpoint(tmp_path / "model.pth", build_detector("tiny_resnet"))
        for path in [out, *out.rglob("*"), ckpt]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))
        os.umask(0o077)  # a private umask is honoured too
        private = write_json(tmp_path / "private.json", {})
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    finally:
        os.umask(previous)
    record = json.loads((out / "run.json").read_text())
    assert record["checkpoint_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_a_broken_resource_sharer_connection_prints_no_traceback():
    """Ctrl-C kills the loader's workers too; the resource-sharer thread's broken connection, which it hands to
    sys.excepthook, stays silent."""
    import threading

    from tffkit.cli import _quiet_sharer_threads

    before, seen = sys.excepthook, []
    sys.excepthook = lambda kind, value, tb: seen.append(kind)  # stands in for the default printer
    try:
        _quiet_sharer_threads(debug=False)

        def fail(kind):  # as multiprocessing.resource_sharer._serve does
            try:
                raise kind("connection reset")
            except Exception:
                sys.excepthook(*sys.exc_info())

        for name, kind in (("Thread-9 (_serve)", ConnectionResetError), ("worker", ValueError)):
            thread = threading.Thread(target=fail, args=(kind,), name=name)
            thread.start()
            thread.join()
        assert seen == [ValueError]  # the sharer's connection error is silent, any other exception is shown
    finally:
        sys.excepthook = before
