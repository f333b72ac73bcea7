"""The ``kerasseg`` command line.

Each subcommand lives in its own module under ``kerasseg.commands`` exposing
``configure(parser: argparse.ArgumentParser) -> None`` and
``run(args: argparse.Namespace) -> int``. Modules are imported only when their
subcommand runs, so ``kerasseg --help`` stays fast and TensorFlow is loaded
only when needed.

A command reports a problem the user can fix by raising
:class:`kerasseg.errors.CommandError` (or letting any other
:class:`kerasseg.errors.KerasSegError` through): :func:`main` prints it as
``kerasseg <command>: error: <message>``, without a traceback, and returns 2.
``CommandError`` is importable from here too, as it always was.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from kerasseg import __version__
from kerasseg.errors import CommandError, KerasSegError

__all__ = ["COMMANDS", "CommandError", "build_parser", "main"]

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("kerasseg.commands.demo", "run the end-to-end demo on a generated phantom dataset"),
    "plan": ("kerasseg.commands.plan", "fingerprint a dataset and write a training config for this machine"),
    "train": ("kerasseg.commands.train", "train a model from a YAML config (or plan and train: DATA --plan)"),
    "evaluate": ("kerasseg.commands.evaluate", "evaluate a model on a converted dataset split"),
    "predict": ("kerasseg.commands.predict", "write masks (and overlays) for images or folders"),
    "export": ("kerasseg.commands.export", "export a trained model as a SavedModel (and TFLite)"),
    "crf-tune": ("kerasseg.commands.crf_tune", "grid-search dense CRF parameters on a split"),
    "data": ("kerasseg.commands.data", "inspect converted datasets (verify, show)"),
}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """Build the parser; only the subcommand named in ``argv`` is configured."""
    parser = argparse.ArgumentParser(
        prog="kerasseg",
        description="Medical image segmentation with TensorFlow/Keras: train, evaluate, "
        "predict, refine with a dense CRF and export.",
    )
    parser.add_argument("--version", action="version", version=f"kerasseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    requested = _requested_command(argv)
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.add_argument("--verbose", action="store_true",
                                help="keep TensorFlow's start-up and C++ log messages (hidden by default)")
        # Only the chosen subcommand's module is imported (it may pull in TensorFlow).
        if name == requested:
            module = importlib.import_module(module_name)
            module.configure(sub_parser)
            sub_parser.set_defaults(_run=module.run)
    return parser


def _requested_command(argv: Sequence[str]) -> str | None:
    for token in argv:
        if token in COMMANDS:
            return token
        if not token.startswith("-"):
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kerasseg`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # --verbose is accepted anywhere (also after a nested subcommand such as `data verify`)
    verbose = "--verbose" in argv
    argv = [word for word in argv if word != "--verbose"]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.verbose = verbose
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0 if args.command is None else 2
    from kerasseg.tf_logging import import_tensorflow_quietly
    from kerasseg.tf_runtime import prefer_onednn

    prefer_onednn()
    import_tensorflow_quietly(verbose=args.verbose)
    try:
        return int(args._run(args) or 0)
    except KerasSegError as e:  # CommandError, and any user-facing error a command let through
        print(f"kerasseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
