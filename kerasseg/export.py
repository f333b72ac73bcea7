"""Export a trained model as a SavedModel that TF Serving (or anyone) can call.

``export(model, "exports/lesions", class_names=[...], normalization={...})``
writes ``exports/lesions/<version>/`` -- the layout TF Serving watches -- with

* ``saved_model.pb`` + ``variables/``: the serving graph of
  :class:`kerasseg.serving.SegmentationServingModule` (signatures
  ``serving_default`` (uint8), ``serving_uint16``, ``serving_encoded``
  (PNG/JPEG bytes) and ``metadata``);
* ``assets/kerasseg_model.json``: the model card (class names, resolved
  normalization, channels, size divisor, signatures, CRF parameters), also
  returned by the ``metadata`` signature, so a client needs nothing else;
* with ``tflite=True``: ``tflite/model_float32.tflite`` and
  ``tflite/model_dynamic_range.tflite`` (dynamic-range quantized weights) for a
  **fixed** input size ``(1, H, W, C)`` (TFLite graphs have static shapes), plus
  ``tflite/report.json`` with the fraction of pixels whose mask agrees with the
  Keras model. The TFLite models never contain the dense CRF (TFLite has no
  kernel for the permutohedral lattice's sorted search).

The version folder is first written under a hidden temporary name in the same
parent and renamed into place, so TF Serving (which only loads numeric
folders) never sees a half-written export, and an existing version is only
replaced when ``overwrite=True``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from typing import Any, Mapping, Sequence

from kerasseg.errors import ExportError

MODEL_CARD_FILENAME = "kerasseg_model.json"
TFLITE_DIRNAME = "tflite"
TFLITE_FLOAT32 = "model_float32.tflite"
TFLITE_DYNAMIC_RANGE = "model_dynamic_range.tflite"
TFLITE_REPORT = "report.json"
DEFAULT_TFLITE_SIZE = 256
# A whole image through the model at once costs far more per pixel than tiles or a
# resize to the training size (6.5 GB measured at 8000x8000 for a 4-filter U-Net):
# the serving pixel limit of models with "whole" geometry is this unless given.
WHOLE_IMAGE_SERVING_PIXELS = 16_000_000


# --------------------------------------------------------------------------- helpers
def existing_versions(path: str) -> list[int]:
    """Numeric version folders under ``path`` (what TF Serving would load), sorted."""
    if not os.path.isdir(path):
        return []
    return sorted(int(n) for n in os.listdir(path) if n.isdigit() and os.path.isdir(os.path.join(path, n)))


def next_version(path: str) -> int:
    """One more than the highest existing version under ``path`` (1 when there is none)."""
    versions = existing_versions(path)
    return versions[-1] + 1 if versions else 1


def read_model_card(export_dir: str) -> dict[str, Any]:
    """The model card of an exported version folder (``assets/kerasseg_model.json``)."""
    path = os.path.join(export_dir, "assets", MODEL_CARD_FILENAME)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _model_channels_and_classes(model: Any) -> tuple[int, int]:
    try:
        in_shape = tuple(model.inputs[0].shape)
        out_shape = tuple(model.outputs[0].shape)
    except (AttributeError, IndexError, TypeError) as e:
        raise ExportError(
            f"cannot read input/output shapes of {type(model).__name__}: export needs a built "
            "functional Keras model with one image input and one (B,H,W,K) output"
        ) from e
    if len(in_shape) != 4 or in_shape[-1] is None:
        raise ExportError(f"model input must be (B,H,W,C) with a known C, got {in_shape}")
    if len(out_shape) != 4 or out_shape[-1] is None:
        raise ExportError(f"model output must be (B,H,W,K) with a known K, got {out_shape}")
    return int(in_shape[-1]), int(out_shape[-1])


def _resolve_size_divisor(model: Any, size_divisor: int | None) -> int:
    if size_divisor is not None:
        if isinstance(size_divisor, bool) or int(size_divisor) < 1:
            raise ExportError(f"size_divisor must be >= 1, got {size_divisor}")
        return int(size_divisor)
    from kerasseg.models import size_divisor as model_size_divisor

    return max(1, int(model_size_divisor(model)))


def _build_crf(crf: Any) -> Any:
    """``crf`` may be None/False, True (defaults), a dict of DenseCRF kwargs, or a layer."""
    if crf is None or crf is False:
        return None
    if hasattr(crf, "get_config") and callable(crf):
        return crf
    from kerasseg.layers.dense_crf import DenseCRF

    kwargs = {} if crf is True else dict(crf)
    try:
        return DenseCRF(**kwargs)
    except (TypeError, ValueError) as e:
        raise ExportError(f"invalid DenseCRF parameters {kwargs}: {e}") from e


def _crf_config(layer: Any) -> dict[str, Any] | None:
    if layer is None:
        return None
    try:
        return {"class": type(layer).__name__, **json.loads(json.dumps(layer.get_config(), default=str))}
    except Exception:  # a config that cannot be shown must not stop the export
        return {"class": type(layer).__name__}


# --------------------------------------------------------------------------- export
def build_serving_module(
    model: Any,
    *,
    class_names: Sequence[str],
    normalization: Mapping[str, Any],
    crf: Any = None,
    size_divisor: int | None = None,
    geometry: Any = None,
    from_logits: bool = False,
    extra_info: Mapping[str, Any] | None = None,
    max_pixels: int | None = None,
):
    """Validate the inputs and build a :class:`~kerasseg.serving.SegmentationServingModule`."""
    from kerasseg import __version__
    from kerasseg.serving import SIGNATURE_NAMES, SegmentationServingModule

    channels, k = _model_channels_and_classes(model)
    class_names = [str(c) for c in class_names]
    expected = 2 if k == 1 else k
    if len(class_names) != expected:
        raise ExportError(
            f"model has {k} output channel(s), so it needs {expected} class names "
            f"({'background + foreground for a sigmoid model' if k == 1 else 'one per channel'}), "
            f"got {len(class_names)}: {class_names}"
        )
    if not isinstance(normalization, Mapping) or "method" not in normalization:
        raise ExportError(
            f"normalization must be the resolved dict used in training (with a 'method' key), got {normalization!r}"
        )
    divisor = _resolve_size_divisor(model, size_divisor)
    crf_layer = _build_crf(crf)
    from kerasseg.artifacts import fit_geometry_to_model
    from kerasseg.predict_graph import InferenceGeometry

    if geometry is None:
        geometry = InferenceGeometry()
    elif isinstance(geometry, Mapping):
        try:
            geometry = InferenceGeometry.from_dict(geometry)
        except (TypeError, ValueError) as e:
            raise ExportError(f"geometry: {e}") from None
    geometry = fit_geometry_to_model(geometry, model)
    if max_pixels is None:
        from kerasseg.image_limits import max_pixels as default_limit

        max_pixels = default_limit()
        if geometry.mode == "whole":
            max_pixels = min(max_pixels, WHOLE_IMAGE_SERVING_PIXELS)
    if isinstance(max_pixels, bool) or int(max_pixels) < 1:
        raise ExportError(f"max_pixels must be a positive number of pixels, got {max_pixels!r}")
    info = {
        "format": "kerasseg-savedmodel",
        "kerasseg_version": __version__,
        "model_name": getattr(model, "name", ""),
        "class_names": class_names,
        "num_classes": len(class_names),
        "output_channels": k,
        "channels": channels,
        "normalization": dict(normalization),
        "size_divisor": divisor,
        "geometry": geometry.to_dict(),
        "max_pixels": int(max_pixels),
        "geometry_description": geometry.describe(),
        "padding": "bottom/right mirror (numpy 'symmetric') of the normalized image up to a multiple of "
                   "size_divisor; outputs cropped back",
        "from_logits": bool(from_logits),
        "crf": _crf_config(crf_layer),
        "signatures": {
            "serving_default": {"inputs": {"images": f"uint8 (B,H,W,{channels})"},
                                "outputs": {"mask": "uint8 (B,H,W)", "probabilities": f"float32 (B,H,W,{k})"}},
            "serving_uint16": {"inputs": {"images": f"uint16 (B,H,W,{channels})"},
                               "outputs": {"mask": "uint8 (B,H,W)", "probabilities": f"float32 (B,H,W,{k})"}},
            "serving_encoded": {"inputs": {"encoded": "string (B,) PNG/JPEG bytes, one size per call"},
                                "outputs": {"mask": "uint8 (B,H,W)", "probabilities": f"float32 (B,H,W,{k})"}},
            "metadata": {"inputs": {}, "outputs": {
                "class_names": "string (K,)", "normalization": "string (JSON)", "channels": "int32",
                "num_classes": "int32", "size_divisor": "int32", "geometry": "string (JSON)",
                "info": "string (JSON model card)"}},
        },
    }
    assert set(info["signatures"]) == set(SIGNATURE_NAMES)
    info.update(dict(extra_info or {}))
    module = SegmentationServingModule(
        model,
        class_names=class_names,
        normalization=normalization,
        channels=channels,
        size_divisor=divisor,
        geometry=geometry,
        max_pixels=int(max_pixels),
        crf=crf_layer,
        from_logits=from_logits,
        info=info,
    )
    return module


def export(
    model: Any,
    path: str,
    *,
    class_names: Sequence[str],
    normalization: Mapping[str, Any],
    version: int | None = 1,
    crf: Any = None,
    tflite: bool = False,
    size_divisor: int | None = None,
    geometry: Any = None,
    max_pixels: int | None = None,
    overwrite: bool = False,
    from_logits: bool = False,
    tflite_input_size: tuple[int, int] | None = None,
    tflite_samples: Any = None,
    extra_info: Mapping[str, Any] | None = None,
) -> str:
    """Export ``model`` as ``path/<version>/`` (SavedModel, plus TFLite when asked).

    Args:
        model: functional Keras model, float32 ``(B,H,W,C)`` in, ``(B,H,W,K)`` out.
        path: the model's base folder (TF Serving's ``--model_base_path``).
        class_names: ``K`` names (2 for a one-channel sigmoid model).
        normalization: resolved normalization dict used in training.
        version: version number (folder name); ``None`` takes the next free one.
        crf: ``None``, ``True``, a dict of ``DenseCRF`` arguments or a ``DenseCRF``
            layer, inserted between probabilities and the arg-max.
        tflite: also write float32 and dynamic-range quantized TFLite models.
        size_divisor: pad inputs to a multiple of this; default
            ``kerasseg.models.size_divisor(model)``.
        geometry: how the model is applied to a whole image
            (:class:`kerasseg.predict_graph.InferenceGeometry` or its dict, as
            in ``model_info.json``); default the whole image at its own scale.
        max_pixels: the serving graph refuses images with more pixels, from the
            header for encoded ones (default :func:`kerasseg.image_limits.max_pixels`,
            at most ``WHOLE_IMAGE_SERVING_PIXELS`` for ``whole`` geometry).
        overwrite: replace an existing ``path/<version>``.
        from_logits: the model outputs logits; the graph applies softmax/sigmoid.
        tflite_input_size: ``(H, W)`` of the TFLite model; default the model's
            static input size, else 256x256 rounded up to the size divisor.
        tflite_samples: uint8 images ``(N,H,W,C)`` (any H, W: resized) on which
            TFLite masks are compared with Keras; default synthetic smooth images.
        extra_info: more JSON-serializable entries for the model card.

    Returns:
        The version folder that was written, e.g. ``path/1``.

    Raises:
        ExportError: bad arguments, or the version exists and ``overwrite`` is False.
    """
    import tensorflow as tf

    if version is None:
        version = next_version(path)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ExportError(f"version must be a non-negative integer, got {version!r}")
    final_dir = os.path.join(path, str(version))
    if os.path.exists(final_dir) and not overwrite:
        raise ExportError(
            f"{final_dir} already exists; choose another version (next free: {next_version(path)}) "
            "or pass overwrite=True (--overwrite)"
        )
    module = build_serving_module(
        model, class_names=class_names, normalization=normalization, crf=crf,
        size_divisor=size_divisor, geometry=geometry, from_logits=from_logits, extra_info=extra_info,
        max_pixels=max_pixels,
    )
    card = module.info
    os.makedirs(path, exist_ok=True)
    from kerasseg import tempdirs

    # staging folders of killed exports are removed once stale (name, age, dead pid: kerasseg/tempdirs.py)
    tempdirs.remove_stale(path, ".tmp-export-", tag=r"\d+-")
    tmp_dir = tempdirs.make_staging_dir(path, f".tmp-export-{version}-", mode=0o700)
    card_dir = tempfile.mkdtemp(prefix="kerasseg-card-")
    try:
        if tflite:
            size = _tflite_size(model, module.size_divisor, tflite_input_size)
            report = convert_tflite(
                module, os.path.join(tmp_dir, TFLITE_DIRNAME), input_size=size, samples=tflite_samples,
            )
            card["tflite"] = {"folder": TFLITE_DIRNAME, **report}
            module.set_info(card)
        card_path = os.path.join(card_dir, MODEL_CARD_FILENAME)
        _write_json(card_path, card)
        module.model_card_asset = tf.saved_model.Asset(card_path)
        tf.saved_model.save(module, tmp_dir, signatures=module.signatures())
        _commit(tmp_dir, final_dir, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(card_dir, ignore_errors=True)
    return final_dir


def _write_json(path: str, data: Mapping[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.write("\n")


def _commit(tmp_dir: str, final_dir: str, *, overwrite: bool) -> None:
    """Rename the finished export into place (replacing ``final_dir`` only if asked)."""
    old = None
    if os.path.exists(final_dir):
        if not overwrite:
            raise ExportError(f"{final_dir} appeared while exporting; not replacing it")
        old = os.path.join(os.path.dirname(final_dir), f".old-{os.path.basename(final_dir)}-{uuid.uuid4().hex[:8]}")
        os.rename(final_dir, old)
    try:
        os.rename(tmp_dir, final_dir)
    except OSError:
        if old is not None:
            os.rename(old, final_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- TFLite
def _tflite_size(model: Any, divisor: int, size: tuple[int, int] | None) -> tuple[int, int]:
    if size is None:
        shape = tuple(model.inputs[0].shape)
        if shape[1] is not None and shape[2] is not None:
            size = (int(shape[1]), int(shape[2]))
        else:
            side = -(-DEFAULT_TFLITE_SIZE // divisor) * divisor
            size = (side, side)
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ExportError(f"tflite_input_size must be positive, got {size}")
    return h, w


def synthetic_samples(count: int, height: int, width: int, channels: int, *, seed: int = 0):
    """Smooth random uint8 images ``(count,H,W,C)``: blobs on a gradient, for TFLite checks."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((count, height, width, channels), np.uint8)
    for i in range(count):
        img = np.zeros((height, width), np.float32) + rng.uniform(20, 80) * (xx / max(width, 1))
        for _ in range(4):
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            r = rng.uniform(0.1, 0.3) * min(height, width)
            img += rng.uniform(60, 160) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        img += rng.normal(0, 8, img.shape)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)[..., None]
    return out


