"""``load_dataset``: converted TFRecords -> a ``tf.data.Dataset`` for ``model.fit``.

Stages (all TensorFlow ops except the optional ``preprocess`` hook, which runs
once per example before the cache)::

    shard files -> interleave(TFRecordDataset) -> parse + decode (uint8/uint16)
      -> [classical preprocessing hook] -> [cache] -> [shuffle] -> [repeat]
      -> enumerate -> map(normalize, geometry, augment, masks + weights)
      -> batch -> prefetch

Normalization runs on the whole stored image before the geometry (resize or
crop), as :mod:`kerasseg.predict_graph` does at inference.

Each element's random ops are keyed by ``(seed, running element index)`` with
stateless ops, so the same seed gives the same batches (also across epochs
with ``repeat``, where the index keeps counting and each epoch differs).

Under ``tf.distribute`` the dataset carries ``AutoShardPolicy.DATA``: every
worker reads all shard files and keeps its share of elements. Converted
datasets often have fewer shard files than workers, and ``FILE`` sharding would
then fail or leave workers idle and unbalanced; ``DATA`` is always correct (at
the cost of each worker reading every file, cheap next to training).
``MirroredStrategy`` on one machine splits each global batch across replicas
(``batch_size`` is the global batch).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Iterator, Mapping, Sequence

from kerasseg import schema
from kerasseg.data import augment as augment_lib
from kerasseg.data import classical
from kerasseg.data import geometry as geometry_lib
from kerasseg.data.class_weights import resolve_class_weights
from kerasseg.data.preprocess import normalize, resolve_normalization


@dataclasses.dataclass
class _Plan:
    """Everything the per-element transform needs (resolved, plain Python values)."""

    image_size: tuple[int, int] | None
    geometry: str
    size_divisor: int
    foreground_fraction: float
    augment: augment_lib.AugmentConfig | None
    normalization: dict
    class_weights: list[float] | None
    num_classes: int
    ignore_index: int
    channels: int
    seed: int


def _make_plan(
    *,
    image_size,
    geometry: str,
    size_divisor: int,
    foreground_fraction: float,
    augment,
    normalization,
    class_weights,
    info: Any,
    num_classes: int,
    ignore_index: int,
    channels: int,
    seed: int | None,
    split: str,
) -> _Plan:
    if geometry not in geometry_lib.GEOMETRY_POLICIES:
        raise ValueError(f"geometry must be one of {geometry_lib.GEOMETRY_POLICIES}, got {geometry!r}")
    size = geometry_lib.as_size(image_size)
    if size is None and geometry != "pad":
        raise ValueError(f"geometry {geometry!r} needs image_size=(height, width)")
    if geometry == "pad" and size_divisor < 1:
        raise ValueError(f"size_divisor must be >= 1, got {size_divisor}")
    if not 0.0 <= foreground_fraction <= 1.0:
        raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    return _Plan(
        image_size=size,
        geometry=geometry,
        size_divisor=int(size_divisor),
        foreground_fraction=float(foreground_fraction),
        augment=augment_lib.as_augment_config(augment),
        normalization=resolve_normalization(normalization, info),
        class_weights=resolve_class_weights(class_weights, info, num_classes=num_classes, split=split),
        num_classes=int(num_classes),
        ignore_index=int(ignore_index),
        channels=int(channels),
        seed=int(seed),
    )


def decode_example(serialized, *, channels: int, image_dtype: str = "uint8", num_classes: int | None = None,
                   ignore_index: int = schema.IGNORE_INDEX) -> dict:
    """Parse and decode one serialized record of the kerasseg schema.

    Returns:
        dict with ``image`` ``(H, W, channels)`` uint8 or uint16, ``mask``
        ``(H, W)`` uint8 (255 = ignore), ``source_id``/``filename`` strings and
        ``height``/``width`` int32 of the stored image. When ``num_classes`` is
        given, a label outside ``0..num_classes-1`` (other than ignore) fails
        with the record's filename in the error.
    """
    import tensorflow as tf

    ex = tf.io.parse_single_example(serialized, schema.feature_spec())
    if image_dtype == "uint16":
        image = tf.io.decode_png(ex[schema.KEY_IMAGE_ENCODED], channels=channels, dtype=tf.uint16)
    elif image_dtype == "uint8":
        image = tf.io.decode_image(
            ex[schema.KEY_IMAGE_ENCODED], channels=channels, dtype=tf.uint8, expand_animations=False
        )
    else:
        raise schema.SchemaError(f"unsupported image_dtype {image_dtype!r} in dataset.json (uint8 or uint16)")
    image.set_shape([None, None, channels])
    mask = tf.io.decode_png(ex[schema.KEY_MASK_ENCODED], channels=1, dtype=tf.uint8)[..., 0]
    filename = ex[schema.KEY_IMAGE_FILENAME]
    checks = [
        tf.debugging.Assert(
            tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.shape(mask))),
            ["image and mask sizes differ in record", filename, tf.shape(image), tf.shape(mask)],
        )
    ]
    if num_classes is not None:
        valid = tf.logical_or(mask < num_classes, tf.equal(mask, ignore_index))
        checks.append(
            tf.debugging.Assert(
                tf.reduce_all(valid),
                ["mask has labels outside the class set in record", filename, tf.reduce_max(mask)],
            )
        )
    with tf.control_dependencies(checks):
        mask = tf.identity(mask)
    return {
        "image": image,
        "mask": mask,
        "source_id": ex[schema.KEY_IMAGE_SOURCE_ID],
        "filename": filename,
        "height": tf.shape(image)[0],
        "width": tf.shape(image)[1],
    }


def _preprocess_hook(steps, channels: int):
    """Wrap the numpy preprocessing steps as a tf.data map function (numpy_function)."""
    import numpy as np
    import tensorflow as tf

    parsed = classical.parse_steps(steps)
    step_dicts = [dict(params, name=name) for name, params in parsed]

    def _np_fn(image, mask):
        out_image, out_mask = classical.apply_preprocessing(image, mask, step_dicts)
        if out_image.ndim == 2:
            out_image = out_image[..., None]
        return np.ascontiguousarray(out_image.astype(image.dtype)), np.ascontiguousarray(out_mask.astype(np.uint8))

    def fn(ex):
        image, mask = tf.numpy_function(_np_fn, [ex["image"], ex["mask"]], [ex["image"].dtype, tf.uint8],
                                        stateful=False)
        image.set_shape([None, None, channels])
        mask.set_shape([None, None])
        return dict(ex, image=image, mask=mask)

    return fn


def _transform(plan: _Plan, index, ex: Mapping) -> dict:
    """Geometry, augmentation, normalization, masks and weights for one example."""
    import tensorflow as tf

    image, mask = ex["image"], ex["mask"]
    seed = augment_lib.element_seed(plan.seed, index)
    crop_seed, aug_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))

    # Normalize the whole stored image first: per-image statistics (zscore,
    # minmax, percentile) then never depend on the crop, exactly as at inference
    # (kerasseg.predict_graph), and intensity augmentation acts on top of them.
    image = normalize(image, plan.normalization)
    if plan.geometry == "pad":
        pass  # padded after augmentation, below
    elif plan.image_size is None:  # refused by _make_plan
        raise ValueError(f"geometry {plan.geometry!r} needs image_size=(height, width)")
    elif plan.geometry == "resize":
        image, mask = geometry_lib.resize(image, mask, plan.image_size)
    elif plan.geometry == "random_crop":
        image, mask = geometry_lib.random_crop(
            image, mask, plan.image_size, crop_seed,
            foreground_fraction=plan.foreground_fraction, ignore_index=plan.ignore_index,
        )
    elif plan.geometry == "center_crop":
        image, mask = geometry_lib.center_crop(image, mask, plan.image_size, ignore_index=plan.ignore_index)
    image = tf.cast(image, tf.float32)

    if plan.augment is not None and plan.augment.enabled:
        image, mask = augment_lib.augment(image, mask, aug_seed, plan.augment, ignore_index=plan.ignore_index)

    if plan.geometry == "pad":
        image = geometry_lib.pad_to_multiple(image, plan.size_divisor, constant_values=0.0)
        mask = geometry_lib.pad_to_multiple(mask, plan.size_divisor, constant_values=plan.ignore_index)

    ignore = tf.equal(mask, tf.cast(plan.ignore_index, mask.dtype))
    labels = tf.where(ignore, tf.zeros_like(mask), mask)
    labels = tf.cast(labels, tf.int32)
    if plan.class_weights is None:
        weights = tf.ones_like(labels, tf.float32)
    else:
        weights = tf.gather(tf.constant(plan.class_weights, tf.float32), labels)
    weights = tf.where(ignore, 0.0, weights)
    image.set_shape([None, None, plan.channels])
    out = {"images": image, "masks": labels, "sample_weights": weights}
    for key in ("source_id", "filename", "height", "width"):
        out[key] = ex[key]
    return out


def _finish(
    ds,
    plan: _Plan,
    *,
    batch_size: int,
    cache: bool | str,
    shuffle: bool | int,
    repeat: bool | int,
    drop_remainder: bool,
    include_metadata: bool,
    num_examples: int | None,
):
    """Shared tail of ``load_dataset`` and ``from_tfds`` (``ds`` yields decoded dicts)."""
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if cache:
        ds = ds.cache() if cache is True else ds.cache(str(cache))
    if shuffle:
        buffer = int(shuffle) if not isinstance(shuffle, bool) else min(max(num_examples or 1024, 1), 2048)
        ds = ds.shuffle(buffer, seed=plan.seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat() if repeat is True else ds.repeat(int(repeat))
    ds = ds.enumerate()
    ds = ds.map(lambda i, ex: _transform(plan, i, ex), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if not include_metadata:
        ds = ds.map(lambda d: (d["images"], d["masks"], d["sample_weights"]))
    if plan.geometry == "pad":
        ds = ds.padded_batch(batch_size, drop_remainder=drop_remainder)  # pads with 0: weight 0 there
    else:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return ds.with_options(options)


def _decoded_records(path: str, split: str, info: schema.DatasetInfo, *, shuffle_files: bool, seed: int | None,
                     check_labels: bool = True):
    import tensorflow as tf

    if info.is_volume:
        raise schema.SchemaError(
            f"{path}: the dataset holds volumes (dataset.json dimensions: 3); read it with "
            "kerasseg.data.load_volume_dataset (training patches) or kerasseg.data.iterate_volumes"
        )
    files = schema.split_files(path, split)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files and len(files) > 1:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.map(
        lambda s: decode_example(
            s, channels=info.channels, image_dtype=info.image_dtype,
            num_classes=info.num_classes if check_labels else None, ignore_index=info.ignore_index,
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def load_dataset(
    path: str,
    split: str,
    *,
    image_size: int | Sequence[int] | None = None,
    batch_size: int = 8,
    geometry: str = "resize",
    size_divisor: int = 32,
    foreground_fraction: float = 0.5,
    augment: bool | Mapping[str, Any] | augment_lib.AugmentConfig | None = False,
    preprocess: Sequence[str | Mapping[str, Any]] | None = None,
    normalization: Mapping[str, Any] | None = None,
    cache: bool | str = False,
    shuffle: bool | int = False,
    repeat: bool | int = False,
    seed: int | None = None,
    class_weights: str | Sequence[float] | None = None,
    drop_remainder: bool = False,
    include_metadata: bool = False,
):
    """A ``tf.data.Dataset`` of a converted dataset split, ready for ``model.fit``.

    Args:
        path: dataset folder with ``dataset.json`` and the shards (any
            ``tf.io.gfile`` path, e.g. ``gs://``).
        split: split name, e.g. ``"train"``.
        image_size: output ``(height, width)`` (or an int for square);
            required unless ``geometry="pad"``.
        batch_size: global batch size.
        geometry: ``"resize"`` (bilinear image / nearest mask),
            ``"random_crop"`` (foreground-biased patches), ``"center_crop"``
            or ``"pad"`` (pad to a multiple of ``size_divisor``, batches padded
            to the largest element; padding has weight 0).
        size_divisor: the model's stride for ``geometry="pad"``.
        foreground_fraction: fraction of random crops centred on a labelled pixel.
        augment: ``False``/``None`` (none), ``True`` (defaults), a dict for
            :meth:`AugmentConfig.from_dict` or an :class:`AugmentConfig`.
        preprocess: classical preprocessing steps (see
            :mod:`kerasseg.data.classical`) run once per example before the cache.
        normalization: intensity normalization dict (default ``{"method": "zscore"}``);
            dataset statistics are filled from ``dataset.json``.
        cache: ``True`` caches decoded examples in memory, a string caches to that file.
        shuffle: ``True`` (buffer = split size up to 2048) or a buffer size.
        repeat: ``True`` repeats forever, an int that many epochs.
        seed: seed of shuffling, crops and augmentation (``None``: random).
        class_weights: ``None`` (1.0), ``"median_frequency"`` (from the train
            split's pixel counts) or a list of per-class weights.
        drop_remainder: drop the last incomplete batch.
        include_metadata: yield dicts (below) instead of tuples.

    Returns:
        ``tf.data.Dataset`` of ``(images, masks, sample_weights)``:
        ``images`` float32 ``(B, H, W, C)`` normalized; ``masks`` int32
        ``(B, H, W)`` with ignore pixels set to 0; ``sample_weights`` float32
        ``(B, H, W)``, 0 at ignore (and padded/out-of-image) pixels, else the
        class weight. With ``include_metadata=True`` dicts with keys
        ``images``, ``masks``, ``sample_weights``, ``source_id``, ``filename``
        (``(B,)`` strings), ``height``, ``width`` (``(B,)`` int32, the stored
        image size before any geometry).

    Raises:
        kerasseg.schema.SchemaError: no ``dataset.json``, another schema version,
            or no shards for ``split``.
    """
    info = schema.read_dataset_info(path)
    plan = _make_plan(
        image_size=image_size, geometry=geometry, size_divisor=size_divisor,
        foreground_fraction=foreground_fraction, augment=augment, normalization=normalization,
        class_weights=class_weights, info=info, num_classes=info.num_classes,
        ignore_index=info.ignore_index, channels=info.channels, seed=seed, split="train",
    )
    ds = _decoded_records(path, split, info, shuffle_files=bool(shuffle), seed=plan.seed)
    if preprocess:
        ds = ds.map(_preprocess_hook(preprocess, info.channels))
    return _finish(
        ds, plan, batch_size=batch_size, cache=cache, shuffle=shuffle, repeat=repeat,
        drop_remainder=drop_remainder, include_metadata=include_metadata,
        num_examples=info.splits.get(split),
    )


def iterate_examples(path: str, split: str, *, preprocess: Sequence[str | Mapping[str, Any]] | None = None
                     ) -> Iterator[dict]:
    """Yield the stored full-resolution examples of ``split`` in record order.

    Each item is a dict with ``image`` (numpy ``(H, W, C)`` uint8/uint16 as
    stored), ``mask`` (``(H, W)`` uint8, 255 = ignore), ``source_id`` and
    ``filename`` (str). This is what full-resolution evaluation iterates.
    """
    info = schema.read_dataset_info(path)
    ds = _decoded_records(path, split, info, shuffle_files=False, seed=None)
    if preprocess:
        ds = ds.map(_preprocess_hook(preprocess, info.channels))
    for ex in ds.as_numpy_iterator():
        yield {
            "image": ex["image"],
            "mask": ex["mask"],
            "source_id": ex["source_id"].decode("utf-8"),
            "filename": ex["filename"].decode("utf-8"),
        }


def num_examples(path: str, split: str) -> int:
    """Number of examples of ``split`` according to ``dataset.json``."""
    info = schema.read_dataset_info(path)
    if split not in info.splits:
        raise schema.SchemaError(f"{path}: dataset.json lists no split {split!r} (has {sorted(info.splits)})")
    return int(info.splits[split])


__all__ = ["load_dataset", "iterate_examples", "num_examples", "decode_example"]
