"""Issue 20, training and config rows: no poisoned training, nothing lost, clear errors.

Rows 6 (atomic backups, a kill during the backup write), 7 (negative steps),
8 (non-finite learning rate / loss), 9 (nested option keys, duplicate YAML keys),
10 (shards checked against dataset.json before the first step), 11 (a corrupt
record names its shard), 12 (models trained by the CLI reload in a fresh process
without custom_objects), 13 (a changed architecture on resume, an augmentation
typo, a file that cannot be written). Every case runs for real: real TFRecords,
real ``kerasseg train`` processes, real SIGKILLs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

from kerasseg_testing import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests" / "training"))
import training_helpers as helpers  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return helpers.write_dataset(tmp_path_factory.mktemp("safety_data"), splits={"train": 8, "val": 4})


def _train(tmp_path, data_dir, *, name="run", overrides=(), in_process=None, **sections):
    """``kerasseg train`` on a tiny config: in a subprocess, or in this process when
    ``in_process`` is pytest's ``capsys`` (same exit codes and messages, no start-up cost)."""
    config = helpers.write_yaml(tmp_path / f"{name}.yaml", helpers.tiny_config(data_dir, tmp_path / name, **sections))
    args = ["train", str(config)]
    for item in overrides:
        args += ["--set", item]
    if in_process is None:
        return helpers.run_cli(args), tmp_path / name
    from kerasseg.cli import main

    code = main(args)
    captured = in_process.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err), tmp_path / name


def _assert_refused(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr[-2000:]


# ----------------------------------------------------------------------------- row 6


KILL_DURING_BACKUP = textwrap.dedent("""
    import os, signal, sys
    import keras
    from kerasseg import training

    real = keras.Model.save_weights
    def save_weights(self, filepath, *args, **kwargs):
        name = os.path.basename(str(filepath))
        if name.startswith(".part-") and name.endswith("-epoch-0003.weights.h5"):
            with open(filepath, "wb") as f:      # half a file, then the process dies
                f.write(b"\\x89HDF\\r\\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, filepath, *args, **kwargs)
    keras.Model.save_weights = save_weights
    training.fit(sys.argv[1])
""")


def test_row6_kill_while_the_backup_is_written_resumes_from_the_last_complete_epoch(dataset, tmp_path):
    config = helpers.write_yaml(tmp_path / "kill.yaml", helpers.tiny_config(
        dataset, tmp_path / "run", training={"epochs": 4, "steps_per_epoch": 2, "batch_size": 2}))
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_BACKUP, str(config)], cwd=REPO_ROOT,
                            env=helpers.subprocess_env(), capture_output=True, text=True, timeout=240)
    assert killed.returncode == -9, killed.stderr[-2000:]
    backup = tmp_path / "run" / "backup" / "phase1"
    assert json.loads((backup / "state.json").read_text())["epoch"] == 2  # the complete one
    (torn,) = backup.glob(".part-*-epoch-0003.weights.h5")
    assert torn.stat().st_size < 100  # the torn write
    again = helpers.run_cli(["train", str(config)])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming after epoch 2" in again.stderr
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["0", "1", "2", "3"]
    assert not (tmp_path / "run" / "backup").exists()


def test_row6_read_backup_ignores_a_torn_weights_file(tmp_path):
    from kerasseg.training.callbacks import read_backup

    (tmp_path / "epoch-0002.weights.h5").write_bytes(b"complete enough")
    (tmp_path / "state.json").write_text(json.dumps({"epoch": 2, "weights": "epoch-0002.weights.h5"}))
    (tmp_path / ".part-123-0badc0de-epoch-0003.weights.h5").write_bytes(b"")
    assert read_backup(str(tmp_path)) == (2, str(tmp_path / "epoch-0002.weights.h5"))
    (tmp_path / "epoch-0002.weights.h5").unlink()
    assert read_backup(str(tmp_path)) == (0, None)  # a state naming a missing file: start the phase over


# ----------------------------------------------------------------------------- rows 7, 8, 9


