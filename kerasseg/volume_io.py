"""Read and write CT/MRI volumes: NIfTI, NRRD, MetaImage files and DICOM series folders.

Used by the converter (``volumes2tfrecord``) and by ``kerasseg predict`` /
``evaluate`` on volumes. It imports SimpleITK and numpy only (inside the
functions), never TensorFlow, so worker processes stay light.

Conventions (as everywhere in kerasseg):

* voxel arrays are ``(D, H, W)`` = ``(z, y, x)`` (what SimpleITK's
  ``GetArrayFromImage`` gives), or ``(D, H, W, C)`` for multi-component files;
* ``spacing`` is in mm in that same array axis order ``(z, y, x)`` (SimpleITK's
  ``GetSpacing()`` is ``(x, y, z)``: reversed here);
* ``origin`` (physical point of voxel ``(0, 0, 0)``, LPS mm) and ``direction``
  (9 floats, row-major) are ITK's, in ``(x, y, z)`` order.

Every problem a user can cause raises :class:`VolumeError` naming the file (or
series folder) and what is wrong: an unreadable or truncated file, a 2D or 4D
file, NaN/Inf voxels, a storage type kerasseg cannot keep, a DICOM folder with
several series, a missing slice or uneven slice spacing, too many voxels.
Headers are read first (:func:`read_volume_info`), so a file that is too large
or of the wrong dimension is refused before its voxels are decoded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import struct
from typing import Any, Iterator, Sequence, cast

from kerasseg.atomic_files import replacing
from kerasseg.errors import VolumeError

__all__ = [
    "VOLUME_EXTENSIONS",
    "WRITE_EXTENSIONS",
    "Volume",
    "VolumeError",
    "VolumeInfo",
    "find_volumes",
    "geometry_difference",
    "is_volume_path",
    "read_volume",
    "read_volume_info",
    "strip_volume_extension",
    "write_volume",
]

VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
"""File name endings read as volumes (compared case-insensitively); DICOM series are folders."""
WRITE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")
"""File name endings :func:`write_volume` writes (single-file formats only)."""

GEOMETRY_TOLERANCE = 1e-3
"""Spacing/origin (mm) and direction differences up to this (absolute, or relative to the value) are equal."""

_KEPT_DTYPES = ("uint8", "int8", "uint16", "int16", "int32", "float32", "float64")  # kerasseg.schema.VOLUME_DTYPES
_WIDENED = ("uint32", "uint64", "int64")  # stored as int32 when every value fits (lossless)
_DICOM_TAGS = {"position": "0020|0032", "orientation": "0020|0037"}
_Triple = tuple[float, float, float]  # a spacing (z, y, x) or an origin (x, y, z)


@dataclasses.dataclass(frozen=True)
class VolumeInfo:
    """What a volume's header says, read without decoding the voxels.

    Attributes:
        path: the file, or the DICOM series folder.
        shape: ``(D, H, W)``.
        channels: components per voxel (1 for scalar volumes).
        dtype: numpy name of the storage type as stored (may be outside
            ``VOLUME_DTYPES``, e.g. ``"uint32"``; :func:`read_volume` decides).
        spacing: mm, ``(z, y, x)``.
        origin: ITK ``(x, y, z)`` mm.
        direction: ITK direction matrix, 9 floats row-major.
        files: the slice files of a DICOM series, in position order (empty for a file).
    """

    path: str
    shape: tuple[int, int, int]
    channels: int
    dtype: str
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    files: tuple[str, ...] = ()

    @property
    def num_voxels(self) -> int:
        return int(self.shape[0]) * int(self.shape[1]) * int(self.shape[2])


@dataclasses.dataclass(frozen=True)
class Volume:
    """A decoded volume and its geometry.

    Attributes:
        voxels: ``(D, H, W)`` or ``(D, H, W, C)`` array in its storage type (one
            of ``kerasseg.schema.VOLUME_DTYPES``).
        spacing: voxel size in mm, ``(z, y, x)``.
        origin: ITK physical point of voxel ``(0, 0, 0)``, ``(x, y, z)`` LPS mm.
        direction: ITK direction matrix, 9 floats row-major.
        path: the file or DICOM series folder it was read from.
        notes: lossless changes made while reading (e.g. ``uint32`` stored as ``int32``).
    """

    voxels: Any
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    path: str
    notes: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(D, H, W)`` (channels excluded)."""
        return cast(tuple[int, int, int], tuple(int(n) for n in self.voxels.shape[:3]))

    @property
    def channels(self) -> int:
        return 1 if self.voxels.ndim == 3 else int(self.voxels.shape[3])

    def index_to_physical(self, *, array_order: bool = True) -> Any:
        """The 4x4 matrix taking a voxel index to its physical point (LPS mm).

        Args:
            array_order: the index is ``(d, h, w)`` = array order (default), so
                ``M @ [d, h, w, 1] = [x, y, z, 1]``; with ``False`` it is ITK's
                ``(i, j, k)`` = ``(w, h, d)`` (the NIfTI/ITK convention).

        Returns:
            float64 ``(4, 4)`` numpy array.
        """
        return affine_matrix(self.spacing, self.origin, self.direction, array_order=array_order)


