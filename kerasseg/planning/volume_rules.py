"""Planning a volume run (``dataset.json`` ``dimensions: 3``): the fingerprint and the rules.

A volume dataset's fingerprint is already in ``dataset.json`` (the converter
measured it on the training split): spacing and shape per axis (median, min,
max), the storage type, intensities overall and inside the labels, and the
voxels of each class. :func:`volume_fingerprint` reads it; :func:`draft_volume`
decides everything but the run length, each value with its reason, in the
spirit of nnU-Net's rules (target spacing = the median spacing; the patch =
the median volume at that spacing, rounded up to the network's stride and
capped by the device; per-volume z-score for MRI, clipping to the foreground
percentiles and a dataset z-score for CT). Pure functions, no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from kerasseg.config import Config, from_dict
from kerasseg.models.registry import VOLUME_MODELS
from kerasseg.planning.hardware import Hardware
from kerasseg.planning.rules import Decision, PlanError
# Largest training patch per device, in voxels (nnU-Net-sized patches only fit a GPU).
MAX_PATCH_VOXELS = {"CPU": 64 * 96 * 96, "GPU": 128 * 128 * 128}
# 3D U-Net width per device: on 2 CPU cores a 16-filter 3D U-Net costs 4x the time of an 8-filter one.
BASE_FILTERS = {"CPU": 8, "GPU": 32}
DEPTH = 3
# spacings differing by less than this ratio are the same grid (no resampling)
_SAME_SPACING = 1.05


@dataclasses.dataclass
class VolumeClass:
    name: str
    pixel_fraction: float  # of the labelled voxels of the training split


@dataclasses.dataclass
class VolumeFingerprint:
    """What ``dataset.json`` says about a volume dataset's training split."""

    dataset: str
    split: str
    splits: dict[str, int]
    examples_measured: int
    channels: int
    image_dtype: str
    spacing: dict[str, list[float]]
    shape: dict[str, list[float]]
    intensity: dict[str, Any]
    foreground_intensity: dict[str, Any]
    class_names: list[str]
    classes: list[VolumeClass]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One line for the head of the plan's YAML."""
        d, h, w = (int(v) for v in self.shape["median"])
        return (f"median volume {d}x{h}x{w} voxels at " + "x".join(f"{v:g}" for v in self.spacing["median"])
                + f" mm, {self.channels} channel(s), {self.image_dtype}, "
                + ", ".join(f"{c.name} {100 * c.pixel_fraction:.2f} %" for c in self.classes))

    def rows(self) -> list[tuple[str, str]]:
        def axes(stats: dict[str, list[float]], unit: str) -> str:
            return ", ".join(f"{key} " + "x".join(f"{v:g}" for v in stats[key]) + unit
                             for key in ("median", "min", "max"))

        fg = self.foreground_intensity
        rows = [
            ("examples", ", ".join(f"{k} {v}" for k, v in self.splits.items())),
            ("volume shape (D x H x W)", axes(self.shape, "")),
            ("spacing (z x y x x)", axes(self.spacing, " mm")),
            ("channels / storage", f"{self.channels} / {self.image_dtype}"),
            ("foreground intensity", "none labelled" if not fg else
             f"p0.5 {fg['p00_5'][0]:.4g}, p99.5 {fg['p99_5'][0]:.4g}, mean {fg['mean'][0]:.4g}, "
             f"std {fg['std'][0]:.4g}"),
        ]
        rows += [(f"class {c.name!r}", f"{100 * c.pixel_fraction:.3f} % of voxels") for c in self.classes]
        return rows