@pytest.mark.parametrize("override, fragment", [
    ("training.steps_per_epoch=-3", "training.steps_per_epoch must be >= 1"),
    ("training.validation_steps=0", "training.validation_steps must be >= 1"),
    ("optimizer.learning_rate=.nan", "optimizer.learning_rate must be a finite number"),
    ("optimizer.learning_rate=.inf", "optimizer.learning_rate must be a finite number"),
    ("optimizer.clipnorm=-1", "optimizer.clipnorm must be a finite number > 0"),
    ("data.normalization={methd: dataset}", "unknown key 'methd'"),
    ("data.normalization.methd=dataset", "did you mean 'method'"),
    ("data.normalization={method: window, centre: 40, width: 400}", "did you mean 'center'"),
    ("data.augmentation={hflp: 0.5}", "did you mean 'hflip'"),
    ("model.options={base_filter: 8}", "did you mean 'base_filters'"),
    ("optimizer.momentum=0.9", "optimizer.momentum is used by sgd only"),
])
def test_rows7_8_9_bad_values_are_refused_before_training(dataset, tmp_path, override, fragment, capsys):
    result, run = _train(tmp_path, dataset, overrides=[override], in_process=capsys)
    _assert_refused(result, fragment)
    assert not (run / "history.csv").exists() and not (run / "best.keras").exists()


def test_row9_duplicate_yaml_keys_are_an_error(dataset, tmp_path, capsys):
    config = tmp_path / "dup.yaml"
    config.write_text(textwrap.dedent(f"""
        run_dir: {tmp_path / 'dup'}
        data: {{path: {dataset}, image_size: [32, 32]}}
        training: {{epochs: 1}}
        training: {{epochs: 50}}
    """))
    from kerasseg.cli import main

    code = main(["train", str(config)])
    result = subprocess.CompletedProcess([], code, "", capsys.readouterr().err)
    _assert_refused(result, "duplicate key 'training'", "line 5")


def test_row8_a_diverging_run_stops_with_a_clear_error_and_saves_no_nonfinite_model(dataset, tmp_path):
    import keras

    from kerasseg import training
    from kerasseg.config import from_dict

    config = from_dict(helpers.tiny_config(
        dataset, tmp_path / "diverge", training={"epochs": 3, "steps_per_epoch": 4, "batch_size": 2},
        optimizer={"name": "sgd", "learning_rate": 1e12}, loss={"name": "ce"},
    ))
    with pytest.raises(training.TrainingError, match="non-finite|became nan|became inf"):
        training.fit(config)
    for name in ("best.keras", "last.keras"):
        path = tmp_path / "diverge" / name
        if path.exists():
            model = keras.saving.load_model(path, compile=False)
            assert all(np.isfinite(w).all() for w in model.get_weights()), name


# ----------------------------------------------------------------------------- rows 10, 11


def _copy(dataset, tmp_path):
    import shutil

    target = tmp_path / "data"
    shutil.copytree(dataset, target)
    return target


@pytest.mark.parametrize("damage, fragment", [
    ("missing_shard", "train-00001-of-00002.tfrecord"),
    ("empty_shard", "train-00000-of-00002.tfrecord"),
    ("count_100", "100"),
    ("class_names_string", "class_names"),
    ("class_names_three", "class_names"),
])
def test_row10_training_checks_the_shards_against_dataset_json(dataset, tmp_path, damage, fragment, capsys):
    data = _copy(dataset, tmp_path)
    info = json.loads((data / "dataset.json").read_text())
    if damage == "missing_shard":
        (data / "train-00001-of-00002.tfrecord").unlink()
    elif damage == "empty_shard":
        (data / "train-00000-of-00002.tfrecord").write_bytes(b"")
    elif damage == "count_100":
        info["splits"]["train"] = 100
    elif damage == "class_names_string":
        info["class_names"] = "lesion"
    elif damage == "class_names_three":
        info["class_names"] = ["background", "disk", "extra"]
    (data / "dataset.json").write_text(json.dumps(info))
    result, run = _train(tmp_path, data, in_process=capsys)
    _assert_refused(result, fragment)
    assert not (run / "history.csv").exists()


def test_row11_a_corrupt_record_names_its_shard_and_the_fix(dataset, tmp_path, capsys):
    data = _copy(dataset, tmp_path)
    shard = data / "train-00000-of-00002.tfrecord"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # flip one byte inside a record's payload
    shard.write_bytes(bytes(raw))
    result, _ = _train(tmp_path, data, in_process=capsys)
    _assert_refused(result, "train-00000-of-00002.tfrecord", "kerasseg data verify")


# ----------------------------------------------------------------------------- row 12


RELOAD = textwrap.dedent("""
    import sys
    order, paths = sys.argv[1], sys.argv[2:]
    if order == "models.load_model":
        import kerasseg.models
        load = kerasseg.models.load_model
    elif order == "kerasseg_then_keras":
        import kerasseg, keras
        load = keras.saving.load_model
    else:
        import keras, kerasseg
        load = keras.saving.load_model
    for path in paths:
        model = load(path)
        assert model.optimizer is not None and model.loss is not None, f"{path}: compiled state lost"
        print("loaded", path, type(model.loss).__name__, type(model.optimizer).__name__)
""")


