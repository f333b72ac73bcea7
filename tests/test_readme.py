"""Every command in the README is exercised: shell commands are parsed by the real
argument parsers (their behaviour is tested where each command is tested), files
they name from this repository exist, and the Python API example runs."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import subprocess
import sys
import textwrap

import pytest

from kerasseg_testing import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _shell_commands() -> list[list[str]]:
    commands = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(shlex.split(line))
    return commands


def _strip_env(words: list[str]) -> list[str]:
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        words = words[1:]
    return words


COMMANDS = [_strip_env(words) for words in _shell_commands()]


def test_readme_has_the_two_commands_first():
    first = _blocks("bash")[0]
    assert first.splitlines()[0].startswith("make demo") and "make test" in first


def test_no_placeholders_left():
    assert "PLACEHOLDER" not in README and "TODO" not in README


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w)[:60])
def test_shell_command_is_valid(words):
    program, args = words[0], words[1:]
    if program == "make":
        makefile = (REPO_ROOT / "Makefile").read_text()
        for target in args:
            assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), target
    elif program == "kerasseg":
        from kerasseg.cli import build_parser

        parsed = build_parser(args).parse_args(args)
        assert parsed._run is not None
        for value in args:
            if value.startswith("configs/"):
                assert (REPO_ROOT / value).is_file(), value
    elif program in ("labelme2tfrecord", "masks2tfrecord", "volumes2tfrecord"):
        from data_tools import cli

        parser = {"labelme2tfrecord": cli._labelme_parser, "masks2tfrecord": cli._masks_parser,
                  "volumes2tfrecord": cli._volumes_parser}[program]()
        parser.parse_args(args)
    elif program == "pip":
        config = configparser.ConfigParser()
        config.read(REPO_ROOT / "setup.cfg")
        extras = set(config["options.extras_require"])
        for arg in args:
            match = re.fullmatch(r"\.(?:\[(\w+)\])?", arg.strip("'"))
            if match and match.group(1):
                assert match.group(1) in extras, arg
    elif program in ("python3", "python"):
        if args[:2] == ["-m", "venv"]:
            return
        script = REPO_ROOT / args[0]
        assert script.is_file(), args[0]
        result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                                cwd=REPO_ROOT, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
    elif program in ("docker", "."):
        pass  # no Docker engine here; the Dockerfiles are checked in test_docker.py
    else:
        pytest.fail(f"README command {program!r} is not covered by this test")


@pytest.mark.slow
def test_python_api_example_runs(tmp_path):
    """The README's Python example, on a generated phantom, shrunk to test size."""
    example = _blocks("python")[0]
    shrunk = (
        example.replace("epochs=50", "epochs=1")
        .replace("base_filters=32", "base_filters=4")
        .replace("image_size=256", "image_size=64")
    )
    assert shrunk != example
    setup = textwrap.dedent(
        """
        import shutil
        from data_tools.phantom import generate_phantom_dataset
        generate_phantom_dataset("annotations", num_images=8, size=64, seed=0)
        open("annotations/labels.txt", "w").write("__ignore__\\n_background_\\nlesion\\nvessel\\n")
        shutil.copy("annotations/phantom_0000.png", "scan.png")
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", setup + shrunk], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "scan_mask.png").is_file()
    assert (tmp_path / "served" / "lesions" / "1" / "saved_model.pb").is_file()


def test_config_reference_lists_every_key():
    import dataclasses

    from kerasseg import config
    from kerasseg.postprocess import CRFParams

    keys = []
    for field in dataclasses.fields(config.Config):
        section = CRFParams if field.name == "crf" else field.type
        section = getattr(config, section, None) if isinstance(section, str) else section
        if dataclasses.is_dataclass(section):
            keys += [f"{field.name}.{sub.name}" for sub in dataclasses.fields(section)]
        else:
            keys.append(field.name)
    missing = [key for key in keys if f"| `{key}` |" not in README]
    assert missing == []
