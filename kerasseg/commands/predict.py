"""``kerasseg predict --model M INPUT... --out DIR``: masks (and more) for images.

For every input image (files, or every PNG/JPEG/TIFF/BMP in a folder) writes
``DIR/<name>_mask.png`` (uint8 class ids), optionally ``<name>_overlay.png``
and the class probabilities (``<name>_prob.npy`` float32 ``(H, W, K)``, or one
16-bit PNG per class with ``--probabilities-format png``), printing
``generating: <path>`` for each file.

Normalization, class names, the geometry and CRF parameters come from
``model_info.json`` beside the model (written by ``kerasseg train``); flags
override them. The model sees every image the way it saw images in training
(resized to the training size and back, or Gaussian-weighted tiles of the
training patch size at native scale; :mod:`kerasseg.predict_graph`), with the
code the exported SavedModel runs; ``--tile N`` forces tiles of ``N`` at native
scale and ``--tile 0`` the whole image at once.

Channels: a grayscale image is repeated for an RGB model, and an RGB image whose
channels are all equal is used as grayscale; a colour image for a grayscale
model is an error.

A volume model (trained on volumes) takes volume files (NIfTI ``.nii``/``.nii.gz``,
NRRD, MHA/MHD), DICOM series folders or folders of them, and writes
``DIR/<case>_mask.nii.gz`` (``--format nifti|nrrd|mha``) with the input's
spacing, origin and direction; ``--overlay`` draws the middle slice and
``--probabilities`` writes ``<case>_prob.npy`` ``(D, H, W, K)``.
"""

from __future__ import annotations

import argparse
import os

from kerasseg.errors import CommandError
from kerasseg.commands._shared import add_inference_flags, crf_params, geometry_for, parse_normalization


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    parser.add_argument("--model", required=True, help="trained model (.keras)")
    parser.add_argument("--out", required=True, help="output folder (created)")
    add_inference_flags(parser, crf_help="refine with the dense CRF (parameters from model_info.json)")
    parser.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png")
    parser.add_argument("--probabilities", action="store_true", help="also write class probabilities")
    parser.add_argument("--probabilities-format", choices=("npy", "png"), default="npy",
                        help="npy: one float32 (H,W,K) array; png: one 16-bit PNG per class")
    parser.add_argument("--format", choices=("nifti", "nrrd", "mha"), default="nifti",
                        help="volume models: mask file format, written with the input's spacing, origin and "
                        "direction (default nifti: <case>_mask.nii.gz)")


def run(args: argparse.Namespace) -> int:
    normalization = parse_normalization(args.normalization)

    from kerasseg import inference
    from kerasseg.commands import _volumes

    if _volumes.is_volume_model(args.model):
        try:
            loaded = inference.load_for_inference(args.model, normalization=normalization)
        except inference.InferenceError as e:
            raise CommandError(str(e)) from None
        return _volumes.predict(args, loaded)

    try:
        paths = inference.list_images(args.inputs)
    except inference.InferenceError as e:
        raise CommandError(str(e)) from None
    stems: dict[str, str] = {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in stems:
            raise CommandError(f"{path} and {stems[stem]} would both write {stem}_mask.png; rename one")
        stems[stem] = path
    try:
        loaded = inference.load_for_inference(args.model, normalization=normalization)
    except inference.InferenceError as e:
        raise CommandError(str(e)) from None
    geometry = geometry_for(loaded, args.tile, args.overlap)
    predictor = inference.Predictor(loaded.model, normalization=loaded.normalization, geometry=geometry,
                                    tta=args.tta)
    use_crf = args.crf or bool(loaded.crf.get("enabled"))
    params = None
    if use_crf:
        from kerasseg.postprocess import CRFConfigError, dense_crf

        try:
            params = crf_params(loaded.crf)
        except CRFConfigError as e:
            raise CommandError(str(e)) from None

    os.makedirs(args.out, exist_ok=True)
    from kerasseg.data.preprocess import NormalizationError

    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        try:
            image = inference.read_image(path)
            probs = predictor(image)
        except inference.InferenceError as e:
            raise CommandError(f"{path}: {e}" if path not in str(e) else str(e)) from None
        except NormalizationError as e:
            raise CommandError(f"normalization: {e}") from None
        if params is not None:
            try:
                probs, _ = dense_crf(image, probs, **params)
            except ValueError as e:
                raise CommandError(f"{path}: dense CRF: {e}") from None
        mask = inference.probabilities_to_mask(probs)
        target = os.path.join(args.out, f"{stem}_mask.png")
        print(f"generating: {target}", flush=True)
        inference.save_mask(target, mask)
        if args.overlay:
            target = os.path.join(args.out, f"{stem}_overlay.png")
            print(f"generating: {target}", flush=True)
            inference.save_overlay(target, image, mask)
        if args.probabilities:
            base = os.path.join(args.out, f"{stem}_prob")
            shown = f"{base}.npy" if args.probabilities_format == "npy" else f"{base}_class*.png"
            print(f"generating: {shown}", flush=True)
            inference.save_probabilities(base, probs, fmt=args.probabilities_format)
    return 0