def _run_tflite(model_bytes: bytes, images: Any) -> tuple[Any, Any]:
    """Run a TFLite segmentation model image by image; return ``(masks, probabilities)``."""
    import warnings

    import numpy as np
    import tensorflow as tf

    with warnings.catch_warnings():  # tf.lite.Interpreter warns that LiteRT will replace it
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    runner = interpreter.get_signature_runner()
    masks, probabilities = [], []
    for image in images:
        out = runner(images=np.ascontiguousarray(image[None]))
        masks.append(out["mask"][0])
        probabilities.append(out["probabilities"][0])
    return np.stack(masks), np.stack(probabilities)


def _convert(fn: Any, module: Any, *, quantize: bool, select_tf_ops: bool) -> bytes | None:
    """TFLite flatbuffer of concrete function ``fn``, or ``None`` if the converter refuses it."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], module)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if select_tf_ops:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    try:
        return converter.convert()
    except Exception:  # ConverterError and friends; the converter already logged the details
        return None


def _frozen_named_function(fn: Any) -> Any:
    """``fn`` with its variables folded into constants, keeping the output names.

    Keras 3 variables are otherwise kept by the TFLite converter as resource
    variables (``READ_VARIABLE``) that the interpreter never initializes, which
    yields garbage; freezing first gives a self-contained flatbuffer.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(fn)
    names = sorted(fn.structured_outputs)  # flattening a dict orders it by key
    spec = fn.structured_input_signature[0][0]

    def _named(images: Any) -> dict:
        return dict(zip(names, frozen(images)))

    return tf.function(_named, autograph=False).get_concrete_function(spec)


