"""kerasseg.volume_io on real files written by SimpleITK: NIfTI, NRRD, MetaImage and DICOM series.

Round trips keep the voxel type, values and geometry; ``write_volume`` keeps
the grid of ``like`` and never leaves a partial file; DICOM slices come back in
position order whatever their file names; every bad input is a VolumeError
naming the file or series folder; ``find_volumes`` lists what a converter pairs.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from kerasseg_testing import SHARED_DATA

sitk = pytest.importorskip("SimpleITK")

from kerasseg import volume_io as V  # noqa: E402

SPACING = (2.5, 0.8, 0.6)  # (z, y, x) mm
ORIGIN = (-12.5, 30.25, 7.0)  # ITK (x, y, z)
_c, _s = np.cos(np.pi / 6), np.sin(np.pi / 6)
DIRECTION = (_c, -_s, 0.0, _s, _c, 0.0, 0.0, 0.0, 1.0)  # a 30 degree turn about z, row-major
SHAPE = (4, 5, 6)  # (D, H, W)
FORMATS = [".nii.gz", ".nii", ".nrrd", ".mha"]
DTYPES = ["uint8", "int16", "float32"]


def voxels(dtype: str, shape=SHAPE, seed: int = 0) -> np.ndarray:
    """Values that use the type: the extremes of integer types, fractions and negatives for floats."""
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        out = rng.normal(0.0, 300.0, shape).astype(np.float32)
        out.flat[0] = -1024.5
        return out
    info = np.iinfo(dtype)
    out = rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)
    out.flat[0], out.flat[-1] = info.min, info.max
    return out


def write_itk(path, array: np.ndarray, spacing=SPACING, origin=ORIGIN, direction=DIRECTION, compress=True) -> str:
    """Write ``array`` ``(D, H, W)`` with SimpleITK itself (spacing given as (z, y, x))."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path), useCompression=compress)
    return str(path)


