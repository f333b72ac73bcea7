"""Per-volume work of ``volumes2tfrecord``, run in worker processes (no TensorFlow here).

Each function takes one picklable task and returns a plain dict; a problem
with the files is returned (``{"ok": False, "path", "problem"}``), not
raised, so results come back in task order whatever the worker count.

* :func:`check_pair`: read both headers, refuse bad dimensions, sizes and a
  label grid that differs from the image's (nothing decoded);
* :func:`measure_range`: min and max of an image (the ``--slices`` mapping);
* :func:`convert_pair`: read both volumes, check the labels, and return what
  the records, statistics and preview need.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from data_tools.errors import AnnotationError
from kerasseg.schema import IGNORE_INDEX
from kerasseg.volume_io import VolumeError, geometry_difference, read_volume, read_volume_info

UINT16_MAX = 65535
AXIS_NAMES = "zyx"


@dataclasses.dataclass(frozen=True)
class PairTask:
    """One image/label pair (picklable).

    Attributes:
        position: index in the task list (results come back in this order).
        case: the case id (source id of a volume record).
        split: the split it goes to.
        image, label: the image and label volume paths (file or DICOM folder).
        filename: the image path relative to IMAGES_DIR (``image/filename``).
        max_voxels: voxel limit of :func:`kerasseg.volume_io.read_volume`.
        num_classes: label ids must be below it (or 255); ``None``: any 0..255.
        preview: also return an overlay PNG of the middle slice.
        axis: ``None`` for volume records, else the array axis to cut 2D slices along.
        mapping: ``(offset, scale)``: slices store ``round((voxel - offset) * scale)``
            as uint16; ``None``: voxels stored as they are (uint8/uint16).
        sample_cap: foreground voxels kept per channel for the percentiles (see
            :func:`foreground_sample`).
    """

    position: int
    case: str
    split: str
    image: str
    label: str
    filename: str
    max_voxels: int | None = None
    num_classes: int | None = None
    preview: bool = False
    axis: int | None = None
    mapping: tuple[float, float] | None = None
    sample_cap: int = 100_000


def _failed(task: PairTask, error: BaseException) -> dict:
    if isinstance(error, (AnnotationError, VolumeError)):
        return {"ok": False, "position": task.position, "path": error.path or task.image, "problem": error.problem}
    return {"ok": False, "position": task.position, "path": task.image,
            "problem": f"unexpected {type(error).__name__}: {error}"}


def _guarded(function):
    def run(task: PairTask) -> dict:
        try:
            return function(task)
        except MemoryError:
            raise
        except Exception as e:  # an odd file must not kill the whole run silently
            return _failed(task, e)

    # published as the module attribute of the public name, which is how pickle finds it in workers
    run.__name__ = run.__qualname__ = function.__name__.lstrip("_")
    run.__doc__ = function.__doc__
    return run


def _check_pair(task: PairTask) -> dict:
    """Headers of the image and its label volume: 3D, within the voxel limit, the same grid."""
    image = read_volume_info(task.image, max_voxels=task.max_voxels)
    label = read_volume_info(task.label, max_voxels=task.max_voxels)
    _check_label_grid(task, image, label)
    return {"ok": True, "position": task.position, "image": image, "label": label}


def _check_label_grid(task: PairTask, image: Any, label: Any) -> None:
    if label.channels != 1:
        raise AnnotationError(task.label, f"label volume has {label.channels} components per voxel; a label volume "
                              "holds one class id per voxel")
    difference = geometry_difference(label, image)
    if difference is not None:
        raise AnnotationError(task.label, f"label volume does not lie on the grid of its image "
                              f"{os.path.basename(task.image)}: {difference}")


def _measure_range(task: PairTask) -> dict:
    """Lowest and highest voxel of the image (every channel)."""
    image = read_volume(task.image, max_voxels=task.max_voxels)
    return {"ok": True, "position": task.position, "min": float(image.voxels.min()), "max": float(image.voxels.max())}


def label_ids(voxels: np.ndarray, *, path: str, num_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Label voxels as uint8 class ids, and their counts per id (``(256,)`` int64).

    Float labels holding whole numbers (``0.``, ``1.``, ``2.``) are accepted.

    Raises:
        AnnotationError: naming ``path`` and a voxel: a value that is not a whole
            number, negative, above 255, or (with ``num_classes``) not a class id
            below ``num_classes`` and not 255 (ignore).
    """
    if voxels.dtype.kind == "f":
        fractional = np.rint(voxels) != voxels
        if fractional.any():
            where = tuple(int(i) for i in np.argwhere(fractional)[0])
            raise AnnotationError(path, f"label values must be whole numbers (class ids): voxel {where} (z, y, x) "
                                  f"holds {float(voxels[where])!r} ({int(fractional.sum())} voxel(s) are not whole)")
    if voxels.size:  # an empty volume has no value out of range
        low, high = voxels.min(), voxels.max()
        for bad, what in ((low < 0, "negative"), (high > IGNORE_INDEX, f"above {IGNORE_INDEX}")):
            if bad:
                value = low if low < 0 else high
                where = tuple(int(i) for i in np.argwhere(voxels == value)[0])
                raise AnnotationError(path, f"label value {value.item()!r} at voxel {where} (z, y, x) is {what}: "
                                      f"class ids are 0..254 (0 = background) and {IGNORE_INDEX} = ignore")
    ids = voxels.astype(np.uint8)
    counts = np.bincount(ids.ravel(), minlength=256).astype(np.int64)
    if num_classes is not None:
        unknown = [v for v in np.nonzero(counts)[0].tolist() if num_classes <= v < IGNORE_INDEX]
        if unknown:
            raise AnnotationError(path, f"label value(s) {unknown} are not class ids: the class list names "
                                  f"{num_classes} classes (ids 0..{num_classes - 1}; {IGNORE_INDEX} = ignore)")
    return ids, counts


