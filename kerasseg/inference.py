"""Inference on single images of any size: padding, sliding windows, TTA, I/O.

The main entry point is :func:`predict_probabilities`, which takes one
``(H, W, C)`` image (uint8, uint16 or float; ``(H, W)`` is read as one
channel), normalizes it exactly as in training and returns float32
``(H, W, K)`` class probabilities at the image's own resolution:

* images are padded (reflection) up to a multiple of the model's stride
  (:func:`kerasseg.models.size_divisor`) and the output cropped back;
* with ``tile_size`` (or a model whose input size is fixed and smaller than
  the image) the image goes through overlapping tiles, each prediction
  weighted by a Gaussian centred on the tile (border pixels, which see less
  context, count less) and the weighted sum divided by the summed weights;
* ``tta=True`` averages the probabilities of the image and its horizontal,
  vertical and double flips.

Helpers read images (PNG/JPEG/TIFF, 8/16-bit, float TIFF), load models in
Keras' safe mode, read the ``model_info.json`` stored beside a trained model,
and write masks, overlays and probability maps.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import numpy as np

__all__ = [
    "InferenceError",
    "IMAGE_EXTENSIONS",
    "MODEL_INFO_FILENAME",
    "load_model",
    "load_model_info",
    "LoadedModel",
    "load_for_inference",
    "model_input_channels",
    "read_image",
    "match_channels",
    "gaussian_weights",
    "tile_starts",
    "predict_probabilities",
    "probabilities_to_mask",
    "save_mask",
    "save_overlay",
    "save_probabilities",
    "default_palette",
    "list_images",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MODEL_INFO_FILENAME = "model_info.json"


class InferenceError(ValueError):
    """A user-caused inference problem (bad file, wrong channels, bad model)."""


# --------------------------------------------------------------------------- models


def _register_custom_objects() -> None:
    """Import the modules whose layers/losses/metrics a saved model may reference.

    Registration happens at import (``register_keras_serializable``); safe
    mode still refuses arbitrary code such as ``Lambda`` layers.
    """
    import importlib

    for name in ("kerasseg.layers", "kerasseg.models", "kerasseg.losses", "kerasseg.metrics"):
        try:
            module = importlib.import_module(name)
        except ImportError:  # a module that does not exist cannot be referenced
            continue
        register_all = getattr(module, "register_all", None)
        if callable(register_all):
            register_all()


def load_model(path: str | os.PathLike) -> Any:
    """Load a ``.keras`` model with ``safe_mode=True`` (no code runs from the file).

    Raises:
        InferenceError: the file is missing, is not a ``.keras`` archive, or is
            corrupt / needs unsafe deserialization; the message names the file.
    """
    import keras

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InferenceError(f"{path}: model file not found")
    if os.path.isdir(path):
        raise InferenceError(
            f"{path}: is a folder; expected a .keras model file (e.g. runs/x/best.keras)"
        )
    if not path.endswith(".keras"):
        raise InferenceError(f"{path}: expected a .keras model file")
    _register_custom_objects()
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # keras raises many types for a damaged archive
        raise InferenceError(f"{path}: cannot load model (corrupt or unsafe .keras file: {e})") from e


def load_model_info(model_path: str | os.PathLike) -> dict:
    """The ``model_info.json`` beside ``model_path`` (``{}`` when there is none).

    It holds ``class_names``, ``normalization``, ``input_channels``,
    ``image_size``, ``num_classes`` and the ``crf`` settings of the run.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(os.fspath(model_path))), MODEL_INFO_FILENAME)
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise InferenceError(f"{path}: unreadable model info ({e})") from e
    if not isinstance(info, dict):
        raise InferenceError(f"{path}: model info must be a JSON object")
    return info


