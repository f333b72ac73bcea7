"""Shared pytest fixtures.

Real data lives in ``../shared/data`` beside a checkout (see the README there);
tests that need it skip with a clear reason when it is absent, so a fresh clone
still passes.
"""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

# Make tests/kerasseg_testing.py importable from every test folder.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from kerasseg_testing import REPO_ROOT, SHARED_DATA  # noqa: E402,F401

# Keep TensorFlow quiet and deterministic-ish in tests; set before any TF import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _shared_subdir(name: str) -> pathlib.Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data not available: {path} is absent (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def labelme_examples() -> pathlib.Path:
    """``../shared/data/labelme_examples`` (labelme's own JSON and reference label maps)."""
    return _shared_subdir("labelme_examples")


@pytest.fixture(scope="session")
def isbi_membrane() -> pathlib.Path:
    """``../shared/data/isbi2012_membrane`` (30 EM slices with membrane labels)."""
    return _shared_subdir("isbi2012_membrane")


@pytest.fixture(scope="session")
def pydensecrf_examples() -> pathlib.Path:
    """``../shared/data/pydensecrf_examples`` (dense CRF inputs and reference outputs)."""
    return _shared_subdir("pydensecrf_examples")
