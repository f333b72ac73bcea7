"""Export a volume model as a SavedModel that takes raw volumes and their spacing.

``export_volume_model(model, "exports/hippocampus", class_names=[...], normalization={...},
patch_size=(40, 56, 40), spacing=(1.0, 1.0, 1.0))`` writes
``exports/hippocampus/<version>/`` -- the layout TF Serving watches -- with

* ``saved_model.pb`` + ``variables/``: a graph running
  :func:`kerasseg.volume_inference.sliding_window_probabilities`, the code
  :class:`~kerasseg.volume_inference.VolumePredictor` (``kerasseg predict``)
  runs: resample to the model's spacing, normalize the whole volume, pad with 0
  to the patch, Gaussian-weighted sliding window (flip TTA when exported with
  ``tta=True``), crop, resample the probabilities back to the input's grid;
* ``assets/kerasseg_model.json``: the model card (class names, resolved
  normalization, patch size, spacing, overlap, signatures, the training
  ``model_info.json``), also returned by the ``metadata`` signature
  (:func:`kerasseg.export.read_model_card` reads it).

Signatures:

=====================  ==================================================  ====================================
name                   inputs                                              outputs
=====================  ==================================================  ====================================
``serving_default``    ``volume``: float32 ``(D, H, W)`` (one channel) or  ``labels`` uint8 ``(D, H, W)`` on the
                       ``(D, H, W, C)``, any size (also smaller than the   input's grid, ``probabilities``
                       patch); ``spacing``: float32 ``(3,)`` mm (z, y, x)  float32 ``(D, H, W, K)``
``serving_int16``      ``volume``: int16 (CT Hounsfield units), same       same
                       shapes; ``spacing`` as above
``metadata``           none                                                ``class_names`` string ``(K,)``,
                                                                           ``normalization`` (JSON),
                                                                           ``channels``, ``num_classes`` int32,
                                                                           ``patch_size`` int32 ``(3,)``,
                                                                           ``spacing`` float32 ``(3,)`` (``(0,)``
                                                                           when the model has none),
                                                                           ``overlap`` float32, ``tta`` bool,
                                                                           ``info`` (the model card, JSON)
=====================  ==================================================  ====================================

As in :mod:`kerasseg.serving`, the inputs are declared with an unknown shape
and the graph checks rank, channel count, emptiness, finite voxels and the
spacing itself, failing with a message that says what was expected. The
version folder is staged under a hidden name and renamed into place, and an
existing version is only replaced with ``overwrite=True``
(:func:`kerasseg.export.export` does the same for 2D models).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Mapping, Sequence

SIGNATURE_FLOAT32 = "serving_default"
SIGNATURE_INT16 = "serving_int16"
SIGNATURE_METADATA = "metadata"
SIGNATURE_NAMES = (SIGNATURE_FLOAT32, SIGNATURE_INT16, SIGNATURE_METADATA)
CARD_FORMAT = "kerasseg-volume-savedmodel"


def _checked_arguments(model: Any, *, class_names: Sequence[str], normalization: Any, patch_size: Any,
                       spacing: Any, overlap: Any, channels: Any) -> dict[str, Any]:
    """Validated export arguments (raises :class:`kerasseg.export.ExportError` naming the problem)."""
    from kerasseg.data.preprocess import NormalizationError, check_normalization
    from kerasseg.errors import InferenceError
    from kerasseg.export import ExportError
    from kerasseg.volume_inference import (check_overlap, check_patch_fits_model, check_patch_size, check_spacing,
                                           model_channels_and_outputs)

    try:
        model_channels, k = model_channels_and_outputs(model)
        patch = check_patch_size(patch_size)
        check_patch_fits_model(model, patch)
        model_spacing = None if spacing is None else check_spacing(spacing, what="the model's spacing")
        overlap = check_overlap(overlap)
    except InferenceError as e:
        raise ExportError(str(e)) from None
    if isinstance(channels, bool) or not isinstance(channels, int) or channels != model_channels:
        raise ExportError(f"channels {channels!r} does not match the model, which takes {model_channels} "
                          "channel(s)")
    names = [str(c) for c in class_names]
    expected = 2 if k == 1 else k
    if len(names) != expected:
        raise ExportError(
            f"the model has {k} output channel(s), so it needs {expected} class names "
            f"({'background + foreground for a sigmoid model' if k == 1 else 'one per channel'}), "
            f"got {len(names)}: {names}")
    if not isinstance(normalization, Mapping) or "method" not in normalization:
        raise ExportError("normalization must be the resolved dict used in training (with a 'method' key), "
                          f"got {normalization!r}")
    try:
        normalization = check_normalization(dict(normalization))
    except NormalizationError as e:
        raise ExportError(f"normalization: {e}") from None
    return {"class_names": names, "normalization": normalization, "patch_size": patch, "spacing": model_spacing,
            "overlap": overlap, "channels": model_channels, "num_outputs": k}


def _model_card(model: Any, args: Mapping[str, Any], *, tta: bool, model_info: Mapping[str, Any] | None) -> dict:
    from kerasseg import __version__
    from kerasseg.artifacts import VolumeGeometry
    from kerasseg.volume_inference import ACCUMULATOR_DTYPE

    c, k = args["channels"], args["num_outputs"]
    geometry = VolumeGeometry(patch_size=args["patch_size"], spacing=args["spacing"], overlap=args["overlap"])
    shapes = "(D,H,W) or (D,H,W,1)" if c == 1 else f"(D,H,W,{c})"
    outputs = {"labels": "uint8 (D,H,W) on the input's grid", "probabilities": f"float32 (D,H,W,{k})"}
    return {
        "format": CARD_FORMAT,
        "kerasseg_version": __version__,
        "model_name": getattr(model, "name", ""),
        "class_names": args["class_names"],
        "num_classes": len(args["class_names"]),
        "output_channels": k,
        "channels": c,
        "normalization": dict(args["normalization"]),
        "volume": geometry.to_dict(),
        "tta": bool(tta),
        "geometry_description": geometry.describe() + (", flip TTA (8 flips per window)" if tta else ""),
        "padding": "after resampling and normalization, volumes smaller than the patch are padded with 0 "
                   "(split evenly on both sides); outputs cropped back",
        "accumulator": f"{ACCUMULATOR_DTYPE} weighted sum on the model grid (probabilities within about 1e-3 "
                       "of a float32 sum)",
        "signatures": {
            SIGNATURE_FLOAT32: {"inputs": {"volume": f"float32 {shapes}", "spacing": "float32 (3,) mm (z, y, x)"},
                                "outputs": outputs},
            SIGNATURE_INT16: {"inputs": {"volume": f"int16 {shapes}", "spacing": "float32 (3,) mm (z, y, x)"},
                              "outputs": outputs},
            SIGNATURE_METADATA: {"inputs": {}, "outputs": {
                "class_names": "string (K,)", "normalization": "string (JSON)", "channels": "int32",
                "num_classes": "int32", "patch_size": "int32 (3,)",
                "spacing": "float32 (3,) mm, (0,) when volumes are used at their own spacing",
                "overlap": "float32", "tta": "bool", "info": "string (JSON model card)"}},
        },
        "model_info": json.loads(json.dumps(dict(model_info), default=str)) if model_info else None,
    }


def build_volume_serving_module(model: Any, args: Mapping[str, Any], *, tta: bool, card: Mapping[str, Any]) -> Any:
    """A ``tf.Module`` holding ``model`` and the three serving functions (see the module docstring)."""
    import tensorflow as tf

    from kerasseg.serving import _guard
    from kerasseg.volume_inference import probabilities_to_labels, sliding_window_probabilities

    c, k = int(args["channels"]), int(args["num_outputs"])
    normalization = dict(args["normalization"])
    patch, model_spacing, overlap = args["patch_size"], args["spacing"], args["overlap"]
    expected = "(depth, height, width) or (depth, height, width, 1)" if c == 1 else f"(depth, height, width, {c})"

    def checked_volume(volume: Any, signature: str) -> Any:
        shape = tf.shape(volume)
        rank = tf.size(shape)
        shape4 = tf.concat([shape, tf.fill([4], 1)], axis=0)[:4]
        rank_ok = tf.logical_or(tf.equal(rank, 4), tf.equal(rank, 3)) if c == 1 else tf.equal(rank, 4)
        volume = _guard(volume, [
            (rank_ok, f"{signature}: expected a volume {expected} (axes z, y, x[, channel]) but the rank "
             "differs. Got shape:"),
            (tf.logical_or(tf.logical_not(rank_ok), tf.equal(shape4[3], c)),
             f"{signature}: the model takes {c} channel(s) but the last axis has another size. Got shape:"),
            (tf.logical_or(tf.logical_not(rank_ok), tf.reduce_all(shape4[:3] > 0)),
             f"{signature}: the volume is empty (a spatial size is 0). Got shape:"),
        ], shape)
        volume = tf.reshape(volume, tf.concat([tf.shape(volume)[:3], [c]], axis=0))
        volume = tf.ensure_shape(volume, [None, None, None, c])
        if volume.dtype.is_floating:
            finite = tf.math.is_finite(volume)
            volume = _guard(volume, [
                (tf.reduce_all(finite), f"{signature}: the volume has NaN or infinite voxel values; send finite "
                 "intensities. Count of such voxels:"),
            ], tf.math.count_nonzero(tf.logical_not(finite)))
        return volume

    def checked_spacing(spacing: Any, signature: str) -> Any:
        flat = tf.reshape(tf.cast(spacing, tf.float32), [-1])
        sized = tf.equal(tf.size(flat), 3)
        valid = tf.logical_and(sized, tf.reduce_all(tf.logical_and(tf.math.is_finite(flat), flat > 0)))
        flat = _guard(flat, [
            (tf.logical_and(sized, tf.equal(tf.rank(spacing), 1)),
             f"{signature}: spacing must be the (z, y, x) voxel size in mm, shape (3,). Got:"),
            (valid, f"{signature}: spacing must be 3 positive finite numbers (mm, z y x). Got:"),
        ], flat)
        # kept at its dynamic shape: a static (3,) reshape after the guard let a wrong size through
        return flat

    def serve(volume: Any, spacing: Any, signature: str) -> dict[str, Any]:
        volume = checked_volume(volume, signature)
        spacing = checked_spacing(spacing, signature)
        probs = sliding_window_probabilities(
            model, volume, spacing, normalization=normalization, patch_size=patch, num_outputs=k,
            model_spacing=model_spacing, overlap=overlap, tta=tta)
        return {"labels": probabilities_to_labels(probs), "probabilities": probs}

    info_json = json.dumps(dict(card), sort_keys=True, default=str)

    def metadata() -> dict[str, Any]:
        return {
            "class_names": tf.constant(list(card["class_names"]), tf.string),
            "normalization": tf.constant(json.dumps(normalization, sort_keys=True)),
            "channels": tf.constant(c, tf.int32),
            "num_classes": tf.constant(len(card["class_names"]), tf.int32),
            "patch_size": tf.constant(list(patch), tf.int32),
            "spacing": tf.constant(list(model_spacing or []), tf.float32, shape=[3 if model_spacing else 0]),
            "overlap": tf.constant(overlap, tf.float32),
            "tta": tf.constant(bool(tta)),
            "info": tf.constant(info_json),
        }

    module = tf.Module(name="kerasseg_volume_serving")
    module.model = model
    spacing_spec = tf.TensorSpec(None, tf.float32, name="spacing")
    module.serve_float32 = tf.function(lambda volume, spacing: serve(volume, spacing, SIGNATURE_FLOAT32),
                                       input_signature=[tf.TensorSpec(None, tf.float32, name="volume"), spacing_spec])
    module.serve_int16 = tf.function(lambda volume, spacing: serve(volume, spacing, SIGNATURE_INT16),
                                     input_signature=[tf.TensorSpec(None, tf.int16, name="volume"), spacing_spec])
    module.metadata = tf.function(metadata, input_signature=[])
    return module


def export_volume_model(
    model: Any,
    export_dir: str,
    *,
    class_names: Sequence[str],
    normalization: Mapping[str, Any],
    patch_size: Sequence[int],
    spacing: Sequence[float] | None,
    overlap: float = 0.5,
    tta: bool = False,
    channels: int = 1,
    version: int | None = None,
    overwrite: bool = False,
    model_info: Mapping[str, Any] | None = None,
) -> str:
    """Export volume ``model`` as ``export_dir/<version>/`` (a SavedModel; signatures in the module docstring).

    Args:
        model: functional Keras model, float32 ``(B, d, h, w, C)`` in,
            ``(B, d, h, w, K)`` probabilities out.
        export_dir: the model's base folder (TF Serving's ``--model_base_path``).
        class_names: ``K`` names (2 for a one-channel sigmoid model).
        normalization: resolved normalization dict used in training.
        patch_size: ``(d, h, w)`` sliding window, the training patch size.
        spacing: ``(z, y, x)`` mm the model was trained at (``None``: volumes
            are used at their own grid and the ``spacing`` input is only checked).
        overlap: fraction of a window shared with its neighbour, ``[0, 1)``.
        tta: bake flip test-time augmentation (8 flips per window) into the graph.
        channels: the model's input channels ``C`` (checked against the model).
        version: version number (folder name); ``None`` takes the next free one.
        overwrite: replace an existing ``export_dir/<version>``.
        model_info: the training ``model_info.json`` contents, kept in the model card.

    Returns:
        The version folder that was written, e.g. ``export_dir/1``.

    Raises:
        kerasseg.export.ExportError: bad arguments, or the version exists and
            ``overwrite`` is False (the existing folder is left as it is).
    """
    import tensorflow as tf

    from kerasseg import tempdirs
    from kerasseg.export import MODEL_CARD_FILENAME, ExportError, _commit, _write_json, next_version

    export_dir = os.fspath(export_dir)
    if version is None:
        version = next_version(export_dir)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ExportError(f"version must be a non-negative integer, got {version!r}")
    final_dir = os.path.join(export_dir, str(version))
    if os.path.exists(final_dir) and not overwrite:
        raise ExportError(f"{final_dir} already exists; choose another version (next free: "
                          f"{next_version(export_dir)}) or pass overwrite=True (--overwrite)")
    args = _checked_arguments(model, class_names=class_names, normalization=normalization, patch_size=patch_size,
                              spacing=spacing, overlap=overlap, channels=channels)
    card = _model_card(model, args, tta=bool(tta), model_info=model_info)
    module = build_volume_serving_module(model, args, tta=bool(tta), card=card)

    os.makedirs(export_dir, exist_ok=True)
    # staging folders of killed exports are removed once stale (name, age, dead pid: kerasseg/tempdirs.py)
    tempdirs.remove_stale(export_dir, ".tmp-export-", tag=r"\d+-")
    tmp_dir = tempdirs.make_staging_dir(export_dir, f".tmp-export-{version}-", mode=0o700)
    card_dir = tempfile.mkdtemp(prefix="kerasseg-card-")
    try:
        card_path = os.path.join(card_dir, MODEL_CARD_FILENAME)
        _write_json(card_path, card)
        module.model_card_asset = tf.saved_model.Asset(card_path)
        signatures = {
            SIGNATURE_FLOAT32: module.serve_float32.get_concrete_function(),
            SIGNATURE_INT16: module.serve_int16.get_concrete_function(),
            SIGNATURE_METADATA: module.metadata.get_concrete_function(),
        }
        tf.saved_model.save(module, tmp_dir, signatures=signatures)
        _commit(tmp_dir, final_dir, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(card_dir, ignore_errors=True)
    return final_dir


__all__ = ["CARD_FORMAT", "SIGNATURE_FLOAT32", "SIGNATURE_INT16", "SIGNATURE_METADATA", "SIGNATURE_NAMES",
           "build_volume_serving_module", "export_volume_model"]
