"""Console scripts ``labelme2tfrecord`` and ``masks2tfrecord``.

Both return an exit status: 0 success, 1 ``--verify`` found problems,
2 a user error (bad input, bad options, existing output), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from data_tools.errors import AnnotationError


def _add_common(parser: argparse.ArgumentParser) -> None:
    from kerasseg.image_limits import DEFAULT_MAX_PIXELS, ENV_VAR

    parser.add_argument("--split", default="train=0.8,val=0.2",
                        help="split names and fractions (default: train=0.8,val=0.2)")
    parser.add_argument("--split-file", default=None, metavar="FILE",
                        help="explicit splits instead of --split fractions: lines 'SOURCE_ID SPLIT' "
                        "(whitespace- or comma-separated; source id = file path relative to the input "
                        "folder without extension); every file must be listed")
    parser.add_argument("--folds", type=int, default=0,
                        help="also write K-fold lists of the train split to splits/ (default: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split shuffle (default: 0)")
    parser.add_argument("--shards", type=int, default=None,
                        help="shards per split (default: one per 500 examples)")
    parser.add_argument("--workers", type=int, default=1,
                        help="parallel worker processes (default: 1); output is identical for any count")
    parser.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                        help="stop: fail on the first bad file and write nothing (default); "
                        "skip: leave bad files out and list them in the report")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing converted OUTPUT_DIR (refused, naming them, when it "
                        "holds files the converter did not write)")
    parser.add_argument("--append", action="store_true",
                        help="add the converted files as new split(s) of the existing dataset OUTPUT_DIR "
                        "(e.g. --split test from another folder); classes and image type must agree")
    parser.add_argument("--preview", type=int, default=0, metavar="N",
                        help="write N overlay PNGs to OUTPUT_DIR/preview")
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help="refuse images and masks of more than N pixels (height x width), checked "
                        f"from the file header before decoding (default: ${ENV_VAR}, else "
                        f"{DEFAULT_MAX_PIXELS} = {DEFAULT_MAX_PIXELS / 1e6:g} megapixels)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", action="store_true",
                        help="keep TensorFlow's start-up and C++ log messages (hidden by default)")
    parser.add_argument("--verify", metavar="DIR", default=None,
                        help="only check an already converted dataset folder and exit")


def _labelme_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labelme2tfrecord",
        description="Convert a folder of labelme JSON annotations (any labelme version) into "
        "sharded TFRecords with dataset.json, reproducible splits and a report.",
    )
    parser.add_argument("input_dir", nargs="?", metavar="INPUT_DIR", help="folder of labelme *.json files")
    parser.add_argument("output_dir", nargs="?", metavar="OUTPUT_DIR", help="dataset folder to create")
    parser.add_argument("--labels", default=None,
                        help="labelme labels.txt (__ignore__, _background_, classes...); default: "
                        "INPUT_DIR/labels.txt if present, else the labels found, sorted")
    _add_common(parser)
    return parser


def _masks_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="masks2tfrecord",
        description="Convert a folder of images and a folder of mask files into sharded "
        "TFRecords with dataset.json, reproducible splits and a report.",
    )
    parser.add_argument("images_dir", nargs="?", metavar="IMAGES_DIR")
    parser.add_argument("masks_dir", nargs="?", metavar="MASKS_DIR")
    parser.add_argument("output_dir", nargs="?", metavar="OUTPUT_DIR")
    parser.add_argument("--mask-pattern", default=None,
                        help="mask file names of an image, {stem} = image name without extension "
                        "(default: '{stem}.*'; e.g. '{stem}_mask*.png'), or {id} with --image-pattern "
                        "(e.g. '{id}_manual1.gif'); several matches are combined")
    parser.add_argument("--image-pattern", default=None,
                        help="which files are images, with {id} once (e.g. '{id}_training.tif'): pairs images "
                        "with masks and ROI files named differently through the shared id")
    parser.add_argument("--roi-pattern", default=None,
                        help="an image's region-of-interest / field-of-view file ({stem} or {id}, e.g. "
                        "'{id}_training_mask.gif'): labels outside it become ignore (255) and the ROI is stored")
    parser.add_argument("--roi-dir", default=None, help="folder of the ROI files (default: MASKS_DIR)")
    parser.add_argument("--pairs", default=None, metavar="LIST.csv",
                        help="instead of IMAGES_DIR and MASKS_DIR: a CSV/TSV of 'image,mask[,roi]' rows "
                        "(paths relative to the list); then only OUTPUT_DIR is given")
    parser.add_argument("--threshold", type=float, default=None,
                        help="binary masks from grey values: value > T is class 1")
    parser.add_argument("--class-map", default=None,
                        help="file of 'VALUE NAME' lines (VALUE = grey level, palette index or R,G,B); "
                        "line order = class id; __ignore__ maps to 255")
    _add_common(parser)
    return parser


def _volumes_parser() -> argparse.ArgumentParser:
    from data_tools.volumes import DEFAULT_MAX_VOXELS

    parser = argparse.ArgumentParser(
        prog="volumes2tfrecord",
        description="Convert CT/MRI volumes (NIfTI, NRRD, MHA/MHD, DICOM series folders) and their label "
        "volumes (same names in LABELS_DIR) into sharded TFRecords keeping voxel type, spacing, origin and "
        "direction, with dataset.json, reproducible splits and folds, and a report.",
    )
    parser.add_argument("images_dir", nargs="?", metavar="IMAGES_DIR", help="image volumes (searched recursively)")
    parser.add_argument("labels_dir", nargs="?", metavar="LABELS_DIR", help="label volumes under the same names")
    parser.add_argument("output_dir", nargs="?", metavar="OUTPUT_DIR", help="dataset folder to create")
    parser.add_argument("--labels", default=None,
                        help="class names in id order: a text file (one a line), an MSD-style dataset.json "
                        "('labels': {'0': 'background', ...}) or 'background,liver,tumour'; default: "
                        "background, class_1, ... up to the highest id found")
    parser.add_argument("--slices", choices=("z", "y", "x"), default=None, metavar="AXIS",
                        help="write 2D slice records cut along AXIS (z, y or x) for the 2D models instead of "
                        "volume records")
    parser.add_argument("--max-voxels", type=int, default=None, metavar="N",
                        help=f"refuse volumes of more than N voxels x channels, checked from the header "
                        f"(default {DEFAULT_MAX_VOXELS})")
    _add_common(parser)
    for action in parser._actions:  # 2D-only options of the shared set
        if action.dest in ("max_pixels", "append"):
            action.help = argparse.SUPPRESS
    return parser


def _verify(path: str) -> int:
    from data_tools.verify import verify_dataset

    report = verify_dataset(path)
    print(report.to_text(), end="")
    return 0 if report.ok else 1


def _run(prog: str, call, *, verbose: bool = False) -> int:
    from kerasseg.tf_logging import quiet_tensorflow

    # TensorFlow loads (volumes, --verify) only once the sources are checked; labelme and mask folders never load it
    quiet_tensorflow(verbose=verbose)
    try:
        return call()
    except AnnotationError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing was written", file=sys.stderr)
        return 130


def labelme2tfrecord_main(argv: Sequence[str] | None = None) -> int:
    """``labelme2tfrecord INPUT_DIR OUTPUT_DIR [options]`` or ``labelme2tfrecord --verify DIR``."""
    parser = _labelme_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.verify:
        return _run(parser.prog, lambda: _verify(args.verify), verbose=args.verbose)
    if not args.input_dir or not args.output_dir:
        parser.error("INPUT_DIR and OUTPUT_DIR are required (or --verify DIR)")

    def call() -> int:
        from data_tools.converter import convert_labelme

        report = convert_labelme(
            args.input_dir, args.output_dir, labels=args.labels, split=args.split, folds=args.folds,
            seed=args.seed, shards=args.shards, workers=args.workers, on_error=args.on_error,
            overwrite=args.overwrite, preview=args.preview, progress=not args.no_progress,
            max_pixels=args.max_pixels, split_file=args.split_file, append=args.append,
        )
        print(report.to_text(), end="")
        print(f"report saved to {os.path.join(report.output_dir, 'report.txt')} (and report.json)")
        return 0

    return _run(parser.prog, call, verbose=args.verbose)


def masks2tfrecord_main(argv: Sequence[str] | None = None) -> int:
    """``masks2tfrecord IMAGES_DIR MASKS_DIR OUTPUT_DIR [options]``, ``--pairs LIST OUTPUT_DIR`` or ``--verify DIR``."""
    parser = _masks_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.verify:
        return _run(parser.prog, lambda: _verify(args.verify), verbose=args.verbose)
    if args.pairs:
        if args.masks_dir or not args.images_dir:
            parser.error("with --pairs LIST give only OUTPUT_DIR")
        if args.mask_pattern or args.image_pattern or args.roi_pattern or args.roi_dir:
            parser.error("--pairs names every file: --mask-pattern, --image-pattern, --roi-pattern and --roi-dir "
                         "do not apply")
    elif not (args.images_dir and args.masks_dir and args.output_dir):
        parser.error("IMAGES_DIR, MASKS_DIR and OUTPUT_DIR are required (or --pairs LIST OUTPUT_DIR, or --verify DIR)")

    def call() -> int:
        from data_tools.converter import convert_mask_folder, convert_mask_list

        common = dict(
            threshold=args.threshold, class_map=args.class_map, split=args.split, folds=args.folds,
            seed=args.seed, shards=args.shards, workers=args.workers, on_error=args.on_error,
            overwrite=args.overwrite, preview=args.preview, progress=not args.no_progress,
            max_pixels=args.max_pixels, split_file=args.split_file, append=args.append,
        )
        if args.pairs:
            report = convert_mask_list(args.pairs, args.images_dir, **common)
        else:
            report = convert_mask_folder(
                args.images_dir, args.masks_dir, args.output_dir, mask_pattern=args.mask_pattern,
                image_pattern=args.image_pattern, roi_pattern=args.roi_pattern, roi_dir=args.roi_dir, **common,
            )
        print(report.to_text(), end="")
        print(f"report saved to {os.path.join(report.output_dir, 'report.txt')} (and report.json)")
        return 0

    return _run(parser.prog, call, verbose=args.verbose)


def volumes2tfrecord_main(argv: Sequence[str] | None = None) -> int:
    """``volumes2tfrecord IMAGES_DIR LABELS_DIR OUTPUT_DIR [options]`` or ``volumes2tfrecord --verify DIR``."""
    parser = _volumes_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.verify:
        return _run(parser.prog, lambda: _verify(args.verify), verbose=args.verbose)
    if not (args.images_dir and args.labels_dir and args.output_dir):
        parser.error("IMAGES_DIR, LABELS_DIR and OUTPUT_DIR are required (or --verify DIR)")
    if args.append or args.max_pixels is not None:
        parser.error("--append and --max-pixels are options of the 2D converters (volumes: --max-voxels)")

    def call() -> int:
        from data_tools.volumes import convert_volumes

        report = convert_volumes(
            args.images_dir, args.labels_dir, args.output_dir, labels=args.labels, split=args.split,
            folds=args.folds, seed=args.seed, shards=args.shards, workers=args.workers, on_error=args.on_error,
            overwrite=args.overwrite, preview=args.preview, progress=not args.no_progress,
            max_voxels=args.max_voxels, split_file=args.split_file, slices=args.slices,
        )
        print(report.to_text(), end="")
        print(f"report saved to {os.path.join(report.output_dir, 'report.txt')} (and report.json)")
        return 0

    return _run(parser.prog, call, verbose=args.verbose)


__all__ = ["labelme2tfrecord_main", "masks2tfrecord_main", "volumes2tfrecord_main"]
