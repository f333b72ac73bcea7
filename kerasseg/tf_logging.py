"""Quiet TensorFlow start-up for the command-line entry points.

Importing TensorFlow prints C++ banners on stderr ("All log messages before
absl::InitializeLog() is called are written to STDERR", "oneDNN custom
operations are on ...", "Could not find cuda drivers ...", the CPU-feature
notice), some before ``TF_CPP_MIN_LOG_LEVEL`` is read. :func:`import_tensorflow_quietly`
imports TensorFlow with file descriptor 2 pointed at a temporary file, so those
lines go nowhere unless the import fails (then they are replayed, since they may
explain why); afterwards only errors are logged. Python warnings and our own
messages are untouched. ``--verbose`` on the commands skips all of this.

The ``kerasseg`` command imports TensorFlow this way before running a
subcommand. The labelme and mask-folder converters never import it (they
write records with :mod:`kerasseg.tfrecord_file`); the volume converter and
``--verify`` import it only once the sources have been checked (a bad file is
refused without loading TensorFlow), so the converters' entry points call
:func:`quiet_tensorflow` and those import through :func:`import_tensorflow`,
which is quiet only after that.

Library users (``import kerasseg``) are not affected: only the ``kerasseg``,
``labelme2tfrecord`` and ``masks2tfrecord`` entry points ask for quiet.
"""

from __future__ import annotations

import os
import sys
import tempfile


_quiet = False


def quiet_tensorflow(*, verbose: bool = False) -> None:
    """Make later :func:`import_tensorflow` calls (and TensorFlow's C++ logging) quiet unless ``verbose``."""
    global _quiet
    _quiet = not verbose
    if _quiet:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def import_tensorflow():
    """``import tensorflow``, quietly when an entry point asked for it (:func:`quiet_tensorflow`)."""
    if _quiet:
        import_tensorflow_quietly()
    import tensorflow as tf

    return tf


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


__all__ = ["import_tensorflow", "import_tensorflow_quietly", "quiet_tensorflow"]
