"""Paths and helpers shared by the tests, importable from any test folder as ``kerasseg_testing``
(several folders have their own ``conftest.py``, so ``from conftest import`` is ambiguous)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("KERASSEG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# the benchmarks on real data: tests/test_benchmarks_real_data.py runs them, tests/test_benchmarks.py
# the others (two files, so that `make test` can give them to its two workers)
REAL_DATA_BENCHMARKS = ("isbi", "hippocampus")


def run_quick_benchmarks(names: list[str], out: pathlib.Path) -> dict:
    """Run ``benchmarks/run_all.py --quick --only NAMES --out OUT``; the figures it wrote."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "run_all.py"), "--quick", "--only", *names, "--out", str(out)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "results.json").read_text())
