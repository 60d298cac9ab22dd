"""The command line itself: light --help, explained options, cited documents that ship, one-line failures."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tffkit
from tffkit.cli import COMMANDS, HelpFormatter, build_parser, main

REPO = Path(__file__).resolve().parents[1]
SRC = str(Path(tffkit.__file__).resolve().parents[1])  # the tffkit under test


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "tff"):
    """Every (name, parser) under ``parser``, recursively (tff rank, tff bench lrp, …)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _subparsers(sub, f"{prefix} {name}")


def test_help_imports_nothing_heavy():
    """`tff --help` and `tff --version` build no model code: torch, torchvision and pandas stay unimported."""
    code = ("import sys\nfrom tffkit.cli import main\nfor argv in (['--help'], ['--version'], []):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'pandas', 'numpy', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "rank" in out.stdout and "tffkit 0.1.0" in out.stdout


def test_every_option_is_explained_and_no_default_none():
    parser = build_parser()
    seen = 0
    for name, sub in _subparsers(parser):
        assert sub.formatter_class is HelpFormatter or name.count(" ") == 2, name
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            flag = "/".join(action.option_strings) or action.dest
            assert action.help and action.help.strip(), f"{name} {flag}: no help text"
            seen += 1
        text = sub.format_help()
        assert "(default: None)" not in text, name
        assert "(default: False)" not in text, name
        for action in sub._actions:  # a required option shows no default at all
            if action.required and action.option_strings:
                line = re.search(re.escape(action.option_strings[0]) + r"[^\n]*\n(?:\s{10,}[^\n]*\n)*", text)
                assert line and "(default:" not in line.group(0), f"{name} {action.option_strings[0]}"
    assert seen > 150


def test_max_per_class_has_one_meaning():
    helps = {name: next(a.help for a in sub._actions if "--max-per-class" in a.option_strings)
             for name, sub in _subparsers(build_parser()) if any("--max-per-class" in a.option_strings
                                                                 for a in sub._actions)}
    commands = {"evaluate", "rank", "dropout", "lrpmax", "color", "explain", "train"}
    assert {f"tff {c}" for c in commands} <= set(helps)
    for name, text in helps.items():
        assert text.startswith("use only the first N images (by file name) of each (set, class, label) folder"), name


def test_help_and_readme_cite_documents_that_ship():
    texts = {name: sub.format_help() for name, sub in _subparsers(build_parser())}
    texts["README.md"] = (REPO / "README.md").read_text()
    for source in Path(SRC, "tffkit").rglob("*.py"):
        texts[str(source.relative_to(SRC))] = source.read_text()
    for name, text in texts.items():
        assert "SPEC" not in text, f"{name} cites SPEC, a file users do not have"
        for doc in re.findall(r"\b(docs/[\w./-]+\.md)", text):
            assert (REPO / doc).is_file(), f"{name} cites {doc}, which is not in the repository"


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command: str, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert "usage: tff " + command in capsys.readouterr().out
