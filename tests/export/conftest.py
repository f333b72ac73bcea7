"""Fixtures of the export tests: a small real U-Net, briefly trained, and its export.

The model is ``kerasseg.models.build("unet", base_filters=4, depth=2)`` fitted
for a few epochs on smooth synthetic blobs (bright blob = class 1, its rim =
class 2), so that its masks are decisive rather than coin flips between
near-equal probabilities of an untrained network.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from export_helpers import CLASS_NAMES, NORMALIZATION, keras_reference, make_blobs  # noqa: E402,F401


@pytest.fixture(scope="session")
def trained_unet():
    """A 3-class, 1-channel U-Net (size divisor 4) fitted on synthetic blobs."""
    import keras

    from kerasseg import models
    from kerasseg.data.preprocess import normalize

    keras.utils.set_random_seed(0)
    model = models.build("unet", input_shape=(None, None, 1), num_classes=3, base_filters=4, depth=2)
    images, labels = make_blobs(16, 48, seed=0)
    x = np.asarray(normalize(images, NORMALIZATION))
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    model.fit(x, labels, batch_size=8, epochs=12, verbose=0)
    return model


@pytest.fixture(scope="session")
def exported(trained_unet, tmp_path_factory):
    """``(base_dir, version_dir)`` of the trained U-Net exported as version 1."""
    from kerasseg.export import export

    base = tmp_path_factory.mktemp("export") / "blobs"
    version_dir = export(trained_unet, str(base), class_names=CLASS_NAMES, normalization=NORMALIZATION)
    return base, version_dir


@pytest.fixture(scope="session")
def loaded(exported):
    import tensorflow as tf

    return tf.saved_model.load(exported[1])
