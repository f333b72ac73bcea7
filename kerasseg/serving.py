"""The serving graph: a ``tf.Module`` wrapping a trained segmentation model.

Like TF Model Garden's ``official/vision/serving``, serving code lives apart
from the models: :class:`SegmentationServingModule` takes any Keras model that
follows the kerasseg model contract (``(B,H,W,C)`` float input, ``(B,H,W,K)``
probabilities out) and adds, inside one TensorFlow graph, everything a client
would otherwise have to re-implement:

1. input checks with readable messages (rank, channel count, empty images,
   mixed sizes in one encoded batch);
2. the training normalization (:func:`kerasseg.data.preprocess.normalize` with
   the resolved normalization dict baked in as constants);
3. the model applied the way it saw images in training
   (:func:`kerasseg.predict_graph.predict_normalized` with the stored
   :class:`~kerasseg.predict_graph.InferenceGeometry`: resized to the training
   size and back, Gaussian-weighted tiles at native scale, or the whole image
   mirror-padded to the network's stride) — the same code as
   :func:`kerasseg.inference.predict_probabilities`, so ``kerasseg predict`` and
   the SavedModel give the same masks;
4. optionally a dense CRF (:class:`kerasseg.layers.dense_crf.DenseCRF`)
   between the probabilities and the arg-max;
5. the mask (arg-max, or ``p > 0.5`` for one-channel sigmoid models).

Signatures (what ``saved_model_cli show --all`` lists):

=====================  ==============================================  =====================================
name                   inputs                                          outputs
=====================  ==============================================  =====================================
``serving_default``    ``images``: uint8 ``(B,H,W,C)``, any ``H``/``W``  ``mask`` uint8 ``(B,H,W)``,
                                                                       ``probabilities`` float32 ``(B,H,W,K)``
``serving_uint16``     ``images``: uint16 ``(B,H,W,C)``                 same
``serving_encoded``    ``encoded``: string ``(B,)`` PNG/JPEG bytes      same (all images of one call must
                       (8- or 16-bit PNG, JPEG)                        share their height and width)
``metadata``           none                                            ``class_names`` string ``(K,)``,
                                                                       ``normalization`` JSON string,
                                                                       ``channels``, ``num_classes``,
                                                                       ``size_divisor`` int32, ``geometry``
                                                                       (JSON), ``info``
                                                                       (the whole model card as JSON)
=====================  ==============================================  =====================================

The image inputs are declared with an unknown rank on purpose: a signature
call does not validate shapes, so the graph checks rank and channel count
itself and fails with a message that says what was expected (a shape declared
as ``(-1,-1,-1,C)`` would let a wrong-rank tensor through to the first
convolution). The dtype is enforced by the signature itself.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Sequence

import tensorflow as tf

SIGNATURE_UINT8 = "serving_default"
SIGNATURE_UINT16 = "serving_uint16"
SIGNATURE_ENCODED = "serving_encoded"
SIGNATURE_METADATA = "metadata"
SIGNATURE_NAMES = (SIGNATURE_UINT8, SIGNATURE_UINT16, SIGNATURE_ENCODED, SIGNATURE_METADATA)

# PNG files start with this signature; byte 24 is the bit depth of the IHDR chunk.
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_BIT_DEPTH_OFFSET = 24


def _default_normalize() -> Callable:
    from kerasseg.data.preprocess import normalize

    return normalize


_IMAGE_MAGICS = (_PNG_MAGIC, b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")


def _header(data: tf.Tensor, length: int) -> tf.Tensor:
    """The first ``length`` bytes of ``data``, zero-padded when it is shorter."""
    return tf.strings.substr(tf.strings.join([data, b"\x00" * length]), 0, length)


def _is_16bit_png(data: tf.Tensor) -> tf.Tensor:
    head = _header(data, _PNG_BIT_DEPTH_OFFSET + 1)
    is_png = tf.equal(tf.strings.substr(head, 0, len(_PNG_MAGIC)), _PNG_MAGIC)
    return tf.logical_and(is_png, tf.equal(tf.strings.substr(head, _PNG_BIT_DEPTH_OFFSET, 1), b"\x10"))


def _check_encoded(data: tf.Tensor) -> tf.Tensor:
    """``data`` once it starts like a PNG, JPEG, GIF or BMP file (else a clear error)."""
    head = _header(data, len(_PNG_MAGIC))
    known = tf.reduce_any(tf.stack([
        tf.equal(tf.strings.substr(head, 0, len(magic)), magic) for magic in _IMAGE_MAGICS
    ]))
    return _guard(data, [(known, f"{SIGNATURE_ENCODED}: an element of 'encoded' is not a PNG or JPEG "
                          "file (nor GIF/BMP); send the file's bytes (base64 {'b64': ...} in REST JSON). "
                          "Its length in bytes:")], tf.strings.length(data))


def _crf_image(raw: tf.Tensor) -> tf.Tensor:
    """The image the CRF's appearance kernel sees: 0..255 float ``(B,H,W,C)``.

    uint8 images are used as they are; others (uint16) are windowed to the
    0.5-99.5th percentiles of each image, all its channels together, and rounded
    to whole grey levels: what :func:`kerasseg.postprocess.appearance_image` does
    on the NumPy side, so both CRFs see the same image.
    """
    if raw.dtype == tf.uint8:
        return tf.cast(raw, tf.float32)
    from kerasseg.data.preprocess import percentile_bounds

    x = tf.cast(raw, tf.float32)
    low, high = percentile_bounds(x, 0.5, 99.5, joint_channels=True)
    scaled = (tf.clip_by_value(x, low, high) - low) * (255.0 / tf.maximum(high - low, 1e-6))
    return tf.where(high > low, tf.round(scaled), tf.zeros_like(scaled))


def _guard(tensor: tf.Tensor, checks: Sequence[tuple[tf.Tensor, str]], shape: tf.Tensor) -> tf.Tensor:
    """Return ``tensor`` only once every ``(ok, message)`` check holds.

    The checks feed a ``tf.cond`` whose output the rest of the graph consumes, so
    no later op can run (and fail with a less helpful error) before them: plain
    control dependencies are not enough, Grappler may hoist shape arithmetic.
    """
    all_ok = tf.reduce_all(tf.stack([ok for ok, _ in checks]))

    def _fail() -> tf.Tensor:
        ops: list[tf.Operation] = []
        for ok, message in checks:  # in order: the first failing check reports
            with tf.control_dependencies(ops):
                ops = [tf.debugging.Assert(ok, [message, shape], summarize=8)]
        with tf.control_dependencies(ops):
            return tf.identity(tensor)

    return tf.cond(all_ok, lambda: tf.identity(tensor), _fail)


class SegmentationServingModule(tf.Module):
    """Serving graph around a Keras segmentation model.

    Args:
        model: a Keras model mapping float32 ``(B,H,W,C)`` to ``(B,H,W,K)``
            probabilities (or logits with ``from_logits=True``).
        class_names: ``K`` names (``K = 2`` names for a one-channel sigmoid
            model: background and foreground).
        normalization: the resolved normalization dict used in training.
        channels: channel count ``C`` the model expects.
        size_divisor: inputs are padded to a multiple of this (1 = no padding).
        geometry: how the model is applied to a whole image
            (:class:`kerasseg.predict_graph.InferenceGeometry`; default: the
            whole image at its own scale).
        crf: optional Keras layer (``kerasseg.layers.dense_crf.DenseCRF``)
            applied as ``crf([image, probabilities])`` before the arg-max; the
            image is the raw input (uint8 as is, uint16 windowed to 0..255).
        from_logits: the model returns logits; softmax (sigmoid for ``K = 1``)
            is applied in the graph so ``probabilities`` always are probabilities.
        info: JSON-serializable model card returned by the ``metadata`` signature.
        max_pixels: images with more pixels (``height * width``) are refused, from the
            file header for encoded images (default
            :func:`kerasseg.image_limits.max_pixels`).
    """

    def __init__(
        self,
        model: Any,
        *,
        class_names: Sequence[str],
        normalization: Mapping[str, Any],
        channels: int,
        size_divisor: int = 1,
        geometry: Any = None,
        crf: Any = None,
        from_logits: bool = False,
        info: Mapping[str, Any] | None = None,
        max_pixels: int | None = None,
        name: str = "kerasseg_serving",
    ) -> None:
        super().__init__(name=name)
        if int(channels) < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if int(size_divisor) < 1:
            raise ValueError(f"size_divisor must be >= 1, got {size_divisor}")
        self.model = model
        self.crf = crf
        # stored as JSON text: tf.Module would wrap a dict/list attribute into a tracked
        # DictWrapper/ListWrapper, which is not a plain Mapping for normalize()
        self._class_names_json = json.dumps([str(c) for c in class_names])
        self._normalization_json = json.dumps(dict(normalization), sort_keys=True)
        self._channels = int(channels)
        self._size_divisor = int(size_divisor)
        from kerasseg.predict_graph import InferenceGeometry

        geometry = geometry or InferenceGeometry()
        if isinstance(geometry, Mapping):
            geometry = InferenceGeometry.from_dict(geometry)
        self._geometry_json = json.dumps(geometry.to_dict(), sort_keys=True)
        self._num_outputs = int(model.outputs[0].shape[-1])
        if max_pixels is None:
            from kerasseg.image_limits import max_pixels as default_limit

            max_pixels = default_limit()
        if int(max_pixels) < 1:
            raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
        self._max_pixels = int(max_pixels)
        self._from_logits = bool(from_logits)
        self._normalize = _default_normalize()
        self._info_json = json.dumps(dict(info or {}), sort_keys=True, default=str)
        self._build_functions()

    # ------------------------------------------------------------------ properties
    @property
    def channels(self) -> int:
        return self._channels

    @property
    def size_divisor(self) -> int:
        return self._size_divisor

    @property
    def geometry(self) -> Any:
        from kerasseg.predict_graph import InferenceGeometry

        return InferenceGeometry.from_dict(json.loads(self._geometry_json))

    @property
    def class_names(self) -> list[str]:
        return json.loads(self._class_names_json)

    @property
    def normalization(self) -> dict[str, Any]:
        return json.loads(self._normalization_json)

    @property
    def info(self) -> dict[str, Any]:
        """The model card returned by the ``metadata`` signature (a copy)."""
        return json.loads(self._info_json)

    def set_info(self, info: Mapping[str, Any]) -> None:
        """Replace the model card; only before :meth:`signatures` traces ``metadata``."""
        self._info_json = json.dumps(dict(info), sort_keys=True, default=str)

    # ------------------------------------------------------------------ graph pieces
    def _check_images(self, images: tf.Tensor, signature: str) -> tf.Tensor:
        """Validate a ``(B,H,W,C)`` batch at run time; return it with a static rank."""
        c = self._channels
        expected = f"{signature}: expected images of shape (batch, height, width, {c})"
        shape = tf.shape(images)
        # pad the shape so that the checks below never fail themselves on a wrong rank
        shape4 = tf.concat([shape, tf.fill([4], -1)], axis=0)[:4]
        rank_ok = tf.equal(tf.size(shape), 4)
        checks = [
            (rank_ok, f"{expected} (a batch of {c}-channel images) but the rank differs. Add a batch "
             "axis for a single image and a channel axis for a 2-D grayscale image. Got shape:"),
            (tf.logical_or(tf.logical_not(rank_ok), tf.equal(shape4[3], c)),
             f"{expected}: the model takes {c} channel(s) but the last axis has another size. Got shape:"),
            (tf.logical_or(tf.logical_not(rank_ok), shape4[1] * shape4[2] > 0),
             f"{expected}: height and width must be at least 1. Got shape:"),
            (tf.logical_or(tf.logical_not(rank_ok),
                           tf.cast(shape4[1], tf.int64) * tf.cast(shape4[2], tf.int64) <= self._max_pixels),
             f"{signature}: images of more than {self._max_pixels} pixels are refused by this model's "
             "pixel limit (set at export with max_pixels / --max-pixels); send tiles. Got shape:"),
        ]
        images = _guard(images, checks, shape)
        return tf.ensure_shape(images, [None, None, None, c])

    def _predict_normalized(self, x: tf.Tensor, raw: tf.Tensor | None, *, use_crf: bool = True,
                            geometry: Any = None) -> dict[str, tf.Tensor]:
        """Model (+CRF) on normalized float ``x`` ``(B,H,W,C)``; ``raw`` is the input image batch."""
        from kerasseg.predict_graph import predict_normalized

        out = predict_normalized(self.model, x, geometry or self.geometry, size_divisor=self._size_divisor,
                                 num_outputs=self._num_outputs)
        if self._from_logits:
            out = tf.sigmoid(out) if out.shape[-1] == 1 else tf.nn.softmax(out, axis=-1)
        if self.crf is not None and use_crf:
            out = tf.cast(self.crf([_crf_image(raw), out], training=False), tf.float32)
        if out.shape[-1] == 1:
            mask = tf.cast(out[..., 0] >= 0.5, tf.uint8)
        else:
            mask = tf.cast(tf.argmax(out, axis=-1), tf.uint8)
        return {"mask": mask, "probabilities": out}

    def _serve_array(self, images: tf.Tensor, signature: str) -> dict[str, tf.Tensor]:
        images = self._check_images(images, signature)
        x = self._normalize(images, self.normalization)
        return self._predict_normalized(tf.cast(x, tf.float32), images if self.crf is not None else None)

    def _decode_one(self, data: tf.Tensor) -> tf.Tensor:
        """Decode one PNG/JPEG string and normalize it: float32 ``(H,W,C)``.

        The height and width are read from the file header and checked against
        the pixel limit before anything is decoded."""
        from kerasseg.image_limits import tf_encoded_image_size

        c = self._channels
        data = _check_encoded(data)
        size = tf.cast(tf_encoded_image_size(data), tf.int64)
        data = _guard(data, [
            (tf.reduce_all(size > 0), f"{SIGNATURE_ENCODED}: the image size cannot be read from the file "
             "header (a truncated or unusual PNG/JPEG); refused before decoding. Header size:"),
            (size[0] * size[1] <= self._max_pixels,
             f"{SIGNATURE_ENCODED}: an image of more than {self._max_pixels} pixels is refused before "
             "decoding by this model's pixel limit (set at export with max_pixels / --max-pixels); send "
             "tiles. Header height and width:"),
        ], size)
        is_16bit = _is_16bit_png(data)

        def _decode16() -> tf.Tensor:
            image = tf.io.decode_png(data, channels=c, dtype=tf.uint16)
            return tf.cast(self._normalize(image, self.normalization), tf.float32)

        def _decode8() -> tf.Tensor:
            image = tf.io.decode_image(data, channels=c, dtype=tf.uint8, expand_animations=False)
            return tf.cast(self._normalize(image, self.normalization), tf.float32)

        return tf.cond(is_16bit, _decode16, _decode8)

    def _decode_one_crf(self, data: tf.Tensor) -> tf.Tensor:
        """Decode one image as the CRF's 0..255 appearance image ``(H,W,C)``."""
        c = self._channels
        is_16bit = _is_16bit_png(data)
        return tf.cond(
            is_16bit,
            lambda: _crf_image(tf.io.decode_png(data, channels=c, dtype=tf.uint16)[tf.newaxis])[0],
            lambda: _crf_image(tf.io.decode_image(data, channels=c, dtype=tf.uint8, expand_animations=False)),
        )

    def _serve_encoded(self, encoded: tf.Tensor) -> dict[str, tf.Tensor]:
        shape = tf.shape(encoded)
        rank_ok = tf.equal(tf.size(shape), 1)
        encoded = _guard(encoded, [
            (rank_ok, f"{SIGNATURE_ENCODED}: expected a 1-D batch of encoded PNG/JPEG strings, shape "
             "(batch,). Got shape:"),
            (tf.logical_or(tf.logical_not(rank_ok), tf.size(encoded) > 0),
             f"{SIGNATURE_ENCODED}: the batch of encoded images is empty. Got shape:"),
        ], shape)
        encoded = tf.ensure_shape(encoded, [None])
        # Decode each image to float32; all must share one size to form a batch.
        first = self._decode_one(encoded[0])
        first_shape = tf.shape(first)

        def _decode_checked(data: tf.Tensor) -> tf.Tensor:
            image = self._decode_one(data)
            same = tf.debugging.assert_equal(
                tf.shape(image), first_shape,
                message=f"{SIGNATURE_ENCODED}: all images of one request must have the same height and "
                "width (and the model's channel count); send images of different sizes in separate requests",
            )
            with tf.control_dependencies([same]):
                return tf.identity(image)

        x = tf.map_fn(
            _decode_checked, encoded,
            fn_output_signature=tf.TensorSpec([None, None, self._channels], tf.float32),
        )
        raw = None
        if self.crf is not None:
            raw = tf.map_fn(
                self._decode_one_crf, encoded,
                fn_output_signature=tf.TensorSpec([None, None, self._channels], tf.float32),
            )
        return self._predict_normalized(x, raw)

    def _metadata(self) -> dict[str, tf.Tensor]:
        return {
            "class_names": tf.constant(self.class_names, tf.string),
            "normalization": tf.constant(self._normalization_json),
            "channels": tf.constant(self._channels, tf.int32),
            "num_classes": tf.constant(len(self.class_names), tf.int32),
            "size_divisor": tf.constant(self._size_divisor, tf.int32),
            "geometry": tf.constant(self._geometry_json),
            "info": tf.constant(self._info_json),
        }

    # ------------------------------------------------------------------ tf.functions
    def _build_functions(self) -> None:
        self.serve_uint8 = tf.function(
            lambda images: self._serve_array(images, SIGNATURE_UINT8),
            input_signature=[tf.TensorSpec(None, tf.uint8, name="images")],
        )
        self.serve_uint16 = tf.function(
            lambda images: self._serve_array(images, SIGNATURE_UINT16),
            input_signature=[tf.TensorSpec(None, tf.uint16, name="images")],
        )
        self.serve_encoded = tf.function(
            self._serve_encoded, input_signature=[tf.TensorSpec(None, tf.string, name="encoded")]
        )
        self.metadata = tf.function(self._metadata, input_signature=[])

    def fixed_size_function(
        self, height: int, width: int, dtype: tf.DType = tf.uint8, *, include_crf: bool = True
    ) -> tf.types.experimental.ConcreteFunction:
        """A concrete function for one ``(1, height, width, C)`` image (what TFLite needs).

        No run-time assertions (TFLite has no ``Assert`` op); the shape is static.
        ``include_crf=False`` leaves the CRF out (its lattice needs ops TFLite lacks).
        """

        from kerasseg.predict_graph import InferenceGeometry

        geometry = self.geometry
        if geometry.mode == "tile" and tuple(geometry.size) == (int(height), int(width)):
            # one tile covering the whole input: the same probabilities without the
            # sliding-window loop (whose while/scatter ops TFLite lacks)
            geometry = InferenceGeometry(mode="whole")

        def _fixed(images: tf.Tensor) -> dict[str, tf.Tensor]:
            x = tf.cast(self._normalize(images, self.normalization), tf.float32)
            return self._predict_normalized(x, images, use_crf=include_crf, geometry=geometry)

        spec = tf.TensorSpec([1, int(height), int(width), self._channels], dtype, name="images")
        return tf.function(_fixed).get_concrete_function(spec)

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """The concrete functions to pass to ``tf.saved_model.save(..., signatures=...)``."""
        return {
            SIGNATURE_UINT8: self.serve_uint8.get_concrete_function(),
            SIGNATURE_UINT16: self.serve_uint16.get_concrete_function(),
            SIGNATURE_ENCODED: self.serve_encoded.get_concrete_function(),
            SIGNATURE_METADATA: self.metadata.get_concrete_function(),
        }


__all__ = [
    "SIGNATURE_UINT8",
    "SIGNATURE_UINT16",
    "SIGNATURE_ENCODED",
    "SIGNATURE_METADATA",
    "SIGNATURE_NAMES",
    "SegmentationServingModule",
]
