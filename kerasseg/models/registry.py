"""Name -> builder registry: ``build(name, ...)`` and ``available()``."""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Sequence

from kerasseg.errors import ModelConfigError

# name -> (module, builder function, paper)
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "unet": ("kerasseg.models.unet", "build_unet", "Ronneberger et al., MICCAI 2015"),
    "attention_unet": ("kerasseg.models.unet", "build_attention_unet", "Oktay et al., MIDL 2018"),
    "unet3d": ("kerasseg.models.unet3d", "build_unet3d", "Çiçek et al., MICCAI 2016"),
    "attention_unet3d": ("kerasseg.models.unet3d", "build_attention_unet3d", "Oktay et al., MIDL 2018"),
    "deeplabv3plus": ("kerasseg.models.deeplabv3plus", "build_deeplabv3plus", "Chen et al., ECCV 2018"),
    "segnet": ("kerasseg.models.segnet", "build_segnet", "Badrinarayanan et al., TPAMI 2017"),
    "fcn8s": ("kerasseg.models.fcn", "build_fcn8s", "Long et al., CVPR 2015"),
    "pspnet": ("kerasseg.models.pspnet", "build_pspnet", "Zhao et al., CVPR 2017"),
}


VOLUME_MODELS = ("unet3d", "attention_unet3d")
"""Registered models that take volumes ``(B, D, H, W, C)``; the others take images."""


def spatial_dims(name: str) -> int:
    """3 for a volume model (``unet3d``, ``attention_unet3d``), 2 for an image model."""
    return 3 if _check_name(name) in VOLUME_MODELS else 2


def available() -> list[str]:
    """Names accepted by :func:`build`, e.g. ``["unet", "attention_unet", ...]``."""
    return list(_REGISTRY)


def paper(name: str) -> str:
    """The paper a registered model follows."""
    return _REGISTRY[_check_name(name)][2]


def get_builder(name: str) -> Callable[..., Any]:
    """The builder function registered under ``name``."""
    module, func, _ = _REGISTRY[_check_name(name)]
    return getattr(importlib.import_module(module), func)


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise ModelConfigError(f"model name must be a string, got {name!r}")
    key = name.strip().lower().replace("-", "_")
    aliases = {"deeplabv3+": "deeplabv3plus", "deeplab_v3plus": "deeplabv3plus", "fcn_8s": "fcn8s",
               "unet_3d": "unet3d", "3d_unet": "unet3d", "attunet": "attention_unet",
               "attention_unet_3d": "attention_unet3d"}
    key = aliases.get(key, key)
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ModelConfigError(f"unknown model {name!r}{hint} (available: {', '.join(_REGISTRY)})")
    return key


def build(name: str, *, input_shape: Sequence[int | None], num_classes: int, **kwargs: Any) -> Any:
    """Build a registered model.

    Args:
        name: one of :func:`available` (``"unet"``, ``"attention_unet"``,
            ``"unet3d"``, ``"deeplabv3plus"``, ``"segnet"``, ``"fcn8s"``, ``"pspnet"``).
        input_shape: ``(H, W, C)`` (``(D, H, W, C)`` for ``unet3d``); spatial
            sizes may be ``None`` where the architecture allows.
        num_classes: ``K``; 1 gives a sigmoid binary head, >= 2 a softmax.
        **kwargs: the builder's own keyword arguments (``output_activation=None``
            gives logits).

    Returns:
        A functional ``keras.Model`` whose output is float32 ``(B, H, W, K)``.

    Raises:
        ModelConfigError: unknown name (with the nearest match), unknown or
            invalid arguments, input size not divisible by the network's stride.
    """
    builder = check_options(name, kwargs)
    from kerasseg.registration import register_all

    register_all()  # so that models saved from this process reload without custom_objects
    return builder(input_shape=input_shape, num_classes=num_classes, **kwargs)


def check_options(name: str, options: Any) -> Callable[..., Any]:
    """Check builder keyword arguments without building; return the builder.

    Raises:
        ModelConfigError: unknown model name, options that are not a mapping, or
            an argument the builder does not take (with the nearest valid one).
    """
    import inspect

    builder = get_builder(name)
    if not isinstance(options, dict):
        raise ModelConfigError(f"{name}: options must be a mapping of builder arguments, got {options!r}")
    params = inspect.signature(builder).parameters
    unknown = [k for k in options if k not in params or k.startswith("_") or k in ("input_shape", "num_classes")]
    if unknown:
        valid = [p for p in params if not p.startswith("_") and p not in ("input_shape", "num_classes")]
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), valid, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ModelConfigError(f"{name}: unknown argument(s) {', '.join(hints)}; valid: {', '.join(valid)}")
    return builder