def affine_matrix(spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float], *,
                  array_order: bool = True) -> Any:
    """4x4 voxel-index -> physical matrix from kerasseg geometry (see :meth:`Volume.index_to_physical`)."""
    import numpy as np

    rotation = np.asarray(direction, np.float64).reshape(3, 3)
    scaled = rotation @ np.diag(np.asarray(spacing, np.float64)[::-1])  # columns: x, y, z index axes
    matrix = np.eye(4)
    matrix[:3, :3] = scaled[:, ::-1] if array_order else scaled
    matrix[:3, 3] = np.asarray(origin, np.float64)
    return matrix


# -- names and finding ---------------------------------------------------------------------------


def _extension(path: str | os.PathLike) -> str | None:
    name = os.path.basename(os.fspath(path)).lower()
    return next((ext for ext in VOLUME_EXTENSIONS if name.endswith(ext) and len(name) > len(ext)), None)


_IMAGE_IO = {".nii.gz": "NiftiImageIO", ".nii": "NiftiImageIO", ".nrrd": "NrrdImageIO", ".nhdr": "NrrdImageIO",
             ".mha": "MetaImageIO", ".mhd": "MetaImageIO"}
"""The ITK reader/writer of each extension, named so ITK need not guess it from the (case-sensitive) name."""


def _image_io(path: str) -> str:
    """The ITK ImageIO for ``path``; a NIfTI name in mixed case (``.Nii.Gz``) is refused (the NIfTI
    library reads only ``.nii``/``.nii.gz`` in one case)."""
    ext = _extension(path)
    if ext is None:
        raise VolumeError(path, f"not a volume file: expected {', '.join(VOLUME_EXTENSIONS)} or a DICOM series folder")
    suffix = os.fspath(path)[-len(ext):]
    if ext.startswith(".nii") and suffix not in (ext, ext.upper()):
        raise VolumeError(path, f"the NIfTI library reads {ext} or {ext.upper()}, not {suffix}: rename the file")
    return _IMAGE_IO[ext]


def is_volume_path(path: str | os.PathLike) -> bool:
    """True when the file name ends with one of :data:`VOLUME_EXTENSIONS` (the file is not opened)."""
    return _extension(path) is not None


def strip_volume_extension(name: str) -> str:
    """``hippocampus_001.nii.gz`` -> ``hippocampus_001`` (names without a volume extension unchanged)."""
    ext = _extension(name)
    return name[: -len(ext)] if ext else name


def _looks_dicom(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _dicom_candidates(folder: str, names: Sequence[str]) -> bool:
    """Whether ``folder`` holds a ``.dcm`` file, or an extension-less file with the DICOM preamble."""
    for name in names:
        if name.startswith("."):
            continue
        lower = name.lower()
        if lower.endswith(".dcm"):
            return True
        if "." not in name and _looks_dicom(os.path.join(folder, name)):
            return True
    return False


@contextlib.contextmanager
def _quiet_itk() -> Iterator[None]:
    """Silence ITK's warnings on stderr (we check what they would warn about ourselves)."""
    import SimpleITK as sitk

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _series_ids(folder: str) -> tuple[str, ...]:
    import SimpleITK as sitk

    with _quiet_itk():
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder))


