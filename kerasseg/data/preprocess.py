"""Intensity normalization as pure TensorFlow ops.

``normalize(image, config)`` turns an image of any integer or float dtype into
float32. It runs inside ``tf.data`` map functions, inside Keras models and in
exported serving graphs alike, because it uses TensorFlow ops only.
``normalize(volume, config, spatial_dims=3)`` does the same for volumes
``(D, H, W, C)`` / ``(B, D, H, W, C)``: the per-image statistics are then taken
over the three spatial axes of each volume (one z-score per volume, not per slice).

A normalization config is a plain dict with a ``"method"`` key:

===============  ==================================================================
method           meaning (per image and per channel unless stated)
===============  ==================================================================
``zscore``       ``(x - mean(x)) / max(std(x), eps)`` over the image (default)
``dataset``      ``(x - mean) / std`` with the dataset's per-channel ``mean``/``std``
``minmax``       ``(x - min) / (max - min)`` to ``[0, 1]``; fixed ``min``/``max``
                 when given, else the image's own
``percentile``   clip to the ``lower``/``upper`` percentiles (default 0.5/99.5) of
                 the image, then scale that range to ``[0, 1]``
``window``       CT-style window: clip to ``center -/+ width/2``, scale to ``[0, 1]``
``clip_zscore``  CT scheme of nnU-Net: clip to the absolute values ``lower``/``upper``,
                 then ``(x - mean) / std``; all four per channel, filled by
                 ``resolve_normalization`` from ``dataset.json``
                 ``volume.foreground_intensity`` (``p00_5``, ``p99_5``, ``mean``,
                 ``std`` of the labelled voxels of the training split)
``scale``        divide by the dtype maximum (255 for uint8, 65535 for uint16) or
                 by an explicit ``max``
``none``         cast to float32 only
===============  ==================================================================

``resolve_normalization(config, info)`` fills in everything the config takes
from the dataset (``mean``/``std`` for ``dataset``, ``max`` for ``scale``,
``lower``/``upper``/``mean``/``std`` for ``clip_zscore``, ...)
so that the resolved dict alone reproduces training-time normalization; the
export stage bakes that dict into the serving graph.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from kerasseg.errors import NormalizationError

DEFAULT_NORMALIZATION: dict[str, Any] = {"method": "zscore"}
METHODS = ("zscore", "dataset", "minmax", "percentile", "window", "scale", "clip_zscore", "none")
_DTYPE_MAX = {"uint8": 255.0, "uint16": 65535.0, "int8": 127.0, "int16": 32767.0}


# the keys each method reads (besides "method")
_KEYS = {
    "zscore": ("eps",),
    "dataset": ("mean", "std", "eps"),
    "minmax": ("min", "max", "eps", "source"),
    "percentile": ("lower", "upper", "eps"),
    "window": ("center", "width"),
    "scale": ("max",),
    # lower/upper here are absolute intensities (clip bounds), not percentiles as for "percentile"
    "clip_zscore": ("lower", "upper", "mean", "std", "eps"),
    "none": (),
}


def _nearest(word: str, candidates: Any) -> str:
    import difflib

    close = difflib.get_close_matches(str(word), list(candidates), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_normalization(config: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """Validate a normalization config's method and keys; return it as a dict.

    Raises:
        NormalizationError: not a mapping, an unknown method, or a key the
            method does not read (with the nearest valid key).
    """
    if config is None:
        config = DEFAULT_NORMALIZATION
    if isinstance(config, str):
        config = {"method": config}
    if not isinstance(config, Mapping):
        raise NormalizationError(f"normalization must be a dict with a 'method' key, got {config!r}")
    method = config.get("method", "zscore")
    if method not in METHODS:
        raise NormalizationError(f"unknown normalization method {method!r}{_nearest(method, METHODS)}; "
                                 f"choose one of {METHODS}")
    allowed = ("method", *_KEYS[method])
    for key in config:
        if key not in allowed:
            every = {k for keys in _KEYS.values() for k in keys} | {"method"}
            hint = _nearest(key, allowed) or _nearest(key, every)
            raise NormalizationError(
                f"unknown key {key!r} for method {method!r}{hint}; it takes {', '.join(allowed)}"
            )
    out = dict(config)
    out["method"] = method
    return out


_check = check_normalization


def normalize(image, config: Mapping[str, Any] | None = None, *, spatial_dims: int = 2):
    """Normalize ``image`` according to ``config``.

    Args:
        image: ``(H, W, C)`` or ``(B, H, W, C)`` tensor of any integer or float
            dtype; with ``spatial_dims=3`` a volume ``(D, H, W, C)`` or ``(B, D, H, W, C)``.
        config: normalization dict (see the module docstring); ``None`` means
            ``{"method": "zscore"}``.
        spatial_dims: 2 for images, 3 for volumes: the per-image statistics
            (``zscore``, ``minmax``, ``percentile``) are taken over that many
            spatial axes (those before the channel axis) of each image and channel.

    Returns:
        float32 tensor of the same shape.
    """
    import tensorflow as tf

    config = _check(config)
    if spatial_dims not in (2, 3):
        raise NormalizationError(f"spatial_dims must be 2 (images) or 3 (volumes), got {spatial_dims!r}")
    method = config["method"]
    image = tf.convert_to_tensor(image)
    rank = image.shape.rank
    if spatial_dims == 3 and rank is not None and rank not in (4, 5):
        raise NormalizationError(f"normalize with spatial_dims=3 expects (D, H, W, C) or (B, D, H, W, C), "
                                 f"got shape {image.shape}")
    in_dtype = image.dtype
    x = tf.cast(image, tf.float32)
    # statistics are taken over the spatial axes of each image and channel
    axes = list(range(-spatial_dims - 1, -1))
    eps = float(config.get("eps", 1e-6))

    if method == "none":
        return x
    if method == "zscore":
        mean = tf.reduce_mean(x, axis=axes, keepdims=True)
        std = tf.math.reduce_std(x, axis=axes, keepdims=True)
        return (x - mean) / tf.maximum(std, eps)
    if method == "dataset":
        for key in ("mean", "std"):
            if key not in config:
                raise NormalizationError(
                    f"normalization 'dataset' needs {key!r}; call resolve_normalization(config, info) "
                    "with the DatasetInfo, or give the statistics explicitly"
                )
        mean = tf.constant(config["mean"], tf.float32)
        std = tf.maximum(tf.constant(config["std"], tf.float32), eps)
        return (x - mean) / std
    if method == "minmax":
        if "min" in config and "max" in config:
            lo = tf.constant(config["min"], tf.float32)
            hi = tf.constant(config["max"], tf.float32)
        else:
            lo = tf.reduce_min(x, axis=axes, keepdims=True)
            hi = tf.reduce_max(x, axis=axes, keepdims=True)
        return (x - lo) / tf.maximum(hi - lo, eps)
    if method == "percentile":
        lower = float(config.get("lower", 0.5))
        upper = float(config.get("upper", 99.5))
        if not 0.0 <= lower < upper <= 100.0:
            raise NormalizationError(f"percentile needs 0 <= lower < upper <= 100, got {lower}, {upper}")
        lo, hi = percentile_bounds(x, lower, upper, spatial_dims=spatial_dims)
        x = tf.clip_by_value(x, lo, hi)
        return (x - lo) / tf.maximum(hi - lo, eps)
    if method == "window":
        if "center" not in config or "width" not in config:
            raise NormalizationError("normalization 'window' needs 'center' and 'width'")
        center = float(config["center"])
        width = float(config["width"])
        if width <= 0:
            raise NormalizationError(f"window width must be positive, got {width}")
        lo, hi = center - width / 2.0, center + width / 2.0
        return (tf.clip_by_value(x, lo, hi) - lo) / width
    if method == "clip_zscore":
        missing = [key for key in ("lower", "upper", "mean", "std") if key not in config]
        if missing:
            raise NormalizationError(
                f"normalization 'clip_zscore' needs {', '.join(map(repr, missing))}; call "
                "resolve_normalization(config, info) with the DatasetInfo of a volume dataset, or give them"
            )
        # per-channel lists (or scalars) broadcast over the channel axis
        lo = tf.constant(config["lower"], tf.float32)
        hi = tf.constant(config["upper"], tf.float32)
        mean = tf.constant(config["mean"], tf.float32)
        std = tf.maximum(tf.constant(config["std"], tf.float32), eps)
        return (tf.minimum(tf.maximum(x, lo), hi) - mean) / std
    # scale
    if "max" in config:
        top = float(config["max"])
    elif in_dtype.is_integer:
        top = float(in_dtype.max)
    else:
        top = 1.0
    return x / top


def percentile_bounds(x: Any, lower: float, upper: float, *, spatial_dims: int = 2,
                      joint_channels: bool = False) -> tuple[Any, Any]:
    """The ``lower`` and ``upper`` percentiles of each image of ``x``, as tensors that broadcast against it.

    Nearest rank: the sorted value at ``round((N - 1) * p / 100)`` (numpy's
    ``method="nearest"``), so an image's bounds are values it holds.

    Args:
        x: float ``(B, *spatial, C)`` or ``(*spatial, C)`` with ``spatial_dims`` spatial axes.
        lower, upper: percentiles in ``[0, 100]``.
        spatial_dims: 2 for images, 3 for volumes.
        joint_channels: one pair of bounds over all channels of an image (what the
            dense CRF's appearance image uses, so colour differences survive)
            instead of one pair per channel.

    Returns:
        ``(low, high)``, each ``(B, 1, ..., 1, C)`` (``C`` is 1 with ``joint_channels``),
        without the batch axis when ``x`` has none.
    """
    import tensorflow as tf

    rank = x.shape.rank
    batched = x if rank == spatial_dims + 2 else x[tf.newaxis]
    shape = tf.shape(batched)
    channels = 1 if joint_channels else shape[-1]
    flat = tf.reshape(batched, [shape[0], -1, channels])
    flat = tf.sort(tf.transpose(flat, [0, 2, 1]), axis=-1)  # (B, C, N)
    n = tf.cast(tf.shape(flat)[-1] - 1, tf.float32)
    lo_i = tf.cast(tf.round(n * lower / 100.0), tf.int32)
    hi_i = tf.cast(tf.round(n * upper / 100.0), tf.int32)
    # (B, C) -> (B, 1, ..., 1, C): one statistic per image (and channel)
    stat_shape = tf.concat([shape[:1], tf.ones([spatial_dims], tf.int32), [channels]], 0)
    lo = tf.reshape(tf.gather(flat, lo_i, axis=-1), stat_shape)
    hi = tf.reshape(tf.gather(flat, hi_i, axis=-1), stat_shape)
    if rank == spatial_dims + 1:
        lo, hi = lo[0], hi[0]
    return lo, hi


def resolve_normalization(config: Mapping[str, Any] | None, info: Any = None) -> dict[str, Any]:
    """Return a self-contained normalization dict.

    Fills ``mean``/``std`` (method ``dataset``) and ``min``/``max`` (method
    ``minmax`` with ``"source": "dataset"``) from ``info.intensity`` (2D and
    volume datasets alike), ``lower``/``upper``/``mean``/``std`` of
    ``clip_zscore`` from ``info.volume["foreground_intensity"]`` (``p00_5``,
    ``p99_5``, ``mean``, ``std``; only those not given), ``max`` for ``scale``
    from ``info.image_dtype``, and the defaults of every method, so that
    ``normalize(image, resolved)`` needs nothing else.

    Args:
        config: normalization dict or ``None`` (zscore).
        info: a :class:`kerasseg.schema.DatasetInfo` (or ``None`` when the
            config already carries everything).

    Raises:
        NormalizationError: a statistic is needed but neither given nor in ``info``.
    """
    out = copy.deepcopy(_check(config))
    method = out["method"]
    intensity = dict(getattr(info, "intensity", None) or {})

    def _from_info(key: str) -> list[float]:
        if key not in intensity:
            raise NormalizationError(
                f"normalization {method!r} needs {key!r}, which is neither in the config nor in "
                "dataset.json intensity statistics"
            )
        value = intensity[key]
        return [float(v) for v in (value if isinstance(value, (list, tuple)) else [value])]

    if method == "dataset":
        for key in ("mean", "std"):
            if key not in out:
                out[key] = _from_info(key)
        out["mean"] = [float(v) for v in _as_list(out["mean"])]
        out["std"] = [float(v) for v in _as_list(out["std"])]
    elif method == "minmax" and out.get("source") == "dataset":
        for key in ("min", "max"):
            if key not in out:
                out[key] = _from_info(key)
    elif method == "percentile":
        out.setdefault("lower", 0.5)
        out.setdefault("upper", 99.5)
    elif method == "clip_zscore":
        foreground = dict((getattr(info, "volume", None) or {}).get("foreground_intensity") or {})
        for key, source in (("lower", "p00_5"), ("upper", "p99_5"), ("mean", "mean"), ("std", "std")):
            if key not in out:
                if source not in foreground:
                    raise NormalizationError(
                        f"normalization 'clip_zscore' needs {key!r}, which is neither in the config nor in "
                        f"dataset.json volume.foreground_intensity.{source} (a volume dataset's statistics)"
                    )
                out[key] = foreground[source]
            out[key] = [float(v) for v in _as_list(out[key])]
        if any(lo > hi for lo, hi in zip(out["lower"], out["upper"])):
            raise NormalizationError(f"clip_zscore needs lower <= upper, got {out['lower']}, {out['upper']}")
    elif method == "scale" and "max" not in out:
        dtype = getattr(info, "image_dtype", None) or intensity.get("dtype")
        if dtype is None:
            raise NormalizationError("normalization 'scale' needs 'max' or a DatasetInfo with image_dtype")
        if dtype not in _DTYPE_MAX:
            raise NormalizationError(f"normalization 'scale': unsupported image dtype {dtype!r}")
        out["max"] = _DTYPE_MAX[dtype]
    if method in ("zscore", "dataset", "minmax", "percentile", "clip_zscore"):
        out.setdefault("eps", 1e-6)
    return out


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


__all__ = ["DEFAULT_NORMALIZATION", "METHODS", "NormalizationError", "check_normalization", "normalize",
           "percentile_bounds", "resolve_normalization"]
