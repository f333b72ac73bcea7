"""CRF parameters as a typed config section (``crf:`` in a training/predict YAML).

``CRFParams.from_dict`` validates a plain mapping (unknown keys are errors, so a
typo such as ``bilateral_sgrb`` does not silently fall back to a default) and
``to_dict`` returns plain Python types that ``yaml.safe_dump`` writes as is.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence, Union

from kerasseg.errors import CRFConfigError

KERNELS = ("const", "diag", "full")
#: fields ``to_dict(minimal=True)`` omits while they hold their defaults.
ADVANCED_FIELDS = ("kernel", "normalization", "window", "use_generic_path")
NORMALIZATIONS = ("none", "before", "after", "symmetric")

# ``window`` is None (automatic), a (center, width) pair, or a mapping with
# either ``center``/``width`` or ``percentiles: [low, high]``.
WindowSpec = Union[None, Sequence[float], Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class CRFParams:
    """Parameters of :func:`kerasseg.postprocess.dense_crf`.

    The defaults are the reference parameters of Krähenbühl & Koltun's example
    (also used by DeepLab-style post-processing): smoothness kernel ``sxy=3``,
    weight 3; appearance kernel ``sxy=80``, ``srgb=13``, weight 10; 5 mean-field
    iterations; diagonal kernel, symmetric normalization.

    Attributes:
        enabled: whether a pipeline (``predict``/``evaluate`` without ``--crf``)
            applies the CRF; off unless a config turns it on. ``dense_crf`` itself
            ignores it; ``crf-tune`` writes ``True`` only when the best setting
            beat the un-refined prediction.
        iterations: mean-field iterations (>= 0).
        gaussian_sxy: spatial standard deviation (pixels) of the smoothness kernel.
        gaussian_compat: Potts weight of the smoothness kernel (0 disables it).
        bilateral_sxy: spatial standard deviation (pixels) of the appearance kernel.
        bilateral_srgb: intensity standard deviation (uint8 grey levels) of the
            appearance kernel; one number, or one per image channel.
        bilateral_compat: Potts weight of the appearance kernel (0 disables it).
        kernel: ``"const"``, ``"diag"`` or ``"full"`` (pydensecrf kernel type).
        normalization: ``"none"``, ``"before"``, ``"after"`` or ``"symmetric"``.
        window: how non-uint8 images are mapped to uint8 for the appearance
            term; see :func:`kerasseg.postprocess.appearance_image`.
        use_generic_path: build the kernel features in NumPy and use pydensecrf's
            generic ``DenseCRF`` (bit-exact with pydensecrf's ``utils`` example)
            instead of ``DenseCRF2D``'s built-in features.
    """

    enabled: bool = False
    iterations: int = 5
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: Union[float, tuple[float, ...]] = 13.0
    bilateral_compat: float = 10.0
    kernel: str = "diag"
    normalization: str = "symmetric"
    window: WindowSpec = None
    use_generic_path: bool = False

    def __post_init__(self) -> None:
        _validate(self)

    # -- conversion -------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, origin: str = "crf") -> "CRFParams":
        """Build from a config mapping; ``None`` or ``{}`` gives the defaults.

        Raises:
            CRFConfigError: ``data`` is not a mapping, has unknown keys or bad values;
                the message starts with ``origin`` (e.g. ``"config.yaml: crf"``).
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise CRFConfigError(f"{origin}: expected a mapping of CRF parameters, got {type(data).__name__}")
        known = set(cls.field_names())
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise CRFConfigError(
                f"{origin}: unknown CRF parameter(s) {unknown}; known: {sorted(known)}"
            )
        values = dict(data)
        if isinstance(values.get("bilateral_srgb"), (list, tuple)):
            values["bilateral_srgb"] = tuple(values["bilateral_srgb"])
        if isinstance(values.get("window"), list):
            values["window"] = tuple(values["window"])
        try:
            return cls(**values)
        except CRFConfigError as e:
            raise CRFConfigError(f"{origin}: {e}") from None

    def to_dict(self, *, minimal: bool = False) -> dict[str, Any]:
        """Plain-typed mapping (YAML/JSON friendly) that ``from_dict`` reads back.

        With ``minimal=True`` the advanced fields (:data:`ADVANCED_FIELDS`) are
        left out while they hold their defaults, so the section also fits configs
        that only know the core kernel parameters.
        """
        out: dict[str, Any] = {}
        defaults = CRFParams()
        for name in self.field_names():
            value = getattr(self, name)
            if minimal and name in ADVANCED_FIELDS and value == getattr(defaults, name):
                continue
            if isinstance(value, tuple):
                value = [_plain(v) for v in value]
            elif isinstance(value, Mapping):
                value = {str(k): ([_plain(x) for x in v] if isinstance(v, (list, tuple)) else _plain(v))
                         for k, v in value.items()}
            else:
                value = _plain(value)
            out[name] = value
        return out

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`dense_crf` (everything except ``enabled``)."""
        return {n: getattr(self, n) for n in self.field_names() if n != "enabled"}

    def replace(self, **changes: Any) -> "CRFParams":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars; integral floats stay floats."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _number(name: str, value: Any, *, positive: bool) -> None:
    if isinstance(value, (bool, str)) or not hasattr(value, "__float__"):
        raise CRFConfigError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or (v <= 0 if positive else v < 0):
        raise CRFConfigError(f"{name} must be {'> 0' if positive else '>= 0'} and finite, got {value!r}")


def _validate(p: CRFParams) -> None:
    if not isinstance(p.enabled, bool):
        raise CRFConfigError(f"enabled must be true or false, got {p.enabled!r}")
    if isinstance(p.iterations, bool) or not hasattr(p.iterations, "__index__") or int(p.iterations) < 0:
        raise CRFConfigError(f"iterations must be an integer >= 0, got {p.iterations!r}")
    _number("gaussian_sxy", p.gaussian_sxy, positive=True)
    _number("gaussian_compat", p.gaussian_compat, positive=False)
    _number("bilateral_sxy", p.bilateral_sxy, positive=True)
    _number("bilateral_compat", p.bilateral_compat, positive=False)
    srgb = p.bilateral_srgb
    if isinstance(srgb, (tuple, list)):
        if not srgb:
            raise CRFConfigError("bilateral_srgb must not be an empty list")
        for s in srgb:
            _number("bilateral_srgb", s, positive=True)
    else:
        _number("bilateral_srgb", srgb, positive=True)
    if p.kernel not in KERNELS:
        raise CRFConfigError(f"kernel must be one of {KERNELS}, got {p.kernel!r}")
    if p.normalization not in NORMALIZATIONS:
        raise CRFConfigError(f"normalization must be one of {NORMALIZATIONS}, got {p.normalization!r}")
    if not isinstance(p.use_generic_path, bool):
        raise CRFConfigError(f"use_generic_path must be true or false, got {p.use_generic_path!r}")
    validate_window(p.window)


def validate_window(window: WindowSpec) -> None:
    """Raise :class:`CRFConfigError` unless ``window`` is a valid window spec."""
    if window is None:
        return
    if isinstance(window, Mapping):
        keys = set(window)
        if keys == {"center", "width"}:
            _check_center_width(window["center"], window["width"])
            return
        if keys == {"percentiles"}:
            pct = window["percentiles"]
            if not isinstance(pct, (list, tuple)) or len(pct) != 2:
                raise CRFConfigError(f"window percentiles must be [low, high], got {pct!r}")
            lo, hi = (float(x) for x in pct)
            if not (0.0 <= lo < hi <= 100.0):
                raise CRFConfigError(f"window percentiles need 0 <= low < high <= 100, got {pct!r}")
            return
        raise CRFConfigError(
            f"window mapping must have keys center+width or percentiles, got {sorted(map(str, keys))}"
        )
    if isinstance(window, (list, tuple)) and len(window) == 2:
        _check_center_width(*window)
        return
    raise CRFConfigError(
        f"window must be None, (center, width), {{center, width}} or {{percentiles: [lo, hi]}}, got {window!r}"
    )


def _check_center_width(center: Any, width: Any) -> None:
    try:
        c, w = float(center), float(width)
    except (TypeError, ValueError):
        raise CRFConfigError(f"window center/width must be numbers, got {center!r}, {width!r}") from None
    if not (math.isfinite(c) and math.isfinite(w) and w > 0):
        raise CRFConfigError(f"window needs a finite center and a width > 0, got {center!r}, {width!r}")


DENSE_CRF_LAYER_FIELDS = (
    "iterations", "gaussian_sxy", "gaussian_compat", "bilateral_sxy", "bilateral_srgb", "bilateral_compat",
)
"""The :class:`CRFParams` fields :class:`kerasseg.layers.DenseCRF` takes, under the same names."""

# what the layer always does, as CRFParams settings
_LAYER_BEHAVIOUR = {"kernel": "diag", "normalization": "symmetric", "window": None}


def dense_crf_layer_arguments(settings: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """The :class:`kerasseg.layers.DenseCRF` arguments for CRF ``settings``, and what they lose.

    Args:
        settings: a ``crf:`` mapping as :meth:`CRFParams.to_dict` writes it
            (e.g. the ``crf`` entry of ``model_info.json``); ``None`` for the defaults.

    Returns:
        ``(kwargs, notes)``: the layer's keyword arguments (only the
        :data:`DENSE_CRF_LAYER_FIELDS` present in ``settings``), and one note per
        setting the layer cannot follow. The layer always uses a diagonal kernel,
        symmetric normalization and, for 16-bit images, a 0.5-99.5 percentile
        window; ``enabled`` and ``use_generic_path`` concern the NumPy path only.
    """
    settings = dict(settings or {})
    kwargs = {key: settings[key] for key in DENSE_CRF_LAYER_FIELDS if key in settings}
    notes = []
    for key, value in settings.items():
        if key in DENSE_CRF_LAYER_FIELDS or key in ("enabled", "use_generic_path"):
            continue
        if key in _LAYER_BEHAVIOUR and _LAYER_BEHAVIOUR[key] == value:
            continue
        notes.append(f"crf setting {key}={value!r} has no DenseCRF equivalent; the layer uses a diagonal "
                     "kernel, symmetric normalization and a 0.5-99.5 percentile window for 16-bit images")
    return kwargs, notes
