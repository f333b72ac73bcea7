"""Inference on single images of any size, and the image/mask I/O around it.

:func:`predict_probabilities` (and the reusable :class:`Predictor`) takes one
``(H, W, C)`` image (uint8, uint16 or float; ``(H, W)`` is read as one
channel), normalizes it exactly as in training and returns float32
``(H, W, K)`` class probabilities at the image's own resolution, applying the
model the way it saw images in training (:class:`kerasseg.predict_graph.InferenceGeometry`,
recorded in ``model_info.json``): resized to the training size and back,
Gaussian-weighted sliding tiles of the training patch size at native scale, or
the whole image padded to the network's stride. The TensorFlow code that does
this is :func:`kerasseg.predict_graph.predict_normalized`, the same code the
exported SavedModel runs, so ``kerasseg predict`` and a served model give the
same masks. ``tta=True`` averages the probabilities of the image and its
horizontal, vertical and double flips. :func:`predict_split` is the one loop
over a converted split (``evaluate``, ``crf-tune``, benchmarks).

Helpers read images (PNG/JPEG/TIFF, 8/16-bit, float TIFF) and write masks,
overlays and probability maps; loading models lives in :mod:`kerasseg.artifacts`.
"""

from __future__ import annotations

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
    "resolve_geometry",
    "Predictor",
    "predict_probabilities",
    "predict_split",
    "probabilities_to_mask",
    "save_mask",
    "save_overlay",
    "save_probabilities",
    "default_palette",
    "list_images",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


# Loading lives in kerasseg.artifacts (the owner of model_info.json); these names stay here
# because scripts and the commands import them from kerasseg.inference.
from kerasseg.artifacts import (  # noqa: E402
    MODEL_INFO_FILENAME,
    LoadedModel,
    load_for_inference,
    load_model,
    model_input_channels,
    read_model_info,
)
from kerasseg.atomic_files import replacing  # noqa: E402
from kerasseg.errors import InferenceError  # noqa: E402
from kerasseg.predict_graph import InferenceGeometry  # noqa: E402


def load_model_info(model_path: str | os.PathLike) -> dict:
    """The ``model_info.json`` beside ``model_path`` as a dict (``{}`` when there is none)."""
    info = read_model_info(model_path)
    return info.to_dict() if info else {}


def _model_divisor(model: Any) -> int:
    from kerasseg.artifacts import model_size_divisor

    return model_size_divisor(model)


