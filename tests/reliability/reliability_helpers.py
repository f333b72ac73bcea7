"""Helpers of the reliability tests: small real inputs (labelme folders, image files,
PNGs that are huge once decoded but small on disk) and running a CLI in a real process."""

from __future__ import annotations

import base64
import io
import json
import os
import pathlib
import struct
import subprocess
import sys
import zlib

import numpy as np
from PIL import Image

from kerasseg_testing import REPO_ROOT

TRIANGLE = [[2, 2], [20, 3], [10, 18]]


def write_png(path: pathlib.Path, array: np.ndarray) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")
    return path


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def labelme_json(folder: pathlib.Path, name: str, *, image_path: str | None = None, image=None,
                 shapes=None, image_data: bytes | None = None, size=(32, 48)) -> pathlib.Path:
    """Write ``name.json`` (and ``name.png`` unless ``image_path``/``image_data`` is given)."""
    folder.mkdir(parents=True, exist_ok=True)
    height, width = size
    if image_path is None and image_data is None:
        if image is None:
            image = np.random.default_rng(len(name)).integers(0, 255, (height, width), dtype=np.uint8)
        height, width = image.shape[:2]
        image_path = f"{name}.png"
        write_png(folder / image_path, image)
    doc = {
        "version": "5.7.0",
        "flags": {},
        "shapes": shapes if shapes is not None else [
            {"label": "a", "points": TRIANGLE, "shape_type": "polygon", "group_id": None, "flags": {}}
        ],
        "imagePath": image_path or f"{name}.json",
        "imageData": None if image_data is None else base64.b64encode(image_data).decode(),
        "imageHeight": height,
        "imageWidth": width,
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path


def labelme_folder(folder: pathlib.Path, n: int = 4) -> pathlib.Path:
    """``n`` annotated 32x48 grayscale images, class ``a``, and a labels.txt."""
    for i in range(n):
        labelme_json(folder, f"img_{i:02d}")
    (folder / "labels.txt").write_text("__ignore__\n_background_\na\n")
    return folder


def huge_png(path: pathlib.Path, height: int, width: int, *, colour: bool = True) -> pathlib.Path:
    """A valid one-colour PNG of ``height x width`` written row by row (small on disk,
    ``height * width * 3`` bytes once decoded), without ever holding the pixels in memory."""
    channels = 3 if colour else 1
    row = b"\x00" + b"\x00" * (width * channels)  # filter type 0 + black pixels
    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(row) for _ in range(height)]
    chunks.append(compressor.flush())
    idat = b"".join(chunks)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2 if colour else 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def header_only_png(height: int, width: int) -> bytes:
    """PNG bytes with a valid IHDR of ``height x width`` and garbage pixel data: decoding it fails,
    so an error about its size proves the size was read from the header, not decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + crc + b"\x00\x00\x00\x04IDATjunk0000"


def latin1_name(stem: str) -> str:
    """A file name with a byte that is not UTF-8 (``caf\\xe9``), as Python sees it on POSIX."""
    return os.fsdecode(stem.encode() + b"\xe9")


def can_create(path: pathlib.Path) -> bool:
    try:
        path.write_bytes(b"")
        path.unlink()
        return True
    except (OSError, UnicodeEncodeError):
        return False


def run_python(code: str, *, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -c code`` from the repository root in a fresh process."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout, errors="backslashreplace")


def run_cli(module_main: str, argv: list[str], *, timeout: float = 120, env: dict | None = None,
            report_peak_rss: bool = False) -> subprocess.CompletedProcess:
    """Run a console-script main (``"data_tools.cli:masks2tfrecord_main"``) in a fresh process.

    With ``report_peak_rss`` the child prints ``PEAK_RSS_MB=<n>`` (its own peak resident
    memory) on stderr before exiting: ``VmHWM`` of ``/proc/self/status`` on Linux, which
    starts afresh at ``exec`` (``ru_maxrss`` may carry the parent's peak over a vfork).
    """
    module, function = module_main.split(":")
    code = (
        "import sys, resource\n"
        f"from {module} import {function} as main\n"
        f"argv = {[os.fsencode(a) for a in argv]!r}\n"
        "import os\n"
        "try:\n"
        "    rc = main([os.fsdecode(a) for a in argv])\n"
        "finally:\n"
        + ("    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
           "    if os.path.exists('/proc/self/status'):\n"
           "        peak = int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])\n"
           "    print(f'PEAK_RSS_MB={peak / 1024:.0f}', file=sys.stderr)\n" if report_peak_rss else "    pass\n")
        + "sys.exit(rc)\n"
    )
    return run_python(code, timeout=timeout, env=env)


def peak_rss_mb(result: subprocess.CompletedProcess) -> float:
    for line in result.stderr.splitlines():
        if line.startswith("PEAK_RSS_MB="):
            return float(line.split("=", 1)[1])
    raise AssertionError(f"no PEAK_RSS_MB line in stderr: {result.stderr[-2000:]}")


def backdate(path: pathlib.Path, seconds: float) -> None:
    """Set the modification time of ``path`` and everything inside it ``seconds`` into the past."""
    import time

    when = time.time() - seconds
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(os.path.join(folder, name), (when, when), follow_symlinks=False)
    os.utime(path, (when, when), follow_symlinks=False)
