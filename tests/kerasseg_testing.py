"""Paths shared by the tests, importable from any test folder as ``kerasseg_testing``
(several folders have their own ``conftest.py``, so ``from conftest import`` is ambiguous)."""

from __future__ import annotations

import os
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("KERASSEG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
