"""What a training run does differently for a volume dataset (``dataset.json`` ``dimensions: 3``).

The run is the same (:func:`kerasseg.training.fit`): the same config file, phases,
callbacks, checkpoints and run folder. Volumes differ in three places, all here:

* the check that model, patch size and data agree (:func:`check_volume_run`);
* the training stream: random ``data.image_size`` patches (``[D, H, W]``) of
  volumes resampled to ``data.spacing`` (:func:`kerasseg.data.volumes.load_volume_dataset`);
* validation: every validation volume at its stored grid through the sliding
  window of :class:`kerasseg.volume_inference.VolumePredictor` (which resamples
  to the model's spacing and back), scored like images are
  (:func:`volume_validation_examples`, :func:`volume_predictor`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from kerasseg.errors import TrainingError

# Validation volumes are kept in memory after the first pass when they fit in this much.
_VALIDATION_CACHE_BYTES = 1 << 30


def check_volume_run(config: Any, info: Any) -> None:
    """Refuse a run whose model, patch size or geometry do not fit ``info`` (2D or volume data).

    Raises:
        TrainingError: naming the setting and the fix.
    """
    from kerasseg.models import ModelConfigError, spatial_dims

    try:
        model_dims = spatial_dims(config.model.name)
    except ModelConfigError as e:
        raise TrainingError(f"model.name: {e}") from None
    data_dims = 3 if info.is_volume else 2
    path = config.data.path
    if data_dims == 3 and model_dims == 2:
        raise TrainingError(
            f"{path} holds volumes (dataset.json dimensions: 3) but model.name {config.model.name!r} takes "
            "2D images: use model.name: unet3d (or attention_unet3d), or convert with volumes2tfrecord --slices z for 2D models"
        )
    if data_dims == 2 and model_dims == 3:
        raise TrainingError(
            f"{path} holds 2D images but model.name {config.model.name!r} takes volumes: convert volumes "
            "with volumes2tfrecord, or choose a 2D model (unet, deeplabv3plus, ...)"
        )
    if data_dims == 3:
        if len(config.data.image_size) != 3:
            raise TrainingError(
                f"data.image_size {config.data.image_size} is an image size; a volume run needs the training "
                "patch [depth, height, width], e.g. [40, 56, 40] (see `kerasseg plan`)"
            )
        if config.data.geometry not in ("resize", "random_crop"):
            raise TrainingError(
                f"data.geometry {config.data.geometry!r} does not apply to volumes: they train on random "
                "patches of data.image_size (geometry random_crop) and are inferred with a sliding window"
            )
    elif len(config.data.image_size) != 2:
        raise TrainingError(f"data.image_size {config.data.image_size} has 3 entries but {path} holds 2D images: "
                            "give [height, width]")


def volume_training_dataset(config: Any, *, batch_size: int, normalization: dict, class_weights: Any,
                            seed: int, include_metadata: bool = False) -> Any:
    """The augmented, shuffled, repeated stream of random patches of ``config.data.train_split``."""
    from kerasseg.config import volume_augmentation
    from kerasseg.data.volumes import load_volume_dataset

    shuffle = config.data.shuffle_buffer if config.data.shuffle_buffer > 0 else False
    augment = volume_augmentation(config.data.augmentation) if config.data.augmentation else None
    return load_volume_dataset(
        config.data.path, config.data.train_split, patch_size=tuple(config.data.image_size),
        batch_size=batch_size, spacing=config.data.spacing, normalization=normalization,
        foreground_fraction=config.data.foreground_fraction, augment=augment, shuffle=shuffle, repeat=True,
        seed=seed, cache=True, drop_remainder=True, include_metadata=include_metadata,
        class_weights=class_weights,
    )


def volume_validation_examples(path: str, split: str, *,
                               limit: int | None = None) -> Callable[[], Iterable[tuple[Any, Any, dict]]]:
    """A callable yielding ``(voxels, labels, {"spacing": ...})`` of ``split`` at the stored grid.

    The first pass reads the records; the volumes are then kept in memory when
    they take less than 1 GiB, so later epochs do not decode them again.
    """
    from kerasseg.data.volumes import iterate_volumes

    cache: list[tuple[Any, Any, dict]] = []
    state = {"complete": False}

    def examples() -> Iterator[tuple[Any, Any, dict]]:
        if state["complete"]:
            yield from cache
            return
        cache.clear()
        size, keep = 0, True
        for index, volume in enumerate(iterate_volumes(path, split)):
            if limit is not None and index >= limit:
                break
            item = (volume["voxels"], volume["mask"], {"spacing": tuple(volume["spacing"])})
            size += item[0].nbytes + item[1].nbytes
            keep = keep and size <= _VALIDATION_CACHE_BYTES
            if keep:
                cache.append(item)
            yield item
        state["complete"] = keep
        if not keep:
            cache.clear()

    return examples


def volume_predictor(model: Any, *, normalization: dict, geometry: Any) -> Any:
    """The sliding-window predictor validation uses: ``predictor(voxels, spacing=...) -> (D, H, W, K)``."""
    from kerasseg.volume_inference import VolumePredictor

    return VolumePredictor(model, normalization=normalization, patch_size=geometry.patch_size,
                           spacing=geometry.spacing, overlap=geometry.overlap)


__all__ = ["check_volume_run", "volume_training_dataset", "volume_validation_examples", "volume_predictor"]
