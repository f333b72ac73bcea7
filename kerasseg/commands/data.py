"""``kerasseg data``: inspect converted datasets.

* ``kerasseg data verify DIR``: read every record, check it decodes, image and
  mask sizes agree and counts match ``dataset.json`` (exit 1 on problems);
* ``kerasseg data show DIR --split train -n 8 [--augment] [--image-size H W]
  [--config CONFIG.yaml] [--out FILE]``: save a grid of images with their masks
  as the training pipeline yields them; with ``--config``, exactly what that
  config's training feeds the model (geometry, patch size, normalization,
  augmentation), DIR defaulting to its ``data.path``.
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
    show.add_argument("dataset_dir", metavar="DIR", nargs="?", default=None,
                      help="converted dataset folder (with dataset.json; default with --config: its data.path)")
    show.add_argument("--split", default="train", help="split to show (default: train)")
    show.add_argument("-n", "--num-images", type=int, default=8, help="number of examples (default: 8)")
    show.add_argument("--augment", action="store_true", help="apply the default training augmentation")
    show.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                      help="resize to H x W (default: each image's own size)")
    show.add_argument("--config", default=None, metavar="CONFIG.yaml",
                      help="show what this training config feeds the model (its geometry, size, normalization "
                      "and augmentation)")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="with --config: override a config value, as kerasseg train --set")
    show.add_argument("--out", default=None, help="PNG file to write (default: DIR_<split>_grid.png)")


def run(args: argparse.Namespace) -> int:
    from kerasseg.errors import CommandError

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

        config = None
        if args.config:
            from kerasseg.config import ConfigError, load_config

            try:
                config = load_config(args.config, args.overrides)
            except ConfigError as e:
                raise CommandError(str(e)) from None
            if args.augment or args.image_size:
                raise CommandError("--config decides the augmentation and size; drop --augment/--image-size "
                                   "(or change them with --set)")
        elif args.overrides:
            raise CommandError("--set needs --config")
        dataset_dir = args.dataset_dir or (config.data.path if config is not None else None)
        if not dataset_dir:
            raise CommandError("give the dataset folder DIR (or --config with a data.path)")
        out = args.out or f"{dataset_dir.rstrip('/')}_{args.split}_grid.png"
        try:
            path = save_batch_grid(
                dataset_dir, args.split, num_images=args.num_images, augment=args.augment, out_path=out,
                image_size=tuple(args.image_size) if args.image_size else None, config=config,
            )
        except (SchemaError, FileNotFoundError, ValueError) as e:
            raise CommandError(str(e)) from e
        print(f"wrote {path or out}")
        return 0
    raise CommandError(f"unknown data action {args.data_command!r}")  # pragma: no cover
