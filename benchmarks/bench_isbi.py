"""Accuracy on real data: ISBI 2012 EM membranes, 5-fold cross-validation.

For each model (U-Net, SegNet, DeepLabv3+ with MobileNetV2) and each fold of
the fixed split in ``isbi_folds.json`` (24 training / 6 validation slices,
seeded permutation, committed), the slices are converted with the product's
own ``masks2tfrecord``, the model is trained with the zoo's building blocks
(Dice+CE loss, random 256x256 crops at full resolution, flips, 90-degree
rotations, affine and elastic deformation) for a fixed CPU-time budget, then the
six validation slices are predicted at full 512x512 resolution and scored with
and without the dense CRF.

Figures per model (mean over the folds run): ``isbi_<model>_mean_dice`` (Dice
averaged over the two classes, the definition behind NVIDIA's published 0.89),
``isbi_<model>_membrane_dice``, ``isbi_<model>_membrane_iou``,
``isbi_<model>_pixel_error`` (1 - pixel accuracy; the U-Net paper reports
0.0611 on the challenge's hidden test set) and ``isbi_<model>_mean_dice_crf``.
The learning curve (validation mean Dice per epoch) is kept in
``_work/isbi/curves.json``.

Usage: ``python benchmarks/bench_isbi.py [--quick] [--models unet ...]
[--folds 0 1 2 3 4] [--minutes-per-fold 4]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
SHARED = pathlib.Path(os.environ.get("KERASSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
ISBI_TRAIN = SHARED / "isbi2012_membrane" / "data" / "membrane" / "train"
WORK = HERE / "_work" / "isbi"
CLASS_NAMES = ["membrane", "cell"]  # label 0 (dark) = membrane, 255 = cell interior

ANCHORS = {
    "NVIDIA TF2 U-Net, 5-fold mean Dice": 0.89,
    "U-Net paper pixel error (challenge test set)": 0.0611,
    "zhixuhao/unet training accuracy": 0.97,
}

MODEL_SETTINGS = {
    "unet": {"name": "unet", "options": {"base_filters": 32, "depth": 4}},
    "segnet": {"name": "segnet", "options": {}},
    "deeplabv3plus": {"name": "deeplabv3plus", "options": {"backbone": "mobilenetv2"}},
}

AUGMENT = {
    "hflip": 0.5, "vflip": 0.5, "rot90": 0.5, "affine": 0.3, "elastic": 0.5,
    "brightness": 0.3, "contrast": 0.3, "gamma": 0.2, "noise": 0.0, "blur": 0.0,
}


def load_folds() -> list[dict]:
    return json.loads((HERE / "isbi_folds.json").read_text())["folds"]


def convert_fold(fold_index: int, fold: dict, out_root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Convert the fold's slices with the product's mask-folder converter.

    The fixed fold assignment is staged as two image + mask folders (symbolic
    links to ``../shared/data``), each converted into its own dataset holding
    a single split: ``fold{k}/train`` (split ``train``) and ``fold{k}/val``
    (split ``val``). Returns both dataset folders.
    """
    from data_tools import convert_mask_folder

    class_map = out_root / "class_map.txt"
    class_map.write_text("0 membrane\n255 cell\n")
    outputs = []
    for split, ids in (("train", fold["train"]), ("val", fold["val"])):
        dataset_dir = out_root / f"fold{fold_index}" / split
        outputs.append(dataset_dir)
        if (dataset_dir / "dataset.json").is_file():
            continue
        dataset_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = out_root / "staging" / f"fold{fold_index}_{split}"
        for kind, source in (("images", "image"), ("masks", "label")):
            folder = staging / kind
            folder.mkdir(parents=True, exist_ok=True)
            for slice_id in ids:
                copy = folder / f"{slice_id}.png"
                if not copy.exists():  # copies: the converter refuses symlinks that leave the folder
                    shutil.copyfile(ISBI_TRAIN / source / f"{slice_id}.png", copy)
        convert_mask_folder(
            staging / "images", staging / "masks", dataset_dir,
            mask_pattern="{stem}.png", class_map=class_map, split=f"{split}=1", overwrite=True,
        )
    return outputs[0], outputs[1]


