"""``kerasseg evaluate --model M --data D --split val``: full-resolution metrics.

Runs the model on every example of a converted dataset split at its stored
resolution, applied the way it was trained (the geometry in
``model_info.json``, with the code ``predict`` and the SavedModel run),
optionally refines with the dense CRF and/or flip TTA, and
prints a table per class (IoU, Dice, sensitivity, specificity, HD95) with
mean IoU and pixel accuracy. From the predicted probabilities (with ``--crf``,
the CRF's marginals) it also reports per class AUC-ROC and AUC-PR (average
precision), one-vs-rest, and the best F1 over thresholds with the threshold
reaching it (:mod:`kerasseg.curves_auc`), with the mean AUCs over the
foreground classes. Per-image records carry the example's ``name`` (its source
id) and ``filename``. Writes the report as JSON (``--report``, default
``<model folder>/evaluation_<split>.json``) and CSV beside it.

For a volume model on a volume dataset every volume is predicted with the
sliding window at its stored grid, and HD95/ASSD are in mm from each volume's
spacing (:mod:`kerasseg.commands._volumes`); the per-image CSV has one row per volume.
"""

from __future__ import annotations

import argparse
import os
import sys

from kerasseg.errors import CommandError
from kerasseg.commands._shared import (
    add_inference_flags,
    crf_params,
    geometry_for,
    open_model_and_split,
    parse_normalization,
    write_evaluation_reports,
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="trained model (.keras)")
    parser.add_argument("--data", required=True, help="converted dataset folder (with dataset.json)")
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    add_inference_flags(parser)
    parser.add_argument("--report", default=None, help="JSON report path (CSV written beside it)")
    parser.add_argument("--csv", default=None, help="CSV path (default: the report path with .csv)")
    parser.add_argument("--spacing", type=float, nargs=2, default=None, metavar=("DY", "DX"),
                        help="pixel spacing for surface distances (default: pixels)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples")


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise CommandError(f"--limit must be >= 1, got {args.limit}")
    normalization = parse_normalization(args.normalization)

    from kerasseg import inference

    loaded, info, class_names = open_model_and_split(args.model, args.data, args.split, normalization)
    if loaded.info is not None and loaded.info.volume is not None:
        from kerasseg.commands import _volumes

        report_path = args.report or os.path.join(os.path.dirname(os.path.abspath(args.model)),
                                                  f"evaluation_{args.split}{'_tta' if args.tta else ''}.json")
        return _volumes.evaluate(args, loaded, info, class_names, report_path,
                                 args.csv or os.path.splitext(report_path)[0] + ".csv")
    if info.is_volume:
        raise CommandError(f"{args.data} holds volumes but {args.model} is a 2D model (no volume section in "
                           "its model_info.json)")
    loaded.geometry = geometry_for(loaded, args.tile, args.overlap)
    params = None
    if args.crf or loaded.crf.get("enabled"):
        from kerasseg.postprocess import CRFConfigError

        try:
            params = crf_params(loaded.crf)
        except CRFConfigError as e:
            raise CommandError(str(e)) from None

    report_path = args.report or os.path.join(
        os.path.dirname(os.path.abspath(args.model)),
        f"evaluation_{args.split}{'_crf' if params else ''}{'_tta' if args.tta else ''}.json",
    )
    csv_path = args.csv or os.path.splitext(report_path)[0] + ".csv"

    import tqdm

    from kerasseg.data.preprocess import NormalizationError
    from kerasseg.evaluation import SegmentationEvaluator

    evaluator = SegmentationEvaluator(
        len(class_names), class_names, spacing=tuple(args.spacing) if args.spacing else None,
        ignore_index=info.ignore_index,
    )
    total = int(info.splits[args.split])
    if args.limit is not None:
        total = min(total, args.limit)
    print(f"geometry: {loaded.geometry.describe()}", file=sys.stderr)
    progress = tqdm.tqdm(total=total, desc=f"evaluate {args.split}", unit="image", file=sys.stderr)
    try:
        for example, probs in inference.predict_split(loaded, args.data, args.split, tta=args.tta,
                                                      crf=params, limit=total):
            evaluator.update(example["mask"], inference.probabilities_to_mask(probs),
                             name=example["source_id"], probabilities=probs,
                             filename=example["filename"])
            progress.update(1)
    except inference.InferenceError as e:
        raise CommandError(str(e)) from None
    except NormalizationError as e:
        raise CommandError(f"normalization: {e}") from None
    finally:
        progress.close()

    print(evaluator.format_table())
    write_evaluation_reports(evaluator, report_path, csv_path, unit="image")
    return 0