def volume_fingerprint(info: Any, dataset_dir: str, *, split: str = "train") -> VolumeFingerprint:
    """The fingerprint of a converted volume dataset, from its ``dataset.json``."""
    stats = info.volume or {}
    for key in ("spacing", "shape"):
        if not isinstance(stats.get(key), dict) or "median" not in stats[key]:
            raise PlanError(f"{dataset_dir}: dataset.json has no volume.{key} statistics; convert the volumes "
                            "again with this kerasseg's volumes2tfrecord")
    counts = info.class_pixel_counts.get(split) or [0] * info.num_classes
    total = max(1, sum(counts))
    return VolumeFingerprint(
        dataset=dataset_dir, split=split, splits=dict(info.splits), examples_measured=int(info.splits.get(split, 0)),
        channels=int(info.channels), image_dtype=str(info.image_dtype), spacing=stats["spacing"],
        shape=stats["shape"], intensity=dict(info.intensity), foreground_intensity=dict(stats.get(
            "foreground_intensity") or {}), class_names=list(info.class_names),
        classes=[VolumeClass(name, counts[i] / total) for i, name in enumerate(info.class_names)],
    )


def _round_up(value: float, multiple: int) -> int:
    return max(multiple, int(math.ceil(value / multiple)) * multiple)


def choose_spacing(fp: VolumeFingerprint) -> tuple[list[float] | None, str]:
    """Resample to the median spacing when spacings differ; else keep every volume's own grid."""
    low, high, median = fp.spacing["min"], fp.spacing["max"], fp.spacing["median"]
    same = all(hi / max(lo, 1e-9) < _SAME_SPACING for lo, hi in zip(low, high))
    shown = "x".join(f"{v:g}" for v in median)
    if same:
        return None, f"every training volume is at {shown} mm already: no resampling"
    return [float(v) for v in median], (f"spacings differ ({'x'.join(f'{v:g}' for v in low)} .. "
                                        f"{'x'.join(f'{v:g}' for v in high)} mm): resample to the median {shown} mm")


def choose_patch(fp: VolumeFingerprint, spacing: list[float] | None, hw: Hardware) -> tuple[list[int], str]:
    """The median volume at the target spacing, rounded up to the stride, shrunk to the device's cap."""
    stride = 2 ** DEPTH
    median = [float(v) for v in fp.shape["median"]]
    if spacing is not None:
        median = [m * s / t for m, s, t in zip(median, fp.spacing["median"], spacing)]
    patch = [_round_up(m, stride) for m in median]
    cap = MAX_PATCH_VOXELS[hw.device]
    shrunk = False
    while patch[0] * patch[1] * patch[2] > cap:
        axis = max(range(3), key=lambda i: patch[i])
        if patch[axis] <= stride:
            break
        patch[axis] -= stride
        shrunk = True
    reason = (f"the median volume {'x'.join(f'{m:.0f}' for m in median)} rounded up to a multiple of "
              f"{stride} (2^{DEPTH} poolings): whole volumes fit one patch")
    if shrunk:
        reason = (f"the median volume {'x'.join(f'{m:.0f}' for m in median)} is more than the "
                  f"{cap} voxels a {hw.device} patch may hold: shrunk along the longest axes, multiples of {stride}")
    return patch, reason


def choose_normalization(fp: VolumeFingerprint) -> tuple[dict, str]:
    """CT (signed integers reaching below -500: Hounsfield units) gets clipping + a dataset z-score."""
    low = min(fp.intensity.get("min") or [0.0])
    if fp.image_dtype in ("int16", "int32") and low < -500 and fp.foreground_intensity:
        return {"method": "clip_zscore"}, (
            f"{fp.image_dtype} voxels down to {low:g} look like CT (Hounsfield units): clip to the foreground "
            "0.5/99.5 percentiles, then z-score with the foreground mean/std of dataset.json (as nnU-Net)")
    return {"method": "zscore"}, "MRI-like intensities without a physical scale: z-score each volume (as nnU-Net)"


