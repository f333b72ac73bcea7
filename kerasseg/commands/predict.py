"""``kerasseg predict --model M INPUT... --out DIR``: masks (and more) for images.

For every input image (files, or every PNG/JPEG/TIFF/BMP in a folder) writes
``DIR/<name>_mask.png`` (uint8 class ids), optionally ``<name>_overlay.png``
and the class probabilities (``<name>_prob.npy`` float32 ``(H, W, K)``, or one
16-bit PNG per class with ``--probabilities-format png``), printing
``generating: <path>`` for each file.

Normalization, class names and CRF parameters come from ``model_info.json``
beside the model (written by ``kerasseg train``); flags override them. Images
larger than the training size go through sliding-window inference with
Gaussian-weighted tiles of that size (``--tile`` sets another size, ``--tile 0``
disables tiling).

Channels: a grayscale image is repeated for an RGB model, and an RGB image whose
channels are all equal is used as grayscale; a colour image for a grayscale
model is an error.
"""

from __future__ import annotations

import argparse
import os

from kerasseg.cli import CommandError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    parser.add_argument("--model", required=True, help="trained model (.keras)")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--crf", action="store_true", help="refine with the dense CRF (parameters from model_info.json)")
    parser.add_argument("--tta", action="store_true", help="average predictions over flips")
    parser.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png")
    parser.add_argument("--probabilities", action="store_true", help="also write class probabilities")
    parser.add_argument("--probabilities-format", choices=("npy", "png"), default="npy",
                        help="npy: one float32 (H,W,K) array; png: one 16-bit PNG per class")
    parser.add_argument("--tile", type=int, default=None, metavar="SIZE",
                        help="sliding-window tile size (default: the training size for larger images; 0 = off)")
    parser.add_argument("--overlap", type=float, default=0.5, help="tile overlap fraction (default 0.5)")
    parser.add_argument("--normalization", default=None,
                        help="override the stored normalization: a method name or YAML, e.g. '{method: window, center: 40, width: 400}'")


def parse_normalization(text: str | None) -> dict | None:
    """``--normalization`` value -> dict (``None`` when not given)."""
    if text is None:
        return None
    import yaml

    from kerasseg.config import yaml_load

    try:
        value = yaml_load(text)
    except yaml.YAMLError as e:
        raise CommandError(f"--normalization: not valid YAML ({e})") from None
    if isinstance(value, str):
        value = {"method": value}
    if not isinstance(value, dict) or "method" not in value:
        raise CommandError("--normalization: expected a method name or a mapping with 'method'")
    return value


def tile_for(image_shape: tuple, tile: int | None, training_size: tuple | None):
    """Tile to use for an image: explicit ``--tile``, else the training size when the
    image is larger than it, else ``None`` (whole image at once)."""
    if tile is not None:
        if tile < 0:
            raise CommandError(f"--tile must be >= 0, got {tile}")
        return tile or None
    if training_size and (image_shape[0] > training_size[0] or image_shape[1] > training_size[1]):
        return tuple(training_size)
    return None


def crf_params(stored: dict) -> dict:
    """dense_crf keyword arguments from the stored CRF settings."""
    from kerasseg.postprocess import CRFParams

    return CRFParams.from_dict(stored, origin="model_info.json crf").kwargs()


def run(args: argparse.Namespace) -> int:
    if not 0.0 <= args.overlap < 1.0:
        raise CommandError(f"--overlap must be in [0, 1), got {args.overlap}")
    normalization = parse_normalization(args.normalization)

    from kerasseg import inference

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
            probs = inference.predict_probabilities(
                loaded.model, image, normalization=loaded.normalization,
                tile_size=tile_for(image.shape, args.tile, loaded.image_size),
                overlap=args.overlap, tta=args.tta,
            )
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
