"""The ``tff`` command line: thin argument parsing over the Python API.

Each subcommand lives in ``tffkit/cli/<name>.py`` with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> exit code``; :data:`COMMANDS` lists them in the order ``tff --help`` shows.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__

COMMANDS = ["evaluate", "rank", "dropout", "lrpmax", "color", "explain", "generator", "train", "study", "demo", "bench",
            "detectors"]


def build_parser() -> argparse.ArgumentParser:
    """The ``tff`` parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="tff", description="Explain and harden detectors of CNN-generated images (tffkit).")
    parser.add_argument("--version", action="version", version=f"tffkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f".{name}", __name__)
        doc = (module.__doc__ or "").strip()
        p = sub.add_parser(name, help=module.HELP, description=doc,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tff``; known input errors print one clear line and exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    from ..data import DatasetLayoutError
    from ..detectors import CheckpointMismatchError

    try:
        return int(args._run(args) or 0)
    except (DatasetLayoutError, CheckpointMismatchError, FileNotFoundError, ValueError, ImportError) as exc:
        print(f"tff {args.command}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        from .. import distributed as tdist

        tdist.finalize()