# --------------------------------------------------------------------------- images


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read PNG/JPEG/TIFF/BMP into ``(H, W, C)`` (C = 1 or 3, RGB order).

    8-bit stays uint8, 16-bit stays uint16, float TIFF stays float32. An alpha
    channel is dropped. Multi-page TIFFs give their first page.

    The size is read from the file header first and an image larger than the
    pixel limit (:mod:`kerasseg.image_limits`, ``KERASSEG_MAX_PIXELS``) is
    refused before anything is decoded.

    Raises:
        InferenceError: missing, undecodable or too large file.
    """
    import cv2

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InferenceError(f"{path}: image file not found")
    data = np.fromfile(path, dtype=np.uint8)  # works for non-ASCII paths too
    _check_size(path, data)
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


def _check_size(path: str, data: np.ndarray) -> None:
    """Refuse an image above the pixel limit from its header (Pillow's lazy open for
    formats whose size the header reader cannot find, e.g. a TIFF directory at the end)."""
    from kerasseg.image_limits import PixelLimitError, check_pixels, image_header_size

    raw = data.tobytes()
    size = image_header_size(raw)
    if size is None:
        try:
            import io

            from PIL import Image

            with Image.open(io.BytesIO(raw)) as im:  # reads the header only
                size = (im.height, im.width)
        except Image.DecompressionBombError as e:  # far above any limit of ours
            raise InferenceError(f"{path}: refused before decoding: {e}") from None
        except Exception:  # not an image Pillow knows: the decoder reports it
            return
    try:
        check_pixels(size[0], size[1], source=path)
    except PixelLimitError as e:
        raise InferenceError(str(e)) from None


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
    """``(height, width)`` float32 Gaussian centred on a tile, max 1, floored at 1e-3
    (the weights of :mod:`kerasseg.predict_graph`'s sliding window)."""
    from kerasseg.predict_graph import gaussian_weights as weights

    return weights(height, width, sigma_scale)


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets covering ``[0, length)`` with tiles of ``tile`` overlapping by ``overlap``
    (the rule of :func:`kerasseg.predict_graph.tile_starts`; ``[0]`` when ``length <= tile``)."""
    from kerasseg.predict_graph import tile_starts as starts

    return [int(v) for v in np.asarray(starts(int(length), int(tile), float(overlap)))]


def resolve_geometry(
    model: Any,
    geometry: InferenceGeometry | dict | None = None,
    *,
    tile_size: int | Sequence[int] | None = None,
    overlap: float | None = None,
) -> InferenceGeometry:
    """The geometry a prediction uses: ``tile_size`` (``0`` = whole image) overrides
    ``geometry``; neither means the whole image; a fixed-size model gets tiles of its size."""
    from kerasseg.artifacts import fit_geometry_to_model

    if isinstance(geometry, dict):
        geometry = InferenceGeometry.from_dict(geometry)
    geometry = geometry or InferenceGeometry()
    try:
        if tile_size is not None:
            geometry = geometry.with_tile(tile_size, overlap)
        elif overlap is not None and geometry.mode == "tile":
            geometry = InferenceGeometry(mode="tile", size=geometry.size, overlap=overlap)
    except ValueError as e:
        raise InferenceError(str(e)) from None
    return fit_geometry_to_model(geometry, model)


class Predictor:
    """A model applied to whole images the way it was trained (one compiled graph).

    ``Predictor(model, normalization=..., geometry=...)(image)`` normalizes one
    ``(H, W, C)`` image (uint8, uint16 or float, any size) and returns float32
    ``(H, W, K)`` probabilities, through :func:`kerasseg.predict_graph.predict_normalized`
    — the code the exported SavedModel runs too. The graph is traced once for
    any image size.

    Args:
        model: Keras model mapping ``(B, h, w, C)`` to ``(B, h, w, K)`` probabilities.
        normalization: the resolved normalization dict of training (``None``:
            raw float32 input).
        geometry: :class:`~kerasseg.predict_graph.InferenceGeometry` (default: whole image).
        tta: average the predictions of the four flips.
    """

    def __init__(self, model: Any, *, normalization: dict | None, geometry: InferenceGeometry | None = None,
                 tta: bool = False):
        import tensorflow as tf

        from kerasseg.data.preprocess import normalize
        from kerasseg.predict_graph import predict_normalized

        self.model = model
        self.normalization = dict(normalization) if normalization else None
        self.geometry = resolve_geometry(model, geometry)
        self.tta = bool(tta)
        self.channels = model_input_channels(model)
        divisor = _model_divisor(model)
        outputs = int(model.outputs[0].shape[-1])
        method = dict(self.normalization) if self.normalization else {"method": "none"}

        def run(image: Any) -> Any:
            x = tf.cast(normalize(image[tf.newaxis], method), tf.float32)
            return predict_normalized(model, x, self.geometry, size_divisor=divisor, num_outputs=outputs,
                                      tta=self.tta)[0]

        self._functions: dict[Any, Any] = {}
        self._run = run
        self._tf = tf

    def _function(self, dtype: Any) -> Any:
        if dtype not in self._functions:
            spec = self._tf.TensorSpec([None, None, self.channels], dtype)
            self._functions[dtype] = self._tf.function(self._run, input_signature=[spec])
        return self._functions[dtype]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = match_channels(np.asarray(image), self.channels)
        if image.dtype not in (np.uint8, np.uint16):
            image = image.astype(np.float32)
        return np.array(self._function(self._tf.as_dtype(image.dtype))(image), dtype=np.float32)


def predict_probabilities(
    model: Any,
    image: np.ndarray,
    *,
    normalization: dict | None,
    geometry: InferenceGeometry | dict | None = None,
    tile_size: int | Sequence[int] | None = None,
    overlap: float | None = None,
    tta: bool = False,
) -> np.ndarray:
    """Class probabilities of one image at its own resolution.

    Args:
        model: Keras model mapping ``(B, h, w, C)`` to ``(B, h, w, K)`` probabilities.
        image: ``(H, W, C)`` or ``(H, W)``, uint8/uint16/float, any size.
        normalization: the resolved normalization dict used in training
            (``kerasseg.data.preprocess.normalize``); ``None`` feeds raw float32.
        geometry: how the model was trained to see images
            (``LoadedModel.geometry``, from ``model_info.json``); default: the
            whole image at its own scale, padded to the network's stride.
        tile_size: tile side (int) or ``(h, w)`` for sliding-window inference at
            native scale, overriding ``geometry`` (``0``: the whole image).
        overlap: fraction of a tile shared with its neighbour, in ``[0, 1)``.
        tta: average the predictions of the four flips.

    Returns:
        float32 ``(H, W, K)``.

    Raises:
        InferenceError: wrong channel count, bad tile/overlap values.
    """
    if overlap is not None and not 0.0 <= overlap < 1.0:
        raise InferenceError(f"overlap must be in [0, 1), got {overlap}")
    if tile_size is not None:
        sizes = (tile_size,) if isinstance(tile_size, int) else tuple(tile_size)
        if any(int(v) < 0 for v in sizes) or (any(int(v) == 0 for v in sizes) and any(int(v) for v in sizes)):
            raise InferenceError(f"tile size must be positive (or 0 for the whole image), got {tile_size}")
    geometry = resolve_geometry(model, geometry, tile_size=tile_size, overlap=overlap)
    image = match_channels(np.asarray(image), model_input_channels(model))
    return Predictor(model, normalization=normalization, geometry=geometry, tta=tta)(image)


def predict_split(
    loaded: LoadedModel,
    data_dir: str,
    split: str,
    *,
    tta: bool = False,
    crf: dict | None = None,
    limit: int | None = None,
) -> Any:
    """Yield ``(example, probabilities)`` for every stored example of a split: the one loop
    behind ``kerasseg evaluate``, ``crf-tune`` and the benchmarks.

    ``example`` is a :func:`kerasseg.data.iterate_examples` dict (``image``,
    ``mask``, ``source_id``, ``filename``); ``probabilities`` float32
    ``(H, W, K)`` at the stored resolution, refined by the dense CRF when
    ``crf`` holds its keyword arguments.
    """
    from kerasseg.data import iterate_examples

    predictor = Predictor(loaded.model, normalization=loaded.normalization, geometry=loaded.geometry, tta=tta)
    for index, example in enumerate(iterate_examples(data_dir, split)):
        if limit is not None and index >= limit:
            return
        try:
            probs = predictor(example["image"])
        except InferenceError as e:
            raise InferenceError(f"{data_dir} {example['source_id']}: {e}") from None
        if crf is not None:
            from kerasseg.postprocess import dense_crf

            probs, _ = dense_crf(example["image"], probs, **crf)
        yield example, probs


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
    with replacing(path) as tmp:
        buf.tofile(tmp)
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
        lo: float | np.floating
        hi: float | np.floating
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
        with replacing(out) as tmp:
            np.save(tmp, probabilities)
        return [out]
    if fmt == "png":
        written = []
        for k in range(probabilities.shape[-1]):
            plane = (np.clip(probabilities[..., k], 0, 1) * 65535).round().astype(np.uint16)
            written.append(_write_png(f"{path}_class{k}.png", plane))
        return written
    raise InferenceError(f"probability format must be 'npy' or 'png', got {fmt!r}")
