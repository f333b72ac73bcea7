"""Choosing a ``tf.distribute`` strategy and the multi-worker conventions around it.

``strategy: auto`` picks, in order:

* ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names more than one task
  in its cluster (workers, plus a chief if there is one);
* ``MirroredStrategy`` when more than one GPU is visible (forced
  ``mirrored`` on a machine without GPUs mirrors over the logical CPU devices,
  which is how tests exercise it);
* the default (no-op) strategy otherwise.

``one_device | mirrored | multi_worker | default`` force one. The batch size
in configs is per replica; :func:`global_batch_size` multiplies it by
``strategy.num_replicas_in_sync``.

Only the chief writes outputs. Other workers write into a temporary folder
that :func:`write_dir` hands out and :func:`cleanup_write_dir` removes, the
usual Keras multi-worker pattern (every worker must still *run* the saving
code, since saving a distributed model may involve collective ops).

``MultiWorkerMirroredStrategy`` must be created at program start, before any
other TensorFlow op runs; ``kerasseg train`` does that.

Heartbeats: the workers' coordination service declares a task dead when it
misses heartbeats for a while, TensorFlow's own default being 10 s. A worker
whose CPU is saturated (several TensorFlow processes on one small machine, a
long graph trace) can miss that and the whole run then fails with "heartbeat
timeout". :func:`make_strategy` sets the timeout to
:data:`HEARTBEAT_TIMEOUT_S` (a worker that really died is reported that much
later). TensorFlow has no public setting for it, so this is done through
``tensorflow.python.eager.context.context().configure_coordination_service``,
the call ``MultiWorkerMirroredStrategy`` itself makes, with the same jobs; the
strategy keeps a coordination service that is already configured. This is
kerasseg's only call of a private TensorFlow function (private Keras patches
live in :mod:`kerasseg.training.keras_workarounds`);
``tests/training/test_training_distributed.py`` checks that it takes effect.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

__all__ = [
    "STRATEGIES",
    "HEARTBEAT_TIMEOUT_S",
    "tf_config",
    "cluster_size",
    "task_info",
    "is_chief",
    "choose_strategy_name",
    "make_strategy",
    "global_batch_size",
    "strategy_name",
    "num_workers",
    "write_dir",
    "cleanup_write_dir",
    "shard_policy",
    "apply_sharding",
]

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")

HEARTBEAT_TIMEOUT_S = 120


def tf_config() -> dict:
    """Parsed ``TF_CONFIG`` (empty dict when unset).

    Raises:
        ValueError: ``TF_CONFIG`` is set but is not valid JSON.
    """
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from e
    return value if isinstance(value, dict) else {}


def cluster_size(config: dict | None = None) -> int:
    """Number of training tasks (chief + workers) named by ``TF_CONFIG``."""
    config = tf_config() if config is None else config
    cluster = config.get("cluster") or {}
    return sum(len(cluster.get(kind) or []) for kind in ("chief", "worker"))


def task_info(config: dict | None = None) -> tuple[str, int]:
    """``(task_type, task_id)`` of this process; ``("worker", 0)`` when not in a cluster."""
    config = tf_config() if config is None else config
    task = config.get("task") or {}
    return str(task.get("type") or "worker"), int(task.get("index") or 0)


def is_chief(strategy: Any = None) -> bool:
    """True for the process that writes outputs.

    That is the ``chief`` task when the cluster has one, else worker 0; any
    process outside a cluster is its own chief.
    """
    if strategy is not None:
        resolver = getattr(strategy, "cluster_resolver", None)
        if resolver is not None and getattr(resolver, "task_type", None) is not None:
            kind, index = resolver.task_type, resolver.task_id
            cluster = resolver.cluster_spec().as_dict()
            if "chief" in cluster:
                return kind == "chief"
            return kind == "worker" and index == 0
    config = tf_config()
    if cluster_size(config) <= 1:
        return True
    kind, index = task_info(config)
    if "chief" in (config.get("cluster") or {}):
        return kind == "chief"
    return kind == "worker" and index == 0


def choose_strategy_name(name: str = "auto", *, gpus: int | None = None) -> str:
    """Resolve ``auto`` to a concrete strategy name (see module docstring)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; expected one of {list(STRATEGIES)}")
    if name != "auto":
        return name
    if cluster_size() > 1:
        return "multi_worker"
    if gpus is None:
        import tensorflow as tf

        gpus = len(tf.config.list_physical_devices("GPU"))
    return "mirrored" if gpus > 1 else "default"


