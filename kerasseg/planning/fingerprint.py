"""The fingerprint of a converted 2D dataset: what a training plan is decided from.

:func:`fingerprint_dataset` reads ``dataset.json`` and decodes the stored
examples of the training split (all of them, or an evenly spaced sample of
``max_examples``), and measures:

* the number of examples per split, channels, storage type and the bits in use;
* image sizes (median, min, max of height and width) and whether they vary;
* spacing, when the records carry it (2D records do not: ``None``);
* intensity percentiles (0.5, 50, 99.5) and mean/std over all pixels and inside
  the foreground (pixels of a non-background class);
* per class: pixel fraction (from ``dataset.json``, ignore excluded), the
  fraction of images that contain it, connected objects per image, object
  area (median, 10th and 90th percentile, in pixels), the 90th percentile of the
  objects' bounding-box extent (longer side) and the median structure
  thickness (twice the mean distance of a class pixel to the nearest other pixel,
  so a 3-pixel-wide membrane reads about 3).

Everything is plain numbers, so a fingerprint is saved as JSON beside the plan.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from kerasseg.classes import foreground_indices

PERCENTILES = (0.5, 50.0, 99.5)
# pixels drawn per image for the intensity percentiles (seeded; exact below this count)
_PIXELS_PER_IMAGE = 200_000


@dataclasses.dataclass
class ClassStats:
    """Per-class shape statistics (pixels at the stored resolution)."""

    name: str
    pixel_fraction: float
    image_fraction: float
    objects_per_image: float
    object_area_p10: float
    object_area_median: float
    object_area_p90: float
    object_extent_p90: float
    thickness_median: float


@dataclasses.dataclass
class Fingerprint:
    """What :func:`fingerprint_dataset` measured; see the module docstring."""

    dataset: str
    split: str
    splits: dict[str, int]
    examples_measured: int
    channels: int
    image_dtype: str
    bits_used: int
    height: dict[str, float]
    width: dict[str, float]
    sizes_vary: bool
    spacing: Any
    intensity: dict[str, Any]
    foreground_intensity: dict[str, Any]
    ignore_fraction: float
    class_names: list[str]
    foreground_classes: list[int]
    classes: list[ClassStats]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def median_size(self) -> tuple[int, int]:
        return int(self.height["median"]), int(self.width["median"])

    @property
    def min_side(self) -> int:
        return int(min(self.height["min"], self.width["min"]))

    def summary(self) -> str:
        """One line for the head of the plan's YAML."""
        height, width = self.median_size
        return (f"median size {height}x{width}, {self.channels} channel(s), {self.image_dtype}, "
                + ", ".join(f"{c.name} {100 * c.pixel_fraction:.1f} %" for c in self.classes))

    def foreground_stats(self) -> list[ClassStats]:
        return [self.classes[i] for i in self.foreground_classes]

    def rows(self) -> list[tuple[str, str]]:
        """``(property, value)`` rows for the printed table."""
        h, w = self.height, self.width
        rows = [
            ("examples", ", ".join(f"{k} {v}" for k, v in self.splits.items())
             + f" (measured: {self.examples_measured} of {self.split})"),
            ("image size", f"median {int(h['median'])}x{int(w['median'])}, min {int(h['min'])}x{int(w['min'])}, "
                           f"max {int(h['max'])}x{int(w['max'])}" + (" (varies)" if self.sizes_vary else "")),
            ("channels / storage", f"{self.channels} / {self.image_dtype}, {self.bits_used} bits in use"),
            ("spacing", "not stored (2D records)" if self.spacing is None else str(self.spacing)),
            ("intensity p0.5/p50/p99.5", "/".join(_fmt(v) for v in self.intensity["percentiles"])
             + f", mean {_fmt(self.intensity['mean'])}, std {_fmt(self.intensity['std'])}"),
            ("foreground intensity", "none labelled" if not self.foreground_intensity else
             "/".join(_fmt(v) for v in self.foreground_intensity["percentiles"])
             + f", mean {_fmt(self.foreground_intensity['mean'])}, std {_fmt(self.foreground_intensity['std'])}"),
        ]
        if self.ignore_fraction:
            rows.append(("ignored pixels", f"{100 * self.ignore_fraction:.2f} %"))
        for c in self.classes:
            rows.append((f"class {c.name!r}",
                         f"{100 * c.pixel_fraction:.2f} % of pixels, in {100 * c.image_fraction:.0f} % of images, "
                         f"{c.objects_per_image:g} objects/image, area p10/median/p90 {_fmt(c.object_area_p10)}/"
                         f"{_fmt(c.object_area_median)}/{_fmt(c.object_area_p90)} px, extent p90 "
                         f"{_fmt(c.object_extent_p90)} px, thickness {_fmt(c.thickness_median)} px"))
        return rows


def _fmt(value: float) -> str:
    value = float(value)
    if value == int(value) and abs(value) < 1e7:
        return str(int(value))
    return f"{value:.4g}"


def _spread(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, np.float64)
    return {"median": float(np.median(arr)), "min": float(arr.min()), "max": float(arr.max())}


def _pixel_sample(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if pixels.size <= _PIXELS_PER_IMAGE:
        return pixels
    return rng.choice(pixels, _PIXELS_PER_IMAGE, replace=False)


def _summary(samples: list[np.ndarray], moments: Sequence[float]) -> dict[str, Any]:
    """Percentiles of the pooled samples; exact mean/std from the running moments."""
    count, total, total_sq = moments
    if not count:
        return {}
    pooled = np.concatenate(samples)
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean * mean, 0.0))
    return {"percentiles": [float(v) for v in np.percentile(pooled, PERCENTILES)],
            "percentile_levels": list(PERCENTILES), "mean": mean, "std": std}


