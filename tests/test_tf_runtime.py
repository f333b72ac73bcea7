"""kerasseg.tf_runtime: the ``kerasseg`` command turns oneDNN on unless the user chose,
and only before TensorFlow is loaded (each case in a fresh interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kerasseg_testing import REPO_ROOT

SCRIPT = (
    "import os, sys\n"
    "if sys.argv[1] == 'loaded':\n"
    "    import tensorflow\n"
    "from kerasseg.tf_runtime import prefer_onednn\n"
    "print(prefer_onednn(), os.environ.get('TF_ENABLE_ONEDNN_OPTS'))\n"
)


@pytest.mark.parametrize("setting, case, expected", [
    (None, "fresh", "True 1"),        # unset: the command sets it
    ("0", "fresh", "False 0"),        # the user's choice stays
    (None, "loaded", "False None"),   # too late once TensorFlow is imported: nothing changes
])
def test_prefer_onednn(setting, case, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env.update(PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    proc = subprocess.run([sys.executable, "-c", SCRIPT, case], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == expected
