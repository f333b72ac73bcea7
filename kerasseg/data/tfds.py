"""``from_tfds``: any TensorFlow Datasets set with an image and a segmentation
mask, through the same geometry / augmentation / normalization pipeline as
:func:`kerasseg.data.load_dataset`."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from kerasseg.data import augment as augment_lib
from kerasseg.data.pipeline import _finish, _make_plan
from kerasseg.schema import IGNORE_INDEX

#: Known datasets: mask key, label map (source value -> class id, 255 = ignore) and class names.
#: oxford_iiit_pet trimaps are 1 = pet, 2 = background, 3 = border ("not classified").
KNOWN_DATASETS: dict[str, dict[str, Any]] = {
    "oxford_iiit_pet": {
        "mask_key": "segmentation_mask",
        "label_map": {1: 1, 2: 0, 3: 255},
        "class_names": ["background", "pet"],
    },
}

_MASK_KEY_HINTS = ("segmentation_mask", "mask", "segmentation", "label_mask", "labels")


def _find_mask_key(features: Mapping[str, Any], image_key: str, name: str) -> str:
    import tensorflow_datasets as tfds

    candidates = [
        k for k, f in features.items()
        if k != image_key and isinstance(f, tfds.features.Image) and (f.shape[-1] in (1, None))
    ]
    for hint in _MASK_KEY_HINTS:
        if hint in candidates:
            return hint
    if len(candidates) == 1:
        return candidates[0]
    raise ValueError(
        f"from_tfds({name!r}): cannot tell which feature is the segmentation mask "
        f"(single-channel image features: {candidates}); pass mask_key="
    )


def from_tfds(
    name: str,
    split: str,
    *,
    image_size: int | Sequence[int] | None = None,
    batch_size: int = 8,
    image_key: str = "image",
    mask_key: str | None = None,
    label_map: Mapping[int, int] | None = None,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    data_dir: str | None = None,
    download: bool = True,
    geometry: str = "resize",
    size_divisor: int = 32,
    foreground_fraction: float = 0.5,
    augment: bool | Mapping[str, Any] | augment_lib.AugmentConfig | None = False,
    normalization: Mapping[str, Any] | None = None,
    cache: bool | str = False,
    shuffle: bool | int = False,
    repeat: bool | int = False,
    seed: int | None = None,
    class_weights: Sequence[float] | None = None,
    drop_remainder: bool = False,
    include_metadata: bool = False,
):
    """A TFDS segmentation dataset as ``(images, masks, sample_weights)`` batches.

    Args:
        name: TFDS name, e.g. ``"oxford_iiit_pet"`` (``"name:version"`` works too).
        split: TFDS split string, e.g. ``"train"`` or ``"test[:10%]"``.
        image_key: feature holding the image.
        mask_key: feature holding the ``(H, W, 1)`` label image; found
            automatically when unambiguous.
        label_map: source mask value -> class id (255 = ignore); values not
            listed become ignore. ``None`` keeps values as they are (then
            ``num_classes`` or ``class_names`` is required, and values
            ``>= num_classes`` other than 255 are an error). Known datasets
            (``KNOWN_DATASETS``) come with their own map: for
            ``oxford_iiit_pet`` pet = 1, background = 0, border = ignore.
        class_names / num_classes: the class set after ``label_map``.
            A mask stored at another resolution than its image is resized to
            the image with nearest neighbour.
        data_dir, download: passed to ``tfds.load``.
        Other arguments: as in :func:`kerasseg.data.load_dataset`, except that
        ``class_weights`` is ``None`` or an explicit list (TFDS sets carry no
        pixel counts) and ``normalization`` ``"dataset"`` needs explicit
        ``mean``/``std``.

    Returns:
        ``tf.data.Dataset`` with the element contract of ``load_dataset``.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    base_name = name.split(":")[0].split("/")[0]
    known = KNOWN_DATASETS.get(base_name, {})
    builder = tfds.builder(name, data_dir=data_dir)
    features = builder.info.features
    if image_key not in features:
        raise ValueError(f"from_tfds({name!r}): no feature {image_key!r}; features are {sorted(features.keys())}")
    if mask_key is None:
        mask_key = known.get("mask_key") or _find_mask_key(features, image_key, name)
    if mask_key not in features:
        raise ValueError(f"from_tfds({name!r}): no feature {mask_key!r}; features are {sorted(features.keys())}")
    if label_map is None and class_names is None and num_classes is None and known:
        label_map = known["label_map"]
        class_names = known["class_names"]
    if class_names is not None:
        num_classes = len(class_names)
    if num_classes is None:
        raise ValueError(f"from_tfds({name!r}): give class_names or num_classes (and label_map if needed)")
    if isinstance(class_weights, str):
        raise ValueError("from_tfds: class_weights must be None or a list (TFDS sets carry no pixel counts)")

    image_feature = features[image_key]
    channels = image_feature.shape[-1] or 3
    plan = _make_plan(
        image_size=image_size, geometry=geometry, size_divisor=size_divisor,
        foreground_fraction=foreground_fraction, augment=augment, normalization=normalization,
        class_weights=class_weights, info=None, num_classes=num_classes, ignore_index=IGNORE_INDEX,
        channels=channels, seed=seed, split=split,
    )

    table = None
    if label_map is not None:
        values = [IGNORE_INDEX] * 256
        for src, dst in label_map.items():
            if not (0 <= int(src) <= 255 and (0 <= int(dst) < num_classes or int(dst) == IGNORE_INDEX)):
                raise ValueError(f"from_tfds: label_map entry {src}->{dst} is outside 0..255 / the class set")
            values[int(src)] = int(dst)
        table = tf.constant(values, tf.uint8)
    has_file_name = "file_name" in features

    def _decode(index, ex):
        image = tf.convert_to_tensor(ex[image_key])
        image.set_shape([None, None, channels])
        mask = tf.cast(ex[mask_key], tf.int32)
        if mask.shape.rank == 3:
            mask = mask[..., 0]
        if table is not None:
            mask = tf.gather(table, tf.clip_by_value(mask, 0, 255))
        else:
            valid = tf.logical_or(mask < num_classes, tf.equal(mask, IGNORE_INDEX))
            with tf.control_dependencies(
                [tf.debugging.Assert(tf.reduce_all(valid), [f"{name}: mask value outside the class set",
                                                           tf.reduce_max(mask)])]
            ):
                mask = tf.cast(mask, tf.uint8)
        # a mask stored at another resolution than its image is brought to the image's size (nearest)
        image_hw = tf.shape(image)[:2]
        mask = tf.cond(
            tf.reduce_all(tf.equal(tf.shape(mask), image_hw)),
            lambda: mask,
            lambda: tf.image.resize(mask[..., tf.newaxis], image_hw, method="nearest")[..., 0],
        )
        ident = ex["file_name"] if has_file_name else tf.strings.as_string(index)
        return {
            "image": image,
            "mask": mask,
            "source_id": ident,
            "filename": ident,
            "height": tf.shape(image)[0],
            "width": tf.shape(image)[1],
        }

    ds = tfds.load(name, split=split, data_dir=data_dir, download=download, shuffle_files=False)
    ds = ds.enumerate().map(_decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _finish(
        ds, plan, batch_size=batch_size, cache=cache, shuffle=shuffle, repeat=repeat,
        drop_remainder=drop_remainder, include_metadata=include_metadata, num_examples=None,
    )


__all__ = ["KNOWN_DATASETS", "from_tfds"]
