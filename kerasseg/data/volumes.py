"""Volume datasets (``dataset.json`` ``dimensions: 3``) -> batches of random 3D patches for ``model.fit``.

Stages of :func:`load_volume_dataset` (TensorFlow ops throughout)::

    shard files -> interleave(TFRecordDataset) -> parse + decode (zlib, each record's own voxel type)
      -> cast float32 -> [resample to `spacing`] -> normalize (whole volume, spatial_dims=3)
      -> pad to at least the patch -> locate labelled voxels per class
      -> [cache] -> [shuffle] -> [repeat] -> enumerate
      -> map(random patch, foreground-biased; augmentation; masks + weights) -> batch -> prefetch

Everything before the cache is deterministic per volume, so it runs once per
volume (the first epoch) when ``cache=True``:

* **resampling** (``spacing`` given): from each record's own spacing to
  ``spacing`` (mm, ``(z, y, x)``), trilinear for the image and nearest for the
  labels (:mod:`kerasseg.data.resample`); ``None`` keeps the stored grid;
* **normalization** on the whole resampled volume, as inference does before
  its sliding window, so the per-volume statistics never depend on the patch;
* **padding** of volumes smaller than the patch (split evenly on both sides):
  the image with **0** (after normalization: the mean of a z-scored volume,
  the neutral value, and what zero-padded convolutions see at any border),
  the labels with **ignore** (255), so padded voxels get weight 0 and are
  never taught as background; augmentation fills positions it samples from
  outside the volume the same way (:mod:`kerasseg.data.augment3d`);
* **foreground locations**: up to :data:`FOREGROUND_SAMPLES` voxel positions
  per foreground class (evenly spread through the class's voxels in raster
  order), so drawing a foreground patch costs nothing per patch even for
  large CT volumes.

Per element, ``foreground_fraction`` of the patches are centred on a random
labelled voxel of a random foreground class *present in that volume* (each
present class equally likely, so rare classes get sampled; the patch is
shifted to stay inside the volume), the rest are placed uniformly. Random ops
are stateless, keyed by ``(seed, running element index)``: the same seed gives
the same batches, epochs differ.

The output is the 2D :func:`kerasseg.data.load_dataset` convention one rank up,
so the losses, metrics and ``model.fit`` take it unchanged.
:func:`iterate_volumes` gives the stored volumes one by one in numpy (validation
and ``kerasseg evaluate``, whose sliding-window inference resamples itself).
"""

from __future__ import annotations

import dataclasses
import os
import random
from typing import Any, Iterator, Mapping, Sequence

from kerasseg import schema
from kerasseg.data import augment3d as augment3d_lib
from kerasseg.data.augment import element_seed
from kerasseg.data.class_weights import resolve_class_weights
from kerasseg.data.preprocess import normalize, resolve_normalization

FOREGROUND_SAMPLES = 1024
"""Labelled voxel positions kept per foreground class and volume for foreground-centred patches."""


@dataclasses.dataclass
class _VolumePlan:
    """Everything the per-volume and per-patch maps need (resolved, plain Python values)."""

    patch_size: tuple[int, int, int]
    spacing: tuple[float, float, float] | None
    normalization: dict
    foreground_fraction: float
    augment: augment3d_lib.Augment3DConfig | None
    class_weights: list[float] | None
    num_classes: int
    ignore_index: int
    channels: int
    seed: int


def volume_info(path: str, split: str | None = None) -> schema.DatasetInfo:
    """``dataset.json`` of a volume dataset, checked against its shards for ``split``.

    Raises:
        kerasseg.schema.SchemaError: no or a bad ``dataset.json``, a 2D dataset
            (pointing at :func:`kerasseg.data.load_dataset`), or shards that do
            not match it.
    """
    info = schema.read_dataset_info(path)
    if not info.is_volume:
        raise schema.SchemaError(
            f"{os.path.join(path, schema.DATASET_INFO_FILENAME)}: the dataset holds 2D images "
            f"(dimensions: {info.dimensions}), not volumes; read it with kerasseg.data.load_dataset "
            "(volumes are converted with volumes2tfrecord)"
        )
    if split is not None:
        schema.check_dataset(path, [split])
    return info


