"""Synthetic ultrasound-like phantom, written as real labelme annotations.

The demo and the benchmarks need data that anyone can regenerate offline. Each
image is a B-mode-like frame: a bright speckled parenchyma, a darker band of
tissue crossing it, and one to three hypoechoic (dark) lesions with irregular
outlines. Each lesion outline is saved as a labelme ``polygon`` shape with the
label ``lesion``; the converter rasterizes it like any user annotation.

Files follow labelme 5.x: ``<name>.png`` beside ``<name>.json`` with
``imagePath`` relative to the JSON and ``imageData: null``; every
``embed_every``-th file instead embeds the PNG as base64 ``imageData`` and has
no image file beside it (labelme's "save image data" option).
"""

from __future__ import annotations

import base64
import json
import pathlib
from typing import Any, Sequence

import numpy as np

LABELME_VERSION = "5.5.0"
CLASS_NAMES = ("_background_", "lesion")


def _irregular_outline(
    rng: np.random.Generator, center: tuple[float, float], radius: float, num_points: int
) -> np.ndarray:
    """Closed, star-shaped outline with a few random harmonics; (N, 2) x/y points."""
    angles = np.linspace(0.0, 2.0 * np.pi, num_points, endpoint=False)
    profile = np.ones_like(angles)
    for harmonic in (2, 3, 5):
        amplitude = rng.uniform(0.0, 0.22 / harmonic * 2)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        profile += amplitude * np.sin(harmonic * angles + phase)
    profile = np.clip(profile, 0.55, 1.6)
    xs = center[0] + radius * profile * np.cos(angles)
    ys = center[1] + radius * profile * np.sin(angles)
    return np.stack([xs, ys], axis=1)


def render_phantom(
    rng: np.random.Generator, size: int, num_lesions: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Render one frame.

    Returns:
        image: uint8 ``(size, size)`` grayscale frame.
        outlines: one ``(N, 2)`` float array of x/y vertices per lesion.
    """
    import cv2

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # Parenchyma echogenicity with depth attenuation (brighter near the probe).
    echo = 0.75 - 0.25 * (yy / size)
    # A darker band of tissue (e.g. a muscle layer) crossing the frame.
    band_center = rng.uniform(0.25, 0.75) * size
    band_tilt = rng.uniform(-0.3, 0.3)
    band_half = rng.uniform(0.05, 0.10) * size
    band_distance = np.abs(yy - (band_center + band_tilt * (xx - size / 2)))
    echo = np.where(band_distance < band_half, echo * 0.55, echo)

    outlines: list[np.ndarray] = []
    lesion_mask = np.zeros((size, size), np.uint8)
    attempts = 0
    while len(outlines) < num_lesions and attempts < 50:
        attempts += 1
        radius = rng.uniform(0.07, 0.16) * size
        margin = radius * 1.7
        center = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
        outline = _irregular_outline(rng, center, radius, num_points=int(rng.integers(18, 32)))
        candidate = np.zeros_like(lesion_mask)
        cv2.fillPoly(candidate, [np.round(outline * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
        if (candidate & lesion_mask).any():
            continue  # keep lesions apart so each outline is one connected region
        lesion_mask |= candidate
        outlines.append(outline)

    inside = lesion_mask.astype(bool)
    echo = np.where(inside, echo * rng.uniform(0.18, 0.3), echo)
    # Posterior acoustic enhancement below each lesion, as in cystic lesions.
    shadow = cv2.GaussianBlur(lesion_mask.astype(np.float32), (0, 0), size / 40)
    shifted = np.roll(shadow, int(size * 0.12), axis=0)
    echo = echo + 0.15 * shifted * (~inside)
    # Multiplicative speckle (Rayleigh-distributed amplitude) plus a little blur,
    # which gives the grainy texture of a B-mode frame.
    speckle = rng.rayleigh(scale=0.8, size=(size, size)).astype(np.float32)
    frame = cv2.GaussianBlur(echo * speckle, (0, 0), 0.8)
    frame = np.clip(frame * 255.0, 0, 255).astype(np.uint8)
    return frame, outlines


def _labelme_document(
    outlines: Sequence[np.ndarray], image_path: str, size: int, image_data: str | None
) -> dict:
    shapes: list[dict[str, Any]] = [
        {
            "label": "lesion",
            "points": [[round(float(x), 2), round(float(y), 2)] for x, y in outline],
            "group_id": None,
            "description": "",
            "shape_type": "polygon",
            "flags": {},
            "mask": None,
        }
        for outline in outlines
    ]
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": image_data,
        "imageHeight": size,
        "imageWidth": size,
    }


def generate_phantom_dataset(
    out_dir: str | pathlib.Path,
    *,
    num_images: int = 60,
    size: int = 128,
    seed: int = 0,
    embed_every: int = 10,
    write_labels_txt: bool = True,
) -> list[pathlib.Path]:
    """Write ``num_images`` labelme JSON files (and their PNG images) to ``out_dir``.

    Args:
        out_dir: folder to create (may exist; files are overwritten).
        num_images: how many frames.
        size: frames are ``size x size`` grayscale uint8.
        seed: the dataset is a pure function of the arguments.
        embed_every: every ``embed_every``-th JSON embeds its image as
            ``imageData`` (no PNG beside it); 0 disables embedding.
        write_labels_txt: also write labelme's ``labels.txt``
            (``__ignore__``, ``_background_``, ``lesion``).

    Returns:
        The JSON paths, sorted.
    """
    import cv2

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(num_images):
        name = f"phantom_{index:04d}"
        frame, outlines = render_phantom(rng, size, num_lesions=int(rng.integers(1, 4)))
        ok, png = cv2.imencode(".png", frame)
        if not ok:  # pragma: no cover - cv2 only fails on invalid arrays
            raise RuntimeError(f"could not encode {name}.png")
        embed = embed_every > 0 and index % embed_every == embed_every - 1
        if embed:
            document = _labelme_document(
                outlines, f"{name}.png", size, base64.b64encode(png.tobytes()).decode("ascii")
            )
        else:
            (out / f"{name}.png").write_bytes(png.tobytes())
            document = _labelme_document(outlines, f"{name}.png", size, None)
        json_path = out / f"{name}.json"
        json_path.write_text(json.dumps(document, indent=2))
        paths.append(json_path)
    if write_labels_txt:
        (out / "labels.txt").write_text("__ignore__\n" + "\n".join(CLASS_NAMES) + "\n")
    return sorted(paths)