def convert_tflite(
    module: Any,
    out_dir: str,
    *,
    input_size: tuple[int, int],
    samples: Any = None,
) -> dict[str, Any]:
    """Write float32 and dynamic-range TFLite models for ``(1, H, W, C)`` uint8 input.

    The TFLite graph contains the same normalization, padding, model and
    arg-max as the SavedModel, without the run-time input checks and without
    the dense CRF (TFLite has no kernel for its lattice's sorted search; refine
    on the device with pydensecrf if needed). Masks are
    compared with the Keras model (run eagerly through the same serving code)
    on ``samples`` and the agreement is written to ``report.json``.

    Returns:
        The report dict: ``input_shape``, file names and sizes,
        ``mask_agreement_float32`` / ``mask_agreement_dynamic_range`` (fraction of pixels),
        ``max_abs_prob_diff_float32`` / ``max_abs_prob_diff_dynamic_range``, ``samples``,
        ``select_tf_ops`` (True when builtin ops did not suffice, e.g. with the DenseCRF,
        and the model needs TFLite's Flex delegate).
    """
    import numpy as np
    import tensorflow as tf

    h, w = input_size
    c = module.channels
    if samples is None:
        samples = synthetic_samples(4, h, w, c)
        sample_source = "synthetic smooth images (pass tflite_samples for real ones)"
    else:
        samples = np.asarray(samples)
        if samples.ndim == 3:
            samples = samples[..., None] if c == 1 else samples[None]
        if samples.ndim != 4 or samples.shape[-1] != c:
            raise ExportError(f"tflite_samples must be (N,H,W,{c}) images, got shape {samples.shape}")
        if samples.shape[1:3] != (h, w):
            samples = tf.image.resize(samples.astype(np.float32), (h, w), method="bilinear").numpy()
        samples = np.clip(np.round(samples), 0, 255).astype(np.uint8)
        sample_source = f"{len(samples)} given images"
    # The DenseCRF's permutohedral lattice uses searchsorted (LowerBound), which has neither
    # a TFLite builtin nor a select-op kernel: a TFLite model never contains the CRF.
    fn = module.fixed_size_function(h, w, tf.uint8, include_crf=False)
    frozen = _frozen_named_function(fn)
    os.makedirs(out_dir, exist_ok=True)

    # reference: the Keras model on the same inputs (eager, through the same pre/post-processing)
    mask_list, prob_list = [], []
    for image in samples:
        out = fn(tf.constant(image[None]))
        mask_list.append(out["mask"].numpy()[0])
        prob_list.append(out["probabilities"].numpy()[0])
    ref_masks, ref_probs = np.stack(mask_list), np.stack(prob_list)

    report: dict[str, Any] = {"input_shape": [1, h, w, c], "input_dtype": "uint8", "samples": sample_source,
                              "crf_included": False}
    report["select_tf_ops"] = False
    for kind, filename in (("float32", TFLITE_FLOAT32), ("dynamic_range", TFLITE_DYNAMIC_RANGE)):
        model_bytes = _convert(frozen, module, quantize=kind == "dynamic_range", select_tf_ops=report["select_tf_ops"])
        if model_bytes is None and not report["select_tf_ops"]:
            # e.g. the DenseCRF's lattice ops (bincount, searchsorted) have no TFLite builtin:
            # fall back to TensorFlow "select" ops (the TFLite runtime then needs the Flex delegate)
            report["select_tf_ops"] = True
            model_bytes = _convert(frozen, module, quantize=kind == "dynamic_range", select_tf_ops=True)
        if model_bytes is None:
            raise ExportError(f"TFLite conversion ({kind}) failed, even with TensorFlow select ops; "
                              "export without --tflite (the SavedModel is unaffected)")
        with open(os.path.join(out_dir, filename), "wb") as f:
            f.write(model_bytes)
        masks, probabilities = _run_tflite(model_bytes, samples)
        report[f"{kind}_file"] = filename
        report[f"{kind}_bytes"] = len(model_bytes)
        report[f"mask_agreement_{kind}"] = float(np.mean(masks == ref_masks))
        report[f"max_abs_prob_diff_{kind}"] = float(np.max(np.abs(probabilities - ref_probs)))
    _write_json(os.path.join(out_dir, TFLITE_REPORT), report)
    return report


__all__ = [
    "ExportError",
    "MODEL_CARD_FILENAME",
    "build_serving_module",
    "convert_tflite",
    "existing_versions",
    "export",
    "next_version",
    "read_model_card",
    "synthetic_samples",
]