@dataclasses.dataclass
class LoadedModel:
    """A model with what inference needs to feed it like in training.

    Attributes:
        model: the Keras model.
        path: the ``.keras`` file.
        class_names: one name per output class.
        normalization: resolved normalization dict (``None``: raw float32 input).
        image_size: ``(h, w)`` of training examples, or ``None`` if unknown.
        crf: dense-CRF parameters stored with the run (``{}`` = defaults).
        info: the raw ``model_info.json`` content (``{}`` when absent).
    """

    model: Any
    path: str
    class_names: list
    normalization: dict | None
    image_size: tuple | None
    crf: dict
    info: dict

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_for_inference(
    path: str | os.PathLike,
    *,
    normalization: dict | str | None = None,
    class_names: Sequence[str] | None = None,
) -> LoadedModel:
    """Load a model and its ``model_info.json``; explicit arguments override the file.

    Without ``model_info.json`` and without ``normalization`` the image is
    z-scored per image (the kerasseg default) and a note says so on stderr.

    Raises:
        InferenceError: missing/corrupt model, class names that do not match the
            model's outputs.
    """
    import sys

    model = load_model(path)
    info = load_model_info(path)
    if isinstance(normalization, str):
        normalization = {"method": normalization}
    if normalization is None:
        normalization = info.get("normalization")
        if normalization is None:
            normalization = {"method": "zscore"}
            print(f"note: no {MODEL_INFO_FILENAME} beside {os.fspath(path)}; normalizing with "
                  "per-image z-score (pass --normalization to change)", file=sys.stderr)
    outputs = model.outputs[0].shape[-1] if getattr(model, "outputs", None) else None
    names = list(class_names) if class_names else list(info.get("class_names") or [])
    if not names:
        k = int(outputs or 2)
        names = [f"class{i}" for i in range(max(k, 2))]
    expected = max(int(outputs), 2) if outputs else len(names)
    if len(names) != expected:
        raise InferenceError(
            f"{os.fspath(path)}: {len(names)} class names {names} but the model has {outputs} output channel(s)"
        )
    size = info.get("image_size")
    return LoadedModel(
        model=model,
        path=os.fspath(path),
        class_names=names,
        normalization=normalization,
        image_size=tuple(int(v) for v in size) if size else None,
        crf=dict(info.get("crf") or {}),
        info=info,
    )


def model_input_channels(model: Any) -> int | None:
    shape = model.inputs[0].shape if getattr(model, "inputs", None) else model.input_shape
    return None if shape[-1] is None else int(shape[-1])


def _model_divisor(model: Any) -> int:
    try:
        from kerasseg.models import size_divisor
    except ImportError:
        return 1
    try:
        return max(1, int(size_divisor(model)))
    except Exception:
        return 1


# --------------------------------------------------------------------------- images


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read PNG/JPEG/TIFF/BMP into ``(H, W, C)`` (C = 1 or 3, RGB order).

    8-bit stays uint8, 16-bit stays uint16, float TIFF stays float32. An alpha
    channel is dropped. Multi-page TIFFs give their first page.

    Raises:
        InferenceError: missing or undecodable file.
    """
    import cv2

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InferenceError(f"{path}: image file not found")
    data = np.fromfile(path, dtype=np.uint8)  # works for non-ASCII paths too
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise InferenceError(f"{path}: cannot decode image (not a PNG/JPEG/TIFF/BMP file?)")
    if image.ndim == 2:
        image = image[:, :, None]
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    elif image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.dtype not in (np.uint8, np.uint16):
        image = image.astype(np.float32)
    return image


def match_channels(image: np.ndarray, channels: int | None, *, name: str = "image") -> np.ndarray:
    """Give ``image`` ``(H, W, channels)`` or raise a clear error.

    Conversions done (documented, lossless): a 1-channel image for a 3-channel
    model is repeated to RGB; an RGB image whose three channels are identical
    (grayscale saved as RGB, common for JPEG exports) becomes 1 channel. A
    colour image for a 1-channel model is an error: averaging colours silently
    would feed the model data unlike its training set.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise InferenceError(f"{name}: expected an (H, W, C) image, got shape {image.shape}")
    have = image.shape[2]
    if channels is None or have == channels:
        return image
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=2)
    if have == 3 and channels == 1:
        if np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2]):
            return image[..., :1]
    raise InferenceError(
        f"{name}: has {have} channel(s) but the model expects {channels}; "
        "convert the image (e.g. to grayscale) or use a model trained on this kind of image"
    )


