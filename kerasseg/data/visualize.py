"""See what the model is fed: a PNG grid of (augmented) images with masks overlaid.

Uses matplotlib's object API with the Agg canvas directly, so importing this
module or calling :func:`save_batch_grid` never changes the global matplotlib
backend or opens a window.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from kerasseg.data.augment import AugmentConfig

#: overlay colours of class ids 1.. (class 0, background, is left unpainted)
_PALETTE = np.array(
    [
        [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
        [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
    ],
    dtype=np.float32,
) / 255.0
_IGNORE_COLOUR = np.array([1.0, 1.0, 1.0], np.float32)


def overlay(image: np.ndarray, labels: np.ndarray, ignore: np.ndarray | None = None, *, alpha: float = 0.45
            ) -> np.ndarray:
    """Blend class colours over ``image``.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` float in ``[0, 1]`` (C = 1 or 3).
        labels: ``(H, W)`` int class ids (0 = background, unpainted).
        ignore: optional ``(H, W)`` bool, tinted white.

    Returns:
        ``(H, W, 3)`` float RGB in ``[0, 1]``.
    """
    rgb = np.asarray(image, np.float32)
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    rgb = np.clip(rgb[..., :3], 0.0, 1.0).copy()
    fg = labels > 0
    colours = _PALETTE[(np.maximum(labels, 1) - 1) % len(_PALETTE)]
    rgb[fg] = (1 - alpha) * rgb[fg] + alpha * colours[fg]
    if ignore is not None and ignore.any():
        rgb[ignore] = (1 - alpha) * rgb[ignore] + alpha * _IGNORE_COLOUR
    return rgb


def examples_as_fed(dataset_dir: str, split: str, *, num_images: int = 8, augment: Any = True, seed: int = 0,
                    image_size: int | Sequence[int] | None = None, config: Any = None) -> list[dict]:
    """The first ``num_images`` examples of ``split`` as :func:`save_batch_grid` draws them.

    Each item holds numpy ``images`` ``(H, W, C)`` float32, ``masks`` ``(H, W)``,
    ``sample_weights`` ``(H, W)`` (0 = ignore) and ``source_id`` bytes. With
    ``config`` they come from the training stream of that config (normalized
    intensities); otherwise percentile-windowed to ``[0, 1]``.
    """
    from kerasseg import schema
    from kerasseg.data.pipeline import load_dataset

    if config is not None:
        import copy

        from kerasseg.data.preprocess import resolve_normalization
        from kerasseg.training.datasets import training_dataset

        info = schema.read_dataset_info(dataset_dir)
        fed = copy.deepcopy(config)
        fed.data.path, fed.data.train_split = dataset_dir, split
        ds = training_dataset(fed, batch_size=1, normalization=resolve_normalization(fed.data.normalization, info),
                              class_weights=None, seed=seed, include_metadata=True)
    else:
        ds = load_dataset(
            dataset_dir, split, image_size=image_size, batch_size=1,
            geometry="resize" if image_size is not None else "pad", size_divisor=1,
            augment=augment, normalization={"method": "percentile", "lower": 0.5, "upper": 99.5},
            seed=seed, include_metadata=True,
        )
    return [{k: v.numpy()[0] for k, v in batch.items()} for batch in ds.take(num_images)]


def save_batch_grid(
    dataset_dir: str,
    split: str,
    *,
    num_images: int = 8,
    augment: bool | Mapping[str, Any] | AugmentConfig = True,
    out_path: str,
    seed: int = 0,
    image_size: int | Sequence[int] | None = None,
    columns: int = 4,
    config: Any = None,
) -> str:
    """Save a PNG grid of ``num_images`` examples of ``split`` with their masks overlaid.

    Images go through the real pipeline (:func:`kerasseg.data.load_dataset`
    with ``augment``), are shown with a 0.5-99.5 percentile window, masks are
    painted per class and ignore pixels (255, or out-of-image after warps)
    are tinted white.

    Args:
        dataset_dir: converted dataset folder.
        split: split name.
        num_images: how many examples.
        augment: ``True`` (defaults), ``False`` or an augmentation dict/config.
        out_path: PNG path to write (parent folders are created).
        seed: augmentation seed.
        image_size: resize to this size; ``None`` keeps each image's own size.
        columns: grid columns.
        config: a training :class:`kerasseg.config.Config`: draw exactly what
            its training stream feeds the model (its geometry, patch size,
            foreground sampling, preprocessing, normalization and augmentation,
            through the same function training uses), ``split`` in place of its
            training split; ``augment`` and ``image_size`` are then ignored.
            Normalized intensities are stretched to their 0.5-99.5 percentiles
            for display only.

    Returns:
        ``out_path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from kerasseg import schema

    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    info = schema.read_dataset_info(dataset_dir)
    items = examples_as_fed(dataset_dir, split, num_images=num_images, augment=augment, seed=seed,
                            image_size=image_size, config=config)
    if config is not None:  # normalized values: stretch for display
        for item in items:
            lo, hi = np.percentile(item["images"], [0.5, 99.5])
            item["images"] = (item["images"] - lo) / max(hi - lo, 1e-6)
    augment = bool(config.data.augmentation) if config is not None else augment
    if not items:
        raise schema.SchemaError(f"{dataset_dir}: split {split!r} has no examples")

    cols = max(1, min(columns, len(items)))
    rows = (len(items) + cols - 1) // cols
    fig = Figure(figsize=(3.0 * cols, 3.2 * rows + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    for i, item in enumerate(items):
        ax = fig.add_subplot(rows, cols, i + 1)
        ignore = item["sample_weights"] == 0
        ax.imshow(overlay(item["images"], np.where(ignore, 0, item["masks"]), ignore), interpolation="nearest")
        ax.set_title(item["source_id"].decode("utf-8", "replace")[:32], fontsize=8)
        ax.set_axis_off()
    present = sorted({int(c) for item in items for c in np.unique(item["masks"]) if c > 0})
    legend = ", ".join(
        f"{info.class_names[c] if c < len(info.class_names) else c}: "
        f"#{''.join(f'{int(255 * v):02x}' for v in _PALETTE[(c - 1) % len(_PALETTE)])}"
        for c in present
    )
    aug_text = "augmented" if augment else "not augmented"
    if config is not None:
        h, w = config.data.image_size
        aug_text = f"as fed: {config.data.geometry} {h}x{w}, {config.data.normalization.get('method')}, {aug_text}"
    fig.suptitle(f"{os.path.basename(os.path.normpath(dataset_dir))} / {split} ({aug_text}; seed {seed}); "
                 f"{legend or 'no foreground'}; white = ignore", fontsize=9)
    fig.tight_layout()

    from kerasseg.atomic_files import replacing

    with replacing(out_path) as tmp:
        fig.savefig(tmp, format="png")
    return out_path


__all__ = ["examples_as_fed", "overlay", "save_batch_grid"]