@pytest.fixture(scope="module")
def cli_trained_models(dataset, tmp_path_factory):
    """Models saved by ``kerasseg train`` with custom layers, losses and schedules."""
    root = tmp_path_factory.mktemp("reload")
    runs = {
        "deeplab_sgd_poly_warmup": dict(
            model={"name": "deeplabv3plus", "options": {"backbone": "mobilenetv2", "alpha": 0.35,
                                                         "aspp_filters": 8, "decoder_filters": 8,
                                                         "low_level_filters": 8}},
            optimizer={"name": "sgd", "learning_rate": 0.01, "momentum": 0.9},
            schedule={"name": "polynomial", "warmup_epochs": 1}, loss={"name": "focal_tversky"}),
        "attention_unet_adamw_cosine_sum": dict(
            model={"name": "attention_unet", "options": {"base_filters": 4, "depth": 2}},
            optimizer={"name": "adamw", "learning_rate": 0.01}, schedule={"name": "cosine"},
            loss={"name": "sum", "options": {"sum": [{"name": "dice", "weight": 1}, {"name": "focal", "weight": 2}]}}),
    }
    paths = {}
    for index, (name, sections) in enumerate(runs.items()):
        # the first through the CLI in its own process, the second through fit() in this one
        result, run = _train(root, dataset, name=name, training={"epochs": 2, "steps_per_epoch": 1, "batch_size": 2},
                             in_process=None if index == 0 else _NoCapture(), **sections)
        assert result.returncode == 0, result.stderr[-3000:]
        paths[name] = run / "last.keras"
    return paths


class _NoCapture:
    """Stands in for ``capsys`` where a module-scoped fixture cannot use it."""

    def readouterr(self):
        return types.SimpleNamespace(out="", err="")


@pytest.mark.parametrize("order", ["models.load_model", "kerasseg_then_keras", "keras_then_kerasseg"])
def test_row12_cli_trained_models_reload_in_a_fresh_process_without_custom_objects(cli_trained_models, order):
    # one fresh process per import order loads every model (the order is what a process start decides)
    paths = [str(path) for path in cli_trained_models.values()]
    result = subprocess.run([sys.executable, "-c", RELOAD, order, *paths], cwd=REPO_ROOT,
                            env=helpers.subprocess_env(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"{order}: {result.stderr[-3000:]}"
    assert [line.split()[1] for line in result.stdout.splitlines() if line.startswith("loaded")] == paths


# ----------------------------------------------------------------------------- row 13


def test_row13_a_resume_with_another_architecture_is_refused_before_touching_the_run(dataset, tmp_path, capsys):
    result, run = _train(tmp_path, dataset, training={"epochs": 3, "steps_per_epoch": 1, "batch_size": 2},
                         in_process=capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    # leave an unfinished run behind (what a kill leaves): a backup folder
    (run / "backup" / "phase1").mkdir(parents=True)
    saved_config = (run / "config.yaml").read_text()
    saved_history = (run / "history.csv").read_text()
    result, _ = _train(tmp_path, dataset, model={"name": "segnet", "options": {"base_filters": 4}},
                       training={"epochs": 3, "steps_per_epoch": 1, "batch_size": 2}, in_process=capsys)
    _assert_refused(result, "model.name: 'unet' -> 'segnet'", "another run_dir")
    assert (run / "config.yaml").read_text() == saved_config
    assert (run / "history.csv").read_text() == saved_history


def test_row13_a_file_that_cannot_be_written_is_a_clear_error(dataset, tmp_path):
    # RLIMIT_FSIZE makes every write beyond 64 KiB fail like a full disk (EFBIG)
    script = textwrap.dedent("""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
        from kerasseg.cli import main
        sys.exit(main(["train", sys.argv[1]]))
    """)
    config = helpers.write_yaml(tmp_path / "full.yaml", helpers.tiny_config(
        dataset, tmp_path / "full", training={"epochs": 1, "steps_per_epoch": 1, "batch_size": 2},
        model={"options": {"base_filters": 16, "depth": 2}}))
    result = subprocess.run([sys.executable, "-c", script, str(config)], cwd=REPO_ROOT,
                            env=helpers.subprocess_env(), capture_output=True, text=True, timeout=240)
    _assert_refused(result, "cannot write")
