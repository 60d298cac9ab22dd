"""The ``tff`` command line: thin argument parsing over the Python API.

Each subcommand lives in ``tffkit/cli/<name>.py`` with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> exit code``; :data:`COMMANDS` lists them in the order ``tff --help`` shows. The command
modules import nothing heavy at module level, and only the command being run adds its arguments, so
``tff --help`` and ``tff --version`` never import torch, torchvision or pandas.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__

COMMANDS = ["evaluate", "rank", "dropout", "faithfulness", "lrpmax", "color", "explain", "generator", "train", "study",
            "demo", "bench", "detectors"]


class HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default only where it says something: not for required options, flags or None."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or action.required or default in (None, False, argparse.SUPPRESS)
                or not action.option_strings or isinstance(action, argparse._StoreConstAction)):
            return text
        return text + " (default: %(default)s)"


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``tff`` parser; ``commands`` (default: all) get their arguments, the others only their one-line help."""
    parser = argparse.ArgumentParser(
        prog="tff", description="Explain and harden detectors of CNN-generated images (tffkit). "
                                "Algorithms and defaults: docs/algorithms.md in the tffkit repository.")
    parser.add_argument("--version", action="version", version=f"tffkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = COMMANDS if commands is None else commands
    for name in COMMANDS:
        module = importlib.import_module(f".{name}", __name__)
        p = sub.add_parser(name, help=module.HELP, description=(module.__doc__ or "").strip(),
                           formatter_class=HelpFormatter)
        if name in wanted:
            module.add_arguments(p)
        p.set_defaults(_run=module.run, _module=module)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tff``; known input errors print one clear line and exit 2, Ctrl-C one line and 130."""
    argv = list(sys.argv[1:] if argv is None else argv)
    name = _command(argv)
    parser = build_parser([name] if name in COMMANDS else [])
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        from ..data import DatasetLayoutError
        from ..detectors import CheckpointMismatchError

        return int(args._run(args) or 0)
    except (DatasetLayoutError, CheckpointMismatchError, FileNotFoundError, ValueError, ImportError) as exc:
        print(f"tff {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        note = getattr(args._module, "INTERRUPTED", "no results were written; an earlier run's results in the "
                                                    "output folder are unchanged")
        print(f"tff {args.command}: interrupted — {note}", file=sys.stderr)
        return 130
    finally:
        if "torch" in sys.modules:  # only a command that ran can have joined a process group
            from .. import distributed as tdist

            tdist.finalize()