def draft_volume(fp: VolumeFingerprint, hw: Hardware, *, model: str | None, dataset_dir: str, run_dir: str,
                 val_split: str | None, seed: int) -> tuple[Config, list[Decision]]:
    """Everything but the run length for a volume dataset; each value with its reason."""
    from kerasseg.data.augment3d import RECOMMENDED_AUGMENTATION_3D

    name = model or VOLUME_MODELS[0]
    if name not in VOLUME_MODELS:
        raise PlanError(f"{dataset_dir} holds volumes: --model must be one of {VOLUME_MODELS}, got {name!r}")
    if not fp.foreground_intensity and all(c.pixel_fraction == 0 for c in fp.classes[1:]):
        raise PlanError(f"{dataset_dir}: the training split has no labelled voxel to learn from")
    spacing, spacing_reason = choose_spacing(fp)
    patch, patch_reason = choose_patch(fp, spacing, hw)
    normalization, norm_reason = choose_normalization(fp)
    val = val_split if val_split is not None else ("val" if fp.splits.get("val") else "")
    filters = BASE_FILTERS[hw.device]
    d = [
        Decision("run_dir", run_dir, "where the run folder goes"),
        Decision("seed", seed, "the seed of weights, patches and augmentation"),
        Decision("data.path", dataset_dir, "the converted volumes"),
        Decision("data.val_split", val, "validation split" if val else "no validation split in the dataset"),
        Decision("data.spacing", spacing, spacing_reason),
        Decision("data.image_size", patch, patch_reason),
        Decision("data.geometry", "random_crop", "volumes train on random patches, inferred with a sliding window"),
        Decision("data.foreground_fraction", 0.33, "a third of the patches centred on a labelled voxel of a random "
                 "class (rare classes are seen), the rest anywhere (as nnU-Net)"),
        Decision("data.normalization", normalization, norm_reason),
        Decision("data.augmentation", dict(RECOMMENDED_AUGMENTATION_3D), "the recommended 3D set: flips, in-plane "
                 "turns, small rotations and scaling, elastic, intensity, gamma, noise"),
        Decision("data.cache", True, "decoded volumes are kept in memory (all fit)"),
        Decision("model.name", name, "3D U-Net (Çiçek et al. 2016)" if name == "unet3d" else
                 "asked for (--model): 3D Attention U-Net (Oktay et al. 2018), attention gates on the skips"),
        Decision("model.options", {"base_filters": filters, "depth": DEPTH, "norm": "instance"},
                 f"{filters} filters on a {hw.device}; {DEPTH} poolings; instance norm for batches of 2 "
                 "volumes (batch statistics of 2 are noise)"),
        Decision("loss.name", "dice_ce", "Dice + cross-entropy (nnU-Net's loss)"),
        Decision("optimizer.name", "adam", "Adam trains a 3D U-Net from scratch reliably"),
        Decision("optimizer.learning_rate", 1e-3, "Adam's usual rate, with cosine decay"),
        Decision("schedule.name", "cosine", "cosine decay over the run"),
        Decision("training.mixed_precision", "mixed_bfloat16" if hw.cpu_bf16 and not hw.gpu else False,
                 "float32 on GPU unless asked" if hw.gpu else
                 "bfloat16 compute on a CPU with native bfloat16: a 3D U-Net step took 0.53 s instead of 0.78 s"
                 if hw.cpu_bf16 else
                 "float32: this CPU has no native bfloat16 (emulated, a 3D U-Net step took 17 s instead of 3.7 s)"),
        Decision("training.monitor", "val_foreground_dice" if val else "foreground_dice",
                 "mean Dice over the labelled classes picks best.keras"),
        Decision("training.batchnorm_recalibration_steps", 0, "instance norm keeps no running statistics"),
    ]
    values: dict[str, Any] = {"data": {"train_split": "train"}, "training": {"batch_size": 2, "verbose": 2},
                              "callbacks": {"tensorboard": True, "backup": True}, "model": {}, "loss": {},
                              "optimizer": {}, "schedule": {}}
    for decision in d:
        section, _, key = decision.key.partition(".")
        if key:
            values.setdefault(section, {})[key] = decision.value
        else:
            values[section] = decision.value
    values["training"]["epochs"] = 1
    return from_dict(values), d


__all__ = ["VOLUME_MODELS", "VolumeFingerprint", "volume_fingerprint", "draft_volume", "choose_spacing",
           "choose_patch", "choose_normalization"]