def _objects(binary: np.ndarray) -> tuple[list[float], list[float], float]:
    """Areas and bounding-box extents of the 8-connected objects; mean thickness of ``binary``."""
    import cv2

    count, _, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    areas = [float(a) for a in stats[1:, cv2.CC_STAT_AREA]]
    extents = [float(max(wd, ht)) for wd, ht in zip(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT])]
    # distance to the nearest pixel outside the class (image borders count as outside)
    padded = np.pad(binary.astype(np.uint8), 1)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    thickness = float(2.0 * distance[binary].mean()) if binary.any() else 0.0
    return areas, extents, thickness


def fingerprint_dataset(dataset_dir: str, *, split: str = "train", max_examples: int = 200,
                        seed: int = 0) -> Fingerprint:
    """Measure ``split`` of the converted dataset at ``dataset_dir``; see the module docstring.

    Args:
        dataset_dir: a converted dataset folder (``dataset.json`` + shards).
        split: the split to measure (the one a model trains on).
        max_examples: decode at most this many examples (evenly spaced over the
            split); pixel fractions always come from ``dataset.json``'s counts.
        seed: seed of the pixel sampling behind the intensity percentiles.

    Raises:
        kerasseg.schema.SchemaError: not a converted dataset, or no such split.
    """
    from kerasseg import schema
    from kerasseg.data.pipeline import iterate_examples

    info = schema.read_dataset_info(dataset_dir)
    if not info.splits.get(split):
        raise schema.SchemaError(f"{dataset_dir}: split {split!r} holds no example (splits: {info.splits})")
    total = int(info.splits[split])
    stride = max(1, math.ceil(total / max(1, max_examples)))
    rng = np.random.default_rng(seed)
    fg = foreground_indices(info.class_names)
    k = info.num_classes
    heights, widths = [], []
    all_samples: list[np.ndarray] = []
    fg_samples: list[np.ndarray] = []
    all_moments = [0.0, 0.0, 0.0]
    fg_moments = [0.0, 0.0, 0.0]
    ignored = labelled = 0
    max_value = 0.0
    present = np.zeros(k)
    objects: list[list[int]] = [[] for _ in range(k)]
    areas: list[list[float]] = [[] for _ in range(k)]
    extents: list[list[float]] = [[] for _ in range(k)]
    thickness: list[list[float]] = [[] for _ in range(k)]
    measured = 0
    for index, example in enumerate(iterate_examples(dataset_dir, split)):
        if index % stride:
            continue
        measured += 1
        image = example["image"].astype(np.float64)
        mask = example["mask"]
        heights.append(mask.shape[0])
        widths.append(mask.shape[1])
        max_value = max(max_value, float(image.max()))
        intensity = image.mean(axis=-1)  # channels pooled: one intensity per pixel
        valid = mask != info.ignore_index
        ignored += int((~valid).sum())
        labelled += int(valid.sum())
        in_fg = np.isin(mask, fg) & valid
        for pixels, samples, moments in ((intensity.ravel(), all_samples, all_moments),
                                         (intensity[in_fg], fg_samples, fg_moments)):
            if pixels.size:
                samples.append(_pixel_sample(pixels, rng))
                moments[0] += pixels.size
                moments[1] += float(pixels.sum())
                moments[2] += float(np.square(pixels).sum())
        for c in range(k):
            binary = mask == c
            if not binary.any():
                objects[c].append(0)
                continue
            present[c] += 1
            a, e, t = _objects(binary)
            objects[c].append(len(a))
            areas[c] += a
            extents[c] += e
            thickness[c].append(t)
    counts = np.asarray(info.class_pixel_counts.get(split) or [0] * k, np.float64)
    fractions = counts / counts.sum() if counts.sum() else counts

    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) if values else 0.0

    classes = [
        ClassStats(
            name=info.class_names[c], pixel_fraction=float(fractions[c]), image_fraction=float(present[c] / measured),
            objects_per_image=round(float(np.median(objects[c])), 2) if objects[c] else 0.0,
            object_area_p10=pct(areas[c], 10), object_area_median=pct(areas[c], 50),
            object_area_p90=pct(areas[c], 90), object_extent_p90=pct(extents[c], 90),
            thickness_median=round(float(np.median(thickness[c])), 2) if thickness[c] else 0.0,
        )
        for c in range(k)
    ]
    return Fingerprint(
        dataset=str(dataset_dir), split=split, splits=dict(info.splits), examples_measured=measured,
        channels=int(info.channels), image_dtype=info.image_dtype,
        bits_used=max(1, int(math.ceil(math.log2(max_value + 1)))) if max_value > 0 else 1,
        height=_spread(heights), width=_spread(widths),
        sizes_vary=len(set(zip(heights, widths))) > 1, spacing=None,
        intensity=_summary(all_samples, tuple(all_moments)),
        foreground_intensity=_summary(fg_samples, tuple(fg_moments)),
        ignore_fraction=float(ignored / max(1, ignored + labelled)),
        class_names=list(info.class_names), foreground_classes=fg, classes=classes,
    )


__all__ = ["ClassStats", "Fingerprint", "PERCENTILES", "fingerprint_dataset"]