def _as_patch_size(patch_size: Any) -> tuple[int, int, int]:
    try:
        size = tuple(int(s) for s in patch_size)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 3 or min(size) <= 0 or any(float(a) != b for a, b in zip(patch_size, size)):
        raise ValueError(f"patch_size must be (depth, height, width) of 3 positive ints, got {patch_size!r}")
    return size


def _as_spacing(spacing: Any) -> tuple[float, float, float] | None:
    if spacing is None:
        return None
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(v > 0 and v < float("inf") for v in values):
        raise ValueError(f"spacing must be (z, y, x) voxel sizes in mm, 3 positive numbers, got {spacing!r}")
    return values


def _make_plan(*, patch_size, spacing, normalization, foreground_fraction, augment, class_weights,
               info: schema.DatasetInfo, seed: int | None) -> _VolumePlan:
    if not 0.0 <= float(foreground_fraction) <= 1.0:
        raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    return _VolumePlan(
        patch_size=_as_patch_size(patch_size),
        spacing=_as_spacing(spacing),
        normalization=resolve_normalization(normalization, info),
        foreground_fraction=float(foreground_fraction),
        augment=augment3d_lib.as_augment3d_config(augment),
        class_weights=resolve_class_weights(class_weights, info, num_classes=info.num_classes, split="train"),
        num_classes=info.num_classes,
        ignore_index=int(info.ignore_index),
        channels=int(info.channels),
        seed=int(seed),
    )


def decode_volume(serialized, *, channels: int, num_classes: int | None = None,
                  ignore_index: int = schema.IGNORE_INDEX) -> dict:
    """Parse and decode one serialized volume record in TensorFlow.

    The voxels are decoded with the record's own storage type (records of one
    dataset may differ: ``float32`` and ``uint8`` volumes side by side); only the
    branch of that type runs.

    Returns:
        dict with ``image`` float32 ``(D, H, W, channels)`` (the stored values),
        ``mask`` uint8 ``(D, H, W)`` (255 = ignore), ``spacing`` float32 ``(3,)``
        (mm, ``(z, y, x)``), ``source_id`` and ``filename`` strings. A record
        whose sizes, type or channel count disagree, or (``num_classes``
        given) whose labels are outside ``0..num_classes-1`` and ignore, fails
        with its filename in the error.
    """
    import tensorflow as tf

    ex = tf.io.parse_single_example(serialized, schema.volume_feature_spec())
    filename = ex[schema.KEY_IMAGE_FILENAME]
    dtype = ex[schema.KEY_VOLUME_DTYPE]
    shape = tf.cast(tf.stack([ex[schema.KEY_VOLUME_DEPTH], ex[schema.KEY_VOLUME_HEIGHT],
                              ex[schema.KEY_VOLUME_WIDTH]]), tf.int32)
    record_channels = tf.cast(ex[schema.KEY_VOLUME_CHANNELS], tf.int32)
    known = tf.equal(tf.constant(list(schema.VOLUME_DTYPES)), dtype)
    header_checks = [
        tf.debugging.Assert(tf.equal(ex[schema.KEY_VOLUME_ENCODING], schema.VOLUME_ENCODING),
                            ["volume record encoding is not raw-zlib in record", filename,
                             ex[schema.KEY_VOLUME_ENCODING]]),
        tf.debugging.Assert(tf.reduce_any(known), ["volume record has an unknown voxel type", dtype,
                                                    "in record", filename]),
        tf.debugging.Assert(tf.equal(record_channels, channels),
                            ["volume record has", record_channels, "channels, dataset.json says", channels,
                             "in record", filename]),
    ]
    with tf.control_dependencies(header_checks):
        branch = tf.argmax(tf.cast(known, tf.int32), output_type=tf.int32)
    raw = tf.io.decode_compressed(ex[schema.KEY_VOLUME_ENCODED], compression_type="ZLIB")
    branches = [
        (lambda kind=kind: tf.cast(tf.io.decode_raw(raw, tf.as_dtype(kind), little_endian=True), tf.float32))
        for kind in schema.VOLUME_DTYPES
    ]
    flat = tf.switch_case(branch, branches)
    raw_mask = tf.io.decode_compressed(ex[schema.KEY_VOLUME_MASK_ENCODED], compression_type="ZLIB")
    flat_mask = tf.io.decode_raw(raw_mask, tf.uint8)
    voxels = tf.reduce_prod(shape)
    size_checks = [
        tf.debugging.Assert(tf.equal(tf.size(flat), voxels * channels),
                            ["volume record holds", tf.size(flat), "values of type", dtype, "but its shape is",
                             shape, "in record", filename]),
        tf.debugging.Assert(tf.equal(tf.size(flat_mask), voxels),
                            ["volume record mask holds", tf.size(flat_mask), "labels but the volume shape is",
                             shape, "in record", filename]),
    ]
    if num_classes is not None:
        valid = tf.logical_or(flat_mask < num_classes, tf.equal(flat_mask, ignore_index))
        size_checks.append(tf.debugging.Assert(
            tf.reduce_all(valid), ["mask has labels outside the class set in record", filename,
                                   tf.reduce_max(flat_mask)]))
    spacing = ex[schema.KEY_VOLUME_SPACING]
    size_checks.append(tf.debugging.Assert(tf.reduce_all(spacing > 0), ["volume record spacing", spacing,
                                                                        "is not positive in record", filename]))
    with tf.control_dependencies(size_checks):
        image = tf.reshape(flat, tf.concat([shape, [channels]], 0))
        mask = tf.reshape(flat_mask, shape)
    image.set_shape([None, None, None, channels])
    mask.set_shape([None, None, None])
    return {"image": image, "mask": mask, "spacing": spacing, "source_id": ex[schema.KEY_IMAGE_SOURCE_ID],
            "filename": filename}


