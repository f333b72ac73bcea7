"""``kerasseg crf-tune --model M --data D --split val``: grid-search dense-CRF parameters.

Predicts every example of a converted dataset split at full resolution (as
``kerasseg evaluate`` does), then refines the predictions with every setting
of a parameter grid and scores them against the stored masks: Dice (mean over
foreground classes), mean Dice, pixel accuracy and boundary accuracy, each
with and without the CRF. The best setting is written as a ``crf:`` section
into a YAML config (``--out``; an existing YAML file keeps its other keys), with
``enabled: true`` only when it beat the un-refined prediction; all results go
to a JSON file beside it.

Grid syntax: ``--grid "bilateral_srgb=5,13,30;bilateral_compat=3,10"`` or a
YAML/JSON file mapping parameter names to lists. Parameters not in the grid
come from the model's stored ``crf`` settings (``model_info.json``), else the
reference defaults.

The predictions of the whole split are held in memory (H x W x K float32 per
image); use ``--limit`` for large splits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from kerasseg.atomic_files import write_text
from kerasseg.errors import CommandError
from kerasseg.commands._shared import add_geometry_flags, geometry_for, open_model_and_split, parse_normalization


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="trained model (.keras)")
    parser.add_argument("--data", required=True, help="converted dataset folder (with dataset.json)")
    parser.add_argument("--split", default="val", help="split to tune on (default: val)")
    parser.add_argument("--grid", default=None,
                        help="NAME=V1,V2;NAME=... or a YAML file {name: [values]} "
                        "(default: bilateral_sxy x bilateral_srgb x bilateral_compat x gaussian_compat, 36 settings)")
    parser.add_argument("--out", default="best_crf.yaml",
                        help="YAML config to write the best 'crf:' section into (default: best_crf.yaml)")
    parser.add_argument("--results", default=None,
                        help="JSON with every setting's scores (default: beside --out, <name>_results.json)")
    parser.add_argument("--metric", default="dice",
                        choices=("dice", "mean_dice", "pixel_accuracy", "boundary_accuracy"),
                        help="score that picks the best setting (default: dice = mean foreground Dice)")
    parser.add_argument("--band", type=int, default=3,
                        help="boundary accuracy: pixels within this distance of a true boundary (default 3)")
    parser.add_argument("--n-jobs", type=int, default=1, help="CRF worker processes (-1: all CPUs)")
    parser.add_argument("--tta", action="store_true", help="average predictions over flips")
    add_geometry_flags(parser)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N examples")


def load_grid(text: str | None) -> dict[str, list[Any]] | None:
    """``--grid`` value -> grid mapping (``None``: the default grid)."""
    from kerasseg.postprocess import CRFConfigError, parse_grid

    if text is None:
        return None
    try:
        if os.path.isfile(text):
            import yaml

            try:
                with open(text, encoding="utf-8") as f:
                    data = yaml.safe_load(f)
            except (OSError, yaml.YAMLError) as e:
                raise CommandError(f"--grid {text}: cannot read YAML ({e})") from None
            if isinstance(data, dict) and isinstance(data.get("grid"), dict):
                data = data["grid"]
            if not isinstance(data, dict) or not data:
                raise CommandError(f"--grid {text}: expected a mapping {{parameter: [values]}}")
            return {str(k): (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in data.items()}
        return parse_grid(text)
    except CRFConfigError as e:
        raise CommandError(f"--grid: {e}") from None


def write_config(path: str, section: dict) -> None:
    """Put ``section`` under ``crf:`` in the YAML file ``path`` (created or updated atomically)."""
    import yaml

    data: dict = {}
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                loaded = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as e:
            raise CommandError(f"{path}: exists but is not readable YAML ({e}); choose another --out") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise CommandError(f"{path}: exists but is not a YAML mapping; choose another --out")
        data = loaded or {}
    data["crf"] = section
    write_text(path, yaml.safe_dump(data, sort_keys=False))


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise CommandError(f"--limit must be >= 1, got {args.limit}")
    if args.band < 0:
        raise CommandError(f"--band must be >= 0, got {args.band}")
    grid = load_grid(args.grid)
    normalization = parse_normalization(args.normalization)

    from kerasseg import inference
    from kerasseg.postprocess import CRFConfigError, CRFError, CRFParams, expand_grid, tune_crf
    from kerasseg.postprocess.tuning import DEFAULT_GRID

    loaded, info, class_names = open_model_and_split(args.model, args.data, args.split, normalization)
    loaded.geometry = geometry_for(loaded, args.tile, args.overlap)
    try:
        base = CRFParams.from_dict(loaded.crf or None, origin=f"{args.model} model_info.json crf")
        settings = expand_grid(grid if grid is not None else DEFAULT_GRID, base)
    except CRFConfigError as e:
        raise CommandError(str(e)) from None

    import tqdm

    from kerasseg.data.preprocess import NormalizationError

    total = int(info.splits[args.split])
    if args.limit is not None:
        total = min(total, args.limit)
    images, probabilities, masks, names = [], [], [], []
    progress = tqdm.tqdm(total=total, desc=f"predict {args.split}", unit="image", file=sys.stderr)
    try:
        for example, probs in inference.predict_split(loaded, args.data, args.split, tta=args.tta, limit=total):
            images.append(example["image"])
            probabilities.append(probs)
            masks.append(example["mask"])
            names.append(f"{args.data} {example['source_id']}")
            progress.update(1)
    except inference.InferenceError as e:
        raise CommandError(str(e)) from None
    except NormalizationError as e:
        raise CommandError(f"normalization: {e}") from None
    finally:
        progress.close()
    if not images:
        raise CommandError(f"{args.data}: split {args.split!r} has no examples")

    print(f"CRF grid: {len(settings)} settings x {len(images)} images, n_jobs={args.n_jobs}", file=sys.stderr)
    bar = tqdm.tqdm(total=len(settings), desc="crf settings", unit="setting", file=sys.stderr)
    try:
        result = tune_crf(
            images, probabilities, masks, grid if grid is not None else DEFAULT_GRID, args.n_jobs,
            base=base, num_classes=len(class_names), ignore_index=info.ignore_index, band=args.band,
            metric=args.metric, names=names, progress=lambda done, n, s: bar.update(1),
        )
    except CRFError as e:
        raise CommandError(str(e)) from None
    finally:
        bar.close()

    print(result.format_table())
    best = result.best_scores
    verdict = (
        f"best setting improves {args.metric} {result.baseline[args.metric]:.4f} -> {best[args.metric]:.4f}; "
        "written with enabled: true"
        if result.improved
        else f"no setting beat the prediction without CRF ({args.metric} {result.baseline[args.metric]:.4f}, "
        f"best with CRF {best[args.metric]:.4f}); written with enabled: false"
    )
    print(verdict)
    write_config(args.out, result.best_params.to_dict(minimal=True))
    results_path = args.results or os.path.splitext(args.out)[0] + "_results.json"
    report = {"model": os.path.abspath(args.model), "data": os.path.abspath(args.data), "split": args.split,
              "images": len(images), "class_names": class_names, **result.to_dict()}
    write_text(results_path, json.dumps(report, indent=2, allow_nan=True) + "\n")
    print(f"config: {args.out} (crf section)")
    print(f"results: {results_path}")
    return 0
