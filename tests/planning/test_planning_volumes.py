"""`kerasseg plan` on volume datasets: spacing, patch, normalization and model follow the data
(converted with volumes2tfrecord from real files written here, and the real MSD hippocampus set)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from kerasseg_testing import SHARED_DATA

SimpleITK = pytest.importorskip("SimpleITK")
HIPPOCAMPUS = SHARED_DATA / "msd_hippocampus"


def _write(path: pathlib.Path, array: np.ndarray, spacing_zyx) -> None:
    image = SimpleITK.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    SimpleITK.WriteImage(image, str(path))


@pytest.fixture(scope="module")
def ct_dataset(tmp_path_factory) -> pathlib.Path:
    """Six int16 'CT' volumes (air -1000 HU, organ +40 HU) at two slice thicknesses."""
    from data_tools import convert_volumes

    root = tmp_path_factory.mktemp("ct")
    rng = np.random.default_rng(0)
    for i in range(6):
        spacing = (2.5 if i % 2 else 5.0, 0.8, 0.8)
        depth = 40 if i % 2 else 20  # the same 100 mm either way
        image = np.full((depth, 120, 110), -1000, np.int16) + rng.integers(-20, 20, (depth, 120, 110)).astype(np.int16)
        labels = np.zeros(image.shape, np.uint8)
        labels[depth // 4: 3 * depth // 4, 30:90, 30:80] = 1
        image[labels == 1] = 40 + rng.integers(-10, 10, int(labels.sum()))
        _write(root / "images" / f"ct{i}.nii.gz", image, spacing)
        _write(root / "labels" / f"ct{i}.nii.gz", labels, spacing)
    convert_volumes(root / "images", root / "labels", root / "data", labels="background,organ",
                    split="train=0.67,val=0.33")
    return root / "data"


def test_plan_for_ct_volumes(ct_dataset, tmp_path):
    from kerasseg.config import load_config
    from kerasseg.planning import make_plan

    plan = make_plan(str(ct_dataset), budget_minutes=5, probe=False, run_dir=str(tmp_path / "run"))
    config = plan.config
    assert config.model.name == "unet3d"
    from kerasseg import schema

    median = schema.read_dataset_info(str(ct_dataset)).volume["spacing"]["median"]
    assert median[0] in (2.5, 3.75, 5.0) and median[1:] == [pytest.approx(0.8)] * 2
    assert config.data.spacing == median  # slice thicknesses differ: resample to the median
    assert len(config.data.image_size) == 3 and all(v % 8 == 0 for v in config.data.image_size)
    assert config.data.normalization["method"] == "clip_zscore"  # int16 down to -1000: Hounsfield units
    assert config.training.batch_size >= 1 and config.loss.name == "dice_ce"
    reasons = {d.key: d.reason for d in plan.decisions}
    assert "resample" in reasons["data.spacing"] and "CT" in reasons["data.normalization"]
    written = tmp_path / "plan.yaml"
    plan.write(str(written))
    reloaded = load_config(str(written))
    assert reloaded.data.image_size == config.data.image_size and reloaded.model.name == "unet3d"


def test_plan_and_train_a_3d_attention_unet(ct_dataset, tmp_path):
    from kerasseg import artifacts, training
    from kerasseg.models.precision import compute_dtype
    from kerasseg.planning import make_plan

    plan = make_plan(str(ct_dataset), budget_minutes=5, probe=False, model="attention_unet3d",
                     run_dir=str(tmp_path / "run"))
    assert plan.config.model.name == "attention_unet3d"
    assert "Attention U-Net" in {d.key: d.reason for d in plan.decisions}["model.name"]
    config = plan.config
    config.model.options = {**config.model.options, "base_filters": 2}
    config.data.image_size = [16, 32, 32]
    config.training.epochs, config.training.steps_per_epoch, config.training.verbose = 1, 2, 0
    config.training.mixed_precision = False
    result = training.fit(config)
    loaded = artifacts.load_for_inference(result.best_model_path)
    assert loaded.info.model == "attention_unet3d" and loaded.info.volume is not None
    assert sum(type(layer).__name__ == "AttentionGate" for layer in loaded.model.layers) == 3
    assert compute_dtype(loaded.model) == "float32"


def test_plan_refuses_2d_model_for_volumes(ct_dataset):
    from kerasseg.planning import make_plan
    from kerasseg.planning.rules import PlanError

    with pytest.raises(PlanError, match="volumes.*unet3d"):
        make_plan(str(ct_dataset), budget_minutes=5, probe=False, model="deeplabv3plus")


@pytest.mark.skipif(not HIPPOCAMPUS.is_dir(), reason=f"real data not available: {HIPPOCAMPUS} is absent")
def test_plan_for_real_hippocampus(tmp_path):
    from data_tools import convert_volumes
    from kerasseg.planning import make_plan

    for folder in ("imagesTr", "labelsTr"):
        (tmp_path / folder).mkdir()
        for path in sorted((HIPPOCAMPUS / folder).glob("*.nii.gz"))[:12]:
            (tmp_path / folder / path.name).symlink_to(path)
    convert_volumes(tmp_path / "imagesTr", tmp_path / "labelsTr", tmp_path / "data",
                    labels="background,anterior,posterior", split="train=0.75,val=0.25")
    plan = make_plan(str(tmp_path / "data"), budget_minutes=5, probe=False)
    config = plan.config
    assert config.data.spacing is None  # every volume is at 1 mm already
    # the median volume (about 36 x 50 x 35) fits one patch rounded up to 8
    assert all(v % 8 == 0 for v in config.data.image_size) and 32 <= config.data.image_size[0] <= 48
    assert config.data.normalization["method"] == "zscore"  # MRI: no physical intensity scale
