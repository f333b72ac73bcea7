"""Error types raised by :mod:`kerasseg.postprocess`."""

from __future__ import annotations


class CRFError(ValueError):
    """Base class of the dense-CRF errors users can cause."""


class CRFInputError(CRFError):
    """An image or probability map cannot be refined (shape, NaN, not a distribution...)."""


class CRFConfigError(CRFError):
    """CRF parameters (a config section or a tuning grid) are invalid."""