def find_volumes(folder: str | os.PathLike, *, exclude: Sequence[str | os.PathLike] = ()) -> list[tuple[str, str]]:
    """Every volume under ``folder`` (searched recursively), as ``(case id, path)`` sorted by case id.

    Volumes are files ending in one of :data:`VOLUME_EXTENSIONS` and DICOM
    series folders (folders holding ``.dcm`` files, or extension-less files
    with the DICOM preamble, in which GDCM finds a series). Hidden files and
    folders (``.name``) and the ``exclude`` folders are skipped.

    The case id is the path relative to ``folder`` without the volume
    extension, with ``/`` separators: ``a/b/case1.nii.gz`` -> ``a/b/case1``; a
    series folder's id is its relative path (``folder`` itself: its name).
    """
    root = os.path.abspath(os.fspath(folder))
    excluded = {os.path.abspath(os.fspath(p)) for p in exclude}
    found: list[tuple[str, str]] = []
    for current, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.join(current, d) not in excluded)
        rel = os.path.relpath(current, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for name in sorted(names):
            if not name.startswith(".") and is_volume_path(name):
                found.append((prefix + strip_volume_extension(name), os.path.join(current, name)))
        if _dicom_candidates(current, names) and _series_ids(current):
            case = prefix[:-1] if prefix else os.path.basename(root)
            found.append((case, current))
    return sorted(found)


# -- reading -------------------------------------------------------------------------------------


def _dtype_of(reader: Any) -> str:
    import SimpleITK as sitk

    pixel = reader.GetPixelID()
    for kind in ("UInt8", "Int8", "UInt16", "Int16", "UInt32", "Int32", "UInt64", "Int64", "Float32", "Float64"):
        if pixel in (getattr(sitk, f"sitk{kind}"), getattr(sitk, f"sitkVector{kind}")):
            return kind.lower()
    return sitk.GetPixelIDValueAsString(pixel)


def _itk_problem(error: BaseException, path: str) -> str:
    """SimpleITK's exception text turned into a plain sentence (file and line of C++ source dropped)."""
    text = str(error)
    if "Unable to determine ImageIO reader" in text:
        return ("not a readable volume: SimpleITK finds no reader for it (a damaged or truncated file, or "
                "another format under this extension)")
    if "does not exist" in text and not os.path.exists(path):
        return "no such file"
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("Exception thrown in SimpleITK") or line.endswith(".cxx:") \
                or ".cxx:" in line.split(" ")[0] or ".hxx:" in line.split(" ")[0]:
            continue
        for marker in ("ITK ERROR: ", "sitk::ERROR: "):
            if marker in line:
                line = line.split(marker, 1)[1]
                if "): " in line and line.split("): ", 1)[0].count("(0x") == 1:
                    line = line.split("): ", 1)[1]  # "MetaImageIO(0x55...): " prefix
        if line.startswith("Reason:") and os.path.exists(path):
            continue  # a stale errno ("No such file or directory") for a file that exists
        lines.append(line)
    detail = lines[-1] if lines else text.strip().splitlines()[-1] if text.strip() else type(error).__name__
    if detail.startswith("[nrrd]"):
        detail = detail.removeprefix("[nrrd]").strip()
    if detail.startswith("File cannot be read:"):
        detail = "the MetaImage reader cannot read its data"
    return f"cannot read the volume: {detail} (the file may be truncated or damaged)"


def _check_dimension(path: str, dimension: int, size: Sequence[int]) -> None:
    listed = " x ".join(str(int(n)) for n in size)
    if dimension == 3:
        return
    if dimension == 2:
        raise VolumeError(path, f"is a 2D image ({listed} pixels, x-y), not a 3D volume")
    if dimension == 4:
        raise VolumeError(path, f"is a 4D volume (size {listed}, x-y-z-t) but a 3D volume is expected: save each "
                          "time point or channel as its own 3D file")
    raise VolumeError(path, f"has {dimension} dimensions (size {listed}); a 3D volume is expected")


def _check_voxel_limit(path: str, shape: Sequence[int], channels: int, max_voxels: int | None) -> None:
    count = int(shape[0]) * int(shape[1]) * int(shape[2])
    if max_voxels is not None and count > int(max_voxels):
        raise VolumeError(path, f"has {count} voxels ({' x '.join(str(int(n)) for n in shape)}), more than the "
                          f"limit of {int(max_voxels)} (max_voxels / --max-voxels): refused before decoding")
    if min(int(n) for n in shape) < 1:
        raise VolumeError(path, f"is empty (shape {tuple(int(n) for n in shape)})")


def _check_geometry(path: str, spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float]) -> None:
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise VolumeError(path, f"voxel spacing {tuple(spacing)} mm must be positive and finite")
    if not all(math.isfinite(v) for v in (*origin, *direction)):
        raise VolumeError(path, "origin or direction holds NaN or infinite numbers")


