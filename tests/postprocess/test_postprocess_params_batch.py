"""CRFParams config round-trip, and batches in worker processes equal serial runs."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from kerasseg.postprocess import CRFConfigError, CRFInputError, CRFParams, dense_crf
from kerasseg.postprocess.batch import dense_crf_batch, resolve_n_jobs


def test_params_round_trip_through_yaml():
    p = CRFParams(iterations=8, bilateral_srgb=(10.0, 12.0, 14.0), window={"center": 40, "width": 400},
                  kernel="full", use_generic_path=True, enabled=True)
    text = yaml.safe_dump({"crf": p.to_dict()})
    back = CRFParams.from_dict(yaml.safe_load(text)["crf"])
    assert back == p
    assert CRFParams.from_dict(None) == CRFParams() == CRFParams.from_dict({})
    assert CRFParams.from_dict({"window": [40, 400]}).window == (40, 400)
    kwargs = CRFParams().kwargs()
    assert "enabled" not in kwargs and kwargs["bilateral_sxy"] == 80.0


@pytest.mark.parametrize(
    "section, message",
    [
        ({"bilateral_sgrb": 3}, "unknown CRF parameter"),
        ({"iterations": -1}, "iterations"),
        ({"iterations": 2.5}, "iterations"),
        ({"gaussian_sxy": "wide"}, "gaussian_sxy must be a number"),
        ({"normalization": "l2"}, "normalization"),
        ({"window": {"center": 1}}, "window"),
        ({"window": {"percentiles": [99, 1]}}, "percentiles"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_bad_config_sections_name_the_origin(section, message):
    with pytest.raises(CRFConfigError, match="train.yaml: crf") as e:
        CRFParams.from_dict(section, origin="train.yaml: crf")
    assert message in str(e.value)


def _batch(n=4, size=40, seed=1):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    logits = rng.normal(size=(n, size, size, 3))
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    return images, probs


def test_batch_with_two_workers_is_identical_to_serial():
    images, probs = _batch()
    params = CRFParams(bilateral_sxy=20, iterations=3).kwargs()
    serial_r, serial_l = dense_crf_batch(images, probs, n_jobs=1, **params)
    par_r, par_l = dense_crf_batch(list(images), list(probs), n_jobs=2, **params)
    assert serial_r.shape == (4, 40, 40, 3) and serial_l.shape == (4, 40, 40)
    assert isinstance(par_r, list) and len(par_r) == 4
    for i in range(4):
        np.testing.assert_array_equal(par_r[i], serial_r[i])
        np.testing.assert_array_equal(par_l[i], serial_l[i])
        single_r, _ = dense_crf(images[i], probs[i], **params)
        np.testing.assert_array_equal(single_r, serial_r[i])


def test_batch_errors_name_the_item_even_from_a_worker():
    images, probs = _batch(n=3, size=16)
    probs = probs.copy()
    probs[2, 0, 0] = np.nan
    with pytest.raises(CRFInputError, match="scan_c.png"):
        dense_crf_batch(images, probs, n_jobs=2, names=["scan_a.png", "scan_b.png", "scan_c.png"])
    with pytest.raises(CRFInputError, match="3 images but 2"):
        dense_crf_batch(images, probs[:2])


def test_resolve_n_jobs():
    assert resolve_n_jobs(None) == 1 and resolve_n_jobs(3) == 3
    assert resolve_n_jobs(-1) >= 1


def test_dense_crf_layer_arguments_keep_the_layer_fields_and_name_what_is_lost():
    from kerasseg.layers.dense_crf import DenseCRF
    from kerasseg.postprocess.params import DENSE_CRF_LAYER_FIELDS, dense_crf_layer_arguments

    stored = CRFParams(iterations=3, bilateral_srgb=(5.0, 6.0, 7.0), enabled=True).to_dict()
    kwargs, notes = dense_crf_layer_arguments(stored)
    assert set(kwargs) == set(DENSE_CRF_LAYER_FIELDS) and kwargs["iterations"] == 3
    assert notes == []  # the defaults of kernel, normalization and window are what the layer does
    layer = DenseCRF(**kwargs)  # every field is a DenseCRF argument under the same name
    assert layer.get_config()["iterations"] == 3
    kwargs, notes = dense_crf_layer_arguments({"iterations": 2, "kernel": "full", "window": [40, 400]})
    assert kwargs == {"iterations": 2}
    assert [note.split(" has ")[0] for note in notes] == ["crf setting kernel='full'", "crf setting window=[40, 400]"]
    assert dense_crf_layer_arguments(None) == ({}, [])
