"""kerasseg.planning: a complete training config from a dataset's fingerprint and this machine.

The nnU-Net idea for TF/Keras 2D datasets::

    from kerasseg.planning import make_plan
    plan = make_plan("data/isbi", budget_minutes=20)      # fingerprint, rules, timing probe
    print(plan.table())                                   # what was measured, what was decided, why
    plan.write("isbi_unet.yaml")                          # commented YAML (+ isbi_unet.plan.json)

or from the command line ``kerasseg plan DATA --budget-minutes 20 --out plan.yaml``
and ``kerasseg train DATA --plan``.

Modules: :mod:`~kerasseg.planning.fingerprint` (what the data looks like),
:mod:`~kerasseg.planning.hardware` (the machine), :mod:`~kerasseg.planning.rules`
(the decisions, pure functions), :mod:`~kerasseg.planning.probe` (memory estimate
and the timed short run) and :mod:`~kerasseg.planning.planner` (``make_plan``,
``Plan``). Importing this package does not import TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "make_plan": "kerasseg.planning.planner",
    "Plan": "kerasseg.planning.planner",
    "DEFAULT_BUDGET_MINUTES": "kerasseg.planning.planner",
    "default_run_dir": "kerasseg.planning.planner",
    "fingerprint_dataset": "kerasseg.planning.fingerprint",
    "Fingerprint": "kerasseg.planning.fingerprint",
    "Decision": "kerasseg.planning.rules",
    "PlanError": "kerasseg.planning.rules",
    "PLANNABLE_MODELS": "kerasseg.planning.rules",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kerasseg.planning' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