def list_images(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Expand files and folders (non-recursive, sorted) into image paths.

    Raises:
        InferenceError: an input does not exist or a folder holds no image.
    """
    paths: list[str] = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            found = sorted(
                os.path.join(item, n)
                for n in os.listdir(item)
                if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")
            )
            if not found:
                raise InferenceError(f"{item}: folder holds no {'/'.join(IMAGE_EXTENSIONS)} image")
            paths.extend(found)
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise InferenceError(f"{item}: no such file or folder")
    return paths


# --------------------------------------------------------------------------- prediction


def gaussian_weights(height: int, width: int, sigma_scale: float = 0.125) -> np.ndarray:
    """``(height, width)`` float32 Gaussian centred on the tile, max 1.

    ``sigma = sigma_scale * size`` per axis; values are floored at 1e-3 so
    every pixel keeps some weight.
    """

    def axis(n: int) -> np.ndarray:
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        sigma = max(sigma_scale * n, 1e-6)
        return np.exp(-0.5 * (x / sigma) ** 2)

    w = np.outer(axis(height), axis(width))
    w /= w.max()
    return np.maximum(w, 1e-3).astype(np.float32)


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets covering ``[0, length)`` with tiles of ``tile`` overlapping by ``overlap``."""
    if length <= tile:
        return [0]
    step = max(1, int(round(tile * (1.0 - overlap))))
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def _round_up(value: int, divisor: int) -> int:
    return -(-value // divisor) * divisor


def _pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    ph, pw = height - image.shape[0], width - image.shape[1]
    if ph == 0 and pw == 0:
        return image
    return np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="symmetric")


def _forward(model: Any, batch: np.ndarray, tta: bool) -> np.ndarray:
    """Model probabilities for ``(N, h, w, C)``; flips averaged when ``tta``."""

    def run(x: np.ndarray) -> np.ndarray:
        out = model(x, training=False)
        if isinstance(out, (list, tuple)):
            out = out[0]
        if isinstance(out, dict):
            out = next(iter(out.values()))
        out = out.numpy() if hasattr(out, "numpy") else out
        return np.array(out, dtype=np.float32)  # a writable copy

    if not tta:
        return run(batch)
    total = run(batch)
    for axes in ((2,), (1,), (1, 2)):
        total += np.flip(run(np.ascontiguousarray(np.flip(batch, axis=axes))), axis=axes)
    return total / 4.0


def _normalize(image: np.ndarray, normalization: dict | None) -> np.ndarray:
    if not normalization:
        return image.astype(np.float32)
    from kerasseg.data.preprocess import normalize

    return np.asarray(normalize(image, normalization), dtype=np.float32)


def predict_probabilities(
    model: Any,
    image: np.ndarray,
    *,
    normalization: dict | None,
    tile_size: int | Sequence[int] | None = None,
    overlap: float = 0.5,
    tta: bool = False,
    batch_size: int = 4,
) -> np.ndarray:
    """Class probabilities of one image at its own resolution.

    Args:
        model: Keras model mapping ``(B, h, w, C)`` to ``(B, h, w, K)`` probabilities.
        image: ``(H, W, C)`` or ``(H, W)``, uint8/uint16/float, any size.
        normalization: the resolved normalization dict used in training
            (``kerasseg.data.preprocess.normalize``); ``None`` feeds raw float32.
        tile_size: tile side (int) or ``(h, w)`` for sliding-window inference;
            ``None`` runs the whole image at once unless the model has a fixed
            input size, which then becomes the tile.
        overlap: fraction of a tile shared with its neighbour, in ``[0, 1)``.
        tta: average the predictions of the four flips.
        batch_size: tiles per forward pass.

    Returns:
        float32 ``(H, W, K)``.

    Raises:
        InferenceError: wrong channel count, bad tile/overlap values.
    """
    if not 0.0 <= overlap < 1.0:
        raise InferenceError(f"overlap must be in [0, 1), got {overlap}")
    image = match_channels(np.asarray(image), model_input_channels(model))
    height, width = image.shape[:2]
    x = _normalize(image, normalization)
    divisor = _model_divisor(model)

    fixed = model.inputs[0].shape[1:3] if getattr(model, "inputs", None) else (None, None)
    if tile_size is None and fixed[0] is not None and fixed[1] is not None:
        tile_size = (int(fixed[0]), int(fixed[1]))
    if tile_size is None:
        padded = _pad_to(x, _round_up(height, divisor), _round_up(width, divisor))
        probs = _forward(model, padded[None], tta)[0]
        return np.ascontiguousarray(probs[:height, :width])

    th, tw = (tile_size, tile_size) if isinstance(tile_size, int) else map(int, tile_size)
    if th < 1 or tw < 1:
        raise InferenceError(f"tile size must be positive, got {tile_size}")
    if fixed[0] is None:
        th, tw = _round_up(th, divisor), _round_up(tw, divisor)
    elif (th, tw) != (int(fixed[0]), int(fixed[1])):
        raise InferenceError(
            f"this model takes fixed {int(fixed[0])}x{int(fixed[1])} inputs; tile size {th}x{tw} differs"
        )
    padded = _pad_to(x, max(height, th), max(width, tw))
    ph, pw = padded.shape[:2]
    weights = gaussian_weights(th, tw)[:, :, None]
    acc = None
    norm = np.zeros((ph, pw, 1), np.float32)
    boxes = [(y, x0) for y in tile_starts(ph, th, overlap) for x0 in tile_starts(pw, tw, overlap)]
    for i in range(0, len(boxes), max(1, batch_size)):
        chunk = boxes[i : i + batch_size]
        batch = np.stack([padded[y : y + th, x0 : x0 + tw] for y, x0 in chunk])
        out = _forward(model, batch, tta)
        if acc is None:
            acc = np.zeros((ph, pw, out.shape[-1]), np.float32)
        for (y, x0), probs in zip(chunk, out):
            acc[y : y + th, x0 : x0 + tw] += probs * weights
            norm[y : y + th, x0 : x0 + tw] += weights
    result = acc / norm
    return np.ascontiguousarray(result[:height, :width])


def probabilities_to_mask(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """uint8 ``(H, W)`` class ids: argmax over K, or ``p >= threshold`` when K = 1."""
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 3:
        raise InferenceError(f"probabilities must be (H, W, K), got shape {probabilities.shape}")
    if probabilities.shape[-1] == 1:
        return (probabilities[..., 0] >= threshold).astype(np.uint8)
    return np.argmax(probabilities, axis=-1).astype(np.uint8)


# --------------------------------------------------------------------------- writing


def _write_png(path: str, array: np.ndarray) -> str:
    """Encode first, then write to a temp name and rename: never a half file."""
    import cv2

    path = os.fspath(path)
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise InferenceError(f"{path}: PNG encoding failed")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.part"
    buf.tofile(tmp)
    os.replace(tmp, path)
    return path


def save_mask(path: str | os.PathLike, mask: np.ndarray) -> str:
    """Write ``(H, W)`` class ids as a single-channel uint8 PNG."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise InferenceError(f"mask must be (H, W), got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise InferenceError("mask class ids must lie in 0..255")
    return _write_png(os.fspath(path), mask.astype(np.uint8))


def default_palette(num_classes: int) -> np.ndarray:
    """``(num_classes, 3)`` uint8 RGB colours; class 0 black, then distinct hues."""
    base = np.array(
        [
            [0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
            [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60],
        ],
        dtype=np.uint8,
    )
    if num_classes <= len(base):
        return base[:num_classes]
    rng = np.random.default_rng(0)
    extra = rng.integers(40, 256, size=(num_classes - len(base), 3), dtype=np.uint8)
    return np.concatenate([base, extra])


def _display_uint8(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 for display: uint8 as is, others windowed to the 1st-99th percentile."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.dtype != np.uint8:
        x = image.astype(np.float32)
        lo, hi = np.percentile(x, 1), np.percentile(x, 99)
        if hi <= lo:
            lo, hi = float(x.min()), float(x.max()) + 1e-6
        image = (np.clip((x - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image[..., :3]


def save_overlay(
    path: str | os.PathLike,
    image: np.ndarray,
    mask: np.ndarray,
    class_colors: Sequence[Sequence[int]] | None = None,
    *,
    alpha: float = 0.5,
) -> str:
    """Blend class colours over the image (class 0 left untouched); write an RGB PNG.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` any dtype (16-bit/float windowed for display).
        mask: ``(H, W)`` class ids.
        class_colors: RGB per class id; default :func:`default_palette`.
    """
    rgb = _display_uint8(image)
    mask = np.asarray(mask)
    if mask.shape != rgb.shape[:2]:
        raise InferenceError(f"mask shape {mask.shape} does not match image {rgb.shape[:2]}")
    top = int(mask.max()) + 1 if mask.size else 1
    colors = np.asarray(class_colors if class_colors is not None else default_palette(max(top, 2)), np.float32)
    if len(colors) < top:
        raise InferenceError(f"class_colors has {len(colors)} colours, mask has class id {top - 1}")
    out = rgb.astype(np.float32)
    fg = mask > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colors[mask[fg]]
    bgr = out.round().astype(np.uint8)[..., ::-1]
    return _write_png(os.fspath(path), np.ascontiguousarray(bgr))


def save_probabilities(path: str | os.PathLike, probabilities: np.ndarray, *, fmt: str = "npy") -> list[str]:
    """Write probabilities: ``npy`` (float32 ``(H, W, K)`` in one file) or ``png``
    (one 16-bit PNG per class, ``p * 65535``, named ``<path>_class<k>.png``).

    ``path`` is given without extension. Returns the written paths.
    """
    path = os.fspath(path)
    probabilities = np.asarray(probabilities, np.float32)
    if fmt == "npy":
        out = f"{path}.npy"
        tmp = f"{out}.part.npy"
        np.save(tmp, probabilities)
        os.replace(tmp, out)
        return [out]
    if fmt == "png":
        written = []
        for k in range(probabilities.shape[-1]):
            plane = (np.clip(probabilities[..., k], 0, 1) * 65535).round().astype(np.uint16)
            written.append(_write_png(f"{path}_class{k}.png", plane))
        return written
    raise InferenceError(f"probability format must be 'npy' or 'png', got {fmt!r}")
