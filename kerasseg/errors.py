"""The errors kerasseg raises for problems a user can fix.

Every user-facing error derives from :class:`KerasSegError`, so a caller can
catch them all in one place; each message names the file or setting and the fix.
"""

from __future__ import annotations


class KerasSegError(Exception):
    """Base of every error kerasseg raises for a problem the user can fix."""


class InferenceError(KerasSegError, ValueError):
    """A user-caused inference problem (bad file, wrong channels, bad model)."""


class ArtifactError(InferenceError):
    """A model file or its ``model_info.json`` is missing, unreadable or inconsistent."""


__all__ = ["KerasSegError", "InferenceError", "ArtifactError"]
