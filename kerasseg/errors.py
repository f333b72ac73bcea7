"""The errors kerasseg raises for problems a user can fix, all in one module.

Every user-facing error derives from :class:`KerasSegError`, so a caller can
catch them all in one place; each message names the file or setting and the fix.
Each class also keeps the builtin base it has always had (``ValueError`` for
bad input, ``RuntimeError`` for a run that cannot proceed), so code written as
``except ValueError`` still catches it. The ``kerasseg`` command line prints
any :class:`KerasSegError` as ``kerasseg <command>: error: <message>`` and
exits with status 2.

The modules that raise them re-export them under their old names
(``kerasseg.config.ConfigError``, ``kerasseg.models.ModelConfigError``,
``kerasseg.postprocess.CRFError``...). The converters' errors
(``data_tools.errors.AnnotationError`` and its subclass) live in ``data_tools``
and derive from :class:`KerasSegError` too.

This module imports the standard library only and has no import-time side
effects, so any module (TensorFlow-free ones included) can import it.
"""

from __future__ import annotations

import os


class KerasSegError(Exception):
    """Base of every error kerasseg raises for a problem the user can fix."""


# --------------------------------------------------------------------------- command line


class CommandError(KerasSegError):
    """A user-facing error: printed without a traceback, exit status 2."""


# --------------------------------------------------------------------------- configuration and planning


class ConfigError(KerasSegError, ValueError):
    """The configuration is invalid (unknown key, wrong type, bad value)."""


class PlanError(KerasSegError, ValueError):
    """The dataset or the request cannot be planned (no training split, unknown model...)."""


# --------------------------------------------------------------------------- data: datasets, images, volumes


class SchemaError(KerasSegError, ValueError):
    """A dataset folder or record does not follow the kerasseg schema."""


class NormalizationError(KerasSegError, ValueError):
    """A normalization config is malformed or lacks a required statistic."""


class PixelLimitError(KerasSegError, ValueError):
    """An image is larger than the pixel limit (or the limit itself is invalid).

    Attributes:
        source: the file or input at fault (``None`` for a bad limit setting).
        height, width: the size read from the header (``None`` for a bad setting).
        limit: the limit in force.
        problem: the message without the source.
    """

    def __init__(
        self,
        problem: str,
        *,
        source: str | None = None,
        height: int | None = None,
        width: int | None = None,
        limit: int | None = None,
    ) -> None:
        self.source = source
        self.height = height
        self.width = width
        self.limit = limit
        self.problem = problem
        super().__init__(f"{source}: {problem}" if source else problem)

    def __reduce__(self):  # keep the attributes across process boundaries (converter workers)
        return (_rebuild_pixel_limit_error, (self.problem, self.source, self.height, self.width, self.limit))


def _rebuild_pixel_limit_error(problem, source, height, width, limit) -> PixelLimitError:
    return PixelLimitError(problem, source=source, height=height, width=width, limit=limit)


class VolumeError(KerasSegError, ValueError):
    """A volume file or DICOM series cannot be read (or written) as kerasseg needs.

    Attributes:
        path: the file or series folder at fault.
        problem: what is wrong with it, without the path.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

    def __reduce__(self):  # keep path/problem across process boundaries (converter workers)
        return (type(self), (self.path, self.problem))


# --------------------------------------------------------------------------- models, losses, training


class ModelConfigError(KerasSegError, ValueError):
    """A model cannot be built with the arguments given (raised at build time)."""


class LossSpecError(KerasSegError, ValueError):
    """A loss specification (name, keyword or weight) is invalid."""


class TrainingError(KerasSegError, RuntimeError):
    """Training cannot start or run with this configuration/data."""


# --------------------------------------------------------------------------- inference and evaluation


class InferenceError(KerasSegError, ValueError):
    """A user-caused inference problem (bad file, wrong channels, bad model)."""


class ArtifactError(InferenceError):
    """A model file or its ``model_info.json`` is missing, unreadable or inconsistent."""


class EvaluationError(KerasSegError, ValueError):
    """Inputs to the evaluator are inconsistent (shape, dtype, label values)."""


# --------------------------------------------------------------------------- dense-CRF post-processing


class CRFError(KerasSegError, ValueError):
    """Base class of the dense-CRF errors users can cause."""


class CRFInputError(CRFError):
    """An image or probability map cannot be refined (shape, NaN, not a distribution...)."""


class CRFConfigError(CRFError):
    """CRF parameters (a config section or a tuning grid) are invalid."""


# --------------------------------------------------------------------------- export and the demo


class ExportError(KerasSegError, ValueError):
    """The model, its metadata or the export folder cannot be exported as asked."""


class DemoFailed(KerasSegError, RuntimeError):
    """Training diverged, missed its target, or the export disagreed."""


__all__ = [
    "KerasSegError",
    "CommandError",
    "ConfigError",
    "PlanError",
    "SchemaError",
    "NormalizationError",
    "PixelLimitError",
    "VolumeError",
    "ModelConfigError",
    "LossSpecError",
    "TrainingError",
    "InferenceError",
    "ArtifactError",
    "EvaluationError",
    "CRFError",
    "CRFInputError",
    "CRFConfigError",
    "ExportError",
    "DemoFailed",
]
