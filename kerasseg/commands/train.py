"""``kerasseg train CONFIG.yaml [--set key=value ...]``: train from a YAML config.

``kerasseg train DATA --plan [--budget-minutes M] [--model NAME]`` plans first
(as ``kerasseg plan`` does), writes the plan to ``<run_dir>/plan.yaml`` and
trains it; run again after an interruption, it reuses that plan and resumes
(``--replan`` makes a new plan for a fresh run folder).

The run folder named by ``run_dir`` receives the resolved config, ``history.csv``,
``best.keras`` (best validation mean Dice), ``model_info.json``, TensorBoard
logs and ``learning_curves.png``. Running the same command again after an
interruption resumes at the epoch the run had reached.
"""

from __future__ import annotations

import argparse
import os

from kerasseg.errors import CommandError
from kerasseg.commands._shared import add_plan_flags, make_plan_from_args

PLAN_FILENAME = "plan.yaml"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training config (YAML; see configs/), or with --plan a converted dataset folder")
    parser.add_argument("--plan", action="store_true",
                        help="CONFIG is a dataset folder: plan a config for it on this machine, then train it")
    parser.add_argument("--replan", action="store_true",
                        help="with --plan: plan again even if the run folder holds a plan.yaml")
    add_plan_flags(parser)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set training.epochs=5 --set data.image_size=[128,128] "
        "(values are parsed as YAML; repeatable)",
    )


def _planned_config(args: argparse.Namespace) -> str:
    """Plan (or reuse the plan of an unfinished run) and return the plan's YAML path."""
    from kerasseg.planning import default_run_dir

    run_dir = args.run_dir or default_run_dir(args.config, args.model or "unet")
    path = os.path.join(run_dir, PLAN_FILENAME)
    if os.path.isfile(path) and not args.replan:
        print(f"using the plan in {path} (--replan plans again)", flush=True)
        return path
    if args.replan and os.path.isdir(os.path.join(run_dir, "backup")):
        raise CommandError(f"{run_dir} holds an unfinished run made with its plan; --replan needs another "
                           "--run-dir (or remove that folder)")
    args.run_dir = run_dir
    plan = make_plan_from_args(args.config, args)
    print(plan.table(), end="", flush=True)
    config_path, _ = plan.write(path)
    print(f"plan written to {config_path}", flush=True)
    return config_path


def run(args: argparse.Namespace) -> int:
    from kerasseg.config import ConfigError, load_config

    planning_flags = [flag for flag, value in (
        ("--budget-minutes", args.budget_minutes), ("--model", args.model), ("--run-dir", args.run_dir),
        ("--val-split", args.val_split), ("--memory-gb", args.memory_gb), ("--no-probe", args.no_probe),
        ("--replan", args.replan), ("--seed", args.seed)) if value]
    if not args.plan and planning_flags:
        raise CommandError(f"{', '.join(planning_flags)} plan a run: add --plan and give a dataset folder")
    if args.plan:
        args.config = _planned_config(args)
    elif os.path.isdir(args.config):
        raise CommandError(f"{args.config} is a folder: give a config file, or add --plan to plan one for this dataset")

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as e:
        raise CommandError(str(e)) from None

    # The strategy comes first: MultiWorkerMirroredStrategy must exist before any other TF op.
    from kerasseg import distribute

    try:
        strategy = distribute.make_strategy(config.training.strategy)
    except ValueError as e:
        raise CommandError(f"{args.config}: training.strategy: {e}") from None

    from kerasseg import training
    from kerasseg.errors import KerasSegError

    try:
        result = training.fit(config, strategy=strategy)
    except KerasSegError as e:  # TrainingError, SchemaError, ConfigError, ModelConfigError...: name the config
        raise CommandError(f"{args.config}: {e}") from None
    except OSError as e:  # a full disk, a read-only or vanished run folder
        target = f" {e.filename}" if e.filename else ""
        raise CommandError(
            f"{args.config}: cannot write{target}: {e.strerror or e} (free disk space or choose another "
            "run_dir; a rerun resumes from the last finished epoch)"
        ) from None
    if distribute.is_chief(strategy):
        if result.best_model_path:
            print(f"best model: {result.best_model_path} ({result.monitor} {result.best_value:.4f}, "
                  f"epoch {result.best_epoch})")
        else:
            print(f"no epoch produced a finite {result.monitor}; no best model written")
        print(f"run folder: {result.run_dir}")
    return 0
