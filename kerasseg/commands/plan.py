"""``kerasseg plan DATA [--budget-minutes M] [--model NAME] [--out config.yaml]``.

Fingerprints the converted dataset, decides a complete training config for this
machine (architecture and width, patch size, batch size, normalization,
augmentation, loss, optimizer and schedule, and the run length that fills the
budget, measured by a short timing probe), prints the fingerprint and the
decisions with their reasons, and writes the config as commented YAML with
the whole plan beside it (``<out stem>.plan.json``).
"""

from __future__ import annotations

import argparse
import os

from kerasseg.commands._shared import add_plan_flags, make_plan_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="a converted dataset folder (dataset.json + TFRecords)")
    parser.add_argument("--out", default=None, metavar="CONFIG.yaml",
                        help="where to write the config (default: <dataset>_<model>.yaml in the current folder)")
    add_plan_flags(parser)


def run(args: argparse.Namespace) -> int:
    plan = make_plan_from_args(args.data, args)
    print(plan.table(), end="")
    name = os.path.basename(os.path.normpath(os.path.abspath(args.data))) or "dataset"
    out = args.out or f"{name}_{plan.config.model.name}.yaml"
    config_path, plan_path = plan.write(out)
    print(f"config written to {config_path} (plan and fingerprint: {plan_path})")
    print(f"train with: kerasseg train {config_path}")
    return 0