def moments(values: np.ndarray) -> dict:
    """Per-channel sum, sum of squares, min, max and count of ``(N, C)`` values.

    Integer types up to 16 bits sum exactly in int64 (Python ints come back);
    int32 and floats sum in float64 (numpy's pairwise sum: the same for the
    same array, so totals do not depend on the worker count).
    """
    exact = values.dtype.kind in "ui" and values.dtype.itemsize <= 2
    sums: list[int | float] = []
    sumsq: list[int | float] = []
    lows, highs = [], []
    for c in range(values.shape[1]):
        channel = values[:, c]
        if exact:
            wide = channel.astype(np.int64)
            sums.append(int(wide.sum()))
            sumsq.append(int((wide * wide).sum()))
        else:
            wide = channel.astype(np.float64)
            sums.append(float(wide.sum()))
            sumsq.append(float((wide * wide).sum()))
        lows.append(channel.min().item() if channel.size else 0)
        highs.append(channel.max().item() if channel.size else 0)
    return {"sum": sums, "sumsq": sumsq, "min": lows, "max": highs, "count": int(values.shape[0])}


def foreground_sample(values: np.ndarray, cap: int) -> list[tuple[np.ndarray, float]]:
    """Per channel, the sorted foreground values (float64) and the weight of each.

    A volume with at most ``cap`` values per channel gives all of them (weight
    1, so the dataset percentiles are exact); a larger one gives ``cap``
    evenly spaced order statistics (the mid-points of ``cap`` equal runs of
    its sorted values), each of weight ``count / cap``.
    """
    out = []
    for c in range(values.shape[1]):
        ordered = np.sort(values[:, c].astype(np.float64))
        n = ordered.size
        if n <= cap:
            out.append((ordered, 1.0))
        else:
            picks = ((np.arange(cap, dtype=np.float64) + 0.5) * n / cap).astype(np.int64)
            out.append((ordered[picks], n / cap))
    return out


