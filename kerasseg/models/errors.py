"""Error types of the model zoo (no TensorFlow import)."""

from __future__ import annotations


class ModelConfigError(ValueError):
    """A model cannot be built with the arguments given (raised at build time)."""
