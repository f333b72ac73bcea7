"""Quiet TensorFlow start-up for the command-line entry points.

Importing TensorFlow prints C++ banners on stderr ("All log messages before
absl::InitializeLog() is called are written to STDERR", "oneDNN custom
operations are on ...", "Could not find cuda drivers ...", the CPU-feature
notice), some before ``TF_CPP_MIN_LOG_LEVEL`` is read. :func:`import_tensorflow_quietly`
imports TensorFlow with file descriptor 2 pointed at a temporary file, so those
lines go nowhere unless the import fails (then they are replayed, since they may
explain why); afterwards only errors are logged. Python warnings and our own
messages are untouched. ``--verbose`` on the commands skips all of this.

Library users (``import kerasseg``) are not affected: only the ``kerasseg``,
``labelme2tfrecord`` and ``masks2tfrecord`` entry points call it.
"""

from __future__ import annotations

import os
import sys
import tempfile


def import_tensorflow_quietly(*, verbose: bool = False) -> None:
    """Import TensorFlow now, its start-up banners hidden unless ``verbose``.

    A no-op when TensorFlow is already imported (its banners are already out),
    and when ``verbose``: then TensorFlow logs as configured by the environment.
    """
    if verbose or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (an embedded interpreter): import as is
        import tensorflow  # noqa: F401

        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf
        except BaseException:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            sys.stderr.write(capture.read().decode("utf-8", "replace"))
            raise
        os.dup2(saved, 2)
        os.close(saved)
    tf.get_logger().setLevel("ERROR")
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl ships with TensorFlow; nothing to quiet without it
        pass


__all__ = ["import_tensorflow_quietly"]
