"""Helpers for the data_tools tests: write small labelme folders and images."""

from __future__ import annotations

import base64
import io
import json
import pathlib

import numpy as np
from PIL import Image


def png_bytes(array: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **save)
    return buf.getvalue()


def write_image(path: pathlib.Path, array: np.ndarray, fmt: str | None = None, **save) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt, **save)
    return path


def labelme_doc(shapes, *, image_path="img.png", height=32, width=48, image_data=None, version="5.7.0"):
    return {
        "version": version,
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": image_data,
        "imageHeight": height,
        "imageWidth": width,
    }


def polygon(label, points, shape_type="polygon"):
    return {"label": label, "points": points, "group_id": None, "shape_type": shape_type, "flags": {}}


def write_labelme(folder: pathlib.Path, name: str, shapes, *, image=None, embed=False, **doc) -> pathlib.Path:
    """Write ``name.json`` (+ ``name.png`` unless embedded) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if image is None:
        rng = np.random.default_rng(abs(hash(name)) % 2**32)
        image = rng.integers(0, 255, (doc.get("height", 32), doc.get("width", 48)), dtype=np.uint8)
    height, width = image.shape[:2]
    doc.setdefault("height", height)
    doc.setdefault("width", width)
    if embed:
        doc["image_data"] = base64.b64encode(png_bytes(image)).decode()
        doc.setdefault("image_path", f"{name}.json")
    else:
        doc.setdefault("image_path", f"{name}.png")
        write_image(folder / doc["image_path"], image)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(labelme_doc(shapes, **doc)))
    return path


def small_labelme_folder(folder: pathlib.Path, n: int = 6, *, size=(32, 48), channels=1) -> pathlib.Path:
    """``n`` annotated grayscale images with two classes (a, b) and labels.txt."""
    rng = np.random.default_rng(0)
    for i in range(n):
        shape = size if channels == 1 else (*size, channels)
        image = rng.integers(0, 255, shape, dtype=np.uint8)
        shapes = [polygon("a", [[2, 2], [20, 3], [10, 18]])]
        if i % 2:
            shapes.append({"label": "b", "points": [[30, 10], [44, 28]], "shape_type": "rectangle"})
        else:
            shapes.append(polygon("b", [[30, 10], [44, 10], [44, 28], [30, 28]]))
        write_labelme(folder, f"img_{i:02d}", shapes, image=image, embed=(i == n - 1))
    (folder / "labels.txt").write_text("__ignore__\n_background_\na\nb\n")
    return folder