def window_uint8(pixels: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """uint8 for display: uint8 as it is; other types mapped linearly from the 0.5/99.5
    percentiles of ``reference`` (default ``pixels``) to 0..255."""
    if pixels.dtype == np.uint8:
        return pixels
    data = pixels.astype(np.float64)
    lo, hi = np.percentile((data if reference is None else reference).astype(np.float64), [0.5, 99.5])
    return (np.clip((data - lo) / max(hi - lo, 1e-12), 0, 1) * 255).round().astype(np.uint8)


def _preview_png(voxels: np.ndarray, ids: np.ndarray, axis: int) -> bytes:
    from data_tools.images import encode_png
    from data_tools.preview import overlay

    channel = voxels if voxels.ndim == 3 else voxels[..., 0]
    middle = channel.shape[axis] // 2
    pixels = window_uint8(np.take(channel, middle, axis=axis), channel)
    return encode_png(overlay(pixels[:, :, None], np.take(ids, middle, axis=axis)))


def to_slice_pixels(voxels: np.ndarray, mapping: tuple[float, float] | None) -> tuple[np.ndarray, int]:
    """Voxels as PNG-able uint8/uint16, and how many were clipped to 0..65535.

    ``mapping`` ``(offset, scale)`` gives ``uint16(round((voxel - offset) * scale))``;
    without one, uint8 and uint16 voxels are kept (anything else is refused by the caller).
    """
    if mapping is None:
        return voxels, 0
    offset, scale = mapping
    mapped = np.rint((voxels.astype(np.float64) - offset) * scale)
    clipped = int(np.count_nonzero((mapped < 0) | (mapped > UINT16_MAX)))
    return np.clip(mapped, 0, UINT16_MAX).astype(np.uint16), clipped


def _convert_pair(task: PairTask) -> dict:
    """Read, check and measure one pair; the record data for a volume, or every slice's PNGs."""
    image = read_volume(task.image, max_voxels=task.max_voxels)
    label = read_volume(task.label, max_voxels=task.max_voxels)
    _check_label_grid(task, image, label)
    ids, counts = label_ids(label.voxels, path=task.label, num_classes=task.num_classes)
    voxels = image.voxels
    flat = voxels.reshape(-1, image.channels)
    foreground = ((ids > 0) & (ids != IGNORE_INDEX)).ravel()
    notes = list(image.notes) + list(label.notes)
    result: dict[str, Any] = {
        "ok": True, "position": task.position, "path": task.image, "dtype": voxels.dtype.name,
        "channels": image.channels, "shape": image.shape, "spacing": image.spacing, "class_voxels": counts,
        "notes": notes, "preview_png": _preview_png(voxels, ids, task.axis or 0) if task.preview else None,
    }
    if task.axis is None:
        fg_values = flat[foreground]
        result.update(
            voxels=voxels, mask=ids, origin=image.origin, direction=image.direction,
            stats=moments(flat), fg_stats=moments(fg_values), fg_sample=foreground_sample(fg_values, task.sample_cap),
        )
        return result
    return _slices(task, image, ids, result)


def _slices(task: PairTask, image: Any, ids: np.ndarray, result: dict) -> dict:
    from data_tools.converter import _channel_stats
    from data_tools.images import encode_png

    if image.channels not in (1, 3):
        raise AnnotationError(task.image, f"has {image.channels} channels; 2D slices (PNG) hold 1 or 3")
    if task.mapping is None and image.voxels.dtype.name not in ("uint8", "uint16"):
        raise AnnotationError(task.image, f"{image.voxels.dtype.name} voxels need an intensity mapping for PNG slices")
    pixels, clipped = to_slice_pixels(image.voxels, task.mapping)
    flat = pixels.reshape(-1, 1, image.channels)
    result["stats"] = _channel_stats(flat)
    result["pixel_dtype"] = pixels.dtype.name
    assert task.axis is not None  # volume records (no axis) were returned before the slicing
    axis = int(task.axis)
    slices = []
    for index in range(pixels.shape[axis]):
        plane = np.ascontiguousarray(np.take(pixels, index, axis=axis))
        mask = np.ascontiguousarray(np.take(ids, index, axis=axis))
        slices.append({
            "source_id": f"{task.case}/{AXIS_NAMES[axis]}{index:04d}",
            "image_png": encode_png(plane), "mask_png": encode_png(mask),
            "height": int(plane.shape[0]), "width": int(plane.shape[1]),
            "present": np.bincount(mask.ravel(), minlength=256) > 0,
        })
    result["slices"] = slices
    if clipped:
        result["notes"].append(f"{clipped} voxel(s) outside the train split's range were clipped to 0..{UINT16_MAX} "
                               "in the uint16 slices")
    return result


check_pair = _guarded(_check_pair)
measure_range = _guarded(_measure_range)
convert_pair = _guarded(_convert_pair)

__all__ = ["AXIS_NAMES", "PairTask", "check_pair", "convert_pair", "foreground_sample", "label_ids",
           "measure_range", "moments", "to_slice_pixels", "window_uint8"]
