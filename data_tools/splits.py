"""Reproducible train/val/test splits and k-fold assignments.

The assignment depends only on the sorted source ids and the seed, never on
file-system order or worker count; the lists are written to ``splits/`` so a
split can be reproduced (or audited) later.
"""

from __future__ import annotations

import random
from typing import Mapping, Sequence

from data_tools.errors import ConversionError

DEFAULT_SPLIT = "train=0.8,val=0.2"


def parse_split_spec(spec: str | Mapping[str, float]) -> dict[str, float]:
    """Parse ``"train=0.8,val=0.2"`` (or a mapping) into fractions summing to 1; a bare
    name (``"test"``) puts every example in that split.

    Raises:
        ConversionError: malformed text, bad names, negative fractions or a sum
            that is not 1 (within 1e-6).
    """
    items: list[tuple[str, float | str]]
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        items = []
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                if "," not in str(spec) and part.replace("_", "").isalnum():  # a bare name: all in that split
                    part = f"{part}=1"
                else:
                    raise ConversionError(None, f"--split {spec!r}: expected NAME=FRACTION, got {part!r}")
            key, text = part.split("=", 1)
            items.append((key.strip(), text.strip()))
    fractions: dict[str, float] = {}
    for name, value in items:
        if not name or not name.replace("_", "").isalnum():
            raise ConversionError(None, f"--split: split name {name!r} must be letters, digits or _")
        if name in fractions:
            raise ConversionError(None, f"--split: split {name!r} given twice")
        try:
            fraction = float(value)
        except (TypeError, ValueError):
            raise ConversionError(None, f"--split: fraction {value!r} of {name!r} is not a number") from None
        if not 0 <= fraction <= 1:
            raise ConversionError(None, f"--split: fraction of {name!r} must be in [0, 1], got {fraction}")
        fractions[name] = fraction
    if not fractions:
        raise ConversionError(None, "--split: no splits given")
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ConversionError(None, f"--split: fractions sum to {sum(fractions.values()):g}, not 1")
    return fractions


def assign_splits(ids: Sequence[str], fractions: Mapping[str, float], *, seed: int) -> dict[str, list[str]]:
    """Shuffle ``sorted(ids)`` with ``seed`` and cut it by ``fractions``.

    Sizes use largest-remainder rounding; every split with a positive fraction
    gets at least one id when there are enough ids. Each returned list is sorted.
    """
    ordered = sorted(ids)
    random.Random(seed).shuffle(ordered)
    n = len(ordered)
    names = list(fractions)
    exact = [fractions[name] * n for name in names]
    sizes = [int(x) for x in exact]
    for i in sorted(range(len(names)), key=lambda i: (-(exact[i] - sizes[i]), i))[: n - sum(sizes)]:
        sizes[i] += 1
    positive = [i for i, name in enumerate(names) if fractions[name] > 0]
    if n >= len(positive):
        for i in positive:
            while sizes[i] == 0:
                donor = max(range(len(names)), key=lambda j: (sizes[j], -j))
                sizes[donor] -= 1
                sizes[i] += 1
    out: dict[str, list[str]] = {}
    start = 0
    for name, size in zip(names, sizes):
        out[name] = sorted(ordered[start : start + size])
        start += size
    return out


def assign_folds(ids: Sequence[str], k: int, *, seed: int) -> list[dict[str, list[str]]]:
    """K-fold cross-validation over ``ids``: fold ``i`` validates on the ``i``-th chunk.

    Returns:
        ``k`` dicts ``{"train": [...], "val": [...]}`` (sorted lists); every id
        is in exactly one fold's ``val``.

    Raises:
        ConversionError: ``k < 2`` or more folds than ids.
    """
    if k < 2:
        raise ConversionError(None, f"--folds must be at least 2, got {k}")
    if k > len(ids):
        raise ConversionError(None, f"--folds {k} is more than the {len(ids)} training examples")
    ordered = sorted(ids)
    random.Random(seed + 1).shuffle(ordered)
    chunks = [ordered[i::k] for i in range(k)]
    folds = []
    for i in range(k):
        val = set(chunks[i])
        folds.append({"train": sorted(x for x in ordered if x not in val), "val": sorted(val)})
    return folds


def read_split_file(path: str) -> dict[str, str]:
    """Read an explicit split assignment: one ``SOURCE_ID SPLIT`` pair per line.

    The two fields are separated by whitespace, a comma or a tab (so a CSV/TSV
    with those two columns works); blank lines and lines starting with ``#``
    are ignored, as is a first line ``source_id,split`` (a header). The source
    id is the file's path relative to the input folder without its extension
    (``case_07``, ``patient3/slice_012``), as listed in ``splits/*.txt``.

    Raises:
        ConversionError: naming the file and line: unreadable file, a line
            without two fields, a bad split name, an id given twice.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(path, f"cannot read the split file: {e}") from None
    assignment: dict[str, str] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.replace("\t", ",").replace(",", " ").split()]
        if number == 1 and [f.lower() for f in fields] == ["source_id", "split"]:
            continue
        if len(fields) != 2:
            raise ConversionError(path, f"line {number}: expected 'SOURCE_ID SPLIT', got {raw!r}")
        source_id, split = fields
        if not split.replace("_", "").isalnum():
            raise ConversionError(path, f"line {number}: split name {split!r} must be letters, digits or _")
        if source_id in assignment:
            raise ConversionError(path, f"line {number}: {source_id!r} is assigned twice")
        assignment[source_id] = split
    if not assignment:
        raise ConversionError(path, "the split file assigns no example")
    return assignment


def apply_split_file(ids: Sequence[str], assignment: Mapping[str, str], *, path: str | None,
                     missing_ok: Sequence[str] = ()) -> dict[str, list[str]]:
    """Split ``ids`` as ``assignment`` says (each list sorted; splits in order of first appearance).

    Every id must be assigned, and every assigned id must be among ``ids`` (or
    in ``missing_ok``: files skipped as bad), so a typo or a forgotten file is an
    error rather than a silently smaller split.

    Raises:
        ConversionError: naming up to five unassigned or unknown ids.
    """
    present = set(ids)
    unassigned = sorted(present - set(assignment))
    unknown = sorted(set(assignment) - present - set(missing_ok))
    for problem, found in (("are not in the split file", unassigned),
                           ("are in the split file but not among the inputs", unknown)):
        if found:
            shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
            raise ConversionError(path, f"{len(found)} source id(s) {problem}: {shown}")
    out: dict[str, list[str]] = {}
    for source_id, split in assignment.items():
        if source_id in present:
            out.setdefault(split, []).append(source_id)
    return {split: sorted(members) for split, members in out.items()}


__all__ = ["DEFAULT_SPLIT", "apply_split_file", "assign_folds", "assign_splits", "parse_split_spec",
           "read_split_file"]