def read_volume_info(path: str | os.PathLike, *, max_voxels: int | None = None) -> VolumeInfo:
    """Read a volume's header only (a DICOM series: every slice header) and check it.

    Args:
        path: a volume file (:data:`VOLUME_EXTENSIONS`) or a DICOM series folder.
        max_voxels: refuse volumes of more voxels (``D * H * W``); ``None`` = no limit.

    Raises:
        VolumeError: naming the file: missing or unreadable, not 3D (says the
            shape), too many voxels, bad geometry; for DICOM see :func:`read_volume`.
    """
    import SimpleITK as sitk

    path = os.fspath(path)
    if os.path.isdir(path):
        return _dicom_info(path, max_voxels)
    if not os.path.exists(path):
        raise VolumeError(path, "no such file")
    if not is_volume_path(path):
        raise VolumeError(path, f"not a volume file: expected {', '.join(VOLUME_EXTENSIONS)} or a DICOM series "
                          "folder")
    reader = sitk.ImageFileReader()
    reader.SetImageIO(_image_io(path))
    reader.SetFileName(path)
    try:
        with _quiet_itk():
            reader.ReadImageInformation()
    except RuntimeError as e:
        raise VolumeError(path, _itk_problem(e, path)) from None
    size = reader.GetSize()
    _check_dimension(path, reader.GetDimension(), size)
    shape = (int(size[2]), int(size[1]), int(size[0]))
    channels = int(reader.GetNumberOfComponents())
    _check_voxel_limit(path, shape, channels, max_voxels)
    # _check_dimension above: a 3-D image, so 3 spacings and 3 origin coordinates
    spacing = cast(_Triple, tuple(float(s) for s in reversed(reader.GetSpacing())))
    origin = cast(_Triple, tuple(float(v) for v in reader.GetOrigin()))
    direction = tuple(float(v) for v in reader.GetDirection())
    _check_geometry(path, spacing, origin, direction)
    return VolumeInfo(path, shape, channels, _dtype_of(reader), spacing, origin, direction)


