"""``kerasseg demo``: the whole path on a generated phantom dataset."""

from __future__ import annotations

import argparse
import time


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir", default="kerasseg_demo",
        help="folder for the generated data, records, model, predictions and SavedModel "
        "(default: ./kerasseg_demo)",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="test-size run (16 small images, 3 epochs); skips the Dice target",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for data, split and training")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from kerasseg.errors import CommandError
    from kerasseg.demo import DemoFailed, DemoSettings, run_demo

    settings = DemoSettings.quick() if args.quick else DemoSettings()
    settings = dataclasses.replace(settings, seed=args.seed)
    started = time.perf_counter()
    try:
        summary = run_demo(args.workdir, settings=settings)
    except DemoFailed as e:
        raise CommandError(str(e)) from e
    print(f"demo finished in {time.perf_counter() - started:.0f} s; outputs in {args.workdir}")
    print(f"stage seconds: {summary.seconds}")
    return 0
