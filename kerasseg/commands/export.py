"""``kerasseg export --model M --out DIR [--version N] [--crf] [--tflite]``.

Writes ``DIR/<version>/``, a SavedModel in the layout TF Serving expects
(``tensorflow_model_server --model_base_path=DIR``), with the preprocessing
inside the graph and the class names and normalization inside the model (see
:mod:`kerasseg.serving` for the signatures). Class names, normalization and
CRF parameters come from ``model_info.json`` beside a ``.keras`` model (written
by ``kerasseg train``); flags override them. Without ``--version`` the next
free version number is used; an existing version is replaced only with
``--overwrite``.

``--float32`` makes a model trained in mixed precision compute in float32
in the SavedModel (by default it computes as it was trained).

``--tflite`` also writes ``tflite/model_float32.tflite`` and
``tflite/model_dynamic_range.tflite`` for a fixed input size (``--tflite-size``,
default the training image size) and reports how many mask pixels agree with
the Keras model (on ``--tflite-samples`` images, else synthetic ones).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from kerasseg.errors import CommandError
from kerasseg.commands._shared import add_normalization_flag, parse_normalization

# DenseCRF arguments that model_info.json's CRF settings (pydensecrf names) map to


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="trained model (.keras)")
    parser.add_argument("--out", required=True, help="export base folder; the model goes to OUT/<version>/")
    parser.add_argument("--version", type=int, default=None,
                        help="version number (folder name); default: one more than the highest existing")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT/<version> if it exists")
    parser.add_argument("--class-names", default=None,
                        help="comma-separated class names (default: model_info.json)")
    add_normalization_flag(parser)
    parser.add_argument("--size-divisor", type=int, default=None,
                        help="pad inputs to a multiple of this (default: computed from the model)")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help="refuse images with more pixels (height x width) in the serving graph "
                        "(default: KERASSEG_MAX_PIXELS or 128e6; 16e6 for whole-image models)")
    parser.add_argument("--from-logits", action="store_true",
                        help="the model outputs logits; apply softmax/sigmoid in the serving graph")
    parser.add_argument("--crf", action="store_true",
                        help="insert the dense CRF (kerasseg.layers.DenseCRF) before the arg-max, "
                        "with the parameters from model_info.json")
    parser.add_argument("--crf-params", default=None,
                        help="DenseCRF parameters overriding the stored ones, YAML/JSON, e.g. '{iterations: 5}'")
    parser.add_argument("--float32", action="store_true",
                        help="compute in float32 in the SavedModel even if the model was trained in mixed "
                        "precision (serving on hardware without bfloat16); default: the training precision")
    parser.add_argument("--tflite", action="store_true",
                        help="also write float32 and dynamic-range quantized TFLite models (fixed input size)")
    parser.add_argument("--tflite-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="TFLite input height and width (default: the training image size, else 256 256)")
    parser.add_argument("--tflite-samples", nargs="+", default=None, metavar="IMAGE",
                        help="images or folders on which TFLite masks are compared with Keras (default: synthetic)")


def _parse_mapping(text: str | None, flag: str) -> dict | None:
    if text is None:
        return None
    import yaml

    if os.path.isfile(text):
        try:
            with open(text, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise CommandError(f"{flag}: cannot read {text} ({e})") from None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CommandError(f"{flag}: not valid YAML/JSON ({e})") from None
    if not isinstance(value, dict):
        raise CommandError(f"{flag}: expected a mapping, got {value!r}")
    return value


def crf_arguments(stored: dict | None, override: dict | None) -> dict:
    """DenseCRF keyword arguments from model_info.json CRF settings plus overrides
    (:func:`kerasseg.postprocess.params.dense_crf_layer_arguments`); what the
    layer cannot follow is printed as a note."""
    from kerasseg.postprocess.params import dense_crf_layer_arguments

    out, notes = dense_crf_layer_arguments(stored)
    for note in notes:
        print(f"note: model_info.json {note}", file=sys.stderr)
    out.update(override or {})
    return out


def _load_samples(inputs: list[str], channels: int):
    import numpy as np

    from kerasseg import inference

    try:
        paths = inference.list_images(inputs)
        images = [inference.match_channels(inference.read_image(p), channels, name=p) for p in paths]
    except inference.InferenceError as e:
        raise CommandError(f"--tflite-samples: {e}") from None
    for path, image in zip(paths, images):
        if image.dtype != np.uint8:
            raise CommandError(f"--tflite-samples: {path} is {image.dtype}; the TFLite model takes uint8 images")
    return images


def run(args: argparse.Namespace) -> int:
    normalization = parse_normalization(args.normalization)
    crf_override = _parse_mapping(args.crf_params, "--crf-params")
    class_names = [c.strip() for c in args.class_names.split(",")] if args.class_names else None
    if class_names is not None and not all(class_names):
        raise CommandError(f"--class-names: empty name in {args.class_names!r}")
    if args.version is not None and args.version < 0:
        raise CommandError(f"--version must be >= 0, got {args.version}")

    from kerasseg import inference
    from kerasseg.export import ExportError, export, next_version

    try:
        loaded = inference.load_for_inference(args.model, normalization=normalization, class_names=class_names,
                                              float32=True if args.float32 else None)
    except inference.InferenceError as e:
        raise CommandError(str(e)) from None
    if loaded.info is not None and loaded.info.volume is not None:
        return _export_volume(args, loaded)
    stored_channels = loaded.info.channels if loaded.info else None
    model_channels = inference.model_input_channels(loaded.model)
    if stored_channels is not None and model_channels is not None and int(stored_channels) != model_channels:
        raise CommandError(
            f"{args.model}: model_info.json says {stored_channels} channel(s) but the model takes {model_channels}"
        )
    use_crf = args.crf or bool(crf_override)
    crf: dict | bool | None = crf_arguments(loaded.crf, crf_override) if use_crf else None
    if use_crf and not crf:
        crf = True

    tflite_size = tuple(args.tflite_size) if args.tflite_size else None
    if tflite_size is None and args.tflite and loaded.image_size:
        tflite_size = tuple(int(v) for v in loaded.image_size)[:2]
    samples = None
    if args.tflite_samples:
        if not args.tflite:
            raise CommandError("--tflite-samples needs --tflite")
        images = _load_samples(args.tflite_samples, model_channels or 1)
        samples = _resize_samples(images, tflite_size)
        tflite_size = samples.shape[1:3]

    version = args.version if args.version is not None else next_version(args.out)
    extra = {"source_model": os.path.abspath(args.model)}
    try:
        path = export(
            loaded.model, args.out,
            class_names=loaded.class_names, normalization=loaded.normalization,
            version=version, crf=crf, tflite=args.tflite, size_divisor=args.size_divisor,
            geometry=loaded.geometry, max_pixels=args.max_pixels,
            overwrite=args.overwrite, from_logits=args.from_logits,
            tflite_input_size=tflite_size, tflite_samples=samples, extra_info=extra,
        )
    except ExportError as e:
        raise CommandError(str(e)) from None
    except (ValueError, TypeError) as e:
        raise CommandError(f"{args.model}: cannot export ({e})") from None

    from kerasseg.export import read_model_card

    card = read_model_card(path)
    print(f"exported {args.model} -> {path}")
    print(f"  classes: {', '.join(card['class_names'])}; channels: {card['channels']}; "
          f"size divisor: {card['size_divisor']}; normalization: {json.dumps(card['normalization'], sort_keys=True)}")
    from kerasseg.serving import SIGNATURE_NAMES

    print(f"  signatures: {', '.join(SIGNATURE_NAMES)}" + ("; with DenseCRF" if card.get("crf") else ""))
    if "tflite" in card:
        t = card["tflite"]
        print(f"  tflite: input {t['input_shape']} uint8; mask agreement with Keras on {t['samples']}: "
              f"float32 {100 * t['mask_agreement_float32']:.2f}%, "
              f"dynamic range {100 * t['mask_agreement_dynamic_range']:.2f}%")
    print(f"  serve: tensorflow_model_server --model_base_path={os.path.abspath(args.out)} --rest_api_port=8501")
    return 0


def _export_volume(args: argparse.Namespace, loaded) -> int:
    from kerasseg.commands import _volumes
    from kerasseg.export import ExportError

    for flag, given in (("--tflite", args.tflite), ("--crf", args.crf or args.crf_params),
                        ("--size-divisor", args.size_divisor), ("--max-pixels", args.max_pixels),
                        ("--from-logits", args.from_logits)):
        if given:
            raise CommandError(f"{flag} is for 2D models; {args.model} is a volume model")
    args.export_dir = args.out
    try:
        path = _volumes.export(args, loaded)
    except ExportError as e:
        raise CommandError(str(e)) from None
    geometry = loaded.info.volume
    print(f"exported {args.model} -> {path}")
    print(f"  classes: {', '.join(loaded.class_names)}; {geometry.describe()}; "
          f"normalization: {json.dumps(loaded.normalization, sort_keys=True)}")
    print("  signatures: serving_default (float32 volume + spacing), serving_int16, metadata")
    return 0


def _resize_samples(images: list, size: tuple | None):
    """Stack uint8 ``(H,W,C)`` images as ``(N,H,W,C)`` at ``size`` (default: the first image's)."""
    import numpy as np
    import tensorflow as tf

    if size is None:
        size = images[0].shape[:2]
    out = []
    for image in images:
        if image.shape[:2] != tuple(size):
            image = tf.image.resize(image.astype(np.float32), size, method="bilinear").numpy()
            image = np.clip(np.round(image), 0, 255).astype(np.uint8)
        out.append(image)
    return np.stack(out)