def read_volume(path: str | os.PathLike, *, max_voxels: int | None = None) -> Volume:
    """Read a 3D volume file or DICOM series folder, keeping its storage type.

    Args:
        path: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``),
            MetaImage (``.mha``, ``.mhd``), or a folder holding one DICOM series
            (slices ordered by their position along the slice normal, not by
            file name).
        max_voxels: refuse volumes of more voxels, from the header (``None`` = no limit).

    Returns:
        :class:`Volume` with ``voxels`` ``(D, H, W)`` (``(D, H, W, C)`` for
        multi-component files) in the storage type (int16 stays int16, float32
        stays float32). ``uint32``/``uint64``/``int64`` volumes whose values fit
        are stored as ``int32`` (lossless, said in ``notes``).

    Raises:
        VolumeError: naming the file: unreadable or truncated, 2D or 4D (with
            its shape), NaN/Inf voxels, a storage type that cannot be kept,
            more voxels than ``max_voxels``; a DICOM folder holding several
            series (named), a missing slice, uneven slice spacing.
    """
    import numpy as np
    import SimpleITK as sitk

    info = read_volume_info(path, max_voxels=max_voxels)
    path = info.path
    if info.files:
        reader: Any = sitk.ImageSeriesReader()
        reader.SetFileNames(list(info.files))
    else:
        _check_complete(path)
        reader = sitk.ImageFileReader()
        reader.SetImageIO(_image_io(path))
        reader.SetFileName(path)
    try:
        with _quiet_itk():
            image = reader.Execute()
    except RuntimeError as e:
        raise VolumeError(path, _itk_problem(e, path)) from None
    _check_dimension(path, image.GetDimension(), image.GetSize())
    voxels = sitk.GetArrayFromImage(image)
    if voxels.ndim == 4 and voxels.shape[3] == 1:
        voxels = voxels[..., 0]
    if tuple(voxels.shape[:3]) != info.shape:
        raise VolumeError(path, f"decodes to shape {voxels.shape[:3]} but its header says {info.shape}")
    voxels, notes = _storage_type(path, voxels)
    if voxels.dtype.kind == "f":
        finite = np.isfinite(voxels)
        if not finite.all():
            bad = np.argwhere(~finite)[0]
            nan = int(np.isnan(voxels).sum())
            inf = int((~finite).sum()) - nan
            raise VolumeError(path, f"holds {nan} NaN and {inf} infinite voxel(s) (first at index "
                              f"{tuple(int(i) for i in bad)}, (z, y, x)); fix or mask them in the source")
    spacing = cast(_Triple, tuple(float(s) for s in reversed(image.GetSpacing())))  # 3-D: _check_dimension
    origin = cast(_Triple, tuple(float(v) for v in image.GetOrigin()))
    direction = tuple(float(v) for v in image.GetDirection())
    _check_geometry(path, spacing, origin, direction)
    return Volume(voxels, spacing, origin, direction, path, tuple(notes))


def _storage_type(path: str, voxels: Any) -> tuple[Any, list[str]]:
    import numpy as np

    name = voxels.dtype.name
    if name in _KEPT_DTYPES:
        return voxels, []
    if name in _WIDENED:
        low, high = (int(voxels.min()), int(voxels.max())) if voxels.size else (0, 0)
        if -(2**31) <= low and high < 2**31:
            return voxels.astype(np.int32), [f"stored as int32 (the file's {name} values {low}..{high} fit exactly)"]
        raise VolumeError(path, f"storage type {name} with values {low}..{high} does not fit any type kerasseg keeps "
                          f"({', '.join(_KEPT_DTYPES)}); convert the file, e.g. to float32")
    raise VolumeError(path, f"voxel storage type {name} is not supported (kept types: {', '.join(_KEPT_DTYPES)})")


