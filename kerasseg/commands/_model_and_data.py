"""Shared by the commands that run a trained model over a converted split
(``evaluate``, ``crf-tune``): open both and check they belong together."""

from __future__ import annotations

from typing import Any


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
    from kerasseg.cli import CommandError
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
