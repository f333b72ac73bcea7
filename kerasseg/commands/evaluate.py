"""``kerasseg evaluate --model M --data D --split val``: full-resolution metrics.

Runs the model on every example of a converted dataset split at its stored
resolution (sliding window for images larger than the training size, as in
``predict``), optionally refines with the dense CRF and/or flip TTA, and
prints a table per class (IoU, Dice, sensitivity, specificity, HD95) with
mean IoU and pixel accuracy. Writes the report as JSON (``--report``, default
``<model folder>/evaluation_<split>.json``) and CSV beside it.
"""

from __future__ import annotations

import argparse
import os

from kerasseg.cli import CommandError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="trained model (.keras)")
    parser.add_argument("--data", required=True, help="converted dataset folder (with dataset.json)")
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    parser.add_argument("--crf", action="store_true", help="refine with the dense CRF")
    parser.add_argument("--tta", action="store_true", help="average predictions over flips")
    parser.add_argument("--report", default=None, help="JSON report path (CSV written beside it)")
    parser.add_argument("--csv", default=None, help="CSV path (default: the report path with .csv)")
    parser.add_argument("--tile", type=int, default=None, metavar="SIZE",
                        help="sliding-window tile size (default: the training size for larger images; 0 = off)")
    parser.add_argument("--overlap", type=float, default=0.5, help="tile overlap fraction (default 0.5)")
    parser.add_argument("--spacing", type=float, nargs=2, default=None, metavar=("DY", "DX"),
                        help="pixel spacing for surface distances (default: pixels)")
    parser.add_argument("--normalization", default=None,
                        help="override the stored normalization (method name or YAML mapping)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples")


def run(args: argparse.Namespace) -> int:
    from kerasseg.commands.predict import crf_params, parse_normalization, tile_for

    if not 0.0 <= args.overlap < 1.0:
        raise CommandError(f"--overlap must be in [0, 1), got {args.overlap}")
    normalization = parse_normalization(args.normalization)

    from kerasseg import inference

    from kerasseg.commands._model_and_data import open_model_and_split

    loaded, info, class_names = open_model_and_split(args.model, args.data, args.split, normalization)
    params = None
    if args.crf or loaded.crf.get("enabled"):
        from kerasseg.postprocess import CRFConfigError, dense_crf

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

    from kerasseg.data import iterate_examples
    from kerasseg.data.preprocess import NormalizationError
    from kerasseg.evaluation import SegmentationEvaluator

    evaluator = SegmentationEvaluator(
        len(class_names), class_names, spacing=tuple(args.spacing) if args.spacing else None
    )
    total = int(info.splits[args.split])
    if args.limit is not None:
        total = min(total, args.limit)
    progress = tqdm.tqdm(total=total, desc=f"evaluate {args.split}", unit="image")
    try:
        for index, example in enumerate(iterate_examples(args.data, args.split)):
            if index >= total:
                break
            image, truth = example["image"], example["mask"]
            try:
                probs = inference.predict_probabilities(
                    loaded.model, image, normalization=loaded.normalization,
                    tile_size=tile_for(image.shape, args.tile, loaded.image_size),
                    overlap=args.overlap, tta=args.tta,
                )
            except inference.InferenceError as e:
                raise CommandError(f"{args.data} {example['source_id']}: {e}") from None
            except NormalizationError as e:
                raise CommandError(f"normalization: {e}") from None
            if params is not None:
                probs, _ = dense_crf(image, probs, **params)
            evaluator.update(truth, inference.probabilities_to_mask(probs))
            progress.update(1)
    finally:
        progress.close()

    print(evaluator.format_table())
    os.makedirs(os.path.dirname(os.path.abspath(report_path)), exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(csv_path)), exist_ok=True)
    evaluator.write_json(report_path)
    evaluator.write_csv(csv_path)
    print(f"report: {report_path}")
    print(f"csv: {csv_path}")
    return 0