def _check_complete(path: str) -> None:
    """Refuse a truncated NIfTI file, or one with NaN/Inf voxels: ITK's NIfTI reader pads missing
    bytes with zeros and turns NaN voxels into 0, both silently.

    Streams the (decompressed) file once: it must hold ``vox_offset + voxels *
    bytes`` bytes, a ``.nii.gz`` stream must end properly (its CRC), and float
    voxels must all be finite.
    """
    import gzip
    import zlib

    ext = _extension(path)
    if ext not in (".nii", ".nii.gz"):
        return  # the NRRD and MetaImage readers report short data themselves and keep NaN
    scan = _FloatScan()
    total = 0
    try:
        opener = open if ext == ".nii" else gzip.open
        with opener(path, "rb") as f:
            while chunk := f.read(1 << 22):
                scan.feed(total, chunk)
                total += len(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
        raise VolumeError(path, f"the file is truncated or damaged: its gzip data does not decompress ({e})") from None
    needed = _nifti_bytes(scan.header)
    if needed is not None and total < needed:
        raise VolumeError(path, f"the file is truncated: it holds {total} bytes of header and voxel data, its "
                          f"header needs {needed}")
    if scan.bad:
        raise VolumeError(path, f"holds {scan.bad} NaN or infinite voxel(s) (first at voxel {scan.first} in file "
                          "order); fix or mask them in the source")


class _FloatScan:
    """Counts non-finite float32/float64 voxels of a NIfTI file fed as consecutive byte chunks."""

    def __init__(self) -> None:
        self.header = b""
        self.bad = 0
        self.first: int | None = None
        self._layout: tuple[int, Any] | None = None  # (vox_offset, numpy dtype) once the header is read
        self._carry = b""
        self._voxel = 0

    def feed(self, position: int, chunk: bytes) -> None:
        import numpy as np

        if len(self.header) < 540:
            self.header += chunk[: 540 - len(self.header)]
            if len(self.header) >= 348 and self._layout is None:
                self._layout = _nifti_float_layout(self.header)
        if not self._layout or self._layout[1] is None:
            return
        offset, dtype = self._layout
        start = max(0, offset - position)
        if start >= len(chunk):
            return
        data = self._carry + chunk[start:]
        usable = len(data) - len(data) % dtype.itemsize
        self._carry = data[usable:]
        values = np.frombuffer(data[:usable], dtype)
        finite = np.isfinite(values)
        if not finite.all():
            if self.first is None:
                self.first = self._voxel + int(np.argmin(finite))
            self.bad += int(values.size - finite.sum())
        self._voxel += values.size


def _nifti_float_layout(header: bytes) -> tuple[int, Any] | None:
    """``(vox_offset, float dtype)`` of a float32/float64 NIfTI-1/2 header, ``(offset, None)`` for other types."""
    import numpy as np

    for order in ("<", ">"):
        if struct.unpack(order + "i", header[:4])[0] == 348:
            datatype = struct.unpack(order + "h", header[70:72])[0]
            offset = max(int(struct.unpack(order + "f", header[108:112])[0]), 348)
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            datatype = struct.unpack(order + "h", header[12:14])[0]
            offset = max(int(struct.unpack(order + "q", header[168:176])[0]), 540)
            break
    else:
        return None
    kinds = {16: "f4", 64: "f8"}
    return offset, (np.dtype(order + kinds[datatype]) if datatype in kinds else None)


def _nifti_bytes(header: bytes) -> int | None:
    """``vox_offset + voxel bytes`` from a NIfTI-1 or NIfTI-2 header; ``None`` if not one."""
    for order in ("<", ">"):
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            offset = max(offset, 348)
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            dims = struct.unpack(order + "8q", header[16:80])
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            offset = max(int(struct.unpack(order + "q", header[168:176])[0]), 540)
            break
    else:
        return None
    if not 1 <= dims[0] <= 7 or bitpix <= 0:
        return None
    count = 1
    for n in dims[1 : dims[0] + 1]:
        count *= max(int(n), 1)
    return offset + count * bitpix // 8


# -- DICOM series --------------------------------------------------------------------------------


def _dicom_info(folder: str, max_voxels: int | None) -> VolumeInfo:
    import numpy as np
    import SimpleITK as sitk

    ids = _series_ids(folder)
    if not ids:
        raise VolumeError(folder, "folder holds no DICOM series (and a folder is read as one DICOM series)")
    if len(ids) > 1:
        with _quiet_itk():
            listed = ", ".join(
                f"{uid} ({len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid))} files)" for uid in ids[:6])
        raise VolumeError(folder, f"holds {len(ids)} DICOM series: {listed}{', ...' if len(ids) > 6 else ''}; a "
                          "folder must hold one series: move each series into its own folder")
    with _quiet_itk():
        files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, ids[0]))
    headers = []
    for file in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(file)
        try:
            with _quiet_itk():
                reader.ReadImageInformation()
        except RuntimeError as e:
            raise VolumeError(file, _itk_problem(e, file)) from None
        headers.append((file, reader))
    if len(headers) == 1:  # one file: a multi-frame volume, or a single 2D slice
        file, reader = headers[0]
        size = reader.GetSize()
        if reader.GetDimension() == 3 and size[2] > 1:
            shape = (int(size[2]), int(size[1]), int(size[0]))
            _check_voxel_limit(folder, shape, 1, max_voxels)
            spacing = cast(_Triple, tuple(float(s) for s in reversed(reader.GetSpacing())))  # dimension 3
            origin, direction = tuple(reader.GetOrigin()), tuple(reader.GetDirection())
            _check_geometry(folder, spacing, origin, direction)
            return VolumeInfo(folder, shape, int(reader.GetNumberOfComponents()), _dtype_of(reader),
                              spacing, origin, direction, (file,))
        raise VolumeError(folder, f"the DICOM series has one slice ({' x '.join(str(n) for n in size[:2])} "
                          "pixels): a 2D image, not a 3D volume")
    first_file, first = headers[0]
    orientation = _dicom_numbers(first_file, first, "orientation", 6)
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row, col)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise VolumeError(first_file, f"ImageOrientationPatient (0020,0037) {orientation} is not two orthogonal "
                          "unit vectors")
    size = first.GetSize()[:2]
    dtype = _dtype_of(first)
    positions = []
    for file, reader in headers:
        if tuple(reader.GetSize()[:2]) != tuple(size):
            raise VolumeError(file, f"slice is {reader.GetSize()[0]} x {reader.GetSize()[1]} pixels but "
                              f"{os.path.basename(first_file)} is {size[0]} x {size[1]}: not one series")
        if not np.allclose(_dicom_numbers(file, reader, "orientation", 6), orientation, atol=1e-4):
            raise VolumeError(file, f"slice orientation differs from {os.path.basename(first_file)}: not one "
                              "stack of parallel slices")
        position = np.asarray(_dicom_numbers(file, reader, "position", 3))
        positions.append((float(position @ normal), file, position))
    positions.sort(key=lambda item: item[0])
    _check_slice_gaps(folder, positions)
    gaps = np.diff([p for p, _, _ in positions])
    shape = (len(positions), int(size[1]), int(size[0]))
    _check_voxel_limit(folder, shape, 1, max_voxels)
    in_plane = first.GetSpacing()
    spacing = (float(np.median(gaps)), float(in_plane[1]), float(in_plane[0]))
    origin = tuple(float(v) for v in positions[0][2])
    direction = tuple(float(v) for v in np.stack([row, col, normal], axis=1).ravel())
    _check_geometry(folder, spacing, origin, direction)
    return VolumeInfo(folder, shape, int(first.GetNumberOfComponents()), dtype, spacing, origin,
                      direction, tuple(file for _, file, _ in positions))


