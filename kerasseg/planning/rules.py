"""The planning rules: fingerprint + machine -> a training config, each value with its reason.

Pure functions over plain data (no TensorFlow): :func:`draft` decides
everything but the run length, :func:`choose_batch_size` fits the batch to the
memory estimate and :func:`fit_to_budget` turns a timing probe into epochs and
steps per epoch. Where a rule rests on a measurement, the reason says which.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from kerasseg.config import Config, from_dict
from kerasseg.data.augment import RECOMMENDED_AUGMENTATION
from kerasseg.errors import PlanError
from kerasseg.planning.fingerprint import Fingerprint
from kerasseg.planning.hardware import Hardware

PLANNABLE_MODELS = ("unet", "attention_unet", "segnet", "deeplabv3plus", "fcn8s", "pspnet")
DEFAULT_MODEL = "unet"

# Largest native-scale training patch per device (the side of a square patch).
MAX_PATCH = {"CPU": 256, "GPU": 512}
# A training epoch is at least this many optimizer steps (validation is paid per epoch).
MIN_STEPS_PER_EPOCH = 4
# Validation (plus batch-norm re-estimation and checkpoints) may take this share of the budget.
VALIDATION_SHARE = 0.2
MIN_EPOCHS, MAX_EPOCHS = 4, 40
# The time limit written into the config, as a multiple of the budget (a machine slower than when probed).
TIME_LIMIT_FACTOR = 1.25

# Adam learning rate per architecture, trained from scratch: the rates with which each model
# learns ISBI membranes in tests/models/test_models_learn_real_data.py (SegNet needs the higher one).
LEARNING_RATES = {"unet": 1e-3, "attention_unet": 1e-3, "segnet": 3e-3, "deeplabv3plus": 1e-3,
                  "fcn8s": 1e-3, "pspnet": 1e-3}


@dataclasses.dataclass
class Decision:
    """One planned value: the config ``key`` (dotted), its ``value`` and why."""

    key: str
    value: Any
    reason: str


def _round_to(value: float, multiple: int, *, down: bool = True) -> int:
    steps = math.floor(value / multiple) if down else math.ceil(value / multiple)
    return max(multiple, int(steps) * multiple)


def _thin_classes(fp: Fingerprint) -> list[str]:
    """Foreground classes drawn as thin lines or networks (membranes, vessels, contours)."""
    out = []
    for c in fp.foreground_stats():
        if c.thickness_median and c.thickness_median < 8 and c.object_extent_p90 > 4 * c.thickness_median:
            out.append(c.name)
    return out


def _model_options(model: str, hw: Hardware, patch: int) -> tuple[dict, str]:
    cpu = not hw.gpu
    if model in ("unet", "attention_unet"):
        depth = 4 if patch >= 128 else max(2, int(math.log2(patch)) - 3)
        options: dict[str, Any] = {"base_filters": 32 if cpu else 64, "depth": depth}
        reason = (f"{'32 filters (a quarter of the paper width in multiply-adds, for a CPU)' if cpu else '64 filters (the paper)'}, "
                  f"{depth} poolings (the bottleneck sees {patch // 2 ** depth} px of a {patch} px patch)")
        if model == "unet":
            options["norm"] = "batch"
            reason += "; batch norm (faster from scratch, statistics re-estimated before validation)"
        return options, reason
    if model == "segnet":
        return {"base_filters": 32 if cpu else 64}, f"{'32' if cpu else '64 (the paper)'} filters in the first block"
    if model in ("deeplabv3plus", "pspnet"):
        backbone = "mobilenetv2" if cpu else "resnet50"
        return ({"backbone": backbone, "encoder_weights": None},
                f"{backbone} encoder from scratch (encoder_weights: null; give an ImageNet file to fine-tune)")
    if model == "fcn8s":
        return ({"base_filters": 32 if cpu else 64, "fc_filters": 512 if cpu else 4096},
                "VGG-16 layout" + (" at half width with 512-wide fully-convolutional layers (CPU)" if cpu else ""))
    raise PlanError(f"model {model!r} cannot be planned for a 2D dataset; choose one of {PLANNABLE_MODELS}")


def draft(fp: Fingerprint, hw: Hardware, *, model: str | None, dataset_dir: str, run_dir: str,
          val_split: str | None, size_divisor: int = 32, seed: int = 0) -> tuple[Config, list[Decision]]:
    """Every config value except the batch size and the run length, with reasons.

    ``size_divisor`` is the network stride the patch must be a multiple of
    (32 covers every 2D model here at its planned depth).
    """
    d: list[Decision] = []
    name = model or DEFAULT_MODEL
    if name not in PLANNABLE_MODELS:
        raise PlanError(f"unknown or unplannable model {name!r}; choose one of {PLANNABLE_MODELS}")
    d.append(Decision("model.name", name, "asked for (--model)" if model else
                      "U-Net: the best of the zoo from scratch on ISBI membranes (benchmarks/RESULTS.md)"))

    # --- validation split
    if val_split is None:
        val_split = next((s for s in ("val", "validation", "valid") if fp.splits.get(s)), "")
        reason = (f"split {val_split!r} of the dataset" if val_split else
                  "the dataset has no validation split: training runs without validation and keeps the last "
                  "epoch (convert with --split train=0.8,val=0.2 to validate)")
    else:
        if not fp.splits.get(val_split):
            raise PlanError(f"{dataset_dir}: no split {val_split!r} with examples (splits: {fp.splits})")
        reason = "asked for (--val-split)"
    d.append(Decision("data.val_split", val_split, reason))

    # --- geometry and patch
    max_patch = MAX_PATCH[hw.device]
    h, w = fp.median_size
    thin = _thin_classes(fp)
    compact = [c for c in fp.foreground_stats() if c.name not in thin]
    largest = max((c.object_extent_p90 for c in compact), default=0.0)
    if max(fp.height["max"], fp.width["max"]) <= max_patch:
        side = _round_to(max(fp.height["max"], fp.width["max"]), size_divisor, down=False)
        geometry, size = "random_crop", [side, side]
        reason = (f"whole images ({int(fp.height['max'])}x{int(fp.width['max'])} at most) fit a {side} px patch: "
                  "native scale, padding marked ignore")
    elif not thin and largest > max_patch:
        scale = max_patch / max(h, w)
        size = [_round_to(h * scale, size_divisor), _round_to(w * scale, size_divisor)]
        geometry = "resize"
        reason = (f"objects up to {largest:.0f} px (p90 extent) do not fit a native {max_patch} px patch and no "
                  f"class is thin: whole images resized to {size[0]}x{size[1]} (predict and evaluate resize the same way)")
    else:
        side = min(max_patch, _round_to(fp.min_side, size_divisor))
        geometry, size = "random_crop", [side, side]
        why = (f"thin structures ({', '.join(thin)}: {min(c.thickness_median for c in fp.foreground_stats() if c.name in thin):.1f} px "
               "thick) must not be scaled down" if thin else
               f"objects (p90 extent {largest:.0f} px) fit the patch")
        reason = f"{why}: {side}x{side} patches at native scale of {h}x{w} images; inference tiles the same size"
    d.append(Decision("data.geometry", geometry, reason))
    d.append(Decision("data.image_size", size, f"{'resized' if geometry == 'resize' else 'patch'} size, a multiple "
                      f"of the network stride {size_divisor}; at most {max_patch} px on a {hw.device}"))
    fg_fraction = min((c.pixel_fraction for c in fp.foreground_stats()), default=1.0)
    if geometry == "random_crop":
        ff = 0.67 if fg_fraction < 0.05 else 0.5
        d.append(Decision("data.foreground_fraction", ff,
                          f"share of patches centred on a labelled pixel; the rarest foreground class covers "
                          f"{100 * fg_fraction:.2f} % of pixels" + (" (raised for a rare class)" if ff > 0.5 else "")))

    # --- intensities
    signed = fp.intensity and fp.intensity["percentiles"][0] < 0
    if fp.image_dtype not in ("uint8", "uint16") or signed:
        lo, hi = (fp.foreground_intensity or fp.intensity)["percentiles"][0::2]
        norm = {"method": "window", "center": round((lo + hi) / 2, 3), "width": round(hi - lo, 3)}
        reason = (f"signed/float intensities (CT-like): clipped to the foreground's 0.5-99.5 percentiles "
                  f"[{lo:.4g}, {hi:.4g}] for every image, then scaled")
    else:
        norm = {"method": "zscore"}
        reason = (f"{fp.image_dtype} images with arbitrary contrast: each image to zero mean, unit std "
                  "(the same op runs in predict and the SavedModel)")
    d.append(Decision("data.normalization", norm, reason))

    # --- augmentation
    few = fp.splits.get("train", fp.examples_measured) < 100
    square = geometry == "random_crop" or size[0] == size[1]
    augmentation = dict(RECOMMENDED_AUGMENTATION, rot90=RECOMMENDED_AUGMENTATION["rot90"] if square else 0.0,
                        elastic=0.5 if few else RECOMMENDED_AUGMENTATION["elastic"])
    d.append(Decision("data.augmentation", augmentation,
                      "flips and 90-degree turns (" + ("square inputs" if square else "no 90-degree turns: not square")
                      + f"), small affine warps, elastic deformation{' (more often: a small set)' if few else ''}, "
                      "intensity jitter; the model sees a new variant of every example at each epoch"))
    cache_bytes = sum(fp.splits.values()) * h * w * fp.channels * (2 if fp.image_dtype == "uint16" else 1)
    cache = cache_bytes < min(2 << 30, hw.memory_bytes // 8)
    d.append(Decision("data.cache", cache, f"decoded images take about {cache_bytes / 2**20:.0f} MiB: "
                      + ("kept in memory" if cache else "too large to keep in memory")))

    # --- model
    options, reason = _model_options(name, hw, size[0])
    d.append(Decision("model.options", options, reason))

    # --- loss
    d.append(Decision("loss.name", "dice_ce", "Dice + cross-entropy: the Dice term balances classes by itself, the "
                      "cross-entropy keeps gradients useful early; no class weights needed"))
    d.append(Decision("data.class_weights", False, "the Dice term already balances a minority class"))

    # --- optimizer
    lr = LEARNING_RATES[name]
    d.append(Decision("optimizer.name", "adam", "Adam: robust from scratch without tuning"))
    d.append(Decision("optimizer.learning_rate", lr, f"the rate {name} learns with from scratch in our real-data tests"))
    d.append(Decision("schedule.name", "cosine", "cosine decay to the end of the budget: the last epochs refine"))
    d.append(Decision("schedule.min_learning_rate", lr / 100, "1 % of the starting rate"))
    mixed: bool | str = True if hw.gpu else "auto"
    if hw.gpu:
        precision = "mixed_float16 on the GPU"
    elif hw.cpu_bf16:
        precision = ("auto: mixed_bfloat16 on this CPU (native bfloat16; faster for U-Net and DeepLabv3+ at the "
                     "same Dice, benchmarks/RESULTS.md); the timing probe keeps the faster of the two")
    else:
        precision = ("auto: float32 here, this CPU has no native bfloat16 (emulated, it is several times slower); "
                     "bfloat16 on a CPU that has it")
    d.append(Decision("training.mixed_precision", mixed, precision))
    d.append(Decision("training.monitor", "val_foreground_dice" if val_split else "foreground_dice",
                      "best.keras is chosen on the foreground classes, ties to the later epoch"))
    d.append(Decision("callbacks.early_stopping_patience", None,
                      "no early stop: the schedule runs to its end and best.keras keeps the best epoch"))

    values: dict[str, Any] = {"run_dir": run_dir, "seed": seed, "data": {"path": dataset_dir}}
    for decision in d:
        section, _, key = decision.key.partition(".")
        values.setdefault(section, {})[key] = decision.value
    values["data"]["train_split"] = "train"
    values["training"].update({"epochs": 1, "batch_size": 1, "verbose": 2})
    values["callbacks"].update({"tensorboard": True, "backup": True})
    return from_dict(values), d


def choose_batch_size(per_example_bytes: float, hw: Hardware, *, n_train: int,
                      volumes: bool = False) -> tuple[int, str]:
    """The batch: 4 on a CPU (time per image does not fall with larger batches there), 8 on a GPU
    (volumes: 2, as nnU-Net), lowered until half the device memory holds it, never above the
    training examples."""
    target = 2 if volumes else (8 if hw.gpu else 4)
    fits = max(1, int(0.5 * hw.memory_bytes // max(per_example_bytes, 1.0)))
    batch = max(1, min(target, fits, n_train))
    said = "2 volume patches" if volumes else ("8 on a GPU" if hw.gpu else "4 on a CPU")
    reason = (f"{said}; one example needs about "
              f"{per_example_bytes / 2**20:.0f} MiB of activations in training, "
              f"{fits} fit in half of {hw.memory_bytes / 2**30:.1f} GiB")
    if batch < target:
        reason += f" -> {batch}" + (f" (only {n_train} training examples)" if batch == n_train else "")
    return batch, reason


@dataclasses.dataclass
class Timing:
    """What the probe measured: seconds per training step, per epoch end (validation,
    batch-norm re-estimation, checkpoints) and for starting a run (build, trace)."""

    step_seconds: float
    epoch_end_seconds: float
    startup_seconds: float
    probe_seconds: float


def fit_to_budget(budget_minutes: float, timing: Timing, *, n_train: int, batch_size: int
                  ) -> tuple[int, int, list[Decision]]:
    """Epochs and steps per epoch that fill ``budget_minutes`` of training.

    Validation is paid once per epoch, so the epoch count is what
    ``VALIDATION_SHARE`` of the budget buys (within ``MIN_EPOCHS..MAX_EPOCHS``);
    the steps fill the rest.
    """
    budget = budget_minutes * 60.0 - timing.startup_seconds
    if budget <= 0:
        raise PlanError(f"a budget of {budget_minutes:g} min does not cover starting the run "
                        f"({timing.startup_seconds:.0f} s measured); give a larger --budget-minutes")
    one_pass = max(1, math.ceil(n_train / batch_size))
    epochs = int(VALIDATION_SHARE * budget // max(timing.epoch_end_seconds, 1e-3))
    epochs = max(MIN_EPOCHS, min(MAX_EPOCHS, epochs))
    steps = int((budget - epochs * timing.epoch_end_seconds) // (epochs * max(timing.step_seconds, 1e-4)))
    if steps < MIN_STEPS_PER_EPOCH:
        epochs = max(1, int(budget // (MIN_STEPS_PER_EPOCH * timing.step_seconds + timing.epoch_end_seconds)))
        steps = MIN_STEPS_PER_EPOCH
    total = epochs * (steps * timing.step_seconds + timing.epoch_end_seconds) + timing.startup_seconds
    measured = (f"probe: {timing.step_seconds:.2f} s per step, {timing.epoch_end_seconds:.1f} s per validation, "
                f"{timing.startup_seconds:.0f} s to start")
    decisions = [
        Decision("training.epochs", epochs, f"{measured}; {epochs} validations take at most "
                 f"{100 * VALIDATION_SHARE:.0f} % of the budget (limits {MIN_EPOCHS}..{MAX_EPOCHS})"),
        Decision("training.steps_per_epoch", steps, f"fills the budget: {epochs} x {steps} steps of batch "
                 f"{batch_size} = {epochs * steps * batch_size / max(1, n_train):.0f} passes over {n_train} "
                 f"examples (one pass = {one_pass} steps); about {total / 60:.1f} min in all"),
        Decision("training.max_minutes", round(budget_minutes * TIME_LIMIT_FACTOR, 2),
                 f"stops after the epoch in which {TIME_LIMIT_FACTOR:g} x the budget has passed, "
                 "should this machine be slower than when probed"),
        Decision("schedule.warmup_epochs", 1 if epochs >= 10 else 0,
                 "one epoch of linear warm-up" if epochs >= 10 else "too few epochs for a warm-up"),
    ]
    return epochs, steps, decisions


def untimed(n_train: int, batch_size: int) -> list[Decision]:
    """Run length without a probe (``--no-probe``): 50 epochs of at least 25 steps."""
    steps = max(25, math.ceil(n_train / batch_size))
    return [
        Decision("training.epochs", 50, "not timed (--no-probe): 50 epochs; plan without --no-probe to fit a budget"),
        Decision("training.steps_per_epoch", steps, "one pass over the training split, at least 25 steps"),
        Decision("training.max_minutes", None, "no time limit"),
        Decision("schedule.warmup_epochs", 1, "one epoch of linear warm-up"),
    ]


__all__ = ["DEFAULT_MODEL", "Decision", "PLANNABLE_MODELS", "PlanError", "Timing", "choose_batch_size", "draft",
           "fit_to_budget", "untimed"]