def _pad_to_at_least(image, labels, size: Sequence[int], *, ignore_index: int):
    """Pad ``image`` with 0 and ``labels`` with ``ignore_index`` (split evenly) to at least ``size``."""
    import tensorflow as tf

    short = tf.maximum(tf.constant(list(size), tf.int32) - tf.shape(labels), 0)
    before = short // 2
    pads = tf.stack([before, short - before], axis=1)  # (3, 2)
    image = tf.pad(image, tf.concat([pads, [[0, 0]]], 0))
    labels = tf.pad(labels, pads, constant_values=tf.cast(ignore_index, labels.dtype))
    return image, labels


def _foreground_locations(labels, num_classes: int, samples: int = FOREGROUND_SAMPLES):
    """Up to ``samples`` positions of each class ``1..num_classes-1``, evenly spread in raster order.

    Returns:
        ``(coords int32 (num_classes - 1, samples, 3), counts int32 (num_classes - 1,))``;
        rows beyond ``counts[c]`` are zeros.
    """
    import tensorflow as tf

    coords, counts = [], []
    for c in range(1, num_classes):
        where = tf.cast(tf.where(tf.equal(labels, tf.cast(c, labels.dtype))), tf.int32)  # (n, 3)
        n = tf.shape(where, out_type=tf.int64)[0]
        take = tf.minimum(n, samples)
        index = tf.range(take) * n // tf.maximum(take, 1)  # int64: n * samples may pass 2**31
        picked = tf.gather(where, index)
        coords.append(tf.pad(picked, [[0, samples - take], [0, 0]]))
        counts.append(tf.cast(take, tf.int32))
    if not coords:
        return tf.zeros([0, samples, 3], tf.int32), tf.zeros([0], tf.int32)
    return tf.stack(coords), tf.stack(counts)


