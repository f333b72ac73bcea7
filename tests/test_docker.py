"""The Dockerfiles cannot be built here (no Docker engine), so check what can be
checked without one: they install exactly what setup.cfg declares, copy what
exists, run as a non-root user, and their entry point and health check work."""

from __future__ import annotations

import configparser
import fnmatch
import json
import re
import shlex
import subprocess
import sys

import pytest

from kerasseg_testing import REPO_ROOT

DOCKERFILES = ["docker/Dockerfile", "docker/Dockerfile.gpu"]


def _instructions(path):
    text = (REPO_ROOT / path).read_text()
    text = re.sub(r"\\\n", " ", text)
    result = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def _setup_cfg():
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    return config


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_installs_only_the_package_as_setup_cfg_declares_it(dockerfile):
    runs = [rest for keyword, rest in _instructions(dockerfile) if keyword == "RUN"]
    pip_calls = []
    for command in runs:
        for part in command.split("&&"):
            words = shlex.split(part)
            if "pip" in words and "install" in words:
                pip_calls.append(words[words.index("install") + 1 :])
    # One pip install, of the copied source tree: dependencies come from setup.cfg alone.
    assert pip_calls == [["/opt/kerasseg"]], pip_calls


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_copies_every_package_and_file_setup_needs(dockerfile):
    copies = [rest.split() for keyword, rest in _instructions(dockerfile) if keyword == "COPY"]
    sources = {src for words in copies for src in words[:-1]}
    packages = _setup_cfg()["options.packages.find"]["include"].split()
    top_level = {p.split(".")[0] for p in packages}
    assert top_level <= sources
    assert {"setup.cfg", "setup.py", "README.md", "LICENSE"} <= sources
    ignored = [
        line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines() if line.strip()
    ]
    for src in sources:
        assert (REPO_ROOT / src).exists(), src
        assert not any(fnmatch.fnmatch(src, pattern) for pattern in ignored), f"{src} is dockerignored"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_non_root_entry_point_and_health_check(dockerfile):
    instructions = dict(_instructions(dockerfile))
    assert instructions["USER"] not in ("root", "0")
    entry = json.loads(instructions["ENTRYPOINT"])
    scripts = _setup_cfg()["options.entry_points"]["console_scripts"]
    declared = {line.split("=")[0].strip() for line in scripts.strip().splitlines()}
    assert entry[0] in declared
    health = json.loads(instructions["HEALTHCHECK"].split("CMD", 1)[1].strip())
    assert health[0] == "python"
    result = subprocess.run([sys.executable, *health[1:]], cwd=REPO_ROOT, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    cmd = json.loads(instructions["CMD"])
    from kerasseg.cli import main

    with pytest.raises(SystemExit) as excinfo:
        main(cmd)
    assert excinfo.value.code == 0


def test_gpu_base_image_matches_the_tensorflow_range():
    base = dict(_instructions("docker/Dockerfile.gpu"))["FROM"]
    match = re.fullmatch(r"tensorflow/tensorflow:(\d+)\.(\d+)\.\d+-gpu", base)
    assert match, base
    version = (int(match.group(1)), int(match.group(2)))
    requirement = next(
        line.strip()
        for line in _setup_cfg()["options"]["install_requires"].splitlines()
        if line.strip().startswith("tensorflow")
    )
    low = tuple(int(x) for x in re.search(r">=(\d+)\.(\d+)", requirement).groups())
    high = tuple(int(x) for x in re.search(r"<(\d+)\.(\d+)", requirement).groups())
    assert low <= version < high