def assert_geometry(volume, spacing=SPACING, origin=ORIGIN, direction=DIRECTION) -> None:
    # NIfTI stores spacing/origin as float32 and the direction as a quaternion: 1e-5 covers that
    np.testing.assert_allclose(volume.spacing, spacing, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(volume.origin, origin, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(volume.direction, direction, rtol=1e-5, atol=1e-5)


def hidden_files(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


# ---------------------------------------------------------------------------- DICOM writer

SERIES_UID = "1.2.826.0.1.3680043.2.1125.7.1"


@pytest.fixture(autouse=True)
def _keep_locale():
    """SimpleITK's DICOM writer (used here to make series) sets the C locale process-wide; undo it so
    later tests keep UTF-8 text I/O."""
    import locale

    saved = locale.setlocale(locale.LC_ALL)
    yield
    locale.setlocale(locale.LC_ALL, saved)


def write_dicom_series(folder, positions, names, *, orientation=(1, 0, 0, 0, 1, 0), shape=(3, 4),
                       pixel_spacing=(0.8, 0.7), uid: str = SERIES_UID) -> list[np.ndarray]:
    """One int16 DICOM file per slice, ``names[k]`` at ImagePositionPatient ``positions[k]``.

    Slice ``k`` holds ``arange + 100 * k - 200`` (negative values too), so the
    order the slices come back in is visible. ``pixel_spacing`` is (row, column) mm.
    """
    os.makedirs(folder, exist_ok=True)
    slices = []
    for k, (position, name) in enumerate(zip(positions, names)):
        array = (np.arange(shape[0] * shape[1]).reshape(shape) + 100 * k - 200).astype(np.int16)
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((pixel_spacing[1], pixel_spacing[0]))
        tags = {
            "0008|0060": "CT",
            "0008|0018": f"{uid}.{k + 1}",  # SOP instance UID
            "0010|0010": "Volume^Test",
            "0020|000d": f"{uid}.0",  # study
            "0020|000e": uid,  # series
            "0020|0013": str(k + 1),  # instance number
            "0020|0032": "\\".join(f"{float(v):g}" for v in position),
            "0020|0037": "\\".join(f"{float(v):g}" for v in orientation),
            "0028|0030": f"{pixel_spacing[0]:g}\\{pixel_spacing[1]:g}",
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetImageIO("GDCMImageIO")  # also for names without ".dcm"
        writer.SetFileName(os.path.join(str(folder), name))
        writer.Execute(image)
        slices.append(array)
    return slices


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ext", FORMATS)
def test_round_trip_keeps_type_values_and_geometry(tmp_path, ext, dtype):
    array = voxels(dtype)
    path = write_itk(tmp_path / f"case{ext}", array)
    volume = V.read_volume(path)
    assert volume.voxels.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(volume.voxels, array)
    assert volume.shape == SHAPE and volume.channels == 1 and volume.path == path and volume.notes == ()
    assert_geometry(volume)
    info = V.read_volume_info(path)
    assert (info.shape, info.dtype, info.channels, info.files) == (SHAPE, dtype, 1, ())
    assert V.geometry_difference(info, volume) is None


@pytest.mark.parametrize("ext", V.WRITE_EXTENSIONS)
def test_write_volume_keeps_the_grid_of_like(tmp_path, ext):
    source = V.read_volume(write_itk(tmp_path / "image.nrrd", voxels("int16")))
    labels = (source.voxels > 0).astype(np.uint8) + (source.voxels > 200)
    written = V.write_volume(tmp_path / f"labels{ext}", labels, like=source)
    assert written == str(tmp_path / f"labels{ext}")
    back = V.read_volume(written)
    assert back.voxels.dtype == np.uint8
    np.testing.assert_array_equal(back.voxels, labels)
    assert V.geometry_difference(back, source) is None
    assert_geometry(back)
    # float probabilities, and a VolumeInfo as the grid
    probs = np.linspace(0, 1, labels.size, dtype=np.float32).reshape(labels.shape)
    back = V.read_volume(V.write_volume(tmp_path / f"probs{ext}", probs, like=V.read_volume_info(source.path)))
    assert back.voxels.dtype == np.float32
    np.testing.assert_array_equal(back.voxels, probs)
    assert V.geometry_difference(back, source) is None
    assert hidden_files(tmp_path) == []


def test_write_volume_writes_bool_as_uint8_and_replaces_an_existing_file(tmp_path):
    like = V.read_volume(write_itk(tmp_path / "image.mha", voxels("float32")))
    target = tmp_path / "mask.nii.gz"
    V.write_volume(target, np.zeros(SHAPE, np.uint8), like=like)
    mask = like.voxels > 0
    V.write_volume(target, mask, like=like)
    back = V.read_volume(target)
    assert back.voxels.dtype == np.uint8
    np.testing.assert_array_equal(back.voxels, mask.astype(np.uint8))
    assert hidden_files(tmp_path) == []


def test_write_volume_failures_leave_no_partial_file_and_the_old_file_untouched(tmp_path):
    like = V.read_volume(write_itk(tmp_path / "image.nrrd", voxels("int16")))
    target = tmp_path / "labels.nii.gz"
    V.write_volume(target, np.ones(SHAPE, np.uint8), like=like)
    before = target.read_bytes()
    with pytest.raises(V.VolumeError, match="differs from the volume's grid") as caught:
        V.write_volume(target, np.zeros((4, 5, 7), np.uint8), like=like)
    assert caught.value.path == str(target)
    with pytest.raises(V.VolumeError, match="int64 cannot be written") as caught:
        V.write_volume(target, np.zeros(SHAPE, np.int64), like=like)
    assert caught.value.path == str(target)
    with pytest.raises(V.VolumeError, match="cannot write this format"):
        V.write_volume(tmp_path / "labels.png", np.zeros(SHAPE, np.uint8), like=like)
    with pytest.raises(V.VolumeError, match="does not exist"):
        V.write_volume(tmp_path / "missing" / "labels.nii.gz", np.zeros(SHAPE, np.uint8), like=like)
    assert target.read_bytes() == before
    # the write itself completes but cannot replace the target (a folder of that name): nothing left over
    blocked = tmp_path / "blocked.nii.gz"
    blocked.mkdir()
    with pytest.raises(V.VolumeError, match="cannot write it") as caught:
        V.write_volume(blocked, np.zeros(SHAPE, np.uint8), like=like)
    assert caught.value.path == str(blocked) and blocked.is_dir() and not list(blocked.iterdir())
    assert hidden_files(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["blocked.nii.gz", "image.nrrd", "labels.nii.gz"]


def test_write_volume_takes_any_file_name_the_folder_takes(tmp_path):
    like = V.read_volume(write_itk(tmp_path / "image.nrrd", voxels("uint8")))
    target = tmp_path / ("x" * 240 + ".nii.gz")  # 247 characters: within NAME_MAX (255)
    V.write_volume(target, like.voxels, like=like)
    np.testing.assert_array_equal(V.read_volume(target).voxels, like.voxels)


def test_upper_case_metaimage_extension_reads(tmp_path):
    path = write_itk(tmp_path / "lower.mha", voxels("uint8"))
    os.rename(path, tmp_path / "UPPER.MHA")
    assert V.find_volumes(tmp_path) == [("UPPER", str(tmp_path / "UPPER.MHA"))]
    np.testing.assert_array_equal(V.read_volume(tmp_path / "UPPER.MHA").voxels, voxels("uint8"))


def test_upper_case_nifti_and_nrrd_extensions_read(tmp_path):
    for name in ("CASE.NII.GZ", "CASE2.NII", "CASE3.NRRD"):
        path = V.write_volume(tmp_path / name, voxels("uint8"),
                              like=V.VolumeInfo("grid", SHAPE, 1, "uint8", SPACING, ORIGIN, DIRECTION))
        np.testing.assert_array_equal(V.read_volume(path).voxels, voxels("uint8"))


# ---------------------------------------------------------------------------- DICOM


def test_dicom_series_is_read_in_position_order_not_name_order(tmp_path):
    folder = tmp_path / "ct"
    z = [10.0, 12.5, 15.0, 17.5, 20.0]
    names = ["img_c.dcm", "img_a.dcm", "img_e.dcm", "img_b.dcm", "img_d.dcm"]  # name order is not z order
    shuffled = [2, 4, 0, 3, 1]  # file k holds the slice at z[shuffled[k]]
    slices = write_dicom_series(folder, [(-5.0, 7.5, z[i]) for i in shuffled], names)
    volume = V.read_volume(folder)
    assert volume.voxels.dtype == np.int16 and volume.shape == (5, 3, 4)
    for position in range(5):
        np.testing.assert_array_equal(volume.voxels[position], slices[shuffled.index(position)])
    np.testing.assert_allclose(volume.spacing, (2.5, 0.8, 0.7))
    np.testing.assert_allclose(volume.origin, (-5.0, 7.5, 10.0))
    np.testing.assert_allclose(volume.direction, np.eye(3).ravel(), atol=1e-9)
    info = V.read_volume_info(folder)
    assert [os.path.basename(f) for f in info.files] == [names[shuffled.index(p)] for p in range(5)]
    assert V.geometry_difference(info, volume) is None


def test_dicom_series_of_another_orientation(tmp_path):
    folder = tmp_path / "coronal"
    # rows along +x, columns along -z: the slice normal (row x column) is +y
    positions = [(5.0, 10.0 + 3.0 * k, 7.0) for k in range(4)]
    slices = write_dicom_series(folder, positions[::-1], [f"s{k}.dcm" for k in range(4)], orientation=(1, 0, 0, 0, 0, -1))
    volume = V.read_volume(folder)
    np.testing.assert_array_equal(volume.voxels[0], slices[3])  # y = 10 first: it was written last
    np.testing.assert_allclose(volume.spacing, (3.0, 0.8, 0.7))
    np.testing.assert_allclose(volume.origin, (5.0, 10.0, 7.0))
    np.testing.assert_allclose(volume.direction, (1, 0, 0, 0, 0, 1, 0, -1, 0), atol=1e-9)
    # index -> physical: the second slice lies 3 mm further along +y
    matrix = volume.index_to_physical()
    np.testing.assert_allclose(matrix @ [1, 0, 0, 1], [5.0, 13.0, 7.0, 1.0], atol=1e-9)
    np.testing.assert_allclose(matrix @ [0, 1, 0, 1], [5.0, 10.0, 7.0 - 0.8, 1.0], atol=1e-9)  # down a column: -z
    np.testing.assert_allclose(matrix @ [0, 0, 1, 1], [5.0 + 0.7, 10.0, 7.0, 1.0], atol=1e-9)  # along a row: +x
    assert V.geometry_difference(V.read_volume_info(folder), volume) is None  # the header-only geometry agrees


def test_dicom_series_with_a_missing_slice_is_refused_naming_the_gap(tmp_path):
    folder = tmp_path / "missing"
    z = [0, 2, 4, 8, 10, 12]  # the slice at 6 mm is absent
    write_dicom_series(folder, [(0, 0, v) for v in z], [f"m{k}.dcm" for k in range(6)])
    for read in (V.read_volume, V.read_volume_info):
        with pytest.raises(V.VolumeError, match=r"1 slice\(s\) missing between m2.dcm and m3.dcm") as caught:
            read(folder)
        assert caught.value.path == str(folder)


def test_dicom_series_with_uneven_spacing_is_refused(tmp_path):
    folder = tmp_path / "uneven"
    write_dicom_series(folder, [(0, 0, v) for v in (0, 2, 4, 7, 9, 11)], [f"u{k}.dcm" for k in range(6)])
    with pytest.raises(V.VolumeError, match="uneven slice spacing: u2.dcm and u3.dcm are 3 mm apart") as caught:
        V.read_volume(folder)
    assert caught.value.path == str(folder)


def test_dicom_folder_with_two_series_or_duplicate_slices_is_refused(tmp_path):
    two = tmp_path / "two"
    write_dicom_series(two, [(0, 0, v) for v in (0, 1, 2)], ["a1.dcm", "a2.dcm", "a3.dcm"], uid="1.2.3.4.5")
    write_dicom_series(two, [(0, 0, v) for v in (0, 1, 2)], ["b1.dcm", "b2.dcm", "b3.dcm"], uid="1.2.3.4.6")
    with pytest.raises(V.VolumeError, match=r"holds 2 DICOM series: 1.2.3.4.5 \(3 files\), 1.2.3.4.6 \(3 files\)"):
        V.read_volume(two)
    dup = tmp_path / "dup"
    write_dicom_series(dup, [(0, 0, v) for v in (0, 2, 2, 4)], ["d0.dcm", "d1.dcm", "d2.dcm", "d3.dcm"])
    with pytest.raises(V.VolumeError, match="lie at the same position"):
        V.read_volume(dup)


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_truncated_nifti_is_refused_naming_the_file(tmp_path, ext):
    path = write_itk(tmp_path / f"full{ext}", voxels("int16", shape=(6, 7, 8)))
    data = open(path, "rb").read()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[: len(data) * 2 // 3])  # the header is whole, part of the voxels is gone
    with pytest.raises(V.VolumeError, match="truncated") as caught:
        V.read_volume(cut)
    assert caught.value.path == str(cut) and str(cut) in str(caught.value)


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
def test_truncated_nrrd_and_metaimage_are_refused_naming_the_file(tmp_path, ext):
    path = write_itk(tmp_path / f"full{ext}", voxels("int16", shape=(6, 7, 8)))
    data = open(path, "rb").read()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[:-20])
    with pytest.raises(V.VolumeError, match="cannot read the volume") as caught:
        V.read_volume(cut)
    assert caught.value.path == str(cut)


def test_4d_and_2d_files_are_refused_before_decoding(tmp_path):
    four = tmp_path / "dynamic.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4, 5), np.float32), isVector=False), str(four))
    for read in (V.read_volume, V.read_volume_info):
        with pytest.raises(V.VolumeError, match=r"is a 4D volume \(size 5 x 4 x 3 x 2") as caught:
            read(four)
        assert caught.value.path == str(four)
    flat = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5), np.uint8)), str(flat))
    with pytest.raises(V.VolumeError, match="is a 2D image") as caught:
        V.read_volume(flat)
    assert caught.value.path == str(flat)


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_nan_or_infinite_voxels_are_refused(tmp_path, ext):
    array = voxels("float32")
    array[1, 2, 3] = np.nan
    array[3, 0, 0] = np.inf
    path = write_itk(tmp_path / f"bad{ext}", array)
    with pytest.raises(V.VolumeError, match="NaN") as caught:
        V.read_volume(path)
    assert caught.value.path == path and str(caught.value).startswith(path)


def test_missing_files_wrong_names_and_empty_folders(tmp_path):
    with pytest.raises(V.VolumeError, match="no such file") as caught:
        V.read_volume(tmp_path / "absent.nii.gz")
    assert caught.value.path == str(tmp_path / "absent.nii.gz")
    (tmp_path / "notes.txt").write_text("not a volume")
    with pytest.raises(V.VolumeError, match="not a volume file"):
        V.read_volume(tmp_path / "notes.txt")
    fake = tmp_path / "fake.nii.gz"
    fake.write_bytes(b"this is not a NIfTI file at all" * 20)
    with pytest.raises(V.VolumeError) as caught:
        V.read_volume(fake)
    assert caught.value.path == str(fake)
    (tmp_path / "empty").mkdir()
    with pytest.raises(V.VolumeError, match="holds no DICOM series"):
        V.read_volume(tmp_path / "empty")


def test_volume_error_keeps_path_and_problem_across_processes():
    error = V.VolumeError("/data/case.nii.gz", "is a 2D image")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.problem, str(copy)) == ("/data/case.nii.gz", "is a 2D image", str(error))