def _prepare(plan: _VolumePlan, serialized) -> dict:
    """Decode, resample, normalize, pad and locate the foreground of one volume (before the cache)."""
    import tensorflow as tf

    from kerasseg.data.resample import resample, shape_for_spacing

    ex = decode_volume(serialized, channels=plan.channels, num_classes=plan.num_classes,
                       ignore_index=plan.ignore_index)
    image, labels = ex["image"], ex["mask"]
    if plan.spacing is not None:
        target = shape_for_spacing(tf.shape(labels), ex["spacing"], plan.spacing)
        image = resample(image, target, method="linear")
        labels = resample(labels[..., tf.newaxis], target, method="nearest")[..., 0]
    image = normalize(image, plan.normalization, spatial_dims=3)
    image, labels = _pad_to_at_least(image, labels, plan.patch_size, ignore_index=plan.ignore_index)
    image.set_shape([None, None, None, plan.channels])
    labels.set_shape([None, None, None])
    coords, counts = _foreground_locations(labels, plan.num_classes)
    return {"image": image, "labels": labels, "fg_coords": coords, "fg_counts": counts,
            "source_id": ex["source_id"], "filename": ex["filename"]}


def _patch_start(plan: _VolumePlan, labels, coords, counts, seed):
    """Corner of the next patch: foreground-centred with probability ``foreground_fraction``, else uniform."""
    import tensorflow as tf

    patch = tf.constant(list(plan.patch_size), tf.int32)
    last = tf.shape(labels) - patch  # largest valid corner (>= 0: volumes are padded to the patch)
    seeds = tf.random.experimental.stateless_split(seed, 4)
    present = counts > 0
    n_present = tf.reduce_sum(tf.cast(present, tf.int32))
    use_fg = tf.logical_and(tf.random.stateless_uniform([], seeds[0]) < plan.foreground_fraction, n_present > 0)

    def foreground():
        pick = tf.random.stateless_uniform([], seeds[1], minval=0, maxval=tf.maximum(n_present, 1), dtype=tf.int32)
        cls = tf.cast(tf.where(present)[pick, 0], tf.int32)
        i = tf.random.stateless_uniform([], seeds[2], minval=0, maxval=tf.maximum(counts[cls], 1), dtype=tf.int32)
        return tf.clip_by_value(coords[cls, i] - patch // 2, 0, last)

    def uniform():
        u = tf.random.stateless_uniform([3], seeds[3])
        return tf.minimum(tf.cast(tf.floor(u * tf.cast(last + 1, tf.float32)), tf.int32), last)

    return tf.cond(use_fg, foreground, uniform)


def _patch(plan: _VolumePlan, index, ex: Mapping) -> dict:
    """One random (augmented) patch of a prepared volume, with masks and sample weights."""
    import tensorflow as tf

    seed = element_seed(plan.seed, index)
    patch_seed, aug_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    start = _patch_start(plan, ex["labels"], ex["fg_coords"], ex["fg_counts"], patch_seed)
    image, labels = augment3d_lib.augment_patch(
        ex["image"], ex["labels"], start, plan.patch_size, config=plan.augment, seed=aug_seed,
        ignore_index=plan.ignore_index,
    )
    # the 2D load_dataset convention: ignore voxels -> label 0 with weight 0
    ignore = tf.equal(labels, tf.cast(plan.ignore_index, labels.dtype))
    masks = tf.cast(tf.where(ignore, tf.zeros_like(labels), labels), tf.int32)
    if plan.class_weights is None:
        weights = tf.ones_like(masks, tf.float32)
    else:
        weights = tf.gather(tf.constant(plan.class_weights, tf.float32), masks)
    weights = tf.where(ignore, 0.0, weights)
    image.set_shape([*plan.patch_size, plan.channels])
    masks.set_shape(list(plan.patch_size))
    weights.set_shape(list(plan.patch_size))
    return {"images": image, "masks": masks, "sample_weights": weights, "source_id": ex["source_id"],
            "filename": ex["filename"]}


def load_volume_dataset(
    path: str,
    split: str,
    *,
    patch_size: tuple[int, int, int],
    batch_size: int,
    spacing: Sequence[float] | None = None,
    normalization: Mapping[str, Any] | None = None,
    foreground_fraction: float = 0.33,
    augment: Mapping[str, Any] | augment3d_lib.Augment3DConfig | bool | None = None,
    shuffle: int | bool = 64,
    repeat: bool = True,
    seed: int = 0,
    cache: bool | str = True,
    drop_remainder: bool = True,
    include_metadata: bool = False,
    class_weights: Sequence[float] | str | None = None,
):
    """A ``tf.data.Dataset`` of random 3D patches of a converted volume split, ready for ``model.fit``.

    Args:
        path: dataset folder with ``dataset.json`` (``dimensions: 3``) and the
            shards (any ``tf.io.gfile`` path).
        split: split name, e.g. ``"train"`` or ``"fold0_train"``.
        patch_size: ``(depth, height, width)`` of the patches (the config's
            ``data.image_size``).
        batch_size: global batch size.
        spacing: ``(z, y, x)`` mm every volume is resampled to (image
            trilinear, labels nearest) from its own spacing; ``None`` keeps the
            stored grid.
        normalization: intensity normalization dict (default
            ``{"method": "zscore"}`` per volume, the MRI scheme;
            ``{"method": "clip_zscore"}`` for CT), resolved against
            ``dataset.json`` (:func:`kerasseg.data.preprocess.resolve_normalization`)
            and applied to the whole volume, as at inference.
        foreground_fraction: fraction of patches centred on a labelled voxel of
            a random foreground class present in the volume.
        augment: ``None``/``False`` (none), ``True`` (the recommended set), the
            config's ``data.augmentation`` dict (:meth:`Augment3DConfig.from_dict`)
            or an :class:`~kerasseg.data.augment3d.Augment3DConfig`.
        shuffle: buffer size in volumes (``True``: the split size up to 2048;
            ``False``/0: record order).
        repeat: repeat forever (training); ``False`` gives one patch per volume.
        seed: seed of shuffling, patch positions and augmentation.
        cache: keep the decoded, resampled, normalized volumes in memory
            (``True``) or in that file (a string).
        drop_remainder: drop the last incomplete batch.
        include_metadata: yield dicts (below) instead of tuples.
        class_weights: ``None`` (1.0), ``"median_frequency"`` (from the voxel
            counts in ``dataset.json``) or one weight per class.

    Returns:
        ``tf.data.Dataset`` of ``(images, masks, sample_weights)``: ``images``
        float32 ``(B, pd, ph, pw, C)`` normalized; ``masks`` int32
        ``(B, pd, ph, pw)`` with ignore voxels set to 0; ``sample_weights``
        float32 ``(B, pd, ph, pw)``, 0 at ignore (padding and out-of-volume)
        voxels, else 1 or the class weight. With ``include_metadata=True`` dicts
        with those keys plus ``source_id`` and ``filename`` (``(B,)`` strings).

    Raises:
        kerasseg.schema.SchemaError: no or a bad ``dataset.json``, a 2D dataset,
            no split ``split`` or shards that disagree with ``dataset.json``.
        ValueError: a malformed argument (patch size, spacing, fraction, ...).
    """
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    info = volume_info(path, split)
    plan = _make_plan(patch_size=patch_size, spacing=spacing, normalization=normalization,
                      foreground_fraction=foreground_fraction, augment=augment, class_weights=class_weights,
                      info=info, seed=seed)
    files = schema.split_files(path, split)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle and len(files) > 1:
        ds = ds.shuffle(len(files), seed=plan.seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.map(lambda s: _prepare(plan, s), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache() if cache is True else ds.cache(str(cache))
    if shuffle:
        buffer = int(shuffle) if not isinstance(shuffle, bool) else min(max(info.splits.get(split, 1), 1), 2048)
        ds = ds.shuffle(buffer, seed=plan.seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.enumerate()
    ds = ds.map(lambda i, ex: _patch(plan, i, ex), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if not include_metadata:
        ds = ds.map(lambda d: (d["images"], d["masks"], d["sample_weights"]))
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # as the 2D pipeline: every worker reads all shards and keeps its share of elements
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return ds.with_options(options)


def _resampled(record: dict, voxels, spacing: tuple[float, float, float]) -> dict:
    """``record`` resampled to ``spacing`` (numpy in and out), with the grid's true spacing and origin."""
    import numpy as np
    import tensorflow as tf

    from kerasseg.data.resample import resample, shape_for_spacing

    old_shape = np.asarray(record["mask"].shape, np.float64)
    old_spacing = np.asarray(record["spacing"], np.float64)
    target = shape_for_spacing(old_shape, old_spacing, spacing)
    image = resample(tf.constant(voxels), target, method="linear").numpy()
    mask = resample(tf.constant(record["mask"][..., None]), target, method="nearest").numpy()[..., 0]
    new_shape = np.asarray(mask.shape, np.float64)
    # half-pixel grids: new voxel i is old continuous index (i + 0.5) * old/new - 0.5
    ratio = old_shape / new_shape
    true_spacing = old_spacing * ratio
    shift_zyx = (0.5 * ratio - 0.5) * old_spacing  # mm along each array axis
    direction = np.asarray(record["direction"], np.float64).reshape(3, 3)
    origin = np.asarray(record["origin"], np.float64) + direction @ shift_zyx[::-1]  # ITK (x, y, z)
    return {"voxels": image, "mask": np.ascontiguousarray(mask), "spacing": tuple(float(v) for v in true_spacing),
            "origin": tuple(float(v) for v in origin)}


def iterate_volumes(path: str, split: str, *, spacing: Sequence[float] | None = None) -> Iterator[dict]:
    """Yield the volumes of ``split`` in record order, decoded with numpy.

    Each item is a dict with ``voxels`` (``(D, H, W, C)`` of the stored type),
    ``mask`` (uint8 ``(D, H, W)``, 255 = ignore), ``spacing`` (mm, ``(z, y, x)``),
    ``origin`` and ``direction`` (ITK, as stored), ``source_id`` and
    ``filename`` (str): the stored grid, not normalized. This is what
    validation and ``kerasseg evaluate`` iterate (their inference resamples and
    normalizes itself).

    Args:
        spacing: ``None`` (default) keeps the stored grid; ``(z, y, x)`` mm
            resamples each volume (voxels trilinear to float32, mask nearest)
            and reports the new grid's exact spacing and origin (the grid keeps
            the volume's extent, so the spacing is the nearest to the one asked).

    Raises:
        kerasseg.schema.SchemaError: a 2D dataset, a bad ``dataset.json``, shards
            that disagree with it, or a damaged record or labels outside the class
            set (naming the shard and record).
    """
    import numpy as np
    import tensorflow as tf

    target = _as_spacing(spacing)
    info = volume_info(path, split)
    for shard in schema.split_files(path, split):
        for index, serialized in enumerate(tf.data.TFRecordDataset(shard).as_numpy_iterator()):
            try:
                record = schema.decode_volume_example(serialized)
            except schema.SchemaError as e:
                raise schema.SchemaError(f"{shard}: record {index}: {e}") from None
            mask = record["mask"]
            bad = (mask >= info.num_classes) & (mask != info.ignore_index)
            if bad.any():
                raise schema.SchemaError(
                    f"{shard}: record {index} ({record['filename']}): label {int(mask[bad].max())} is outside "
                    f"the {info.num_classes} classes of dataset.json"
                )
            voxels = record["voxels"]
            if voxels.ndim == 3:
                voxels = voxels[..., np.newaxis]
            item = {"voxels": voxels, "mask": mask, "spacing": tuple(float(v) for v in record["spacing"]),
                    "origin": tuple(float(v) for v in record["origin"]),
                    "direction": tuple(float(v) for v in record["direction"]),
                    "source_id": record["source_id"], "filename": record["filename"]}
            if target is not None:
                item.update(_resampled(item, voxels, target))
            yield item


__all__ = ["FOREGROUND_SAMPLES", "decode_volume", "iterate_volumes", "load_volume_dataset", "volume_info"]