class TimeBudget:
    """Keras callback factory: stop training once ``seconds`` have passed."""

    @staticmethod
    def make(seconds: float):
        import keras

        class _TimeBudget(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                if time.perf_counter() - self.started > seconds:
                    self.model.stop_training = True

        return _TimeBudget()


def train_and_score(model_key: str, train_dir: pathlib.Path, val_dir: pathlib.Path, *, seconds: float, crop: int,
                    batch_size: int, steps_per_epoch: int, quick: bool, seed: int) -> dict:
    import keras
    import numpy as np

    from kerasseg import data, evaluation, inference, losses, metrics, models
    from kerasseg.postprocess import dense_crf_batch

    keras.utils.set_random_seed(seed)
    settings = MODEL_SETTINGS[model_key]
    options = dict(settings["options"])
    if quick:
        options = {"unet": {"base_filters": 4, "depth": 2}, "segnet": {"base_filters": 8},
                   "deeplabv3plus": {"backbone": "mobilenetv2", "alpha": 0.35}}.get(model_key, options)
    normalization = {"method": "zscore"}
    train = data.load_dataset(
        str(train_dir), "train", image_size=crop, geometry="random_crop", batch_size=batch_size,
        augment=AUGMENT, normalization=normalization, shuffle=True, repeat=True, seed=seed, cache=True,
    )
    model = models.build(settings["name"], input_shape=(None, None, 1), num_classes=2, **options)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=losses.get("dice_ce", num_classes=2),
        metrics=metrics.default_metrics(2, CLASS_NAMES),
    )
    examples = list(data.iterate_examples(str(val_dir), "val"))
    if quick:
        examples = [{**ex, "image": ex["image"][:128, :128], "mask": ex["mask"][:128, :128]} for ex in examples[:2]]

    def score(with_crf: bool) -> dict:
        evaluator = evaluation.SegmentationEvaluator(2, CLASS_NAMES)
        probs = [inference.predict_probabilities(model, ex["image"], normalization=normalization) for ex in examples]
        if with_crf:
            images = [ex["image"] for ex in examples]
            _, predicted = dense_crf_batch(images, probs, n_jobs=2)
        else:
            predicted = [inference.probabilities_to_mask(p) for p in probs]
        for ex, pred in zip(examples, predicted):
            evaluator.update(ex["mask"], np.asarray(pred))
        return evaluator.result()

    curve: list[float] = []

    class _Curve(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if not quick and epoch % 2 == 1:
                curve.append(round(float(score(False)["mean_dice"]), 4))

    started = time.perf_counter()
    history = model.fit(train, epochs=1000, steps_per_epoch=steps_per_epoch, verbose=0,
                        callbacks=[TimeBudget.make(seconds), _Curve()])
    train_seconds = time.perf_counter() - started
    plain, with_crf = score(False), score(True)
    membrane = plain["per_class"]["membrane"]
    return {
        "mean_dice": plain["mean_dice"],
        "membrane_dice": membrane["dice"],
        "membrane_iou": membrane["iou"],
        "pixel_error": 1.0 - plain["pixel_accuracy"],
        "mean_dice_crf": with_crf["mean_dice"],
        "membrane_dice_crf": with_crf["per_class"]["membrane"]["dice"],
        "pixel_error_crf": 1.0 - with_crf["pixel_accuracy"],
        "epochs": len(history.history["loss"]),
        "train_seconds": train_seconds,
        "params": model.count_params(),
        "curve_val_mean_dice": curve,
    }


def run(quick: bool = False, *, models=("unet", "segnet", "deeplabv3plus"), folds=None,
        minutes_per_fold: float = 4.0) -> dict:
    """Run the cross-validation; returns the ``isbi_*`` figures (empty if the data is absent)."""
    if not ISBI_TRAIN.is_dir():
        print(f"skipped: {ISBI_TRAIN} is absent (ISBI 2012 data lives in ../shared/data)")
        return {}
    fold_list = load_folds()
    folds = list(folds if folds is not None else ([0] if quick else range(len(fold_list))))
    seconds = 8.0 if quick else minutes_per_fold * 60.0
    WORK.mkdir(parents=True, exist_ok=True)
    per_model: dict[str, list[dict]] = {}
    for model_key in models:
        for k in folds:
            train_dir, val_dir = convert_fold(k, fold_list[k], WORK)
            result = train_and_score(
                model_key, train_dir, val_dir, seconds=seconds, crop=64 if quick else 256,
                batch_size=2 if quick else 4, steps_per_epoch=2 if quick else 24, quick=quick, seed=k,
            )
            per_model.setdefault(model_key, []).append({"fold": k, **result})
            print(f"{model_key} fold {k}: mean Dice {result['mean_dice']:.4f} "
                  f"(CRF {result['mean_dice_crf']:.4f}), membrane Dice {result['membrane_dice']:.4f}, "
                  f"pixel error {result['pixel_error']:.4f}, {result['epochs']} epochs in "
                  f"{result['train_seconds']:.0f} s", flush=True)
    (WORK / "curves.json").write_text(json.dumps(per_model, indent=2, default=float))
    figures: dict[str, float] = {}
    for model_key, rows in per_model.items():
        for key in ("mean_dice", "membrane_dice", "membrane_iou", "pixel_error", "mean_dice_crf"):
            figures[f"isbi_{model_key}_{key}"] = float(sum(r[key] for r in rows) / len(rows))
        figures[f"isbi_{model_key}_folds"] = float(len(rows))
        figures[f"isbi_{model_key}_minutes_per_fold"] = seconds / 60.0
    print("anchors: " + "; ".join(f"{k} {v}" for k, v in ANCHORS.items()))
    for key in sorted(figures):
        print(f"{key}: {figures[key]:.4f}")
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="ISBI 2012 membrane 5-fold accuracy benchmark")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", nargs="*", default=list(MODEL_SETTINGS), choices=list(MODEL_SETTINGS))
    parser.add_argument("--folds", nargs="*", type=int)
    parser.add_argument("--minutes-per-fold", type=float, default=4.0)
    args = parser.parse_args(argv)
    run(args.quick, models=args.models, folds=args.folds, minutes_per_fold=args.minutes_per_fold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
