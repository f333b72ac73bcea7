"""from_tfds with tfds.testing.mock_data, and the batch grid for `kerasseg data show`."""

from __future__ import annotations

import numpy as np
import pytest
from pipeline_helpers import blocks_example, write_dataset

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from kerasseg.data import from_tfds  # noqa: E402
from kerasseg.data.visualize import overlay, save_batch_grid  # noqa: E402


def test_from_tfds_oxford_pet_through_the_same_pipeline():
    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        augmented = list(from_tfds("oxford_iiit_pet", "train", image_size=(32, 32), batch_size=2, augment=True,
                                   seed=0, include_metadata=True))
        exact = list(from_tfds("oxford_iiit_pet", "train", batch_size=1, geometry="pad", size_divisor=1))
        raw = list(tfds.load("oxford_iiit_pet", split="train").take(5))
    assert [b["images"].shape[0] for b in augmented] == [2, 2, 1]
    b = augmented[0]
    assert b["images"].shape == (2, 32, 32, 3) and b["images"].dtype == tf.float32
    assert b["masks"].dtype == tf.int32 and set(np.unique(b["masks"])) <= {0, 1}
    assert b["height"].numpy()[0] == raw[0]["image"].shape[0]
    # trimap: 1 = pet -> 1, 2 = background -> 0, 3 (border) and any other value -> ignore (weight 0)
    for (images, masks, weights), ex in zip(exact, raw):
        # mock data draws image and mask sizes independently: the mask follows the image (nearest)
        src = tf.image.resize(ex["segmentation_mask"], tf.shape(ex["image"])[:2], method="nearest").numpy()[..., 0]
        np.testing.assert_array_equal(masks.numpy()[0], (src == 1).astype(np.int32))
        np.testing.assert_array_equal(weights.numpy()[0] == 0, ~np.isin(src, [1, 2]))
        assert images.shape[1:3] == src.shape


def test_from_tfds_label_map_is_exact():
    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
        raw = [tf.image.resize(ex["segmentation_mask"], tf.shape(ex["image"])[:2], method="nearest").numpy()[..., 0]
               for ex in tfds.load("oxford_iiit_pet", split="train")]
        ds = from_tfds("oxford_iiit_pet", "train", batch_size=1, geometry="pad", size_divisor=1,
                       label_map={v: v % 3 for v in range(256)}, num_classes=3)
        masks = [m.numpy()[0] for _, m, _ in ds]
    for src, got in zip(raw, masks):
        np.testing.assert_array_equal(got, src % 3)


def test_from_tfds_needs_a_class_set_for_unknown_datasets():
    with tfds.testing.mock_data(num_examples=1, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(ValueError, match="class_names or num_classes"):
            from_tfds("oxford_iiit_pet", "train", image_size=8, batch_size=1, mask_key="segmentation_mask",
                      label_map={1: 1})


def test_save_batch_grid_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    path = write_dataset(tmp_path / "ds", {"train": [blocks_example(rng, 40) for _ in range(3)]})
    import matplotlib

    backend_before = matplotlib.get_backend()
    out = save_batch_grid(str(path), "train", num_images=3, augment={"preset": "full"},
                          out_path=str(tmp_path / "grids" / "train.png"), seed=1)
    assert out == str(tmp_path / "grids" / "train.png")
    from PIL import Image

    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 100
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3).astype(int)
    # the overlay colour of class 1 (red) is present
    assert ((pixels[:, 0] - pixels[:, 1] > 60) & (pixels[:, 0] - pixels[:, 2] > 30)).any()
    assert matplotlib.get_backend() == backend_before
    assert [p.name for p in (tmp_path / "grids").iterdir()] == ["train.png"]  # no temporary files


def test_overlay_paints_classes_and_ignore():
    image = np.full((4, 4, 1), 0.5, np.float32)
    labels = np.zeros((4, 4), int)
    labels[0, 0] = 1
    ignore = np.zeros((4, 4), bool)
    ignore[3, 3] = True
    rgb = overlay(image, labels, ignore)
    assert rgb.shape == (4, 4, 3)
    assert rgb[0, 0, 0] > rgb[0, 0, 1]  # red-ish class colour
    np.testing.assert_allclose(rgb[1, 1], 0.5)  # background untouched
    assert rgb[3, 3].mean() > 0.5  # ignore tinted white
