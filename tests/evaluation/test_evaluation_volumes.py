"""3D evaluation: surfaces, surface distances in mm, HD95/ASSD, Dice/IoU and the evaluator on volumes.

Every distance is checked against an independent brute force: the surface by
looking at the 6 face neighbours of each voxel, the distances as the minimum
over all pairs of surface voxels in physical units (tiny volumes only).
"""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import pytest
from kerasseg_testing import SHARED_DATA

from kerasseg import evaluation as E

# ---------------------------------------------------------------------------- reference


def reference_surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (outside the volume counts as outside)."""
    padded = np.pad(mask.astype(bool), 1)
    out = np.zeros(mask.shape, bool)
    for z, y, x in np.argwhere(mask):
        z, y, x = z + 1, y + 1, x + 1
        neighbours = [padded[z - 1, y, x], padded[z + 1, y, x], padded[z, y - 1, x],
                      padded[z, y + 1, x], padded[z, y, x - 1], padded[z, y, x + 1]]
        out[z - 1, y - 1, x - 1] = not all(neighbours)
    return out


def reference_distances(a: np.ndarray, b: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """All-pairs nearest-surface distances (C order of the surface voxels), in units of ``spacing``."""
    pa = np.argwhere(reference_surface(a)) * np.asarray(spacing, np.float64)
    pb = np.argwhere(reference_surface(b)) * np.asarray(spacing, np.float64)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return d.min(axis=1), d.min(axis=0)


def reference_hd95_assd(a, b, spacing) -> tuple[float, float]:
    d_ab, d_ba = reference_distances(a, b, spacing)
    h = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    return float(h), float(np.concatenate([d_ab, d_ba]).mean())


def random_pair(seed: int):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(1, 11, 3))
    a = rng.random(shape) < rng.uniform(0.1, 0.9)
    b = rng.random(shape) < rng.uniform(0.1, 0.9)
    a.flat[rng.integers(a.size)] = True  # never empty
    b.flat[rng.integers(b.size)] = True
    spacing = tuple(float(s) for s in rng.uniform(0.2, 4.0, 3))
    return a, b, spacing


def plate(shape, axis: int, index: int) -> np.ndarray:
    """A one-voxel-thick plate across the whole volume, at ``index`` along ``axis``."""
    mask = np.zeros(shape, bool)
    where = [slice(None)] * 3
    where[axis] = index
    mask[tuple(where)] = True
    return mask


# ---------------------------------------------------------------------------- surfaces


@pytest.mark.parametrize("seed", range(6))
def test_surface_of_a_volume_is_its_voxels_with_a_face_neighbour_outside(seed):
    a, _, _ = random_pair(seed)
    np.testing.assert_array_equal(E.surface(a), reference_surface(a))


def test_surface_of_a_solid_cube_and_of_a_single_slice():
    cube = np.zeros((7, 7, 7), bool)
    cube[1:6, 1:6, 1:6] = True
    assert int(E.surface(cube).sum()) == 5**3 - 3**3
    assert not E.surface(cube)[2:5, 2:5, 2:5].any()
    # 6-connectivity: a voxel whose face neighbours are all inside is interior even with a diagonal gap
    cross = np.ones((3, 3, 3), bool)
    cross[0, 0, 0] = False
    padded = np.zeros((5, 5, 5), bool)
    padded[1:4, 1:4, 1:4] = cross
    assert not E.surface(padded)[2, 2, 2]
    # the volume's edge is outside: a one-slice volume is all surface
    one_slice = np.ones((1, 4, 4), bool)
    assert E.surface(one_slice).all()


# ---------------------------------------------------------------------------- distances


@pytest.mark.parametrize("seed", range(12))
def test_surface_distances_match_all_pairs_brute_force_for_anisotropic_spacing(seed):
    a, b, spacing = random_pair(seed)
    got_ab, got_ba = E.surface_distances(a, b, spacing)
    want_ab, want_ba = reference_distances(a, b, spacing)
    np.testing.assert_allclose(got_ab, want_ab, rtol=2e-6, atol=1e-9)
    np.testing.assert_allclose(got_ba, want_ba, rtol=2e-6, atol=1e-9)
    h, s = reference_hd95_assd(a, b, spacing)
    assert E.hd95(a, b, spacing) == pytest.approx(h, rel=2e-6)
    assert E.assd(a, b, spacing) == pytest.approx(s, rel=2e-6)


@pytest.mark.parametrize("seed", range(4))
def test_integer_spacing_gives_exact_distances(seed):
    a, b, _ = random_pair(100 + seed)
    spacing = (3.0, 1.0, 2.0)
    got_ab, got_ba = E.surface_distances(a, b, spacing)
    want_ab, want_ba = reference_distances(a, b, spacing)
    np.testing.assert_array_equal(got_ab, want_ab)
    np.testing.assert_array_equal(got_ba, want_ba)


def test_anisotropic_spacing_scales_distances_along_its_axis_only():
    shape = (9, 6, 7)
    a, b = plate(shape, 0, 2), plate(shape, 0, 5)  # 3 slices apart along z
    assert E.hd95(a, b, (1, 1, 1)) == pytest.approx(3.0)
    assert E.hd95(a, b, (3, 1, 1)) == pytest.approx(9.0)  # 3x: z is the first spacing entry
    assert E.assd(a, b, (3, 1, 1)) == pytest.approx(3 * E.assd(a, b, (1, 1, 1)))
    # the same shift along x is not stretched by a z spacing
    a, b = plate(shape, 2, 1), plate(shape, 2, 4)
    assert E.hd95(a, b, (3, 1, 1)) == pytest.approx(E.hd95(a, b, (1, 1, 1))) == pytest.approx(3.0)
    assert E.hd95(a, b, (1, 1, 0.5)) == pytest.approx(1.5)


def test_masks_touching_the_volume_edge_and_filling_it():
    full = np.ones((3, 4, 5), bool)
    d_ab, d_ba = E.surface_distances(full, full, (2.0, 1.0, 1.0))
    assert d_ab.size == d_ba.size == full.size - 1 * 2 * 3 and not d_ab.any()  # interior: 1 x 2 x 3
    # a surface filling the whole box searched: no background voxel at all there
    slab = np.ones((2, 3, 4), bool)  # two slices: every voxel is surface
    dot = np.zeros_like(slab)
    dot[1, 2, 3] = True
    d_dot, d_slab = E.surface_distances(dot, slab, (2.0, 1.0, 0.5))
    assert d_dot.tolist() == [0.0]
    np.testing.assert_allclose(d_slab, reference_distances(slab, dot, (2.0, 1.0, 0.5))[0], rtol=2e-6)
    corner = np.zeros((3, 4, 5), bool)
    corner[0, 0, 0] = True
    far = np.zeros((3, 4, 5), bool)
    far[2, 3, 4] = True
    assert E.hd95(corner, far, (2.0, 1.0, 0.5)) == pytest.approx(np.sqrt(4**2 + 3**2 + 2**2))


def test_empty_volume_conventions_are_those_of_images():
    shape, spacing = (4, 5, 6), (3.0, 1.0, 0.5)
    empty = np.zeros(shape, bool)
    some = np.zeros(shape, bool)
    some[1:3, 1:3, 1:3] = True
    diagonal = float(np.sqrt((4 * 3.0) ** 2 + (5 * 1.0) ** 2 + (6 * 0.5) ** 2))
    assert E.hd95(empty, empty, spacing) == E.assd(empty, empty, spacing) == 0.0
    assert E.hd95(some, empty, spacing) == pytest.approx(diagonal)
    assert E.assd(empty, some, spacing) == pytest.approx(diagonal)
    assert E.binary_scores(empty, empty) == {"dice": 1.0, "iou": 1.0}
    assert E.binary_scores(some, empty) == {"dice": 0.0, "iou": 0.0}
    with pytest.raises(E.EvaluationError, match="non-empty"):
        E.surface_distances(some, empty, spacing)


def test_dice_and_iou_of_volumes():
    truth = np.zeros((4, 6, 6), bool)
    truth[0:2, 0:3, 0:3] = True  # 18 voxels
    pred = np.zeros((4, 6, 6), bool)
    pred[1:3, 0:3, 0:3] = True  # 18 voxels, 9 shared
    scores = E.binary_scores(pred, truth)
    assert scores["dice"] == pytest.approx(2 * 9 / 36)
    assert scores["iou"] == pytest.approx(9 / 27)


def test_a_100_cubed_volume_is_fast_and_right():
    a = np.zeros((100, 100, 100), bool)
    a[20:80, 20:80, 20:80] = True
    b = np.zeros_like(a)
    b[25:75, 25:75, 25:75] = True
    start = time.perf_counter()
    d_ab, d_ba = E.surface_distances(a, b, (1.0, 1.0, 1.0))
    elapsed = time.perf_counter() - start
    assert d_ba.min() == d_ba.max() == 5.0  # every face of the inner cube lies 5 voxels inside the outer one
    assert d_ab.min() == 5.0 and d_ab.max() == pytest.approx(5 * np.sqrt(3))  # corner to corner
    assert elapsed < 10.0, f"surface distances of a 100^3 volume took {elapsed:.1f} s"


def test_function_errors_for_wrong_spacing_or_shapes():
    vol = np.ones((3, 4, 5), bool)
    with pytest.raises(E.EvaluationError, match=r"\(z, y, x\)"):
        E.hd95(vol, vol, (1.0, 1.0))
    with pytest.raises(E.EvaluationError, match=r"\(row, column\)"):
        E.hd95(vol[0], vol[0], (1.0, 1.0, 1.0))
    with pytest.raises(E.EvaluationError, match="positive"):
        E.assd(vol, vol, (1.0, 0.0, 1.0))
    with pytest.raises(E.EvaluationError, match=r"one shape, got prediction \(3, 4, 5\) and truth \(4, 5\)"):
        E.hd95(vol, vol[0])
    with pytest.raises(E.EvaluationError, match=r"one shape, got prediction \(3, 4, 5\) and truth \(3, 4, 1\)"):
        E.binary_scores(vol, vol[..., :1])  # would broadcast
    with pytest.raises(E.EvaluationError, match=r"2-D \(H, W\) or 3-D"):
        E.surface(np.ones((2, 2, 2, 2), bool))


# ---------------------------------------------------------------------------- evaluator


def _labels(seed: int, shape=(5, 8, 9), classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.uint8)
    truth[1:4, 2:6, 2:7] = 1
    truth[2:5, 5:8, 0:3] = 2
    pred = truth.copy()
    pred[rng.random(shape) < 0.15] = rng.integers(0, classes)
    return truth, pred


def test_evaluator_scores_each_volume_in_mm():
    names = ["background", "anterior", "posterior"]
    ev = E.SegmentationEvaluator(3, names)
    truths, preds, spacings = [], [], [(3.0, 1.0, 1.0), (1.0, 0.5, 0.7)]
    for i, spacing in enumerate(spacings):
        truth, pred = _labels(i)
        truths.append(truth)
        preds.append(pred)
        record = ev.update(truth, pred, name=f"case{i}", filename=f"case{i}.nii.gz", spacing=spacing)
        assert record["spacing"] == list(spacing) and record["pixels"] == truth.size
        for c, cname in enumerate(names):
            t, p = truth == c, pred == c
            h, a = reference_hd95_assd(p, t, spacing)
            assert record["hd95"][cname] == pytest.approx(h, rel=2e-6), (i, cname)
            assert record["assd"][cname] == pytest.approx(a, rel=2e-6), (i, cname)
            shared = np.count_nonzero(t & p)
            assert record["dice"][cname] == pytest.approx(2 * shared / (t.sum() + p.sum()))
            assert record["iou"][cname] == pytest.approx(shared / np.count_nonzero(t | p))
    report = ev.result()
    assert report["counts"] == {"images": 2, "pixels": 2 * truths[0].size, "ignored_pixels": 0}
    assert report["distance_unit"] == "mm"
    for cname in names:
        entry = report["per_class"][cname]
        assert entry["hd95"] == pytest.approx(np.mean([r["hd95"][cname] for r in report["per_image"]]))
        assert entry["dice_per_image"] == pytest.approx(np.mean([r["dice"][cname] for r in report["per_image"]]))
    # dataset-level Dice pools the voxels of both volumes
    t_all = np.concatenate([t.ravel() for t in truths])
    p_all = np.concatenate([p.ravel() for p in preds])
    shared = np.count_nonzero((t_all == 1) & (p_all == 1))
    assert report["per_class"]["anterior"]["dice"] == pytest.approx(
        2 * shared / (np.count_nonzero(t_all == 1) + np.count_nonzero(p_all == 1)))


def test_volume_report_has_the_same_keys_as_an_image_report(tmp_path):
    images = E.SegmentationEvaluator(2, ["bg", "fg"])
    volumes = E.SegmentationEvaluator(2, ["bg", "fg"])
    truth, pred = _labels(3, classes=2)
    truth, pred = (truth > 0).astype(np.uint8), (pred > 0).astype(np.uint8)
    images.update(truth[2], pred[2], name="slice")
    volumes.update(truth, pred, name="volume", spacing=(2.0, 1.0, 1.0))
    a, b = images.result(), volumes.result()
    assert a.keys() == b.keys()
    assert a["per_class"]["fg"].keys() == b["per_class"]["fg"].keys()
    assert a["per_image"][0].keys() == b["per_image"][0].keys()
    volumes.write_json(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["per_image"][0]["spacing"] == [2.0, 1.0, 1.0]
    table = volumes.format_table()
    assert table.startswith("Intersection over Union for each class:")
    assert " mm " in table and "volumes: 1  voxels: " in table


def test_per_volume_csv_has_one_row_per_volume_with_its_spacing(tmp_path):
    ev = E.SegmentationEvaluator(3, ["bg", "a", "b"])
    records = []
    for i, spacing in enumerate([(3.0, 0.8, 0.8), (1.5, 1.0, 0.9), (2.0, 2.0, 2.0)]):
        truth, pred = _labels(10 + i)
        records.append(ev.update(truth, pred, name=f"case{i}", filename=f"case{i}.nrrd", spacing=spacing))
    ev.write_per_image_csv(tmp_path / "per_volume.csv")
    rows = list(csv.DictReader((tmp_path / "per_volume.csv").open()))
    assert [r["name"] for r in rows] == ["case0", "case1", "case2"]
    assert [r["filename"] for r in rows] == ["case0.nrrd", "case1.nrrd", "case2.nrrd"]
    assert [float(rows[0][k]) for k in ("spacing_z", "spacing_y", "spacing_x")] == [3.0, 0.8, 0.8]
    for row, record in zip(rows, records):
        assert float(row["hd95_a"]) == pytest.approx(record["hd95"]["a"], rel=1e-5)
        assert float(row["dice_b"]) == pytest.approx(record["dice"]["b"], rel=1e-5)
    ev.write_csv(tmp_path / "summary.csv")
    summary = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [r["class_name"] for r in summary] == ["bg", "a", "b", "mean"]
    assert float(summary[1]["hd95"]) == pytest.approx(np.mean([r["hd95"]["a"] for r in records]), rel=1e-5)


def test_z_spacing_triples_a_z_shift_in_the_evaluator():
    truth = np.zeros((10, 6, 6), np.uint8)
    truth[2] = 1  # plates: every voxel is surface, all distances run along z
    pred = np.zeros_like(truth)
    pred[4] = 1
    ev = E.SegmentationEvaluator(2, ["bg", "fg"])
    iso = ev.update(truth, pred, name="iso", spacing=(1.0, 1.0, 1.0))
    thick = ev.update(truth, pred, name="thick", spacing=(3.0, 1.0, 1.0))
    assert iso["hd95"]["fg"] == pytest.approx(2.0) and iso["assd"]["fg"] == pytest.approx(2.0)
    assert thick["hd95"]["fg"] == pytest.approx(6.0) and thick["assd"]["fg"] == pytest.approx(6.0)


def test_empty_classes_and_ignored_voxels_in_volumes():
    spacing = (2.0, 1.0, 1.0)
    truth = np.zeros((4, 5, 6), np.int64)
    truth[1:3, 1:4, 1:4] = 1
    truth[0] = 255  # ignored slice
    pred = np.zeros_like(truth)
    pred[0] = 2  # predictions on ignored voxels do not count
    ev = E.SegmentationEvaluator(3, ["bg", "organ", "tumour"])
    record = ev.update(truth, pred, name="missed", spacing=spacing)
    assert record["pixels"] == 3 * 5 * 6
    assert record["dice"]["organ"] == 0.0
    assert record["hd95"]["organ"] == pytest.approx(np.sqrt(8**2 + 5**2 + 6**2))  # (D*sz, H*sy, W*sx)
    assert record["dice"]["tumour"] == 1.0 and record["hd95"]["tumour"] == 0.0  # absent from both
    report = ev.result()
    assert report["counts"]["ignored_pixels"] == 30
    assert report["per_class"]["tumour"]["images_both_empty"] == 1
    assert report["per_class"]["organ"]["images_missed"] == 1


def test_volume_probabilities_give_the_scores_of_the_same_voxels_as_one_image():
    rng = np.random.default_rng(7)
    truth, _ = _labels(7)
    logits = rng.normal(size=truth.shape + (3,)) + 3.0 * np.eye(3)[truth]
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    volume = E.SegmentationEvaluator(3, ["bg", "a", "b"])
    record = volume.update(truth, probs, name="v", spacing=(2.0, 1.0, 1.0), probabilities=probs)
    assert record["dice"]["a"] == pytest.approx(E.binary_scores(probs.argmax(-1) == 1, truth == 1)["dice"])
    tall = E.SegmentationEvaluator(3, ["bg", "a", "b"])
    d, h, w = truth.shape
    tall.update(truth.reshape(d * h, w), probs.reshape(d * h, w, 3), probabilities=probs.reshape(d * h, w, 3))
    a, b = volume.result(), tall.result()
    for cname in ("a", "b"):
        for key in ("auc_roc", "auc_pr", "best_f1", "dice", "iou"):
            assert a["per_class"][cname][key] == pytest.approx(b["per_class"][cname][key]), (cname, key)
    with pytest.raises(E.EvaluationError, match=r"probabilities \(bad\) must be \(D, H, W, K\)"):
        volume.update(truth, probs, name="bad", spacing=(1, 1, 1), probabilities=probs[:, :, :4])
    with pytest.raises(E.EvaluationError, match=r"probabilities \(bad\) of shape .* 2 channel"):
        volume.update(truth, probs, name="bad", spacing=(1, 1, 1), probabilities=probs[..., :2])
    assert volume.result()["counts"]["images"] == 1


def test_evaluator_spacing_applies_to_every_volume():
    truth, pred = _labels(20)
    ev = E.SegmentationEvaluator(3, spacing=(2.5, 1.0, 0.5))
    record = ev.update(truth, pred, name="a")
    assert record["spacing"] == [2.5, 1.0, 0.5]
    assert record["hd95"]["class1"] == pytest.approx(
        reference_hd95_assd(pred == 1, truth == 1, (2.5, 1.0, 0.5))[0], rel=2e-6)
    assert ev.result()["spacing"] == [2.5, 1.0, 0.5] and ev.result()["distance_unit"] == "mm"
    uniform = E.SegmentationEvaluator(3, spacing=0.5)
    assert uniform.update(truth, pred)["spacing"] == [0.5, 0.5, 0.5]
    assert uniform.result()["spacing"] == [0.5, 0.5, 0.5]
    voxels = E.SegmentationEvaluator(3)
    assert voxels.update(truth, pred)["spacing"] == [1.0, 1.0, 1.0]
    assert voxels.result()["distance_unit"] == "voxels" and " vox " in voxels.format_table()


def test_evaluator_errors_name_the_case_and_leave_no_trace():
    truth, pred = _labels(30)
    ev = E.SegmentationEvaluator(3)
    with pytest.raises(E.EvaluationError, match=r"y_true \(case7\) has shape \(5, 8, 9\), a \(D, H, W\) volume, "
                                                r"but spacing \(1.0, 1.0\) has 2 entries"):
        ev.update(truth, pred, name="case7", spacing=(1.0, 1.0))
    with pytest.raises(E.EvaluationError, match=r"spacing \(case8\) must be one number"):
        ev.update(truth, pred, name="case8", spacing=(1.0, 1.0, 1.0, 1.0))
    with pytest.raises(E.EvaluationError, match="positive"):
        ev.update(truth, pred, name="case9", spacing=(1.0, -1.0, 1.0))
    with pytest.raises(E.EvaluationError, match=r"y_true \(case3\) has shape \(5, 8, 9\) but y_pred has shape "
                                                r"\(5, 8, 8\)"):
        ev.update(truth, pred[..., :8], name="case3", spacing=(1.0, 1.0, 1.0))
    with pytest.raises(E.EvaluationError, match=r"y_pred \(case4\) holds labels \[3\]"):
        ev.update(truth, np.full_like(pred, 3), name="case4", spacing=(1.0, 1.0, 1.0))
    with pytest.raises(E.EvaluationError, match=r"y_pred \(case5\) must be a \(D, H, W\) label map"):
        ev.update(truth[..., None], pred[..., None, None], name="case5")
    assert ev.result()["counts"]["images"] == 0  # failed updates left no trace
    ev.update(truth, pred, name="ok", spacing=(1.0, 1.0, 1.0))
    with pytest.raises(E.EvaluationError, match=r"y_true \(slice\) of shape \(8, 9\) is an image but this "
                                                r"evaluator holds volumes"):
        ev.update(truth[0], pred[0], name="slice")
    images = E.SegmentationEvaluator(3)
    with pytest.raises(E.EvaluationError, match=r"y_true \(img\) has shape \(8, 9\), an \(H, W\) image, but "
                                                r"spacing \(1.0, 1.0, 1.0\) has 3 entries"):
        images.update(truth[0], pred[0], name="img", spacing=(1.0, 1.0, 1.0))
    images.update(truth[0], pred[0], name="img")
    with pytest.raises(E.EvaluationError, match=r"\(vol\) of shape \(5, 8, 9\) is a volume but this evaluator "
                                                r"holds images"):
        images.update(truth, pred, name="vol")
    images.reset()
    assert images.update(truth, pred, name="vol")["spacing"] == [1.0, 1.0, 1.0]  # reset forgets the kind
    with pytest.raises(E.EvaluationError, match=r"\(vol\) must be a \(D, H, W\) label map, got shape \(1, 5, 8, 9, 2\)"):
        images.update(np.stack([truth, truth], -1)[None], pred, name="vol")
    pixels = E.SegmentationEvaluator(3, spacing=(0.5, 0.5))
    with pytest.raises(E.EvaluationError, match=r"\(ct\) has shape \(5, 8, 9\), a \(D, H, W\) volume, but the "
                                                r"evaluator's spacing \(0.5, 0.5\) has 2 entries"):
        pixels.update(truth, pred, name="ct")
    assert pixels.update(truth, pred, name="ct", spacing=(2.0, 0.5, 0.5))["spacing"] == [2.0, 0.5, 0.5]


def test_a_volume_of_width_one_needs_its_spacing_to_say_so():
    truth = np.zeros((4, 5, 1), np.uint8)
    truth[1:3, 1:4] = 1
    # (H, W, 1) truth is an image with a channel axis, as before
    as_image = E.SegmentationEvaluator(2).update(truth, truth[..., 0])
    assert as_image["spacing"] == [1.0, 1.0]
    as_volume = E.SegmentationEvaluator(2).update(truth, truth, spacing=(2.0, 1.0, 1.0))
    assert as_volume["spacing"] == [2.0, 1.0, 1.0] and as_volume["pixels"] == 20


def test_real_hippocampus_label_against_brute_force():
    folder = SHARED_DATA / "msd_hippocampus" / "labelsTr"
    if not folder.is_dir():
        pytest.skip(f"real data not available: {folder} is absent (see ../shared/data/README.md)")
    from kerasseg.volume_io import read_volume

    label = read_volume(folder / "hippocampus_001.nii.gz")
    truth = np.rint(label.voxels).astype(np.int64)
    pred = np.zeros_like(truth)
    pred[1:] = truth[:-1]  # the same segmentation one slice further along z
    spacing = (2.0, label.spacing[1], label.spacing[2])  # thicker slices than the file's 1 mm
    ev = E.SegmentationEvaluator(3, ["background", "anterior", "posterior"])
    record = ev.update(truth, pred, name="hippocampus_001", spacing=spacing)
    for c, cname in ((1, "anterior"), (2, "posterior")):
        h, a = reference_hd95_assd(pred == c, truth == c, spacing)
        assert record["hd95"][cname] == pytest.approx(h, rel=2e-6)
        assert record["assd"][cname] == pytest.approx(a, rel=2e-6)
        assert 0 < record["assd"][cname] <= 2.0  # a one-slice shift: no surface voxel is further than 2 mm
