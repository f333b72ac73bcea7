"""The volume pipeline (kerasseg.data.volumes): decoding, resampling, patches, sampling, seeds, weights."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from kerasseg import schema  # noqa: E402
from kerasseg.data import load_dataset  # noqa: E402
from kerasseg.data.volumes import decode_volume, iterate_volumes, load_volume_dataset  # noqa: E402
from pipeline_helpers import blocks_example, write_dataset  # noqa: E402
from volume_pipeline_helpers import hippocampus_records, volume_record, write_volume_dataset  # noqa: E402


def _blob_volume(shape=(10, 12, 11), *, value_dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, np.uint8)
    mask[2:6, 3:8, 2:6] = 1
    mask[6:9, 5:9, 6:10] = 2
    voxels = (mask * 100 + rng.normal(0, 5, size=shape)).astype(value_dtype)
    return voxels, mask


@pytest.fixture
def mixed_dataset(tmp_path):
    rng = np.random.default_rng(3)
    shape = (5, 6, 7)
    records = [
        volume_record(rng.integers(0, 256, size=shape).astype(np.uint8), name="u8"),
        volume_record((rng.normal(size=shape) * 1e3).astype(np.float32), name="f32"),
        volume_record(rng.integers(-1024, 3000, size=(4, 6, 5)).astype(np.int16), name="i16"),
    ]
    for r in records:
        r["mask"][0, 0, :3] = [1, 2, 255]
    return write_volume_dataset(tmp_path / "mixed", {"train": records}, num_shards=2), records


def _one_pass(path, split="train", **kwargs):
    """Every element of one unshuffled pass, as numpy dicts."""
    kwargs = {"batch_size": 1, "shuffle": False, "repeat": False, "include_metadata": True,
              "drop_remainder": False, **kwargs}
    return list(load_volume_dataset(str(path), split, **kwargs).as_numpy_iterator())


def test_mixed_storage_types_decode_exactly(mixed_dataset):
    path, records = mixed_dataset
    by_id = {r["source_id"]: r for r in records}
    # TensorFlow decoding, each record with its own type
    seen = set()
    for shard in schema.split_files(str(path), "train"):
        for serialized in tf.data.TFRecordDataset(shard):
            ex = decode_volume(serialized, channels=1, num_classes=3)
            ref = by_id[ex["source_id"].numpy().decode()]
            assert ex["image"].dtype == tf.float32 and ex["image"].shape == ref["voxels"].shape + (1,)
            np.testing.assert_array_equal(ex["image"].numpy()[..., 0], ref["voxels"].astype(np.float32))
            np.testing.assert_array_equal(ex["mask"].numpy(), ref["mask"])
            seen.add(ref["source_id"])
    assert seen == set(by_id)
    # numpy iteration: record order (shard by shard), stored types, a channel axis
    items = list(iterate_volumes(str(path), "train"))
    assert [i["source_id"] for i in items] == ["u8", "i16", "f32"]  # written round-robin into 2 shards
    for item in items:
        ref = by_id[item["source_id"]]
        assert item["voxels"].dtype == ref["voxels"].dtype and item["voxels"].shape == ref["voxels"].shape + (1,)
        np.testing.assert_array_equal(item["voxels"][..., 0], ref["voxels"])
        np.testing.assert_array_equal(item["mask"], ref["mask"])
        assert item["spacing"] == (1.0, 1.0, 1.0) and item["filename"] == f"{ref['source_id']}.nii.gz"
        assert len(item["direction"]) == 9 and len(item["origin"]) == 3


def test_multichannel_voxels_keep_their_layout(tmp_path):
    voxels = np.arange(3 * 4 * 5 * 2, dtype=np.int16).reshape(3, 4, 5, 2)
    path = write_volume_dataset(tmp_path / "two", {"train": [volume_record(voxels)]})
    (item,) = iterate_volumes(str(path), "train")
    np.testing.assert_array_equal(item["voxels"], voxels)
    (element,) = _one_pass(path, patch_size=(3, 4, 5), normalization={"method": "none"})
    np.testing.assert_array_equal(element["images"][0], voxels.astype(np.float32))


def test_labels_outside_the_class_set_name_the_record(tmp_path):
    voxels, mask = _blob_volume()
    mask[0, 0, 0] = 7
    path = write_volume_dataset(tmp_path / "bad", {"train": [volume_record(voxels, mask, name="broken")]})
    with pytest.raises(tf.errors.InvalidArgumentError, match="broken.nii.gz"):
        _one_pass(path, patch_size=(4, 4, 4))
    with pytest.raises(schema.SchemaError, match=r"broken.nii.gz.*label 7"):
        list(iterate_volumes(str(path), "train"))


def test_resampling_to_a_finer_spacing(tmp_path):
    voxels, _ = _blob_volume((4, 6, 5))
    mask = np.zeros((4, 6, 5), np.uint8)
    mask[1:3, 1:4, 1:3] = 1
    mask[3, 4:, 3:] = 2
    path = write_volume_dataset(tmp_path / "coarse", {"train": [volume_record(voxels, mask, spacing=(3.0, 2.0, 2.0))]})
    (element,) = _one_pass(path, patch_size=(12, 12, 10), spacing=(1.0, 1.0, 1.0), foreground_fraction=0.0)
    assert element["images"].shape == (1, 12, 12, 10, 1)
    # the whole resampled volume is the patch: no padding, only the stored class ids
    assert set(np.unique(element["masks"])) == {0, 1, 2}
    np.testing.assert_array_equal(element["sample_weights"], 1.0)
    np.testing.assert_allclose(element["images"].mean(), 0.0, atol=1e-4)  # z-scored after resampling
    (item,) = iterate_volumes(str(path), "train", spacing=(1.0, 1.0, 1.0))
    assert item["voxels"].shape == (12, 12, 10, 1) and item["voxels"].dtype == np.float32
    assert item["spacing"] == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(item["mask"], element["masks"][0])
    # nearest neighbour: each voxel of the 2 mm grid becomes a 2x2 block in-plane (3 slices along z)
    np.testing.assert_array_equal(item["mask"][::3, ::2, ::2], mask)
    # half-pixel grids: the first 1 mm voxel centre sits 1 mm before the first 3 mm one along z
    np.testing.assert_allclose(item["origin"], (-0.5, -0.5, -1.0))
    (stored,) = iterate_volumes(str(path), "train")
    assert stored["mask"].shape == (4, 6, 5) and stored["spacing"] == (3.0, 2.0, 2.0)


def test_small_volumes_are_padded_with_ignore(tmp_path):
    voxels, mask = _blob_volume((5, 6, 7))
    path = write_volume_dataset(tmp_path / "small", {"train": [volume_record(voxels, mask)]})
    (element,) = _one_pass(path, patch_size=(8, 8, 8))
    images, masks, weights = element["images"][0], element["masks"][0], element["sample_weights"][0]
    assert images.shape == (8, 8, 8, 1) and images.dtype == np.float32
    assert masks.shape == (8, 8, 8) and masks.dtype == np.int32 and weights.dtype == np.float32
    inside = (slice(1, 6), slice(1, 7), slice(0, 7))  # split evenly: 3 -> 1 + 2, 2 -> 1 + 1, 1 -> 0 + 1
    np.testing.assert_array_equal(masks[inside], mask)
    np.testing.assert_array_equal(weights[inside], 1.0)
    assert weights.sum() == mask.size  # the padding has weight 0 ...
    outside = weights == 0
    np.testing.assert_array_equal(masks[outside], 0)  # ... label 0 ...
    np.testing.assert_array_equal(images[..., 0][outside], 0.0)  # ... and image 0 (after normalization)


def test_foreground_oversampling(tmp_path):
    shape = (24, 24, 24)
    mask = np.zeros(shape, np.uint8)
    mask[10:14, 10:14, 10:14] = 1  # 64 voxels of class 1
    mask[3, 20, 4] = 2  # a single voxel of a rare class 2
    voxels = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    path = write_volume_dataset(tmp_path / "fg", {"train": [volume_record(voxels, mask)]})

    def patches(fraction):
        ds = load_volume_dataset(str(path), "train", patch_size=(6, 6, 6), batch_size=50, shuffle=False,
                                 foreground_fraction=fraction, seed=1)
        _, masks, _ = next(iter(ds.take(1)))
        masks = masks.numpy().reshape(50, -1)
        return (masks == 1).any(1), (masks == 2).any(1)

    ones, twos = patches(1.0)
    assert (ones | twos).all()  # every patch holds foreground
    assert 10 <= twos.sum() <= 40  # each present class about equally often, however rare: ~25 of 50
    ones, twos = patches(0.0)
    # uniform corners in [0, 18]^3 overlap the 4^3 cube with probability (9/19)^3 = 0.11
    assert ones.mean() < 0.3 and twos.sum() <= 3


def test_seeds_make_batches_reproducible(tmp_path):
    records = [volume_record(*_blob_volume(seed=i), name=f"c{i}") for i in range(4)]
    path = write_volume_dataset(tmp_path / "seed", {"train": records})

    def first_batches(seed):
        ds = load_volume_dataset(str(path), "train", patch_size=(8, 8, 8), batch_size=2, seed=seed, shuffle=4,
                                 augment=True)
        return [tuple(t.numpy() for t in batch) for batch in ds.take(3)]

    a, b, c = first_batches(7), first_batches(7), first_batches(8)
    for x, y in zip(a, b):
        for tx, ty in zip(x, y):
            np.testing.assert_array_equal(tx, ty)
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c))
    assert a[0][0].shape == (2, 8, 8, 8, 1) and np.isfinite(a[0][0]).all()
    # augmented labels are class ids only (ignore is 0 with weight 0)
    assert set(np.unique(np.concatenate([m[1].ravel() for m in a]))) <= {0, 1, 2}


def test_class_weights_and_metadata(tmp_path):
    voxels, mask = _blob_volume((6, 8, 8))
    mask[0] = 255
    path = write_volume_dataset(tmp_path / "weights", {"train": [volume_record(voxels, mask, name="w")]})
    (element,) = _one_pass(path, patch_size=(6, 8, 8), class_weights=[0.5, 2.0, 4.0])
    assert set(element) == {"images", "masks", "sample_weights", "source_id", "filename"}
    assert element["source_id"].tolist() == [b"w"] and element["filename"].tolist() == [b"w.nii.gz"]
    masks, weights = element["masks"][0], element["sample_weights"][0]
    np.testing.assert_array_equal(weights[0], 0.0)
    np.testing.assert_array_equal(masks[0], 0)
    np.testing.assert_array_equal(weights[1:], np.array([0.5, 2.0, 4.0], np.float32)[mask[1:]])
    with pytest.raises(ValueError, match="3 classes"):
        _one_pass(path, patch_size=(6, 8, 8), class_weights=[1.0, 2.0])


def test_clip_zscore_in_the_pipeline(tmp_path):
    voxels, mask = _blob_volume((6, 8, 8), value_dtype=np.int16)
    path = write_volume_dataset(tmp_path / "ct", {"train": [volume_record(voxels, mask)]})
    info = schema.read_dataset_info(str(path))
    stats = info.volume["foreground_intensity"]
    (element,) = _one_pass(path, patch_size=(6, 8, 8), normalization={"method": "clip_zscore"})
    ref = (np.clip(voxels, stats["p00_5"][0], stats["p99_5"][0]) - stats["mean"][0]) / stats["std"][0]
    np.testing.assert_allclose(element["images"][0, ..., 0], ref, rtol=1e-5, atol=1e-5)


def test_two_and_three_dimensions_refuse_each_other(tmp_path):
    rng = np.random.default_rng(0)
    flat = write_dataset(tmp_path / "flat", {"train": [blocks_example(rng, 32)]})
    with pytest.raises(schema.SchemaError, match="2D images.*kerasseg.data.load_dataset"):
        load_volume_dataset(str(flat), "train", patch_size=(4, 4, 4), batch_size=1)
    with pytest.raises(schema.SchemaError, match="2D images"):
        next(iterate_volumes(str(flat), "train"))
    volumes = write_volume_dataset(tmp_path / "vol", {"train": [volume_record(*_blob_volume())]})
    with pytest.raises(schema.SchemaError, match="holds volumes.*load_volume_dataset"):
        load_dataset(str(volumes), "train", image_size=32)
    with pytest.raises(schema.SchemaError, match="lists no split 'val'"):
        load_volume_dataset(str(volumes), "val", patch_size=(4, 4, 4), batch_size=1)
    with pytest.raises(ValueError, match="patch_size"):
        load_volume_dataset(str(volumes), "train", patch_size=(4, 4), batch_size=1)


def test_real_hippocampus_batch(tmp_path):
    records = hippocampus_records(3)
    assert {r["voxels"].dtype.name for r in records} == {"uint8", "float32"}  # the real mixed storage
    path = write_volume_dataset(tmp_path / "hippo", {"train": records}, class_names=("background", "anterior",
                                                                                     "posterior"))
    ds = load_volume_dataset(str(path), "train", patch_size=(32, 48, 32), batch_size=2, foreground_fraction=1.0,
                             augment=True, seed=0)
    images, masks, weights = next(iter(ds))
    assert images.shape == (2, 32, 48, 32, 1) and masks.shape == (2, 32, 48, 32) and weights.shape == masks.shape
    assert np.isfinite(images.numpy()).all()
    for i in range(2):
        assert {1, 2} <= set(np.unique(masks[i].numpy()))  # both hippocampus parts in every patch