def make_strategy(name: str = "auto", *, heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S) -> Any:
    """Create the ``tf.distribute.Strategy`` for ``name`` (``auto`` resolved first).

    Args:
        name: one of :data:`STRATEGIES`.
        heartbeat_timeout_s: for ``multi_worker``, how long a worker may miss its
            heartbeats before the run is failed (see the module docstring).
    """
    import tensorflow as tf

    resolved = choose_strategy_name(name)
    if resolved == "multi_worker":
        if cluster_size() < 1:
            raise ValueError(
                "strategy 'multi_worker' needs TF_CONFIG naming the cluster and this task"
            )
        _configure_heartbeats(heartbeat_timeout_s)
        return tf.distribute.MultiWorkerMirroredStrategy()
    if resolved == "mirrored":
        # All GPUs; on a CPU-only machine split into logical devices
        # (tf.config.set_logical_device_configuration) all logical CPUs.
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if resolved == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    return tf.distribute.get_strategy()


def _configure_heartbeats(timeout_s: float) -> None:
    """Configure the multi-worker coordination service as ``MultiWorkerMirroredStrategy``
    would, with a heartbeat timeout of ``timeout_s`` (a no-op if one is configured)."""
    import tensorflow as tf
    from tensorflow.python.eager import context

    if context.context().coordination_service is not None:
        return
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    spec = resolver.cluster_spec()
    if resolver.task_type not in ("chief", "worker"):
        return
    jobs = [job for job in ("chief", "worker") if job in spec.jobs]
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2

    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=f"/job:{jobs[0]}/replica:0/task:0",
        coordinated_jobs=[
            coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job)) for job in jobs
        ],
        heartbeat_timeout_in_ms=int(timeout_s * 1000),
    )


def strategy_name(strategy: Any) -> str:
    """Public name of ``strategy``'s class (``MultiWorkerMirroredStrategy``, not
    its implementation class ``CollectiveAllReduceStrategy``)."""
    name = type(strategy).__name__
    return {
        "CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy",
        "_DefaultDistributionStrategy": "default strategy",
    }.get(name, name)


def num_workers(strategy: Any) -> int:
    """Number of worker processes taking part in ``strategy`` (1 unless multi-worker)."""
    extended = getattr(strategy, "extended", None)
    return int(getattr(extended, "_num_workers", 1) or 1)


def global_batch_size(per_replica: int, strategy: Any) -> int:
    """Global batch = per-replica batch x ``strategy.num_replicas_in_sync``."""
    return int(per_replica) * int(strategy.num_replicas_in_sync)


def write_dir(path: str, strategy: Any = None) -> str:
    """Folder this process should write ``path``'s outputs into.

    The chief gets ``path`` itself (created); other workers get a fresh
    temporary folder, removed later by :func:`cleanup_write_dir`.
    """
    if is_chief(strategy):
        os.makedirs(path, exist_ok=True)
        return path
    kind, index = task_info()
    return tempfile.mkdtemp(prefix=f"kerasseg-{kind}{index}-")


def cleanup_write_dir(path: str, real_path: str) -> None:
    """Remove a non-chief's temporary folder (no-op for the chief's real folder)."""
    if os.path.abspath(path) != os.path.abspath(real_path):
        shutil.rmtree(path, ignore_errors=True)


def shard_policy(num_files: int, workers: int, *, file_shardable: bool = False) -> str:
    """Auto-shard policy name for a dataset read from ``num_files`` TFRecord files.

    * ``OFF`` on a single worker (nothing to split);
    * ``FILE`` when the pipeline reads files directly (``file_shardable``) and
      every worker gets at least one file: each worker reads only its files;
    * ``DATA`` otherwise: every worker reads all files and keeps every
      ``workers``-th element. kerasseg's pipeline numbers elements
      (``Dataset.enumerate``) to derive stateless per-element augmentation
      seeds, which ``FILE`` sharding cannot see through ("unshardable source
      dataset"), so training uses ``DATA``; it also keeps the per-worker
      batches equal whatever the shard sizes.
    """
    if workers <= 1:
        return "OFF"
    return "FILE" if file_shardable and num_files >= workers else "DATA"


def apply_sharding(dataset: Any, *, num_files: int, strategy: Any, file_shardable: bool = False) -> Any:
    """Set the auto-shard policy of ``dataset`` for ``strategy`` (see :func:`shard_policy`)."""
    import tensorflow as tf

    policy = shard_policy(num_files, num_workers(strategy), file_shardable=file_shardable)
    if policy == "OFF":
        return dataset  # one worker: nothing to shard (and no log noise about it)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = getattr(
        tf.data.experimental.AutoShardPolicy, policy
    )
    return dataset.with_options(options)
