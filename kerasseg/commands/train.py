"""``kerasseg train CONFIG.yaml [--set key=value ...]``: train from a YAML config.

The run folder named by ``run_dir`` receives the resolved config, ``history.csv``,
``best.keras`` (best validation mean Dice), ``model_info.json``, TensorBoard
logs and ``learning_curves.png``. Running the same command again after an
interruption resumes at the epoch the run had reached.
"""

from __future__ import annotations

import argparse

from kerasseg.cli import CommandError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training config (YAML); see configs/ for examples")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set training.epochs=5 --set data.image_size=[128,128] "
        "(values are parsed as YAML; repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    from kerasseg.config import ConfigError, load_config

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
    from kerasseg.data.preprocess import NormalizationError
    from kerasseg.errors import KerasSegError
    from kerasseg.losses import LossSpecError
    from kerasseg.models import ModelConfigError
    from kerasseg.schema import SchemaError

    try:
        result = training.fit(config, strategy=strategy)
    except (training.TrainingError, SchemaError, NormalizationError, LossSpecError, ConfigError,
            ModelConfigError, KerasSegError) as e:
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
