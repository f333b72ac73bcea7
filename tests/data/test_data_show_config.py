"""`kerasseg data show --config`: the grid shows what that config's training stream feeds the model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from kerasseg.cli import main


@pytest.fixture(scope="module")
def isbi_two(isbi_membrane, tmp_path_factory):
    from data_tools import convert_mask_folder

    root = tmp_path_factory.mktemp("show")
    train = isbi_membrane / "data" / "membrane" / "train"
    for kind in ("image", "label"):
        (root / kind).mkdir()
        for i in ("0", "1", "2"):
            shutil.copyfile(train / kind / f"{i}.png", root / kind / f"{i}.png")
    (root / "class_map.txt").write_text("0 membrane\n255 cell\n")
    convert_mask_folder(root / "image", root / "label", root / "isbi", class_map=root / "class_map.txt",
                        split="train=1")
    return root / "isbi"


def test_examples_as_fed_follow_the_config(isbi_two):
    from kerasseg.config import from_dict
    from kerasseg.data.visualize import examples_as_fed

    config = from_dict({"data": {"path": str(isbi_two), "geometry": "random_crop", "image_size": [96, 64],
                                 "normalization": {"method": "zscore"}, "augmentation": {}}})
    items = examples_as_fed(str(isbi_two), "train", num_images=3, config=config)
    assert [item["images"].shape for item in items] == [(96, 64, 1)] * 3
    for item in items:  # zscore of the whole stored image, then a native-scale crop: near 0 mean, unit std
        assert abs(float(item["images"].mean())) < 0.6 and 0.5 < float(item["images"].std()) < 1.6
        assert set(np.unique(item["masks"])) <= {0, 1, 255}
    plain = examples_as_fed(str(isbi_two), "train", num_images=1, augment=False, image_size=(128, 128))
    assert plain[0]["images"].shape == (128, 128, 1) and 0.0 <= plain[0]["images"].min() <= plain[0]["images"].max() <= 1.0


def test_data_show_config_command_writes_the_grid(isbi_two, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  path: {isbi_two}\n  geometry: random_crop\n  image_size: [64, 64]\n")
    out = tmp_path / "fed.png"
    assert main(["data", "show", "--config", str(config), "-n", "2", "--out", str(out),
                 "--set", "data.augmentation={hflip: 1.0}"]) == 0
    assert out.is_file() and out.stat().st_size > 1000
    assert main(["data", "show", str(isbi_two), "--config", str(config), "--augment", "--out", str(out)]) == 2
    assert "--config decides the augmentation" in capsys.readouterr().err
    assert main(["data", "show", str(isbi_two), "--set", "data.cache=true"]) == 2
