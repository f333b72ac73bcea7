"""The end-to-end demo: labelme JSON -> TFRecords -> tf.data -> U-Net -> SavedModel.

``kerasseg demo`` runs every stage of the toolkit on a phantom dataset it
generates (see ``data_tools.phantom``), so a newcomer sees the whole path work
on their machine in minutes, with nothing to download:

1. write ~60 ultrasound-like frames with lesion outlines as labelme JSON;
2. convert them with :func:`data_tools.convert_labelme` (fixed-seed train/val split);
3. train a U-Net with :func:`kerasseg.training.fit` — the loop ``kerasseg train``
   runs — from a :class:`kerasseg.config.Config`;
4. evaluate the validation split at full resolution with
   :func:`kerasseg.inference.predict_split` (IoU, Dice per class);
5. write ``<name>_mask.png`` and an overlay per validation image;
6. export a SavedModel, reload it with ``tf.saved_model.load`` and check its
   masks equal those of ``kerasseg predict``'s code path.

It is a short script over the public API; the same steps are the Python API
example in the README.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from collections.abc import Callable
from typing import Any

from kerasseg.atomic_files import write_text
from kerasseg.errors import DemoFailed

LESION_DICE_TARGET = 0.80


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run; ``quick()`` is the test-size version."""

    num_images: int = 60
    image_size: int = 128
    epochs: int = 40
    batch_size: int = 8
    base_filters: int = 16
    depth: int = 4
    learning_rate: float = 2e-3
    seed: int = 0
    lesion_dice_target: float | None = LESION_DICE_TARGET

    @classmethod
    def quick(cls) -> DemoSettings:
        return cls(
            num_images=16,
            image_size=64,
            epochs=3,
            batch_size=4,
            base_filters=4,
            depth=3,
            lesion_dice_target=None,
        )


@dataclasses.dataclass
class DemoSummary:
    """What the demo measured; also written to ``<workdir>/summary.json``."""

    class_names: list[str]
    report: dict
    lesion_dice: float
    best_epoch: int
    epochs_run: int
    outputs: list[str]
    savedmodel_dir: str
    savedmodel_agrees: bool
    seconds: dict[str, float]


def demo_config(workdir: pathlib.Path, settings: DemoSettings, *, verbose: int = 1) -> Any:
    """The training config of the demo (what ``kerasseg train`` would read from YAML)."""
    from kerasseg.config import from_dict

    return from_dict({
        "run_dir": str(workdir),
        "seed": settings.seed,
        "data": {
            "path": str(workdir / "records"),
            "image_size": [settings.image_size, settings.image_size],
            "normalization": {"method": "zscore"},
            "augmentation": {"hflip": 0.5, "vflip": 0.5, "rot90": 0.5, "affine": 0.3, "brightness": 0.3,
                             "contrast": 0.3, "gamma": 0.2, "noise": 0.2, "blur": 0.0},
            "cache": True,
        },
        "model": {"name": "unet", "options": {"base_filters": settings.base_filters, "depth": settings.depth,
                                              "norm": "batch"}},
        "loss": {"name": "dice_ce"},
        "optimizer": {"name": "adam", "learning_rate": settings.learning_rate},
        "schedule": {"name": "cosine", "min_learning_rate": settings.learning_rate * 0.05},
        "training": {"epochs": settings.epochs, "batch_size": settings.batch_size, "verbose": verbose,
                     "strategy": "default"},
        "callbacks": {"tensorboard": False, "backup": False},
    })


