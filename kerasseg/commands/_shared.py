"""What several commands share: the inference flags, their parsing, opening a model with a split.

Commands import from here, never from each other.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from kerasseg.errors import CommandError


def add_inference_flags(parser: argparse.ArgumentParser, *, crf_help: str = "refine with the dense CRF") -> None:
    """``--crf``, ``--tta``, ``--tile``, ``--overlap`` and ``--normalization``."""
    parser.add_argument("--crf", action="store_true", help=crf_help)
    parser.add_argument("--tta", action="store_true", help="average predictions over flips")
    add_geometry_flags(parser)


def add_geometry_flags(parser: argparse.ArgumentParser) -> None:
    """``--tile``, ``--overlap`` and ``--normalization``: how images are fed to the model."""
    parser.add_argument("--tile", type=int, default=None, metavar="SIZE",
                        help="sliding-window tiles of SIZE at native scale instead of the model's own geometry "
                        "(model_info.json); 0 = the whole image at once")
    parser.add_argument("--overlap", type=float, default=None,
                        help="tile overlap fraction (default: the model's, 0.5)")
    add_normalization_flag(parser)


def add_normalization_flag(parser: argparse.ArgumentParser) -> None:
    """``--normalization``, read by :func:`parse_normalization`."""
    parser.add_argument("--normalization", default=None,
                        help="override the stored normalization: a method name, a YAML/JSON mapping "
                        "(e.g. '{method: window, center: 40, width: 400}') or a .yaml/.json file")


def parse_normalization(text: str | None) -> dict | None:
    """``--normalization`` value (a method name, YAML/JSON, or a file holding either) -> dict
    (``None`` when not given); its method and keys are checked."""
    if text is None:
        return None
    import yaml

    from kerasseg.config import yaml_load
    from kerasseg.data.preprocess import NormalizationError, check_normalization

    if os.path.isfile(text):
        try:
            with open(text, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise CommandError(f"--normalization: cannot read {text} ({e})") from None

    try:
        value = yaml_load(text)
    except yaml.YAMLError as e:
        raise CommandError(f"--normalization: not valid YAML ({e})") from None
    if isinstance(value, str):
        value = {"method": value}
    if not isinstance(value, dict) or "method" not in value:
        raise CommandError("--normalization: expected a method name or a mapping with 'method'")
    try:
        return check_normalization(value)
    except NormalizationError as e:
        raise CommandError(f"--normalization: {e}") from None


def geometry_for(loaded, tile: int | None, overlap: float | None):
    """The geometry of a command: the model's own (``model_info.json``), unless ``--tile``
    asks for tiles of that size at native scale (``--tile 0``: the whole image)."""
    from kerasseg import inference

    if tile is not None and tile < 0:
        raise CommandError(f"--tile must be >= 0, got {tile}")
    if overlap is not None and not 0.0 <= overlap < 1.0:
        raise CommandError(f"--overlap must be in [0, 1), got {overlap}")
    try:
        return inference.resolve_geometry(loaded.model, loaded.geometry, tile_size=tile, overlap=overlap)
    except inference.InferenceError as e:
        raise CommandError(str(e)) from None


def crf_params(stored: dict) -> dict:
    """dense_crf keyword arguments from the stored CRF settings."""
    from kerasseg.postprocess import CRFParams

    return CRFParams.from_dict(stored, origin="model_info.json crf").kwargs()


def open_model_and_split(model_path: str, data_dir: str, split: str, normalization: Any) -> tuple[Any, Any, list[str]]:
    """Load the model (safe mode, ``model_info.json``) and the dataset's ``dataset.json``.

    Returns:
        ``(loaded, info, class_names)``: the ``inference.load_for_inference``
        result, the ``DatasetInfo`` and the dataset's class names.

    Raises:
        CommandError: no dataset, no such split, an unreadable model, or a model
            whose class count differs from the dataset's.
    """
    from kerasseg import inference
    from kerasseg.schema import SchemaError, read_dataset_info

    try:
        info = read_dataset_info(data_dir)
    except SchemaError as e:
        raise CommandError(str(e)) from None
    if split not in info.splits:
        raise CommandError(f"{data_dir}: no split {split!r} (splits: {', '.join(sorted(info.splits))})")
    try:
        loaded = inference.load_for_inference(model_path, normalization=normalization)
    except inference.InferenceError as e:
        raise CommandError(str(e)) from None
    class_names = list(info.class_names)
    if loaded.num_classes != len(class_names):
        raise CommandError(
            f"{model_path} predicts {loaded.num_classes} classes {loaded.class_names} but "
            f"{data_dir} has {len(class_names)} {class_names}"
        )
    return loaded, info, class_names


def write_evaluation_reports(evaluator: Any, report_path: str, csv_path: str, *, unit: str = "image") -> None:
    """Write an evaluator's JSON report, its per-class CSV and ``<csv stem>_per_image.csv``, and say where.

    ``unit`` names a row of the per-image CSV in the message (``"image"`` or ``"volume"``).
    """
    for path in (report_path, csv_path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    per_image_path = os.path.splitext(csv_path)[0] + "_per_image.csv"
    evaluator.write_json(report_path)
    evaluator.write_csv(csv_path)
    evaluator.write_per_image_csv(per_image_path)
    print(f"report: {report_path}")
    print(f"csv: {csv_path} (per {unit}: {per_image_path})")


def add_plan_flags(parser: argparse.ArgumentParser) -> None:
    """The planner's options, shared by ``kerasseg plan`` and ``kerasseg train DATA --plan``."""
    parser.add_argument("--budget-minutes", type=float, default=None, metavar="M",
                        help="minutes of training to plan for on this machine (default: 30)")
    parser.add_argument("--model", default=None,
                        help="architecture: unet (default), attention_unet, segnet, deeplabv3plus, fcn8s, pspnet")
    parser.add_argument("--run-dir", default=None, help="run folder written into the config "
                        "(default: runs/<dataset>_<model>)")
    parser.add_argument("--val-split", default=None, help="validation split (default: val, when present)")
    parser.add_argument("--memory-gb", type=float, default=None,
                        help="memory to plan the batch size for (default: detected; 16 on a GPU)")
    parser.add_argument("--no-probe", action="store_true",
                        help="skip the timing probe (about a minute); the plan then runs 50 epochs")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (default: 0)")


def make_plan_from_args(dataset: str, args: argparse.Namespace) -> Any:
    """Plan ``dataset`` with the flags of :func:`add_plan_flags`; errors become ``CommandError``."""
    from kerasseg.planning import DEFAULT_BUDGET_MINUTES, PlanError, make_plan
    from kerasseg.schema import SchemaError

    if not os.path.isdir(dataset):
        raise CommandError(f"{dataset}: no such dataset folder (convert with labelme2tfrecord or masks2tfrecord)")
    try:
        return make_plan(
            dataset, budget_minutes=args.budget_minutes or DEFAULT_BUDGET_MINUTES, model=args.model,
            run_dir=args.run_dir, val_split=args.val_split, probe=not args.no_probe, memory_gb=args.memory_gb,
            seed=args.seed, log=lambda m: print(m, flush=True),
        )
    except (PlanError, SchemaError) as e:
        raise CommandError(str(e)) from None