# ---------------------------------------------------------------------------- finding volumes


def _tree(root) -> None:
    small = voxels("uint8", shape=(2, 3, 4))
    write_itk(root / "a.nii.gz", small)
    write_itk(root / "b.nii", small)
    write_itk(root / "c.nrrd", small)
    write_itk(root / "d.mha", small)
    write_itk(root / "e.mhd", small)  # + e.raw (or e.zraw), not a volume itself
    write_itk(root / "f.nhdr", small)  # + its detached data file
    os.rename(write_itk(root / "g_lower.nii.gz", small), root / "G.NII.GZ")  # ITK writes lower case only
    (root / "notes.txt").write_text("x")
    write_itk(root / ".hidden.nii.gz", small)
    (root / ".cache").mkdir()
    write_itk(root / ".cache" / "x.nii.gz", small)
    (root / "sub" / "deeper").mkdir(parents=True)
    write_itk(root / "sub" / "deeper" / "h.nrrd", small)
    (root / "out").mkdir()
    write_itk(root / "out" / "prediction.nii.gz", small)
    write_dicom_series(root / "series1", [(0, 0, v) for v in (0, 1, 2)], ["x1.dcm", "x2.dcm", "x3.dcm"])


def test_find_volumes_lists_every_format_and_dicom_folders(tmp_path):
    _tree(tmp_path)
    found = V.find_volumes(tmp_path, exclude=[tmp_path / "out"])
    assert [case for case, _ in found] == ["G", "a", "b", "c", "d", "e", "f", "series1", "sub/deeper/h"]
    paths = dict(found)
    assert paths["series1"] == str(tmp_path / "series1")
    assert paths["sub/deeper/h"] == str(tmp_path / "sub" / "deeper" / "h.nrrd")
    for case, path in found:  # everything listed reads
        assert V.read_volume_info(path).num_voxels > 0, case
    assert "out/prediction" in dict(V.find_volumes(tmp_path))  # only excluded when asked


