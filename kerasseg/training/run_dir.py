"""The files of a run folder: names, ``history.csv``, ``best.json``, backups.

Every file is written atomically (:mod:`kerasseg.atomic_files`), so a killed
run never leaves a half-written one.
"""

from __future__ import annotations

import csv
import json
import os

from kerasseg.atomic_files import replacing

CONFIG_FILENAME = "config.yaml"
HISTORY_FILENAME = "history.csv"
BEST_MODEL_FILENAME = "best.keras"
BEST_STATE_FILENAME = "best.json"
CURVES_FILENAME = "learning_curves.png"
BACKUP_DIRNAME = "backup"
LOGS_DIRNAME = "logs"


def read_history(path: str) -> dict[str, list[float]]:
    """``history.csv`` as ``{column: [values per epoch]}`` (``epoch`` included)."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                out.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                out.setdefault(key, []).append(float("nan"))
    return out


def trim_history(path: str, finished_epochs: int) -> None:
    """Keep the rows of epochs ``< finished_epochs`` (drop a half-logged epoch)."""
    if not os.path.exists(path):
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    keep = [r for r in body if r and r[0].strip().isdigit() and int(r[0]) < finished_epochs]
    if len(keep) == len(body):
        return
    with replacing(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(keep)


def read_best_state(path: str) -> tuple[float | None, int | None]:
    """``(value, epoch)`` recorded in ``best.json`` (``(None, None)`` when absent)."""
    if not os.path.exists(path):
        return None, None
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    return float(state["value"]), int(state["epoch"])


def backup_epoch(folder: str) -> int:
    """Finished epochs recorded in a BackupAndRestore folder (0 when none)."""
    path = os.path.join(folder, "training_metadata.json")
    for candidate in (path, f"{path}.bkp"):
        try:
            with open(candidate, encoding="utf-8") as f:
                return int(json.load(f).get("epoch", 0))
        except (OSError, ValueError, TypeError):
            continue
    return 0


__all__ = [
    "CONFIG_FILENAME",
    "HISTORY_FILENAME",
    "BEST_MODEL_FILENAME",
    "BEST_STATE_FILENAME",
    "CURVES_FILENAME",
    "BACKUP_DIRNAME",
    "LOGS_DIRNAME",
    "read_history",
    "trim_history",
    "read_best_state",
    "backup_epoch",
]
