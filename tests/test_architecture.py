"""ARCHITECTURE.md stays true: its import floors are the imports the code makes
(lazy imports inside functions included), every module has a floor, and every
file or folder it names exists."""

from __future__ import annotations

import ast
import pathlib
import re

from kerasseg_testing import REPO_ROOT

DOC = REPO_ROOT / "ARCHITECTURE.md"
PACKAGES = ("kerasseg", "data_tools")
# the one upward import ARCHITECTURE.md names, and why it is there
ALLOWED_UPWARD = {("kerasseg.data.visualize", "kerasseg.training.datasets")}


def _section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def _floors() -> dict[str, int]:
    """Module or package name -> floor, from the numbered list of 'Who may import whom'."""
    floors: dict[str, int] = {}
    current = None
    for line in _section("Who may import whom").splitlines():
        match = re.match(r"(\d+)\. ", line)
        if match:
            current = int(match.group(1))
        elif not line.startswith("   "):
            current = None
        if current is None:
            continue
        for name in re.findall(r"`([^`]+)`", line):
            if name.endswith(".py") or name.endswith("/"):
                path = name[:-3] if name.endswith(".py") else name[:-1]
                dotted = path.replace("/", ".")
                floors[dotted if dotted == "data_tools" else f"kerasseg.{dotted}"] = current
    return floors


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            base = node.module
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # from kerasseg import schema
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def _allowed(module: str, target: str) -> bool:
    return any(module == m and (target == t or target.startswith(t + ".")) for m, t in ALLOWED_UPWARD)


def _floor_of(name: str, floors: dict[str, int]) -> int | None:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in floors:
            return floors[".".join(parts[:i])]
    return None


def test_every_module_has_a_floor():
    floors = _floors()
    assert len(set(floors.values())) == 6
    unplaced = [name for name in _modules() if name not in ("kerasseg", "kerasseg.__main__")
                and _floor_of(name, floors) is None]
    assert unplaced == [], "add these modules to a floor in ARCHITECTURE.md"


def test_no_module_imports_a_higher_floor():
    floors, modules = _floors(), _modules()
    upward = []
    for name, path in modules.items():
        own = _floor_of(name, floors)
        if own is None:
            continue
        for target in _imports(path):
            if target == "kerasseg" or target not in modules and target.rsplit(".", 1)[0] == "kerasseg":
                continue  # the top-level package: the version and lazy registration only
            theirs = _floor_of(target, floors)
            if theirs is not None and theirs > own and not _allowed(name, target):
                upward.append(f"{name} (floor {own}) imports {target} (floor {theirs})")
    assert upward == []


def test_the_floor_check_sees_an_upward_import(tmp_path):
    """The checker itself: a floor-1 module importing a command is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from kerasseg.commands import train\n")
    floors = _floors()
    assert _floor_of("kerasseg.errors", floors) == 1
    assert any(_floor_of(t, floors) == 6 for t in _imports(bad))


def test_every_path_it_names_exists():
    text = DOC.read_text(encoding="utf-8")
    missing = []
    for name in set(re.findall(r"`([\w/.<>]+(?:\.py|/))`", text)):
        if "<" in name:
            continue  # a pattern such as models/<arch>.py
        candidates = [REPO_ROOT / name, REPO_ROOT / "kerasseg" / name, REPO_ROOT / "kerasseg" / "training" / name]
        if not any(c.exists() for c in candidates):
            missing.append(name)
    assert sorted(missing) == []


def test_the_tests_readme_names_every_module_and_existing_test_files():
    """tests/README.md: one row per module or package, every test path it names exists."""
    text = (REPO_ROOT / "tests" / "README.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    listed, paths = set(), set()
    for row in rows:
        first, _, rest = row[2:].partition(" | ")
        names = re.findall(r"`([^`]+)`", first)
        base = names[0].split("/")[0] + "/"  # later names in a row are relative to the first's package
        for name in names:
            full = name if name.startswith(base) else base + name
            listed.add(full.rstrip("/").removesuffix(".py").replace("/", "."))
        paths.update(re.findall(r"`([\w/]+(?:\.py|/))`", rest))
    unlisted = [m for m in _modules() if m not in ("kerasseg", "kerasseg.__main__")
                and not any(m == name or m.startswith(name + ".") for name in listed)]
    assert unlisted == [], "add these modules to tests/README.md"
    missing = sorted(p for p in paths if not (REPO_ROOT / "tests" / p).exists())
    assert missing == []