def test_find_volumes_case_ids_pair_images_with_labels_across_formats(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    small = voxels("int16", shape=(3, 3, 4))
    write_itk(images / "case1.nii.gz", small)
    write_itk(labels / "case1.nrrd", (small > 0).astype(np.uint8))
    write_itk(images / "case2.mha", small)
    write_itk(labels / "case2.nii", (small > 0).astype(np.uint8))
    write_dicom_series(images / "case3", [(0, 0, v) for v in (0, 1, 2)], ["1.dcm", "2.dcm", "3.dcm"], shape=(3, 4))
    write_itk(labels / "case3.nii.gz", np.zeros((3, 3, 4), np.uint8))
    image_ids = [case for case, _ in V.find_volumes(images)]
    label_ids = [case for case, _ in V.find_volumes(labels)]
    assert image_ids == label_ids == ["case1", "case2", "case3"]
    assert V.strip_volume_extension("hippocampus_001.nii.gz") == "hippocampus_001"
    assert V.strip_volume_extension("Scan.NRRD") == "Scan" and V.strip_volume_extension("notes.txt") == "notes.txt"
    assert V.is_volume_path("x.mhd") and not V.is_volume_path(".nii.gz") and not V.is_volume_path("x.raw")


def test_a_dicom_folder_given_itself_and_extension_less_dicom_files(tmp_path):
    folder = tmp_path / "scan"
    write_dicom_series(folder, [(0, 0, v) for v in (0, 1.5, 3)], ["IM0001", "IM0002", "IM0003"])  # no extension
    assert V.find_volumes(folder) == [("scan", str(folder))]
    assert V.find_volumes(tmp_path) == [("scan", str(folder))]
    volume = V.read_volume(folder)
    assert volume.shape == (3, 3, 4)
    np.testing.assert_allclose(volume.spacing[0], 1.5)


# ---------------------------------------------------------------------------- real data


def test_real_msd_hippocampus_case(tmp_path):
    root = SHARED_DATA / "msd_hippocampus"
    image_path = root / "imagesTr" / "hippocampus_003.nii.gz"
    label_path = root / "labelsTr" / "hippocampus_003.nii.gz"
    if not (image_path.is_file() and label_path.is_file()):
        pytest.skip(f"real data not available: {image_path} or {label_path} is absent (see ../shared/data/README.md)")
    image = V.read_volume(image_path)
    label = V.read_volume(label_path)
    assert image.voxels.dtype in (np.float32, np.uint8)
    assert label.voxels.dtype == np.float32  # one of the two label files the README says are stored as float32
    assert set(np.unique(label.voxels).tolist()) == {0.0, 1.0, 2.0}
    assert V.geometry_difference(image, label) is None
    np.testing.assert_allclose(image.spacing, (1.0, 1.0, 1.0), atol=1e-5)
    assert all(20 <= n <= 64 for n in image.shape)
    info = V.read_volume_info(image_path)
    assert (info.shape, info.dtype) == (image.shape, image.voxels.dtype.name)
    # a predicted mask written on the image's grid reads back equal, on the same grid
    mask = label.voxels.astype(np.uint8)
    back = V.read_volume(V.write_volume(tmp_path / "hippocampus_003.nii.gz", mask, like=image))
    np.testing.assert_array_equal(back.voxels, mask)
    assert V.geometry_difference(back, image) is None


def test_reading_a_dicom_series_keeps_the_process_locale(tmp_path):
    import locale

    start = locale.setlocale(locale.LC_ALL)
    folder = tmp_path / "ct"
    write_dicom_series(folder, [(0.0, 0.0, 2.5 * i) for i in range(4)], [f"s{i}.dcm" for i in range(4)])
    before = locale.setlocale(locale.LC_ALL, start)  # undo what the writer did
    encoding = locale.getencoding()
    V.read_volume(folder)
    V.read_volume_info(folder)
    assert locale.setlocale(locale.LC_ALL) == before and locale.getencoding() == encoding
