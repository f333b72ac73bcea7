"""The data a run reads: the training stream, batch-norm re-estimation batches, validation images."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from kerasseg import distribute

# Validation images are kept in memory after the first pass when they fit in this much.
_VALIDATION_CACHE_BYTES = 1 << 30


def training_dataset(config: Any, *, batch_size: int, normalization: dict, class_weights: Any,
                     seed: int, strategy: Any = None, include_metadata: bool = False) -> Any:
    """The augmented, shuffled, repeated training stream of ``config.data.train_split``: images, or
    random patches for a volume dataset (``include_metadata``: batches are dicts with ``source_id``
    too, as ``kerasseg data show`` draws them)."""
    from kerasseg.data import load_dataset
    from kerasseg.schema import read_dataset_info, split_files

    shuffle = config.data.shuffle_buffer if config.data.shuffle_buffer > 0 else False
    if read_dataset_info(config.data.path).is_volume:
        from kerasseg.training.volumes import volume_training_dataset

        dataset = volume_training_dataset(config, batch_size=batch_size, normalization=normalization,
                                          class_weights=class_weights, seed=seed, include_metadata=include_metadata)
    else:
        dataset = _image_dataset(config, load_dataset, batch_size=batch_size, normalization=normalization,
                                 class_weights=class_weights, seed=seed, shuffle=shuffle,
                                 include_metadata=include_metadata)
    if strategy is None:
        return dataset
    return distribute.apply_sharding(
        dataset, num_files=len(split_files(config.data.path, config.data.train_split)), strategy=strategy
    )


def _image_dataset(config: Any, load_dataset: Any, *, batch_size: int, normalization: dict, class_weights: Any,
                   seed: int, shuffle: Any, include_metadata: bool) -> Any:
    return load_dataset(
        config.data.path, config.data.train_split, image_size=tuple(config.data.image_size),
        batch_size=batch_size, geometry=config.data.geometry,
        foreground_fraction=config.data.foreground_fraction,
        augment=config.data.augmentation or None, preprocess=config.data.preprocess or None,
        normalization=normalization, cache=config.data.cache, shuffle=shuffle, repeat=True,
        seed=seed, class_weights=class_weights, drop_remainder=True, include_metadata=include_metadata,
    )


def validation_examples(path: str, split: str, *, preprocess: Any = None,
                        limit: int | None = None) -> Callable[[], Iterable[tuple[Any, Any]]]:
    """A callable yielding ``(image, mask)`` numpy pairs of ``split`` (stored resolution).

    The first pass reads the records; the pairs are then kept in memory when
    they take less than 1 GiB, so later epochs do not decode them again.
    """
    from kerasseg.data import iterate_examples

    cache: list[tuple[Any, Any]] = []
    state = {"complete": False}

    def examples() -> Iterator[tuple[Any, Any]]:
        if state["complete"]:
            yield from cache
            return
        cache.clear()
        size = 0
        keep = True
        for index, example in enumerate(iterate_examples(path, split, preprocess=preprocess)):
            if limit is not None and index >= limit:
                break
            pair = (example["image"], example["mask"])
            size += pair[0].nbytes + pair[1].nbytes
            keep = keep and size <= _VALIDATION_CACHE_BYTES
            if keep:
                cache.append(pair)
            yield pair
        state["complete"] = keep
        if not keep:
            cache.clear()

    return examples


__all__ = ["training_dataset", "validation_examples"]
