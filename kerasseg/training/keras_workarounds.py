"""Every patch of private Keras internals kerasseg needs, in one place.

Each entry names the upstream issue, the Keras versions it was seen on, and the
test that fails once the patch is no longer needed
(``tests/training/test_keras_workarounds.py``), so it can be dropped then.

1. **Symbolic build under ``MultiWorkerMirroredStrategy``**
   (keras-team/keras#20585; Keras 3.0-3.15 with TensorFlow 2.16-2.21).
   ``Model.fit`` builds the metrics and optimizer symbolically from the first
   batch, which it first passes through ``strategy.reduce``; the collective
   strategy cannot reduce the ``(x, y, sample_weight)`` tuple of per-replica
   values and ``fit`` fails ("Attempt to convert a value (PerReplica...)").
   The build needs only shapes and dtypes, so we build from the dataset's
   ``element_spec`` and skip the per-``fit`` symbolic build
   (``Model._symbolic_build`` / ``Model._maybe_symbolic_build``).
2. **Scalar step logs under ``MultiWorkerMirroredStrategy``**
   (tensorflow/tensorflow#72388; same versions). Each step's logs are reduced
   with ``strategy.reduce("MEAN", value, axis=0)``, which fails on scalars.
   Returning every scalar log as shape ``(1,)`` makes that reduction the plain
   mean over the replicas' values, a scalar again.
"""

from __future__ import annotations

from typing import Any

AFFECTED_KERAS = "3.0-3.15"


def prebuild_for_multi_worker(model: Any, dataset: Any, strategy: Any) -> None:
    """Apply patches 1 and 2 to a compiled ``model`` trained on ``dataset`` under ``strategy``."""
    import tensorflow as tf

    with strategy.scope():
        model._symbolic_build(data_batch=dataset.element_spec)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None

    def as_vector(value: Any) -> Any:
        if isinstance(value, tf.Tensor) and value.shape.rank == 0:
            return tf.reshape(value, [1])
        return value

    for name in ("train_step", "test_step"):
        step = getattr(type(model), name).__get__(model)
        setattr(model, name, lambda data, _step=step: tf.nest.map_structure(as_vector, _step(data)))


__all__ = ["AFFECTED_KERAS", "prebuild_for_multi_worker"]
