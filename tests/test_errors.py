"""The KerasSegError family: one module defines kerasseg's errors, the CLI reports them all alike."""

from __future__ import annotations

import ast
import importlib
import inspect
import pickle
import subprocess
import sys

import pytest

import data_tools.errors
import kerasseg.errors
from kerasseg.errors import KerasSegError
from kerasseg_testing import REPO_ROOT

ERROR_MODULES = {"kerasseg/errors.py": kerasseg.errors, "data_tools/errors.py": data_tools.errors}

# Where each error was defined before it moved to kerasseg.errors: the old public names still resolve.
OLD_PATHS = {
    "kerasseg.cli": ["CommandError"],
    "kerasseg.config": ["ConfigError"],
    "kerasseg.planning.rules": ["PlanError"],
    "kerasseg.schema": ["SchemaError"],
    "kerasseg.data.preprocess": ["NormalizationError"],
    "kerasseg.image_limits": ["PixelLimitError"],
    "kerasseg.volume_io": ["VolumeError"],
    "kerasseg.models": ["ModelConfigError"],
    "kerasseg.training": ["TrainingError"],
    "kerasseg.evaluation": ["EvaluationError"],
    "kerasseg.postprocess": ["CRFError", "CRFInputError", "CRFConfigError"],
    "kerasseg.export": ["ExportError"],
    "kerasseg.demo": ["DemoFailed"],
    "kerasseg.losses": ["LossSpecError"],
}

# The builtin base each error has always had, so `except ValueError` / `except RuntimeError` still catch it.
BUILTIN_BASES = {
    "KerasSegError": Exception,
    "CommandError": Exception,
    "TrainingError": RuntimeError,
    "DemoFailed": RuntimeError,
}  # every other one: ValueError


def _exception_classes(module) -> list[type]:
    return [obj for _, obj in inspect.getmembers(module, inspect.isclass)
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__]


def test_every_error_of_the_two_error_modules_is_a_kerasseg_error():
    classes = [cls for module in ERROR_MODULES.values() for cls in _exception_classes(module)]
    assert len(classes) >= 20
    assert [cls.__name__ for cls in classes if not issubclass(cls, KerasSegError)] == []
    for cls in classes:
        assert issubclass(cls, BUILTIN_BASES.get(cls.__name__, ValueError)), cls
    assert sorted(kerasseg.errors.__all__) == sorted(c.__name__ for c in _exception_classes(kerasseg.errors))


def test_no_other_module_defines_an_error_class():
    elsewhere = []
    for root in ("kerasseg", "data_tools"):
        for path in sorted((REPO_ROOT / root).rglob("*.py")):
            relative = path.relative_to(REPO_ROOT).as_posix()
            if relative in ERROR_MODULES:
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=relative)):
                if isinstance(node, ast.ClassDef) and node.name.endswith("Error") and not node.name.startswith("_"):
                    elsewhere.append(f"{relative}:{node.lineno} {node.name}")
    assert elsewhere == [], "define user-facing errors in kerasseg/errors.py"


@pytest.mark.parametrize("module_name", sorted(OLD_PATHS))
def test_old_import_paths_name_the_same_classes(module_name):
    module = importlib.import_module(module_name)
    for name in OLD_PATHS[module_name]:
        assert getattr(module, name) is getattr(kerasseg.errors, name)


def test_errors_module_imports_only_the_standard_library():
    code = ("import sys, kerasseg.errors, data_tools.errors\n"
            "print([m for m in ('numpy', 'tensorflow', 'keras', 'yaml') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_errors_with_attributes_keep_them_across_pickling():
    pixel = kerasseg.errors.PixelLimitError("too large", source="a.png", height=9, width=8, limit=50)
    copy = pickle.loads(pickle.dumps(pixel))
    assert (type(copy), str(copy), copy.source, copy.height, copy.width, copy.limit, copy.problem) == (
        kerasseg.errors.PixelLimitError, "a.png: too large", "a.png", 9, 8, 50, "too large")
    for cls in (kerasseg.errors.VolumeError, data_tools.errors.AnnotationError, data_tools.errors.ConversionError):
        copy = pickle.loads(pickle.dumps(cls("scan.nii.gz", "truncated")))
        assert (type(copy), str(copy), copy.path, copy.problem) == (cls, "scan.nii.gz: truncated",
                                                                   "scan.nii.gz", "truncated")


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"kerasseg {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_a_config_error_in_train_exits_2_with_one_line(tmp_path, capsys):
    from kerasseg.cli import main

    config = tmp_path / "bad.yaml"
    config.write_text("training:\n  epohcs: 3\n")
    assert main(["train", str(config)]) == 2
    line = _one_error_line(capsys, "train")
    assert "bad.yaml" in line and "'training.epohcs'" in line and "did you mean 'training.epochs'" in line


def test_any_kerasseg_error_a_command_lets_through_exits_2(tmp_path, capsys, monkeypatch):
    # A command that raises one of the family (not CommandError) is reported like CommandError.
    import kerasseg.commands.train
    from kerasseg.cli import main

    def run(args):
        raise kerasseg.errors.TrainingError(f"{args.config}: no training split")

    monkeypatch.setattr(kerasseg.commands.train, "run", run)
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    assert _one_error_line(capsys, "train") == f"kerasseg train: error: {tmp_path / 'c.yaml'}: no training split"
