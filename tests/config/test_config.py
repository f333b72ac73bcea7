"""Config: typed sections, unknown keys with the nearest valid name, --set, YAML files."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from kerasseg.config import (
    Config,
    ConfigError,
    apply_overrides,
    from_dict,
    load_config,
    save_config,
    to_dict,
)

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_defaults_round_trip_through_yaml(tmp_path):
    config = from_dict({"training": {"epochs": 3}, "model": {"options": {"depth": 2}}})
    path = save_config(config, tmp_path / "run" / "config.yaml")
    again = load_config(path)
    assert again == config
    assert again.training.epochs == 3 and again.model.options == {"depth": 2}
    # every default is written out, so the file alone reproduces the run
    written = yaml.safe_load(pathlib.Path(path).read_text())
    assert written["schedule"]["power"] == 0.9
    assert written["training"]["batch_size"] == Config().training.batch_size


@pytest.mark.parametrize(
    "data, wrong, suggestion",
    [
        ({"training": {"epoch": 3}}, "training.epoch", "training.epochs"),
        ({"trainig": {}}, "trainig", "training"),
        ({"optimizer": {"learning_rat": 0.1}}, "optimizer.learning_rat", "optimizer.learning_rate"),
        ({"data": {"normalisation": {}}}, "data.normalisation", "data.normalization"),
        ({"crf": {"bilateral_sx": 3}}, "crf.bilateral_sx", "crf.bilateral_sxy"),
    ],
)
def test_unknown_key_names_key_and_nearest(data, wrong, suggestion):
    with pytest.raises(ConfigError) as err:
        from_dict(data)
    message = str(err.value)
    assert repr(wrong) in message
    assert f"did you mean {suggestion!r}" in message


def test_unknown_key_without_close_match_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'zzz'.*valid keys: callbacks"):
        from_dict({"zzz": 1})


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"training": {"epochs": "3"}}, "training.epochs must be int"),
        ({"training": {"epochs": 0}}, "training.epochs must be >= 1"),
        ({"optimizer": {"learning_rate": "fast"}}, "optimizer.learning_rate must be float"),
        ({"schedule": {"name": "cosin"}}, "did you mean 'cosine'"),
        ({"training": {"strategy": "mirored"}}, "did you mean 'mirrored'"),
        ({"data": {"image_size": [32]}}, "data.image_size"),
        ({"data": {"class_weights": "inverse"}}, "data.class_weights"),
        ({"finetune": {"frozen_epochs": 9}, "training": {"epochs": 3}}, "finetune.frozen_epochs"),
        ({"training": {"mixed_precision": "half"}}, "training.mixed_precision"),
        ({"crf": {"iterations": -1}}, "iterations"),
        ({"data": "x"}, "data must be a mapping"),
    ],
)
def test_bad_values_are_rejected(data, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        from_dict(data)


def test_int_accepted_for_float_and_kept_as_float():
    config = from_dict({"optimizer": {"learning_rate": 1}})
    assert config.optimizer.learning_rate == 1.0 and isinstance(config.optimizer.learning_rate, float)


def test_set_overrides_are_yaml_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training: {epochs: 5}\nmodel: {name: unet}\n")
    config = load_config(
        path,
        [
            "training.epochs=7",
            "data.image_size=[64, 48]",
            "training.mixed_precision=true",
            "model.options.base_filters=8",
            "optimizer.learning_rate=1e-4",
            "run_dir=runs/x",
            "training.steps_per_epoch=null",
        ],
    )
    assert config.training.epochs == 7
    assert config.data.image_size == [64, 48]
    assert config.training.mixed_precision is True
    assert config.model.options == {"base_filters": 8}
    assert config.optimizer.learning_rate == pytest.approx(1e-4)
    assert config.run_dir == "runs/x"
    assert config.training.steps_per_epoch is None


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("training.epoks=2", "'training.epoks' (did you mean 'training.epochs'?)"),
        ("training.epochs", "expected key.sub=value"),
        ("training.epochs=[1", "not valid YAML"),
        ("data.image_size.height=3", "has no sub-keys"),
        ("training.epochs=two", "training.epochs must be int"),
    ],
)
def test_bad_overrides(tmp_path, override, fragment):
    path = tmp_path / "c.yaml"
    path.write_text("training: {epochs: 5}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, [override])
    assert fragment in str(err.value)
    assert str(path) in str(err.value)  # the message names the file


def test_apply_overrides_does_not_mutate_input():
    data = {"training": {"epochs": 1}}
    out = apply_overrides(data, ["training.epochs=2"])
    assert data["training"]["epochs"] == 1 and out["training"]["epochs"] == 2


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: cannot read config"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listy)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_load_and_their_free_form_sections_are_valid(path):
    config = load_config(path)
    assert to_dict(config)["run_dir"]
    from kerasseg.data.augment import as_augment_config
    from kerasseg.data.preprocess import resolve_normalization

    as_augment_config(config.data.augmentation or None)  # raises on an unknown augmentation key
    if config.data.normalization.get("method") != "dataset":
        resolve_normalization(config.data.normalization)
    from kerasseg.losses import get

    get({"name": config.loss.name, **config.loss.options}, num_classes=2)