def run_demo(
    workdir: str | pathlib.Path,
    *,
    settings: DemoSettings | None = None,
    log: Callable[[str], None] = print,
    verbose: int = 1,
) -> DemoSummary:
    """Run the whole demo in ``workdir`` (created; previous demo outputs replaced).

    Raises:
        DemoFailed: training stopped on a non-finite loss, the lesion Dice missed
            the target, or the reloaded SavedModel's masks differed.
    """
    import numpy as np
    import tensorflow as tf

    from data_tools import convert_labelme
    from data_tools.phantom import generate_phantom_dataset
    from kerasseg import evaluation, inference, training
    from kerasseg.export import export

    settings = settings or DemoSettings()
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    # 1. labelme annotations
    started = time.perf_counter()
    labelme_dir = workdir / "labelme"
    generate_phantom_dataset(labelme_dir, num_images=settings.num_images, size=settings.image_size,
                             seed=settings.seed)
    log(f"wrote {settings.num_images} labelme annotations to {labelme_dir}")
    timings["generate"] = time.perf_counter() - started

    # 2. TFRecords
    started = time.perf_counter()
    records_dir = workdir / "records"
    convert_labelme(labelme_dir, records_dir, labels=labelme_dir / "labels.txt", split="train=0.8,val=0.2",
                    seed=settings.seed, overwrite=records_dir.exists(), log=log)
    timings["convert"] = time.perf_counter() - started

    # 3. training: the kerasseg train loop
    started = time.perf_counter()
    try:
        result = training.fit(demo_config(workdir, settings, verbose=verbose))
    except training.TrainingError as e:
        raise DemoFailed(f"training failed: {e}") from e
    losses_seen = result.history.get("loss", [])
    if len(losses_seen) < settings.epochs or not all(math.isfinite(v) for v in losses_seen):
        raise DemoFailed(f"training stopped early or diverged: loss per epoch {losses_seen}")
    loaded = inference.load_for_inference(result.best_model_path)
    class_names = loaded.class_names
    timings["train"] = time.perf_counter() - started

    # 4. + 5. evaluation at full resolution and outputs per validation image
    started = time.perf_counter()
    evaluator = evaluation.SegmentationEvaluator(len(class_names), class_names)
    predictions_dir = workdir / "predictions"
    predictions_dir.mkdir(exist_ok=True)
    outputs: list[str] = []
    images, masks = [], []
    for example, probabilities in inference.predict_split(loaded, str(records_dir), "val"):
        image, predicted = example["image"], inference.probabilities_to_mask(probabilities)
        evaluator.update(example["mask"], predicted, name=example["source_id"])
        stem = pathlib.Path(example["source_id"]).stem
        mask_path, overlay_path = predictions_dir / f"{stem}_mask.png", predictions_dir / f"{stem}_overlay.png"
        log(f"generating: {mask_path}")
        inference.save_mask(mask_path, predicted)
        log(f"generating: {overlay_path}")
        inference.save_overlay(overlay_path, image, predicted)
        outputs += [str(mask_path), str(overlay_path)]
        images.append(image)
        masks.append(predicted)
    report = evaluator.result()
    log(evaluator.format_table())
    lesion_dice = float(report["per_class"]["lesion"]["dice"])
    timings["evaluate"] = time.perf_counter() - started

    # 6. SavedModel: export with the model's own geometry, reload, compare
    started = time.perf_counter()
    export_dir = export(loaded.model, str(workdir / "savedmodel"), class_names=class_names,
                        normalization=loaded.normalization, geometry=loaded.geometry, version=1, overwrite=True)
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    agrees = all(np.array_equal(serve(images=tf.constant(im[np.newaxis]))["mask"].numpy()[0], m)
                 for im, m in zip(images, masks))
    log(f"SavedModel {export_dir} reloaded; its masks {'equal' if agrees else 'DIFFER FROM'} the Keras model's")
    timings["export"] = time.perf_counter() - started

    summary = DemoSummary(
        class_names=class_names,
        report=report,
        lesion_dice=lesion_dice,
        best_epoch=int(result.best_epoch or 0),
        epochs_run=len(losses_seen),
        outputs=outputs,
        savedmodel_dir=export_dir,
        savedmodel_agrees=agrees,
        seconds={k: round(v, 2) for k, v in timings.items()},
    )
    write_text(workdir / "summary.json", json.dumps(dataclasses.asdict(summary), indent=2, default=float))
    log(f"lesion Dice on the validation split: {lesion_dice:.4f} "
        f"(best epoch {summary.best_epoch} of {summary.epochs_run})")
    if not agrees:
        raise DemoFailed("the reloaded SavedModel's masks differ from the Keras model's")
    target = settings.lesion_dice_target
    if target is not None and lesion_dice < target:
        raise DemoFailed(f"lesion Dice {lesion_dice:.4f} is below the demo's target {target:.2f}")
    return summary
