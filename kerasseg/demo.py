"""The end-to-end demo: labelme JSON -> TFRecords -> tf.data -> U-Net -> SavedModel.

``kerasseg demo`` runs every stage of the toolkit on a phantom dataset it
generates (see ``data_tools.phantom``), so a newcomer sees the whole path work
on their machine in minutes, with nothing to download:

1. write ~60 ultrasound-like frames with lesion outlines as labelme JSON;
2. convert them with ``labelme2tfrecord`` (fixed-seed train/val split);
3. train a U-Net with ``model.fit`` through ``kerasseg.data.load_dataset``,
   keeping the best epoch by validation Dice;
4. evaluate the validation split at full resolution (IoU, Dice per class);
5. write ``<name>_mask.png`` and an overlay per validation image;
6. export a SavedModel, reload it with ``tf.saved_model.load`` and check its
   mask equals the Keras model's.

The same steps, written out, are the Python API example in the README.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from typing import Callable

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
    def quick(cls) -> "DemoSettings":
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


class DemoFailed(RuntimeError):
    """Training diverged, missed its target, or the export disagreed."""


def run_demo(
    workdir: str | pathlib.Path,
    *,
    settings: DemoSettings | None = None,
    log: Callable[[str], None] = print,
    verbose: int | str = "auto",
) -> DemoSummary:
    """Run the whole demo in ``workdir`` (created; previous demo outputs replaced).

    Raises:
        DemoFailed: the loss became non-finite, the lesion Dice missed the
            target, or the reloaded SavedModel's mask differed from Keras'.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from data_tools.cli import labelme2tfrecord_main
    from data_tools.phantom import generate_phantom_dataset
    from kerasseg import data as ks_data
    from kerasseg import evaluation, inference, losses, metrics, models
    from kerasseg.export import export
    from kerasseg.schema import read_dataset_info

    settings = settings or DemoSettings()
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    keras.utils.set_random_seed(settings.seed)

    # 1. labelme annotations
    started = time.perf_counter()
    labelme_dir = workdir / "labelme"
    generate_phantom_dataset(
        labelme_dir, num_images=settings.num_images, size=settings.image_size, seed=settings.seed
    )
    log(f"wrote {settings.num_images} labelme annotations to {labelme_dir}")
    timings["generate"] = time.perf_counter() - started

    # 2. TFRecords
    started = time.perf_counter()
    records_dir = workdir / "records"
    status = labelme2tfrecord_main(
        [
            str(labelme_dir),
            str(records_dir),
            "--labels", str(labelme_dir / "labels.txt"),
            "--split", "train=0.8,val=0.2",
            "--seed", str(settings.seed),
            "--overwrite",
        ]
    )
    if status != 0:
        raise DemoFailed(f"labelme2tfrecord exited with status {status}")
    info = read_dataset_info(str(records_dir))
    class_names = list(info.class_names)
    timings["convert"] = time.perf_counter() - started

    # 3. training
    started = time.perf_counter()
    size = (settings.image_size, settings.image_size)
    normalization = {"method": "zscore"}
    augment = {"hflip": 0.5, "vflip": 0.5, "rot90": 0.5, "affine": 0.3, "brightness": 0.3, "contrast": 0.3,
               "gamma": 0.2, "noise": 0.2, "blur": 0.0}
    train_ds = ks_data.load_dataset(
        str(records_dir), "train", image_size=size, batch_size=settings.batch_size,
        augment=augment, normalization=normalization, shuffle=True, repeat=False,
        seed=settings.seed, cache=True,
    )
    val_ds = ks_data.load_dataset(
        str(records_dir), "val", image_size=size, batch_size=settings.batch_size,
        augment=None, normalization=normalization, shuffle=False, repeat=False, cache=True,
    )
    model = models.build(
        "unet",
        input_shape=(None, None, info.channels),
        num_classes=len(class_names),
        base_filters=settings.base_filters,
        depth=settings.depth,
        norm="batch",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(
                settings.learning_rate,
                decay_steps=settings.epochs * max(1, math.ceil(info.splits["train"] / settings.batch_size)),
                alpha=0.05,
            )
        ),
        loss=losses.get("dice_ce", num_classes=len(class_names)),
        metrics=metrics.default_metrics(len(class_names), class_names),
    )
    checkpoint_path = workdir / "best.keras"
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=settings.epochs,
        verbose=verbose,
        callbacks=[
            keras.callbacks.TerminateOnNaN(),
            keras.callbacks.ModelCheckpoint(
                str(checkpoint_path), monitor="val_mean_dice", mode="max", save_best_only=True
            ),
        ],
    )
    losses_seen = history.history.get("loss", [])
    if not losses_seen or not all(math.isfinite(v) for v in losses_seen):
        raise DemoFailed(f"training diverged: loss per epoch {losses_seen}")
    if len(losses_seen) < settings.epochs:
        raise DemoFailed(f"training stopped early after {len(losses_seen)} epochs (non-finite loss)")
    val_dice = history.history.get("val_mean_dice", [0.0])
    best_epoch = int(np.argmax(val_dice)) + 1
    model = keras.models.load_model(str(checkpoint_path), safe_mode=True)
    (workdir / "model_info.json").write_text(
        json.dumps(
            {"class_names": class_names, "normalization": normalization, "channels": info.channels},
            indent=2,
        )
    )
    timings["train"] = time.perf_counter() - started

    # 4. + 5. evaluation at full resolution and outputs per validation image
    started = time.perf_counter()
    evaluator = evaluation.SegmentationEvaluator(len(class_names), class_names)
    predictions_dir = workdir / "predictions"
    predictions_dir.mkdir(exist_ok=True)
    outputs: list[str] = []
    first_image = None
    for example in ks_data.iterate_examples(str(records_dir), "val"):
        image, mask, source_id = example["image"], example["mask"], example["source_id"]
        probabilities = inference.predict_probabilities(model, image, normalization=normalization)
        predicted = inference.probabilities_to_mask(probabilities)
        evaluator.update(mask, predicted)
        stem = pathlib.Path(source_id).stem
        for path, writer in (
            (predictions_dir / f"{stem}_mask.png", lambda p: inference.save_mask(p, predicted)),
            (predictions_dir / f"{stem}_overlay.png", lambda p: inference.save_overlay(p, image, predicted)),
        ):
            log(f"generating: {path}")
            writer(str(path))
            outputs.append(str(path))
        if first_image is None:
            first_image, first_mask = image, predicted
    report = evaluator.result()
    log(evaluator.format_table())
    lesion_index = class_names.index("lesion")
    lesion_dice = float(report["per_class"][class_names[lesion_index]]["dice"])
    timings["evaluate"] = time.perf_counter() - started

    # 6. SavedModel: export, reload, compare with Keras
    started = time.perf_counter()
    export_root = workdir / "savedmodel"
    export_dir = export(
        model, str(export_root), class_names=class_names, normalization=normalization,
        version=1, overwrite=True,
    )
    served = tf.saved_model.load(export_dir)
    batch = tf.constant(first_image[np.newaxis].astype(np.uint8))
    served_mask = served.signatures["serving_default"](images=batch)["mask"].numpy()[0]
    agrees = bool(np.array_equal(served_mask, first_mask.astype(served_mask.dtype)))
    log(f"SavedModel {export_dir} reloaded; its mask {'equals' if agrees else 'DIFFERS FROM'} the Keras model's")
    timings["export"] = time.perf_counter() - started

    summary = DemoSummary(
        class_names=class_names,
        report=report,
        lesion_dice=lesion_dice,
        best_epoch=best_epoch,
        epochs_run=len(losses_seen),
        outputs=outputs,
        savedmodel_dir=export_dir,
        savedmodel_agrees=agrees,
        seconds={k: round(v, 2) for k, v in timings.items()},
    )
    (workdir / "summary.json").write_text(json.dumps(dataclasses.asdict(summary), indent=2, default=float))
    log(f"lesion Dice on the validation split: {lesion_dice:.4f} (best epoch {best_epoch} of {len(losses_seen)})")
    if not agrees:
        raise DemoFailed("the reloaded SavedModel's mask differs from the Keras model's")
    target = settings.lesion_dice_target
    if target is not None and lesion_dice < target:
        raise DemoFailed(f"lesion Dice {lesion_dice:.4f} is below the demo's target {target:.2f}")
    return summary