def _dicom_numbers(file: str, reader: Any, tag: str, count: int) -> list[float]:
    key = _DICOM_TAGS[tag]
    names = {"position": "ImagePositionPatient (0020,0032)", "orientation": "ImageOrientationPatient (0020,0037)"}
    if not reader.HasMetaDataKey(key):
        raise VolumeError(file, f"DICOM slice has no {names[tag]}, so its place in the volume is unknown")
    text = reader.GetMetaData(key)
    try:
        values = [float(v) for v in text.replace(" ", "").strip("\\").split("\\")]
    except ValueError:
        values = []
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise VolumeError(file, f"DICOM {names[tag]} {text!r} is not {count} numbers")
    return values


def _check_slice_gaps(folder: str, positions: list[tuple[float, str, Any]]) -> None:
    """Refuse duplicate positions, missing slices and uneven spacing (ITK only warns about them)."""
    import numpy as np

    where = np.asarray([p for p, _, _ in positions])
    gaps = np.diff(where)
    name = [os.path.basename(file) for _, file, _ in positions]
    for i, gap in enumerate(gaps):
        if gap < 1e-3:
            raise VolumeError(folder, f"slices {name[i]} and {name[i + 1]} lie at the same position "
                              f"({where[i]:.4g} mm along the slice normal): duplicate slices or two series mixed")
    step = float(np.median(gaps))
    tolerance = max(1e-2, 1e-2 * step)
    for i, gap in enumerate(gaps):
        if abs(gap - step) <= tolerance:
            continue
        missing = round(gap / step) - 1
        if missing >= 1 and abs(gap - (missing + 1) * step) <= tolerance * (missing + 1):
            raise VolumeError(folder, f"{missing} slice(s) missing between {name[i]} and {name[i + 1]}: they are "
                              f"{gap:.4g} mm apart, the other slices {step:.4g} mm")
        raise VolumeError(folder, f"uneven slice spacing: {name[i]} and {name[i + 1]} are {gap:.4g} mm apart, "
                          f"most slices {step:.4g} mm (gaps {gaps.min():.4g}..{gaps.max():.4g} mm); resample the "
                          "series to even spacing first")


