"""The error training raises for problems a user can fix (config, data, model)."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Training cannot start or run with this configuration/data."""


__all__ = ["TrainingError"]
