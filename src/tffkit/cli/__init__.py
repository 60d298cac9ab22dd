"""The ``tff`` command line: thin argument parsing over the Python API.

Each subcommand lives in ``tffkit/cli/<name>.py`` with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> exit code``; :data:`COMMANDS` lists them in the order ``tff --help`` shows. The command
modules import nothing heavy at module level, and only the command being run adds its arguments, so
``tff --help`` and ``tff --version`` never import torch, torchvision or pandas.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from .. import __version__

COMMANDS = ["evaluate", "rank", "dropout", "faithfulness", "lrpmax", "color", "explain", "generator", "train", "study",
            "demo", "bench", "detectors", "card", "gate"]


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
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error instead of one "
                        "line (also TFF_DEBUG=1; --debug may follow the command too)")
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


def _flag(parser: argparse.ArgumentParser, command: str) -> Callable[[str], str]:
    """dest → the option as typed (``ks`` → ``--k``) for ``command``'s parser."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    names = {a.dest: a.option_strings[-1] for a in sub._actions if a.option_strings}
    return lambda dest: names.get(dest, "--" + dest.replace("_", "-"))


def _failure(exc: BaseException) -> str | None:
    """One line for a failure of the environment during work (disk full, a file that cannot be written, the GPU
    out of memory); None for anything else (a bug: its traceback is shown)."""
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch here
        return f"out of GPU memory ({str(exc).splitlines()[0][:120]}); try a smaller --batch-size"
    return None


def _quiet_sharer_threads(debug: bool) -> None:
    """Ctrl-C reaches the data loader's workers too; a worker killed while it hands a batch over breaks the
    connection that multiprocessing's resource-sharer thread is serving, and that thread passes the error to
    ``sys.excepthook``, which would print its traceback beside the one-line message. Its connection errors and
    interrupts are silent (unless ``--debug``); every other exception is shown as before."""
    import threading

    default = sys.excepthook
    if getattr(default, "tff_debug", None) is not None:  # installed by an earlier call in this process
        default.tff_debug = debug
        return

    def hook(kind, value, tb) -> None:
        sharer = threading.current_thread().name.endswith("(_serve)")
        if sharer and not hook.tff_debug and issubclass(kind, (KeyboardInterrupt, EOFError, OSError)):
            return
        default(kind, value, tb)

    hook.tff_debug = debug
    sys.excepthook = hook


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tff``. A refusal (bad option, data, checkpoint, config, locked or unusable folder, no GPU)
    prints one line and exits 2; a failure of the environment during work (disk full …) one line and exit 1;
    Ctrl-C one line and 130. ``--debug`` (anywhere on the line) or ``TFF_DEBUG=1`` shows the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("TFF_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    name = _command(argv)
    parser = build_parser([name] if name in COMMANDS else [])
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    from ..options import check_args, code_trust

    bad = check_args(vars(args), _flag(parser, args.command))
    if bad:
        print(f"tff {args.command}: error: {bad}", file=sys.stderr)
        return 2
    _quiet_sharer_threads(debug)
    try:
        from ..data import DatasetLayoutError
        from ..detectors import CheckpointMismatchError

        with code_trust(bool(getattr(args, "trust_code", False))):
            return int(args._run(args) or 0)
    except (DatasetLayoutError, CheckpointMismatchError, FileNotFoundError, ValueError, ImportError) as exc:
        if debug:
            raise
        print(f"tff {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        note = getattr(args._module, "INTERRUPTED", "no results were written; an earlier run's results in the "
                                                    "output folder are unchanged")
        print(f"tff {args.command}: interrupted — {note}", file=sys.stderr)
        return 130
    except Exception as exc:
        line = _failure(exc)
        if debug or line is None:
            raise
        note = getattr(args._module, "FAILED", "an earlier run's results in the output folder are unchanged")
        print(f"tff {args.command}: failed: {line} — {note} (--debug shows the traceback)", file=sys.stderr)
        return 1
    finally:
        if "torch" in sys.modules:  # only a command that ran can have joined a process group
            from .. import distributed as tdist

            tdist.finalize()