# -- geometry ------------------------------------------------------------------------------------


def geometry_difference(a: Any, b: Any, *, tolerance: float = GEOMETRY_TOLERANCE) -> str | None:
    """How the grids of two volumes (:class:`Volume` or :class:`VolumeInfo`) differ; ``None`` when equal.

    Shapes must be equal; spacing and origin (mm) and direction agree within
    ``tolerance``, absolute or relative to the value.
    """
    import numpy as np

    if tuple(a.shape) != tuple(b.shape):
        return f"shape (D, H, W) {tuple(a.shape)} differs from {tuple(b.shape)}"
    for what, x, y in (("spacing (z, y, x) mm", a.spacing, b.spacing), ("origin (x, y, z) mm", a.origin, b.origin),
                       ("direction", a.direction, b.direction)):
        if not np.allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=tolerance, atol=tolerance):
            shown = tuple(round(float(v), 4) for v in x), tuple(round(float(v), 4) for v in y)
            return f"{what} {shown[0]} differs from {shown[1]}"
    return None


# -- writing -------------------------------------------------------------------------------------


def write_volume(path: str | os.PathLike, labels: Any, *, like: Volume | VolumeInfo, compress: bool = True) -> str:
    """Write a ``(D, H, W)`` array with ``like``'s spacing, origin and direction, atomically.

    Args:
        path: target file; the format follows the extension (:data:`WRITE_EXTENSIONS`:
            ``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``). Its folder must exist.
        labels: ``(D, H, W)`` array equal to ``like.shape``: uint8 class ids, or
            float probabilities (any of ``kerasseg.schema.VOLUME_DTYPES``;
            bool is written as uint8).
        like: the volume whose grid the array is on.
        compress: compress where the format can (``.nrrd``, ``.mha``; ``.nii.gz`` always is).

    Returns:
        ``path``. The data goes to a hidden temporary file with the same
        extension in the same folder, renamed over ``path`` once complete, so
        ``path`` is never half-written.

    Raises:
        VolumeError: unknown extension, wrong shape or type, or the write failed.
    """
    import numpy as np
    import SimpleITK as sitk

    path = os.fspath(path)
    ext = _extension(path)
    if ext not in WRITE_EXTENSIONS:
        raise VolumeError(path, f"cannot write this format: use one of {', '.join(WRITE_EXTENSIONS)}")
    array = np.asarray(labels)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype.name not in _KEPT_DTYPES:
        raise VolumeError(path, f"array type {array.dtype} cannot be written (use one of {', '.join(_KEPT_DTYPES)})")
    if array.shape != tuple(like.shape):
        raise VolumeError(path, f"array shape {array.shape} differs from the volume's grid {tuple(like.shape)} (D, H, W)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise VolumeError(path, f"folder {folder} does not exist")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(tuple(float(s) for s in reversed(like.spacing)))
    image.SetOrigin(tuple(float(v) for v in like.origin))
    image.SetDirection(tuple(float(v) for v in like.direction))
    writer = sitk.ImageFileWriter()
    writer.SetImageIO(_image_io(path))
    writer.SetUseCompression(compress)
    tmp = path
    try:
        with replacing(path, make_folder=False, extension=ext) as tmp:  # ext is lower case
            writer.SetFileName(tmp)
            writer.Execute(image)
    except (RuntimeError, OSError) as e:
        problem = _itk_problem(e, tmp).replace("cannot read the volume", "cannot write it") \
            if isinstance(e, RuntimeError) else f"cannot write it ({e.strerror or e})"
        raise VolumeError(path, problem.replace(" (the file may be truncated or damaged)", "")) from None
    return path
