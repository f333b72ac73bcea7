"""``kerasseg data``: inspect converted datasets.

* ``kerasseg data verify DIR``: read every record, check it decodes, image and
  mask sizes agree and counts match ``dataset.json`` (exit 1 on problems);
* ``kerasseg data show DIR --split train -n 8 [--augment] [--out FILE]``: save
  a grid of images with their masks as the training pipeline yields them.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True
    verify = actions.add_parser("verify", help="check every record of a converted dataset",
                                description="Read every record of a converted dataset and check it "
                                "decodes, sizes agree and counts match dataset.json.")
    verify.add_argument("dataset_dir", metavar="DIR", help="converted dataset folder (with dataset.json)")
    show = actions.add_parser("show", help="save a grid of examples (optionally augmented)",
                              description="Save a grid of images with their masks as the tf.data "
                              "pipeline yields them.")
    show.add_argument("dataset_dir", metavar="DIR", help="converted dataset folder (with dataset.json)")
    show.add_argument("--split", default="train", help="split to show (default: train)")
    show.add_argument("-n", "--num-images", type=int, default=8, help="number of examples (default: 8)")
    show.add_argument("--augment", action="store_true", help="apply the training augmentation")
    show.add_argument("--out", default=None, help="PNG file to write (default: DIR_<split>_grid.png)")


def run(args: argparse.Namespace) -> int:
    from kerasseg.cli import CommandError

    if args.data_command == "verify":
        from data_tools.errors import AnnotationError
        from data_tools.verify import verify_dataset

        try:
            report = verify_dataset(args.dataset_dir)
        except AnnotationError as e:
            raise CommandError(str(e)) from e
        print(report.to_text(), end="")
        return 0 if report.ok else 1
    if args.data_command == "show":
        if args.num_images < 1:
            raise CommandError(f"-n must be at least 1, got {args.num_images}")
        from kerasseg.data.visualize import save_batch_grid
        from kerasseg.schema import SchemaError

        out = args.out or f"{args.dataset_dir.rstrip('/')}_{args.split}_grid.png"
        try:
            path = save_batch_grid(
                args.dataset_dir, args.split, num_images=args.num_images, augment=args.augment, out_path=out
            )
        except (SchemaError, FileNotFoundError, ValueError) as e:
            raise CommandError(str(e)) from e
        print(f"wrote {path or out}")
        return 0
    raise CommandError(f"unknown data action {args.data_command!r}")  # pragma: no cover
