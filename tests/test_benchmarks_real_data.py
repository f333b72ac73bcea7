"""The real-data benchmarks at toy size: ISBI 2012 (convert, plan, train, evaluate through the
CLI, U-Net only) and MSD hippocampus (volumes2tfrecord, plan, train, evaluate, predict).
Apart from tests/test_benchmarks.py so that `make bench-quick` runs them beside the other benchmarks
(marked ``benchmark``: `make test` leaves them out)."""

from __future__ import annotations

import pytest

from kerasseg_testing import REAL_DATA_BENCHMARKS, SHARED_DATA, run_quick_benchmarks

ISBI_KEYS = [
    f"isbi_unet_{figure}"
    for figure in ("mean_dice", "membrane_dice", "pixel_error", "mean_dice_crf", "mean_dice_tta", "folds",
                   "train_minutes")
]
HIPPOCAMPUS_KEYS = [
    f"hippocampus_{figure}"
    for figure in ("anterior_dice", "posterior_dice", "hd95_mm", "folds", "convert_volumes_per_s",
                   "predict_largest_seconds", "predict_peak_rss_mb")
]


@pytest.mark.benchmark
@pytest.mark.slow
def test_quick_real_data_benchmarks_write_their_keys(tmp_path):
    figures = run_quick_benchmarks(list(REAL_DATA_BENCHMARKS), tmp_path)
    # without ../shared/data a benchmark returns no figures and says why; it must still run
    expected = ((ISBI_KEYS if (SHARED_DATA / "isbi2012_membrane").is_dir() else [])
                + (HIPPOCAMPUS_KEYS if (SHARED_DATA / "msd_hippocampus").is_dir() else []))
    missing = [key for key in expected if key not in figures]
    assert missing == []
    assert all(isinstance(figures[key], float) for key in expected)
