"""Packaging promises: import without side effects, entry points, metadata."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys

from kerasseg_testing import REPO_ROOT


def _run_python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_import_has_no_side_effects():
    code = (
        "import os, sys\n"
        "before = dict(os.environ)\n"
        "import kerasseg, data_tools\n"
        "assert dict(os.environ) == before, 'environment changed'\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'labelme', 'PyQt5', 'qtpy', 'cv2') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print(kerasseg.__version__)\n"
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().count("\n") == 0, "import printed something"
    assert result.stderr == ""


def test_version_matches_metadata():
    import kerasseg

    parts = kerasseg.__version__.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts)
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    assert config["metadata"]["version"] == "attr: kerasseg.__version__"
    assert config["metadata"]["license"] == "Apache-2.0"


def test_labelme_is_never_imported_by_the_code():
    offenders = []
    for root in ("kerasseg", "data_tools"):
        for path in (REPO_ROOT / root).rglob("*.py"):
            for line in path.read_text().splitlines():
                stripped = line.strip()
                if stripped.startswith(("import labelme", "from labelme")):
                    offenders.append(f"{path}: {stripped}")
    assert offenders == []


def test_console_scripts_resolve():
    import importlib

    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    scripts = config["options.entry_points"]["console_scripts"].strip().splitlines()
    names = set()
    for line in scripts:
        name, target = (part.strip() for part in line.split("="))
        module_name, function_name = target.split(":")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, function_name)), target
        names.add(name)
    assert {"kerasseg", "labelme2tfrecord", "masks2tfrecord"} <= names


def test_cli_help_lists_every_subcommand_and_unknown_command_fails():
    from kerasseg import cli

    result = _run_python("from kerasseg.cli import main; import sys; sys.exit(main(['--help']))")
    assert result.returncode == 0
    for name in cli.COMMANDS:
        assert name in result.stdout
    bad = _run_python("from kerasseg.cli import main; import sys; sys.exit(main(['no-such-command']))")
    assert bad.returncode == 2
    assert "invalid choice" in bad.stderr
