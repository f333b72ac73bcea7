"""Strategy selection and multi-worker conventions (pure logic, no cluster needed)."""

from __future__ import annotations

import json
import os

import pytest

from kerasseg import distribute


def _tf_config(monkeypatch, cluster, task_type="worker", index=0):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}}))


def test_auto_without_cluster_depends_on_gpus(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.choose_strategy_name("auto", gpus=0) == "default"
    assert distribute.choose_strategy_name("auto", gpus=1) == "default"
    assert distribute.choose_strategy_name("auto", gpus=4) == "mirrored"


def test_auto_with_several_workers_is_multi_worker(monkeypatch):
    _tf_config(monkeypatch, {"worker": ["a:1", "b:2"]})
    assert distribute.choose_strategy_name("auto", gpus=8) == "multi_worker"
    _tf_config(monkeypatch, {"worker": ["a:1"]})  # a one-task cluster is no cluster
    assert distribute.choose_strategy_name("auto", gpus=0) == "default"
    _tf_config(monkeypatch, {"chief": ["c:0"], "worker": ["a:1"]})
    assert distribute.choose_strategy_name("auto", gpus=0) == "multi_worker"


@pytest.mark.parametrize("name", ["mirrored", "multi_worker", "one_device", "default"])
def test_forced_names_win(monkeypatch, name):
    _tf_config(monkeypatch, {"worker": ["a:1", "b:2"]})
    assert distribute.choose_strategy_name(name, gpus=0) == name


def test_unknown_strategy_and_bad_tf_config(monkeypatch):
    with pytest.raises(ValueError, match="unknown strategy 'mirror'"):
        distribute.choose_strategy_name("mirror")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        distribute.tf_config()


def test_chief_is_the_chief_task_or_worker_zero(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.is_chief()
    _tf_config(monkeypatch, {"worker": ["a:1", "b:2"]}, "worker", 0)
    assert distribute.is_chief()
    _tf_config(monkeypatch, {"worker": ["a:1", "b:2"]}, "worker", 1)
    assert not distribute.is_chief()
    _tf_config(monkeypatch, {"chief": ["c:0"], "worker": ["a:1"]}, "worker", 0)
    assert not distribute.is_chief()
    _tf_config(monkeypatch, {"chief": ["c:0"], "worker": ["a:1"]}, "chief", 0)
    assert distribute.is_chief()


def test_only_the_chief_writes_into_the_run_folder(monkeypatch, tmp_path):
    run = tmp_path / "run"
    _tf_config(monkeypatch, {"worker": ["a:1", "b:2"]}, "worker", 1)
    scratch = distribute.write_dir(str(run))
    assert not run.exists() and os.path.isdir(scratch) and str(tmp_path) not in scratch
    distribute.cleanup_write_dir(scratch, str(run))
    assert not os.path.exists(scratch)
    _tf_config(monkeypatch, {"worker": ["a:1", "b:2"]}, "worker", 0)
    assert distribute.write_dir(str(run)) == str(run) and run.is_dir()
    distribute.cleanup_write_dir(str(run), str(run))
    assert run.is_dir()  # the chief's real folder is never removed


def test_shard_policy_and_global_batch():
    assert distribute.shard_policy(4, 1) == "OFF"
    assert distribute.shard_policy(4, 2) == "DATA"
    assert distribute.shard_policy(4, 2, file_shardable=True) == "FILE"
    assert distribute.shard_policy(1, 2, file_shardable=True) == "DATA"  # too few files to split

    class Strategy:
        num_replicas_in_sync = 3

    assert distribute.global_batch_size(4, Strategy()) == 12
