"""load_dataset / iterate_examples on real TFRecords written with kerasseg.schema."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pipeline_helpers import blocks_example, write_dataset

tf = pytest.importorskip("tensorflow")

from kerasseg import schema  # noqa: E402
from kerasseg.data import iterate_examples, load_dataset, num_examples  # noqa: E402
from kerasseg.data.geometry import crop_to_size, pad_to_multiple  # noqa: E402

FULL = {"preset": "full", "affine": 1.0, "elastic": 1.0}


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    rng = np.random.default_rng(0)
    train = [blocks_example(rng, 64, num_classes=3) for _ in range(6)]
    val = [blocks_example(rng, 40 + 4 * i, num_classes=3) for i in range(3)]
    path = write_dataset(tmp_path_factory.mktemp("blocks"), {"train": train, "val": val},
                         class_names=("background", "a", "b"), num_shards=2)
    return path, train, val


def _batches(ds):
    return [tuple(t.numpy() for t in b) for b in ds]


def test_element_contract(blocks):
    path, _, _ = blocks
    ds = load_dataset(str(path), "train", image_size=(32, 48), batch_size=4, augment=FULL, seed=0)
    images, masks, weights = next(iter(ds))
    assert images.dtype == tf.float32 and images.shape == (4, 32, 48, 1)
    assert masks.dtype == tf.int32 and masks.shape == (4, 32, 48)
    assert weights.dtype == tf.float32 and weights.shape == (4, 32, 48)
    assert set(np.unique(masks)) <= {0, 1, 2}
    assert set(np.unique(weights)) <= {0.0, 1.0} and (weights.numpy() == 0).any()
    assert np.isfinite(images.numpy()).all()
    # zscore by default, on the whole stored image before geometry and augmentation:
    # at the stored size and without augmentation each image has zero mean and unit std
    plain = next(iter(load_dataset(str(path), "train", image_size=64, batch_size=4)))[0].numpy()
    np.testing.assert_allclose(plain.mean(axis=(1, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(plain.std(axis=(1, 2, 3)), 1, atol=1e-3)
    sizes = [b[0].shape[0] for b in _batches(ds)]
    assert sizes == [4, 2]
    drop = load_dataset(str(path), "train", image_size=32, batch_size=4, drop_remainder=True)
    assert [b[0].shape[0] for b in _batches(drop)] == [4]


@pytest.mark.parametrize("geometry", ["resize", "random_crop", "center_crop", "pad"])
def test_ignore_pixels_survive_as_zero_weight(blocks, geometry):
    path, train, _ = blocks
    size = None if geometry == "pad" else (32, 32)
    ds = load_dataset(str(path), "train", image_size=size, batch_size=6, geometry=geometry, augment=False,
                      seed=1, include_metadata=True, size_divisor=48)
    batch = next(iter(ds))
    for i, src_id in enumerate(batch["source_id"].numpy()):
        src_mask = train[int(src_id.decode().split("-")[1])][1]
        w, m = batch["sample_weights"].numpy()[i], batch["masks"].numpy()[i]
        assert ((w == 0) <= (m == 0)).all()  # ignore -> label 0 in masks
        if geometry == "pad":
            # full-resolution content at [:H, :W]; ignore exactly where the record says; padding ignored
            assert m.shape == (96, 96)
            np.testing.assert_array_equal(w[:64, :64] == 0, src_mask == 255)
            np.testing.assert_array_equal(m[:64, :64], np.where(src_mask == 255, 0, src_mask))
            assert (w[64:, :] == 0).all() and (w[:, 64:] == 0).all()
        elif geometry == "resize":
            expected = tf.image.resize(src_mask[..., None], (32, 32), method="nearest").numpy()[..., 0]
            np.testing.assert_array_equal(w == 0, expected == 255)
        elif geometry == "center_crop":
            np.testing.assert_array_equal(w == 0, src_mask[16:48, 16:48] == 255)


def test_ignore_survives_augmentation(blocks):
    path, train, _ = blocks
    ds = load_dataset(str(path), "train", image_size=64, batch_size=6, augment={"preset": "none", "hflip": 1.0},
                      include_metadata=True)
    batch = next(iter(ds))
    for i, src_id in enumerate(batch["source_id"].numpy()):
        src_mask = train[int(src_id.decode().split("-")[1])][1]
        np.testing.assert_array_equal(batch["sample_weights"].numpy()[i] == 0, src_mask[:, ::-1] == 255)


def test_same_seed_same_batches(blocks):
    path, _, _ = blocks
    kwargs = dict(image_size=32, batch_size=4, augment=FULL, shuffle=True, repeat=2, geometry="random_crop")
    a = _batches(load_dataset(str(path), "train", seed=7, **kwargs))
    b = _batches(load_dataset(str(path), "train", seed=7, **kwargs))
    c = _batches(load_dataset(str(path), "train", seed=8, **kwargs))
    assert len(a) == 3  # 12 elements over two epochs
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c))
    # the second epoch is augmented differently from the first
    first, second = np.concatenate([x[1] for x in a])[:6], np.concatenate([x[1] for x in a])[6:]
    assert not np.array_equal(np.sort(first.reshape(6, -1), axis=0), np.sort(second.reshape(6, -1), axis=0))


def test_augmented_batches_stay_aligned(blocks):
    path, _, _ = blocks
    geometric = {"preset": "none", "hflip": 0.5, "vflip": 0.5, "rot90": 0.5, "affine": 1.0, "elastic": 1.0}
    ds = load_dataset(str(path), "train", image_size=64, batch_size=6, augment=geometric, seed=3,
                      normalization={"method": "none"})
    images, masks, weights = next(iter(ds))
    valid = weights.numpy() > 0
    from_image = np.clip(images.numpy()[..., 0] // (256 // 3), 0, 2)
    assert (from_image[valid] == masks.numpy()[valid]).mean() > 0.97


def test_random_crop_is_foreground_biased(tmp_path):
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(4):
        image = rng.integers(0, 255, size=(128, 128), dtype=np.uint8)
        mask = np.zeros((128, 128), np.uint8)
        y, x = rng.integers(0, 120, size=2)
        mask[y : y + 6, x : x + 6] = 1  # a small object: uniform 16x16 crops rarely hit it
        pairs.append((image, mask))
    path = write_dataset(tmp_path / "fg", {"train": pairs})

    def hit_rate(fraction):
        ds = load_dataset(str(path), "train", image_size=16, batch_size=4, geometry="random_crop",
                          foreground_fraction=fraction, repeat=10, seed=0)
        return np.mean([(m.numpy().reshape(4, -1) > 0).any(axis=1).mean() for _, m, _ in ds])

    assert hit_rate(1.0) == 1.0
    assert hit_rate(0.0) < 0.3
    assert 0.3 < hit_rate(0.5) < 0.85


def test_pad_and_crop_back_round_trip():
    x = tf.reshape(tf.range(2 * 5 * 7 * 3, dtype=tf.float32), [2, 5, 7, 3])
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(crop_to_size(padded, 5, 7).numpy(), x.numpy())
    m = pad_to_multiple(tf.zeros([5, 9], tf.uint8), 8, constant_values=255)
    assert m.shape == (8, 16) and int(tf.reduce_sum(tf.cast(m == 255, tf.int32))) == 8 * 16 - 45
    assert pad_to_multiple(tf.zeros([8, 16, 1]), 8).shape == (8, 16, 1)


def test_class_weights_median_frequency_and_list(blocks):
    path, _, _ = blocks
    info = schema.read_dataset_info(str(path))
    counts = np.array(info.class_pixel_counts["train"], float)
    freq = counts / counts.sum()
    expected = np.median(freq) / freq
    ds = load_dataset(str(path), "train", image_size=64, batch_size=6, class_weights="median_frequency")
    _, masks, weights = next(iter(ds))
    masks, weights = masks.numpy(), weights.numpy()
    for c in range(3):
        values = np.unique(weights[(masks == c) & (weights > 0)])
        np.testing.assert_allclose(values, [expected[c]], rtol=1e-5)
    ds = load_dataset(str(path), "train", image_size=64, batch_size=6, class_weights=[0.5, 2.0, 3.0])
    _, masks, weights = next(iter(ds))
    assert set(np.unique(weights.numpy())) == {0.0, 0.5, 2.0, 3.0}
    with pytest.raises(ValueError, match="3 classes"):
        load_dataset(str(path), "train", image_size=64, batch_size=6, class_weights=[1.0, 2.0])


def test_metadata_and_full_resolution_originals(blocks):
    path, _, val = blocks
    ds = load_dataset(str(path), "val", image_size=32, batch_size=8, include_metadata=True)
    batch = next(iter(ds))
    assert sorted(batch) == ["filename", "height", "images", "masks", "sample_weights", "source_id", "width"]
    assert sorted(batch["height"].numpy()) == [40, 44, 48] and sorted(batch["width"].numpy()) == [40, 44, 48]
    assert batch["images"].shape == (3, 32, 32, 1)
    examples = list(iterate_examples(str(path), "val"))
    assert sorted(e["source_id"] for e in examples) == ["val-000", "val-001", "val-002"]
    for e in examples:
        image, mask = val[int(e["source_id"].split("-")[1])]
        np.testing.assert_array_equal(e["image"][..., 0], image)
        np.testing.assert_array_equal(e["mask"], mask)
        assert e["filename"].endswith(".png")
    heights = dict(zip([s.decode() for s in batch["source_id"].numpy()], batch["height"].numpy()))
    assert heights == {e["source_id"]: e["image"].shape[0] for e in examples}
    assert num_examples(str(path), "val") == 3


def test_sixteen_bit_images_keep_their_precision(tmp_path):
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(2):
        image, mask = blocks_example(rng, 32, dtype=np.uint16)
        image = image + rng.integers(0, 200, size=image.shape).astype(np.uint16)  # values no 8-bit path keeps
        pairs.append((image, mask))
    path = write_dataset(tmp_path / "u16", {"train": pairs})
    assert schema.read_dataset_info(str(path)).image_dtype == "uint16"
    examples = list(iterate_examples(str(path), "train"))
    assert examples[0]["image"].dtype == np.uint16
    np.testing.assert_array_equal(examples[0]["image"][..., 0], pairs[0][0])
    ds = load_dataset(str(path), "train", geometry="pad", size_divisor=1, batch_size=2,
                      normalization={"method": "scale"})
    images, _, _ = next(iter(ds))
    np.testing.assert_allclose(images.numpy()[0, ..., 0], pairs[0][0] / 65535.0, rtol=1e-6)


def test_rgb_jpeg_free_three_channel_images(tmp_path):
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(0, 255, size=(24, 24, 3), dtype=np.uint8), rng.integers(0, 2, size=(24, 24)).astype(np.uint8))]
    path = write_dataset(tmp_path / "rgb", {"train": pairs})
    images, masks, _ = next(iter(load_dataset(str(path), "train", image_size=16, batch_size=1, augment=FULL)))
    assert images.shape == (1, 16, 16, 3)


def test_refuses_folder_without_dataset_json(tmp_path):
    with pytest.raises(schema.SchemaError, match="no dataset.json"):
        load_dataset(str(tmp_path), "train", image_size=32, batch_size=2)


def test_refuses_other_schema_version(blocks, tmp_path):
    path, _, _ = blocks
    data = json.loads((path / "dataset.json").read_text())
    data["schema_version"] = schema.SCHEMA_VERSION + 1
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(schema.SchemaError, match="schema_version"):
        load_dataset(str(tmp_path), "train", image_size=32, batch_size=2)


def test_missing_split_and_bad_arguments(blocks):
    path, _, _ = blocks
    with pytest.raises(schema.SchemaError, match="no shards for split 'test'"):
        load_dataset(str(path), "test", image_size=32, batch_size=2)
    with pytest.raises(ValueError, match="needs image_size"):
        load_dataset(str(path), "train", batch_size=2)
    with pytest.raises(ValueError, match="geometry"):
        load_dataset(str(path), "train", image_size=32, batch_size=2, geometry="warp")


def test_labels_outside_the_class_set_fail_naming_the_record(tmp_path):
    image = np.zeros((8, 8), np.uint8)
    mask = np.full((8, 8), 7, np.uint8)
    path = write_dataset(tmp_path / "bad", {"train": [(image, mask)]}, class_names=("bg", "fg", "x", "y", "z",
                                                                                        "v", "w", "u"))
    info = json.loads((path / "dataset.json").read_text())
    info["class_names"] = ["bg", "fg"]
    info["class_pixel_counts"] = {"train": [1, 1]}
    (path / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(tf.errors.InvalidArgumentError, match="train/000.png"):
        next(iter(load_dataset(str(path), "train", image_size=8, batch_size=1)))


def test_preprocess_hook_and_cache(blocks, tmp_path):
    path, train, _ = blocks
    steps = [{"name": "gaussian_lowpass", "sigma": 2}, {"name": "remove_small_objects", "min_size": 10_000}]
    ds = load_dataset(str(path), "train", image_size=64, batch_size=6, preprocess=steps, cache=str(tmp_path / "c"),
                      normalization={"method": "none"}, include_metadata=True)
    for _ in range(2):  # second pass reads the file cache
        batch = next(iter(ds))
        assert set(np.unique(batch["masks"].numpy())) == {0}  # every object is "small" here
        raw = np.stack([train[int(s.decode().split("-")[1])][0] for s in batch["source_id"].numpy()])
        assert batch["images"].numpy()[..., 0].std() < raw.astype(float).std()
