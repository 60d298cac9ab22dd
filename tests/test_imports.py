"""The direction of imports (docs/architecture.md), read from every module's syntax tree: imports inside functions
and under ``if TYPE_CHECKING:`` count as much as those at the top of a file.

- ``analysis/`` holds algorithms: it imports no report, job, demo, data discovery (``layouts``), input, output-folder
  or run-record code (``outputs``, ``results``) and no study;
- ``report/`` reads result files: it imports neither ``analysis/`` nor ``jobs/``;
- ``lrp/`` imports nothing of tffkit but :mod:`tffkit.heads` (its normalisation comes from the caller);
- only ``cli/`` imports ``demo/`` (the demo is a user of the library; it may import anything but ``cli/``);
- no import circle among tffkit's modules.

Each broken rule is reported one line per import: ``path:line imports module``.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

import tffkit

PACKAGE = Path(tffkit.__file__).resolve().parent
ANALYSIS_MUST_NOT_IMPORT = ("report", "jobs", "demo", "layouts", "inputs", "outputs", "results", "study")


@cache
def modules() -> dict[str, Path]:
    """Every module of tffkit by dotted name (a package by its ``__init__.py``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["tffkit", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _module_of(name: str) -> str | None:
    """The tffkit module ``name`` lies in: itself, else its longest prefix that is a module (``tffkit.lrp.Explainer``
    → ``tffkit.lrp``); None outside tffkit."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


@cache
def imports(module: str) -> tuple[tuple[str, int], ...]:
    """(tffkit module imported, line) for every import statement of ``module``, wherever it stands."""
    path = modules()[module]
    return _imports_in(path.read_text(encoding="utf-8"), module, is_package=path.name == "__init__.py")


def _imports_in(source: str, module: str, *, is_package: bool = False) -> tuple[tuple[str, int], ...]:
    """(tffkit module imported, line) for every import statement of ``source``, the text of ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # ``from pkg import name``: the submodule pkg.name where there is one, else pkg itself
            names = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules() else origin
                     for alias in node.names]
        else:
            continue
        for name in names:
            target = _module_of(name) if name.split(".")[0] == "tffkit" else None
            if target is not None and target != module:
                found.add((target, node.lineno))
    return tuple(sorted(found, key=lambda t: (t[1], t[0])))


def _where(module: str, line: int) -> str:
    return f"{modules()[module].relative_to(PACKAGE.parent)}:{line}"


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _violations(importers: str | None, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    """One line per import of a ``forbidden`` module (or package) by a module inside ``importers`` (all modules:
    None), except modules inside ``allowed``."""
    lines = []
    for module in modules():
        if importers is not None and not _inside(module, importers):
            continue
        if any(_inside(module, a) for a in allowed):
            continue
        for target, line in imports(module):
            if any(_inside(target, f) for f in forbidden):
                lines.append(f"{_where(module, line)} imports {target}")
    return lines


def _check(lines: list[str], rule: str) -> None:
    """Fail listing ``lines`` (one per import at fault) under the rule they break."""
    if lines:
        pytest.fail(f"{len(lines)} line(s) break the rule: {rule}\n" + "\n".join(lines), pytrace=False)


def test_the_reader_sees_every_kind_of_import():
    """The reader itself: relative, absolute, nested, type-checking and package imports are all found."""
    source = """
import numpy
import tffkit.results as results
from . import ffrs
from .. import layouts
from ..lrp import Explainer
from ..report.figures_tff import plot_ranking
if TYPE_CHECKING:
    from ..jobs import runner
def job():
    from tffkit.demo.artefacts import PlantedArtefacts
    class Inner:
        def method(self):
            from .. import outputs
"""
    found = _imports_in(source, "tffkit.analysis.example")
    assert found == (("tffkit.results", 3), ("tffkit.analysis.ffrs", 4), ("tffkit.layouts", 5), ("tffkit.lrp", 6),
                     ("tffkit.report.figures_tff", 7), ("tffkit.jobs.runner", 9), ("tffkit.demo.artefacts", 11),
                     ("tffkit.outputs", 14))
    assert _imports_in("from . import engine\nfrom .check import x", "tffkit.lrp", is_package=True) == (
        ("tffkit.lrp.engine", 1), ("tffkit.lrp.check", 2))
    assert _module_of("tffkit.lrp.Explainer") == "tffkit.lrp" and _module_of("numpy") is None


def test_analysis_holds_algorithms_only():
    forbidden = tuple(f"tffkit.{m}" for m in ANALYSIS_MUST_NOT_IMPORT)
    lines = _violations("tffkit.analysis", forbidden)
    _check(lines, "analysis/ imports none of " + ", ".join(ANALYSIS_MUST_NOT_IMPORT))


def test_report_reads_result_files_only():
    lines = _violations("tffkit.report", ("tffkit.analysis", "tffkit.jobs"))
    _check(lines, "report/ imports neither analysis/ nor jobs/")


def test_the_engine_takes_what_it_needs_from_its_caller():
    """lrp/ reads the detector's head and input from :mod:`tffkit.heads` and nothing else of tffkit (no dataset
    constants: the caller passes the normalisation)."""
    lines = [f"{_where(m, line)} imports {t}" for m in modules() if _inside(m, "tffkit.lrp")
             for t, line in imports(m) if not (_inside(t, "tffkit.lrp") or t == "tffkit.heads")]
    _check(lines, "lrp/ imports only lrp/ and heads")


def test_only_the_cli_imports_the_demo():
    lines = _violations(None, ("tffkit.demo",), allowed=("tffkit.cli", "tffkit.demo"))
    lines += _violations("tffkit.demo", ("tffkit.cli",))
    _check(lines, "only cli/ imports demo/; demo/ does not import cli/")


def _circles(graph: dict[str, list[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` (node → nodes it imports) with more than one node (Tarjan's
    algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(graph[target])))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        circles.append(sorted(component))
    return circles


def test_circle_finder():
    """The circle finder on a graph with a known answer."""
    graph = {"a": ["b"], "b": ["c"], "c": ["a", "g"], "d": ["a"], "e": ["f"], "f": ["e"], "g": []}
    assert sorted(_circles(graph)) == [["a", "b", "c"], ["e", "f"]]
    assert _circles({"a": ["b"], "b": [], "c": ["a", "b"]}) == []


def test_no_import_circle():
    lines = []
    for circle in _circles({m: sorted({t for t, _ in imports(m)}) for m in modules()}):
        lines.append("circle: " + " ↔ ".join(circle))
        lines += [f"  {_where(m, line)} imports {t}" for m in circle for t, line in imports(m) if t in circle]
    _check(lines, "no import circle among tffkit's modules")


def test_jobs_are_short_and_keyword_only():
    """A job reads in one screen: no function in jobs/ over 60 lines, and every public job function takes its
    options (and outputs) by keyword (``name(data, *, options=…, out=…)``)."""
    lines = []
    for module, path in modules().items():
        if not module.startswith("tffkit.jobs."):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 60:
                lines.append(f"{_where(module, node.lineno)} {node.name} has {node.end_lineno - node.lineno + 1} lines")
        for node in tree.body:  # a job: a module-level function with options and an output folder
            names = [a.arg for a in node.args.args + node.args.kwonlyargs] if isinstance(node, ast.FunctionDef) else []
            if "options" in names and "out" in names and {"options", "out"} & {a.arg for a in node.args.args}:
                lines.append(f"{_where(module, node.lineno)} {node.name} takes its options or output by position")
    _check(lines, "jobs/ functions are short and take their options by keyword")
